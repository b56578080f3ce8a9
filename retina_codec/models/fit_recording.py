"""Fit a retina model to a recording and save it with its model card: what ``retina-codec fit`` runs.

The recording is an NWB file, or ``sim:PRESET[:SEED]`` to fit the simulated retina directly. Training
resumes from the state kept in ``OUT/.fit_state/`` after an interruption (removed after a successful save).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingStimulusError, OutputExistsError, RecordingError
from ..recordings.nwb import read_nwb
from ..sim import simulate_retina
from .card import machine_description, write_model_card
from .checkpoint import save_model
from .fitting import SMALL_CONFIG, FitResult, fit, resolve_device
from .registry import build_model

__all__ = ["FIT_ARCHITECTURES", "load_fit_recording", "fit_recording"]

#: architecture names of ``retina-codec fit --architecture`` -> registered model classes
FIT_ARCHITECTURES = {"bncnn": "BNCNN", "linear-stacked": "LinearStackedBNCNN", "ln": "LNModel"}


def load_fit_recording(spec: str, stimulus: str | None = None,
                       responses: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``(recording, data description)`` of an NWB file or ``sim:PRESET[:SEED]`` (stimulus ``naturalscene``
    by default for a simulation)."""
    if spec.startswith("sim:"):
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
    rec = read_nwb(spec, stimulus=stimulus, responses=responses)
    return rec, {"source": str(spec), "stimulus": rec.stimulus_name}


def _check_history(history: int, rec: Any, spec: str) -> None:
    """A :class:`RecordingError` when a ``history``-frame window (plus the one-frame offset) does not fit in the
    recording, before the model is built."""
    if history + 1 > rec.n_frames:
        raise RecordingError(f"--history: {spec}: expected at most {rec.n_frames - 1} frames (the recording, "
                             f"stimulus {rec.stimulus_name!r}, has {rec.n_frames}), found {history}")


def fit_recording(recording: str, out: str | os.PathLike, *, stimulus: str | None = None,
                  responses: str | None = None, architecture: str = "bncnn", bn: str = "channel",
                  history: int | None = None, small: bool = False, epochs: int = 50, batch_size: int = 256,
                  lr: float = 1e-3, l2: float = 0.0, l1: float = 0.0, patience: int = 5,
                  steps_per_epoch: int | None = None, device: str = "auto", seed: int = 0,
                  overwrite: bool = False, command: str = "") -> FitResult:
    """Fit an ``architecture`` (:data:`FIT_ARCHITECTURES`) to ``recording`` (NWB path or ``sim:PRESET[:SEED]``),
    evaluate it on the test split and save it to ``out`` (``model.safetensors``, ``model.json``,
    ``MODEL_CARD.md``); ``command`` is recorded as the command line that recreates the fit.

    ``history`` frames per window (default 40; 20 with ``small``, the reduced BN-CNN for a quick CPU fit);
    ``bn`` BatchNorm per ``channel`` or per ``unit``; Poisson loss, Adam (``lr``, weight decay ``l2``), an
    L1 penalty ``l1`` on the rates, early stopping after ``patience`` epochs without validation improvement.
    """
    out = Path(out)
    if (out / "model.json").exists() and not overwrite:
        raise OutputExistsError(f"{out / 'model.json'}: a model exists (pass --overwrite to replace it)")
    rec, data = load_fit_recording(recording, stimulus, responses)
    try:
        kw: dict[str, Any] = {"history": 40}
        if small:
            kw.update(SMALL_CONFIG)
        if history is not None:
            kw["history"] = history
        _check_history(kw["history"], rec, recording)
        arch = FIT_ARCHITECTURES[architecture]
        if arch != "LNModel":
            kw["bn"] = bn
        else:
            kw = {"history": kw["history"]}
        torch.manual_seed(seed)
        model = build_model(arch, {"n_cells": rec.n_cells, "frame_shape": list(rec.frame_shape), **kw})
        state_dir = out / ".fit_state"
        result = fit(rec, model, epochs=epochs, batch_size=batch_size, lr=lr, l2=l2, l1=l1, patience=patience,
                     steps_per_epoch=steps_per_epoch, device=device, seed=seed, checkpoint_dir=state_dir, offset=1)
        result.model.metadata["command"] = command
        result.model.metadata["data"] = data
        save_model(result.model.cpu(), out, metadata=result.model.metadata)
        machine = machine_description(resolve_device(device))
        data = {**data, "frames": rec.n_frames, "frame rate (Hz)": rec.frame_rate, "cells": rec.n_cells,
                "splits (bins)": {k: int(len(rec.split_bins(k))) for k in sorted(rec.intervals)}}
        write_model_card(out / "MODEL_CARD.md", result.model, title=f"{arch} fitted to {data['source']}",
                         command=command, data=data, machine=machine)
        shutil.rmtree(state_dir, ignore_errors=True)
    finally:
        close = getattr(rec, "close", None)
        if close is not None:
            close()
    return result
