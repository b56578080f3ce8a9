"""Model cards: a Markdown page beside a shipped checkpoint saying what it was fitted to, how to recreate
it, how long it took on which machine, and how well it predicts held-out data."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..io_utils import atomic_path
from .base import RetinaModel

__all__ = ["write_model_card", "machine_description"]


def machine_description(device: str | torch.device = "cpu") -> str:
    """One line: CPU model and count, GPU name when ``device`` is CUDA, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu} ({os.cpu_count()} logical CPUs), {platform.system()}, torch {torch.__version__}"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text = f"GPU {torch.cuda.get_device_name(torch.device(device))}; " + text
    return text


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def write_model_card(path: str | os.PathLike, model: RetinaModel, *, title: str, command: str,
                     data: dict[str, Any], machine: str) -> Path:
    """Write ``MODEL_CARD.md`` (atomically) from the model's metadata (as set by ``fit``)."""
    meta = model.metadata or {}
    tr = meta.get("training", {})
    test = meta.get("metrics", {}).get("test") or {}
    spec = model.input_spec
    lines = [
        f"# {title}", "",
        f"{model.architecture} fitted by retina-codec {__version__}. Load it with "
        "`retina_codec.models.load_model(<this folder>)`.", "",
        "## Data", "",
        *[f"- {k}: {_fmt(v)}" for k, v in data.items()],
        f"- input: {spec.history} frames of {spec.height}x{spec.width} px at {_fmt(spec.frame_rate)} Hz, "
        f"window offset {spec.offset} (bin t sees frames t-{spec.history + spec.offset - 1} … t-{spec.offset})",
        f"- stimulus z-scored with mean {_fmt(model.norm_stats[0] if model.norm_stats else None)}, "
        f"std {_fmt(model.norm_stats[1] if model.norm_stats else None)} (train split)",
        f"- cells ({model.n_cells}): {', '.join(model.cell_ids or [])}",
        f"- output: {meta.get('output_unit', 'predicted response per bin')}", "",
        "## Architecture", "", "```", *[f"{k} = {v}" for k, v in model.config().items()], "```", "",
        "## Training", "",
        f"- command: `{command}`",
        f"- seed {_fmt(tr.get('seed'))}, batch {_fmt(tr.get('batch_size'))}, Adam lr {_fmt(tr.get('lr'))}, "
        f"L2 {_fmt(tr.get('l2'))}, L1 {_fmt(tr.get('l1'))}, Poisson loss",
        f"- epochs run {_fmt(tr.get('epochs_run'))} of {_fmt(tr.get('epochs_requested'))} "
        f"(best {_fmt(tr.get('best_epoch'))}, validation r {_fmt(tr.get('best_val_r'))}, "
        f"early stop: {tr.get('stopped_early')})",
        f"- training time {_fmt(tr.get('train_seconds'))} s on {tr.get('device')}; machine: {machine}", "",
        "## Held-out metrics (test split)", "",
        f"- bins: {_fmt(test.get('n_bins'))}",
        f"- mean Pearson r with the recorded responses: {_fmt(test.get('mean_r_response'))}",
        f"- mean Pearson r with the true rate (simulated data): {_fmt(test.get('mean_r_true_rate'))}", "",
    ]
    if test.get("r_response"):
        lines += ["| cell | r (responses) | r (true rate) |", "|---|---|---|"]
        r_true = test.get("r_true_rate") or [None] * len(test["r_response"])
        for cid, a, b in zip(model.cell_ids or range(model.n_cells), test["r_response"], r_true):
            lines.append(f"| {cid} | {_fmt(a)} | {_fmt(b)} |")
        lines.append("")
    out = Path(path)
    with atomic_path(out, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))
    return out
