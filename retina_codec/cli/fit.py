"""``retina-codec fit REC --out DIR``: fit a BN-CNN (or LN model) to a recording and save it with a model card.

``REC`` is an NWB file, or ``sim:PRESET[:SEED]`` to fit the simulated retina directly (for example
``sim:default`` for the shipped model). Rerunning the same command after an interruption resumes from
the state kept in ``DIR/.fit_state/`` (removed after a successful save).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..errors import MissingStimulusError, OutputExistsError, RecordingError
from .options import (
    add_overwrite_argument,
    add_responses_argument,
    device_name,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

log = logging.getLogger(__name__)

ARCHS = {"bncnn": "BNCNN", "linear-stacked": "LinearStackedBNCNN", "ln": "LNModel"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``fit`` sub-command."""
    p = subparsers.add_parser(
        "fit", help="fit a retina model to a recording",
        description="Fit a BN-CNN (Poisson loss, Adam, early stopping on validation Pearson r) and write "
                    "OUT/model.safetensors, OUT/model.json and OUT/MODEL_CARD.md.",
    )
    p.add_argument("recording", help="NWB file, or sim:PRESET[:SEED] (simulated retina, e.g. sim:default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stimulus", default=None,
                   help="stimulus series to fit (NWB: series name; sim: naturalscene (default) or whitenoise)")
    add_responses_argument(p)
    p.add_argument("--architecture", choices=sorted(ARCHS), default="bncnn")
    p.add_argument("--bn", choices=("channel", "unit"), default="channel",
                   help="BatchNorm per channel (default) or per unit (torch-deep-retina's BNCNN)")
    p.add_argument("--history", type=positive_int, default=None, help="frames per window (default 40; 20 with --small)")
    p.add_argument("--small", action="store_true",
                   help="reduced BN-CNN for a quick CPU fit (history 20, kernels 9 and 7)")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--l2", type=non_negative_float, default=0.0, help="Adam weight decay")
    p.add_argument("--l1", type=non_negative_float, default=0.0, help="L1 penalty on the predicted rates")
    p.add_argument("--patience", type=positive_int, default=5, help="epochs without validation improvement before stopping")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None, help="cap on batches per epoch")
    p.add_argument("--device", type=device_name, default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_overwrite_argument(p, "model in OUT")
    p.set_defaults(func=run)


def _load_recording(spec: str, stimulus: str | None, responses: str | None) -> tuple[Any, dict[str, Any]]:
    if spec.startswith("sim:"):
        from ..sim import simulate_retina

        parts = spec.split(":")
        preset = parts[1] or "default"
        if len(parts) > 2 and not parts[2].isdigit():
            raise RecordingError(f"recording: {spec}: expected sim:PRESET[:SEED] with a non-negative integer SEED, "
                                 f"found {parts[2]!r}")
        seed = int(parts[2]) if len(parts) > 2 else 0
        recs = {r.stimulus_name: r for r in simulate_retina(preset=preset, seed=seed)}
        name = stimulus or "naturalscene"
        if name not in recs:
            raise MissingStimulusError(f"--stimulus: expected one of {sorted(recs)} for {spec}, found {name!r}")
        return recs[name], {"source": f"simulated retina, preset {preset!r}, seed {seed}", "stimulus": name}
    from ..recordings.nwb import read_nwb

    rec = read_nwb(spec, stimulus=stimulus, responses=responses)
    return rec, {"source": str(spec), "stimulus": rec.stimulus_name}


def _check_history(history: int, rec: Any, spec: str) -> None:
    """A :class:`RecordingError` when a ``history``-frame window (plus the one-frame offset) does not fit in the
    recording, before the model is built."""
    if history + 1 > rec.n_frames:
        raise RecordingError(f"--history: {spec}: expected at most {rec.n_frames - 1} frames (the recording, "
                             f"stimulus {rec.stimulus_name!r}, has {rec.n_frames}), found {history}")


def _command(args: argparse.Namespace) -> str:
    """The full command line that recreates this fit (every training option spelled out)."""
    parts = ["retina-codec", "fit", args.recording, "--out", args.out]
    for flag in ("stimulus", "responses", "history", "steps_per_epoch"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.small:
        parts.append("--small")
    for flag in ("architecture", "bn", "epochs", "batch_size", "lr", "l2", "l1", "patience", "seed", "device"):
        parts += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Fit, evaluate on the test split, save the model and its card; returns 0."""
    from ..models import build_model, save_model
    from ..models.card import machine_description, write_model_card
    from ..models.fitting import SMALL_CONFIG, fit, resolve_device

    out = Path(args.out)
    if (out / "model.json").exists() and not args.overwrite:
        raise OutputExistsError(f"{out / 'model.json'}: a model exists (pass --overwrite to replace it)")
    rec, data = _load_recording(args.recording, args.stimulus, args.responses)
    try:
        kw: dict[str, Any] = {"history": 40}
        if args.small:
            kw.update(SMALL_CONFIG)
        if args.history is not None:
            kw["history"] = args.history
        _check_history(kw["history"], rec, args.recording)
        arch = ARCHS[args.architecture]
        if arch != "LNModel":
            kw["bn"] = args.bn
        else:
            kw = {"history": kw["history"]}
        import torch

        torch.manual_seed(args.seed)
        model = build_model(arch, {"n_cells": rec.n_cells, "frame_shape": list(rec.frame_shape), **kw})
        state_dir = out / ".fit_state"
        result = fit(
            rec, model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, l2=args.l2, l1=args.l1,
            patience=args.patience, steps_per_epoch=args.steps_per_epoch, device=args.device, seed=args.seed,
            checkpoint_dir=state_dir, offset=1,
        )
        command = _command(args)
        result.model.metadata["command"] = command
        result.model.metadata["data"] = data
        save_model(result.model.cpu(), out, metadata=result.model.metadata)
        machine = machine_description(resolve_device(args.device))
        data = {**data, "frames": rec.n_frames, "frame rate (Hz)": rec.frame_rate, "cells": rec.n_cells,
                "splits (bins)": {k: int(len(rec.split_bins(k))) for k in sorted(rec.intervals)}}
        write_model_card(out / "MODEL_CARD.md", result.model, title=f"{arch} fitted to {data['source']}",
                         command=command, data=data, machine=machine)
        shutil.rmtree(state_dir, ignore_errors=True)
    finally:
        close = getattr(rec, "close", None)
        if close is not None:
            close()
    t = result.test
    log.info("saved %s (best epoch %d, validation r %.3f%s)", out, result.best_epoch, result.best_val_r,
             "" if t is None else f", test r {t.mean_r_response:.3f}"
             + ("" if t.mean_r_true_rate is None else f", r vs true rate {t.mean_r_true_rate:.3f}"))
    return 0
