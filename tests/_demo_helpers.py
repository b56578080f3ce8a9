"""Shared helpers for the demo, report and figure tests (not a test module): one tiny demo folder per session."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from retina_codec.cli.main import main
from retina_codec.models import fit, save_model
from retina_codec.models.fitting import SMALL_CONFIG
from retina_codec.sim import simulate_retina

#: demo options that keep every stage to seconds on CPU (the classifier comparison is tested on its own)
FAST = ["--preset", "small", "--bins", "240", "--irf-bins", "64", "--model-sta-samples", "16", "--sae-epochs", "4",
        "--rf-modes", "3", "--steps", "4", "--no-classifiers"]


def tiny_model(folder: Path) -> Path:
    """A small BN-CNN fitted for a few batches to the small simulated retina (seconds on CPU)."""
    if not (folder / "model.json").exists():
        nat, _ = simulate_retina("small", seed=0, quiet=True)
        torch.manual_seed(0)
        res = fit(nat, model_kwargs=dict(SMALL_CONFIG), history=SMALL_CONFIG["history"], epochs=1,
                  steps_per_epoch=4, quiet=True, device="cpu")
        save_model(res.model, folder, metadata=res.model.metadata)
    return folder


def demo_folder(tmp_path_factory) -> tuple[Path, Path]:
    """``(demo folder, model folder)`` of one fast demo run, made once per test session."""
    base = tmp_path_factory.getbasetemp()
    model = tiny_model(base / "tiny_model")
    out = base / "demo_small"
    if not (out / "report.html").exists():
        assert main(["-q", "demo", "--out", str(out), "--model", str(model), *FAST]) == 0
    return out, model


def manifest(folder: Path) -> dict:
    return json.loads((folder / "demo.json").read_text())
