"""A small CNN for scikit-learn's bundled handwritten digits: definition, data, training, save/load.

The data are the 1797 8×8 grey images of ``sklearn.datasets.load_digits`` (values 0…16), upsampled
bilinearly to 16×16 and z-scored with the train split's scalar mean and std, so that the contribution
baseline x₀ = 0 is a uniform mean-grey image. The split is a seeded stratified 80/20 train/test split.

:class:`DigitsCNN` has addressable layers (``layer_names``): ``act1`` (stem conv + BN + ReLU), ``block1``,
``block2``, ``block3`` (conv + BN + ReLU each), then global average pooling and ``fc`` (10 logits).
``conv1`` + ``bn1`` are affine in eval mode (``affine_stem``). It trains to ~97 % test accuracy in a few
seconds on one CPU core (:func:`train_digits_cnn`).

Checkpoints are ``model.safetensors`` (state dict) + ``model.json`` (architecture config, input size,
normalisation, class names, training provenance and test accuracy), both written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F  # noqa: N812

from .._version import __version__
from ..errors import CheckpointError
from ..io_utils import atomic_path
from ..progress import progress

__all__ = ["DigitsCNN", "DigitsData", "load_digits_data", "train_digits_cnn", "evaluate_accuracy",
           "save_digits_cnn", "load_digits_cnn", "DIGITS_FORMAT"]

DIGITS_FORMAT = "retina-codec-digits-cnn"


class DigitsCNN(nn.Module):
    """Conv net for ``(B, 1, size, size)`` z-scored digit images → ``(B, 10)`` logits.

    Layers (forward order): ``conv1``, ``bn1``, ``act1`` (size×size, ``width`` channels), ``block1``
    (size×size, 2·width), ``pool1``, ``block2`` (size/2, 2·width), ``pool2``, ``block3`` (size/4, 4·width),
    ``pool``, ``fc``.
    """

    def __init__(self, width: int = 8, n_classes: int = 10, size: int = 16) -> None:
        super().__init__()
        self.width, self.n_classes, self.size = int(width), int(n_classes), int(size)
        w = self.width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.conv1 = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.act1 = nn.ReLU()
        self.block1 = block(w, 2 * w)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = block(2 * w, 2 * w)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = block(2 * w, 4 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, self.n_classes)
        self.layer_names: tuple[str, ...] = ("act1", "block1", "block2", "block3")
        self.affine_stem: tuple[str, ...] = ("conv1", "bn1")
        self.norm_stats: tuple[float, float] | None = None
        self.class_names: list[str] = [str(i) for i in range(self.n_classes)]
        self.metadata: dict[str, Any] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(1, size, size)``: one input sample."""
        return (1, self.size, self.size)

    def config(self) -> dict[str, int]:
        """Constructor arguments."""
        return {"width": self.width, "n_classes": self.n_classes, "size": self.size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.pool(self.block3(x)).flatten(1)
        return self.fc(x)


@dataclass
class DigitsData:
    """Train/test split of the digits: ``x_* (n, 1, size, size)`` float32 z-scored, ``y_* (n,)`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    size: int
    seed: int


def load_digits_data(size: int = 16, seed: int = 0, test_fraction: float = 0.2,
                     norm: tuple[float, float] | None = None) -> DigitsData:
    """The bundled digits, upsampled to ``size``×``size`` (bilinear), split and z-scored.

    Pixels are scaled to [0, 1] (÷16) before upsampling; ``norm`` (mean, std) overrides the train-split
    statistics (use the model's ``norm_stats`` to feed a trained model).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=d.target)
    tr, te = np.sort(tr), np.sort(te)
    mean, std = norm if norm is not None else (float(x[tr].mean()), float(x[tr].std()))
    x = (x - mean) / std
    return DigitsData(x[tr].contiguous(), y[tr], x[te].contiguous(), y[te], float(mean), float(std), size, seed)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode during the call) on ``x (n, ...)`` with labels ``y (n,)``."""
    was = model.training
    model.eval()
    try:
        pred = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)
    return float((pred == y).double().mean())


def train_digits_cnn(data: DigitsData | None = None, width: int = 8, epochs: int = 12, batch_size: int = 32,
                     lr: float = 3e-3, seed: int = 0, quiet: bool | None = None) -> DigitsCNN:
    """Train a :class:`DigitsCNN` (Adam, cosine schedule, cross-entropy) on the digits' train split.

    Deterministic on CPU for a given ``seed``. Sets ``norm_stats`` and ``metadata`` (settings, train
    seconds, test accuracy). Takes a few seconds on one CPU core.
    """
    data = data if data is not None else load_digits_data(seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsCNN(width=width, size=data.size)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        n = len(data.y_train)
        steps = epochs * -(-n // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        model.train()
        for _ in progress(range(epochs), desc="digits CNN", quiet=quiet, unit="epoch"):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, batch_size):
                b = perm[i:i + batch_size]
                loss = F.cross_entropy(model(data.x_train[b]), data.y_train[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        seconds = time.perf_counter() - t0
    model.eval()
    model.norm_stats = (data.mean, data.std)
    model.metadata = {
        "training": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "Adam",
                     "schedule": "one-cycle", "train_seconds": seconds, "n_train": int(n),
                     "torch_threads": torch.get_num_threads()},
        "data": {"name": "sklearn.datasets.load_digits", "size": data.size, "split_seed": data.seed,
                 "n_test": int(len(data.y_test)), "norm_mean": data.mean, "norm_std": data.std},
        "metrics": {"train_accuracy": evaluate_accuracy(model, data.x_train, data.y_train),
                    "test_accuracy": evaluate_accuracy(model, data.x_test, data.y_test)},
    }
    return model


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix(".safetensors"), p.with_suffix(".json")
    return p / "model.safetensors", p / "model.json"


def save_digits_cnn(model: DigitsCNN, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``model.json`` under the folder ``path`` (atomically); returns the folder."""
    weights, meta = _paths(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    doc = {"format": DIGITS_FORMAT, "format_version": 1, "package_version": __version__,
           "architecture": "DigitsCNN", "config": model.config(), "input_shape": list(model.input_shape),
           "norm_stats": list(model.norm_stats) if model.norm_stats else None,
           "class_names": model.class_names, "layer_names": list(model.layer_names),
           "affine_stem": list(model.affine_stem), "metadata": {**model.metadata, **(extra or {})},
           "weights_file": weights.name, "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    with atomic_path(meta, suffix=".json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return weights.parent


def load_digits_cnn(path: str | os.PathLike) -> DigitsCNN:
    """Rebuild a :class:`DigitsCNN` written by :func:`save_digits_cnn` (eval mode, CPU)."""
    weights, meta = _paths(path)
    if not meta.exists():
        raise CheckpointError(f"{meta}: no such file (expected a digits-CNN checkpoint folder or model.json)")
    try:
        doc = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta}: not valid JSON ({err})") from err
    if doc.get("format") != DIGITS_FORMAT:
        raise CheckpointError(f"{meta}: field 'format': expected {DIGITS_FORMAT!r}, found {doc.get('format')!r}")
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights file missing")
    model = DigitsCNN(**doc["config"])
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as err:  # safetensors and load_state_dict raise several types
        raise CheckpointError(f"{weights}: cannot load DigitsCNN weights ({err})") from err
    ns = doc.get("norm_stats")
    model.norm_stats = (float(ns[0]), float(ns[1])) if ns else None
    model.class_names = list(doc.get("class_names") or model.class_names)
    model.metadata = doc.get("metadata", {})
    return model.eval()
