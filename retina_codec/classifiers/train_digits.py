"""Recreate the shipped digits CNN: ``python -m retina_codec.classifiers.train_digits --out retina_codec/shipped/digits-cnn``.

Trains :class:`~retina_codec.classifiers.digits.DigitsCNN` on one CPU thread (deterministic for the seed),
saves ``model.safetensors`` + ``model.json`` and writes ``MODEL_CARD.md`` (data, seed, command, accuracy,
training time, machine).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .._version import __version__
from ..io_utils import atomic_path
from ..models.card import machine_description
from .digits import load_digits_data, save_digits_cnn, train_digits_cnn

__all__ = ["make_digits_model", "write_digits_card", "main"]


def write_digits_card(folder: str | os.PathLike, meta: dict, command: str, machine: str) -> Path:
    """Write ``MODEL_CARD.md`` beside the checkpoint from its metadata."""
    tr, data, met = meta["training"], meta["data"], meta["metrics"]
    lines = [
        "# digits-cnn — small CNN on scikit-learn's handwritten digits", "",
        f"`DigitsCNN` trained by retina-codec {__version__}; the classifier the tests and docs use for the CODEC "
        "classifier comparison. Load it with `retina_codec.classifiers.load_classifier(\"digits-cnn\")` "
        "(or `load_digits_cnn(<this folder>)`).", "",
        "## Data", "",
        "- `sklearn.datasets.load_digits` (bundled with scikit-learn, nothing downloaded): 1797 grey 8×8 images "
        "of the digits 0–9, values 0–16",
        f"- pixels ÷ 16, upsampled bilinearly to {data['size']}×{data['size']}, z-scored with the train split's "
        f"mean {data['norm_mean']:.4f} and std {data['norm_std']:.4f} (so the baseline 0 is a mean-grey image)",
        f"- stratified 80/20 train/test split, `random_state={data['split_seed']}`: {tr['n_train']} train, "
        f"{data['n_test']} test images", "",
        "## Architecture", "",
        "conv1 3×3 (1→w) + bn1 + act1 (ReLU) → block1 (conv 3×3 + BN + ReLU, 2w) → max-pool 2 → block2 (2w) → "
        "max-pool 2 → block3 (4w) → global average pool → fc (10 logits); w = "
        f"{meta.get('config', {}).get('width', 8)}. Hidden layers `act1`, `block1`, `block2`, `block3`; "
        "affine stem `conv1` + `bn1`.", "",
        "## Training", "",
        f"- command: `{command}`",
        f"- seed {tr['seed']}, {tr['epochs']} epochs, batch {tr['batch_size']}, Adam with a one-cycle schedule "
        f"(max lr {tr['lr']}), cross-entropy, {tr['torch_threads']} CPU thread(s)",
        f"- training time {tr['train_seconds']:.1f} s; machine: {machine}", "",
        "## Accuracy", "",
        f"- train: {met['train_accuracy']:.4f}",
        f"- test ({data['n_test']} images): {met['test_accuracy']:.4f}", "",
    ]
    out = Path(folder) / "MODEL_CARD.md"
    with atomic_path(out, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))
    return out


def make_digits_model(out: str | os.PathLike, seed: int = 0, epochs: int = 12, width: int = 8,
                      command: str = "") -> Path:
    """Train, save and card the digits CNN in ``out``; returns the folder."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_digits_cnn(load_digits_data(seed=seed), width=width, epochs=epochs, seed=seed)
    finally:
        torch.set_num_threads(prev)
    model.metadata["config"] = model.config()
    model.metadata["command"] = command
    folder = save_digits_cnn(model, out)
    write_digits_card(folder, model.metadata, command, machine_description("cpu"))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the shipped digits CNN and write it to ``--out``; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m retina_codec.classifiers.train_digits", description=__doc__)
    p.add_argument("--out", default="retina_codec/shipped/digits-cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=8)
    a = p.parse_args(argv)
    cmd = f"python -m retina_codec.classifiers.train_digits --out {a.out} --seed {a.seed} --epochs {a.epochs} " \
          f"--width {a.width}"
    folder = make_digits_model(a.out, a.seed, a.epochs, a.width, cmd)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
