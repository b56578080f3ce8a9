"""Import torch-deep-retina ``.pt`` checkpoints without running untrusted code.

torch-deep-retina saves a torch pickle holding a dict: ``model_type`` (class name), ``model_state_dict``
(its ``nn.Sequential`` named ``sequential``), hyper-parameters (``hyps`` / ``model_hyps``, also copied
to the top level: ``dataset``, ``cells``, ``stim_type``, ``img_shape``, ...) and ``norm_stats`` (scalar
stimulus mean and std). We read it with ``torch.load(weights_only=True)`` plus the numpy scalar / array
types such files contain; a file that needs anything else is refused with
:class:`~retina_codec.errors.UntrustedCheckpointError` unless ``trust=True``.

Supported ``model_type``: ``BNCNN`` (per-unit BatchNorm1d over the flattened maps → our
``BNCNN(bn="unit")``) and ``BNCNN2D`` (BatchNorm2d → ``BNCNN(bn="channel")``). The architecture is read
from the weight shapes; BatchNorm ``eps`` (not stored in state dicts) follows torch-deep-retina: 1e-3 in
the conv layers; in the readout 1e-3 for checkpoints of its ``TDRModel`` generation (hyper-parameters
``bn_moment`` / ``ksizes`` / ``img_shape``) and PyTorch's 1e-5 for the earlier one.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UntrustedCheckpointError
from .bncnn import BNCNN

__all__ = ["import_tdr_checkpoint", "load_tdr_pickle", "SAFE_NUMPY_GLOBALS", "TDR_FRAME_RATE"]

TDR_FRAME_RATE = 100.0  # Hz: torch-deep-retina's data are binned at 10 ms

_np_core = getattr(np, "_core", None) or np.core
_NUMERIC_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                   np.uint64, np.float16, np.float32, np.float64)


def _safe_numpy_globals() -> list[Any]:
    """numpy's scalar/array reconstruction and numeric dtype classes, under numpy 1 and 2 module names."""
    out: list[Any] = []
    for obj, name in ((_np_core.multiarray.scalar, "scalar"), (_np_core.multiarray._reconstruct, "_reconstruct")):
        out += [obj, (obj, f"numpy.core.multiarray.{name}"), (obj, f"numpy._core.multiarray.{name}")]
    out += [np.ndarray, np.dtype]
    out += [type(np.dtype(t)) for t in _NUMERIC_DTYPES]
    return out


SAFE_NUMPY_GLOBALS = _safe_numpy_globals()

# torch-deep-retina Sequential index -> our module name, per model type (noise/ReLU/Flatten hold nothing)
_LAYOUTS: dict[str, dict[int, str]] = {
    "BNCNN": {0: "conv1.conv", 2: "conv1.bn", 6: "conv2.conv", 8: "conv2.bn", 11: "readout.linear",
              12: "readout.bn"},
    "BNCNN2D": {0: "conv1.conv", 1: "conv1.bn", 4: "conv2.conv", 5: "conv2.bn", 9: "readout.linear",
                10: "readout.bn"},
}
_NOISE_INDICES = {"BNCNN": (3, 9), "BNCNN2D": (2, 6)}


def load_tdr_pickle(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True`` (or fully, only when ``trust``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(SAFE_NUMPY_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.findall(r"Unsupported global: GLOBAL (\S+)", text)
        if not found and "global" not in text.lower():
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_line(text)})") from None
        if not trust:
            needed = _unsafe_globals(path) or found
            raise UntrustedCheckpointError(
                f"{path}: loading needs types outside the safe set (tensors, containers, numpy "
                f"scalars/arrays): {', '.join(needed) or _first_line(text)}. Unpickling such a file can run "
                f"arbitrary code; pass trust=True (CLI: --trust) only for a file from a source you trust"
            ) from None
        data = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    return data


def _first_line(text: str) -> str:
    """The unpickler's own complaint from torch's long weights-only error message."""
    tail = text.split("WeightsUnpickler error:")[-1]
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files and older torch versions cannot be scanned
        return []


def _hyps(data: dict[str, Any]) -> dict[str, Any]:
    for key in ("model_hyps", "hyps"):
        if isinstance(data.get(key), dict):
            return data[key]
    return {}


def _square_side(n_units: int, channels: int, what: str, path: Path) -> int:
    side = math.isqrt(n_units // channels) if n_units % channels == 0 else 0
    if side * side * channels != n_units:
        raise CheckpointError(f"{path}: {what} has {n_units} units, not {channels} square maps")
    return side


def _norm_stats(value: Any, path: Path) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        mean, std = value.get("mean"), value.get("std")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        mean, std = value
    else:
        raise CheckpointError(f"{path}: field 'norm_stats': expected {{'mean', 'std'}} or [mean, std], "
                              f"found {type(value).__name__}")
    try:
        return float(np.asarray(mean).reshape(())), float(np.asarray(std).reshape(()))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: field 'norm_stats': expected scalar mean and std ({err})") from err


def _plain(value: Any) -> Any:
    """JSON-ready copy of simple hyper-parameter values (others become their repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.size and np.size(value) <= 64:
        return np.asarray(value).tolist()
    return repr(value)[:200]


def import_tdr_checkpoint(path: str | os.PathLike, trust: bool = False,
                          readout_bn_eps: float | None = None) -> BNCNN:
    """A :class:`BNCNN` (eval mode) with the weights of a torch-deep-retina checkpoint.

    Sets ``input_spec`` (history and frame shape from the weights, 100 Hz, offset 1), ``norm_stats``
    (the checkpoint's scalar mean/std: z-score stimuli with them), ``cell_ids`` (``cells``) and
    ``metadata`` (source file, model type, dataset, stimulus type, hyper-parameters, saved scores).
    ``readout_bn_eps`` overrides the readout BatchNorm's eps when the checkpoint's generation is known.
    """
    path = Path(path)
    data = load_tdr_pickle(path, trust=trust)
    model_type = data.get("model_type")
    if model_type not in _LAYOUTS:
        raise CheckpointError(
            f"{path}: field 'model_type': expected one of {sorted(_LAYOUTS)}, found {model_type!r}"
        )
    state = data.get("model_state_dict")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: field 'model_state_dict' missing or empty")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    hyps = _hyps(data)
    layout = _LAYOUTS[model_type]

    def param(index: int, name: str) -> torch.Tensor | None:
        return state.get(f"sequential.{index}.{name}")

    by_name = {v: k for k, v in layout.items()}
    w1, w2, wl = (param(by_name[n], "weight") for n in ("conv1.conv", "conv2.conv", "readout.linear"))
    if w1 is None or w2 is None or wl is None or w1.dim() != 4 or w2.dim() != 4 or wl.dim() != 2:
        raise CheckpointError(f"{path}: model_state_dict lacks the conv/linear weights of a {model_type}")
    c1, history, k1, _ = w1.shape
    c2, _, k2, _ = w2.shape
    n_cells, n_flat = wl.shape
    side2 = _square_side(n_flat, c2, "the readout input", path)
    side = side2 + k2 - 1 + k1 - 1
    img = hyps.get("img_shape", data.get("img_shape"))
    if img is not None and (int(img[-2]) != side or int(img[-1]) != side or int(img[0]) != history):
        raise CheckpointError(f"{path}: img_shape {tuple(img)} disagrees with the weights "
                              f"(history {history}, frames {side}x{side})")
    new_generation = any(k in hyps for k in ("bn_moment", "ksizes", "img_shape"))
    if readout_bn_eps is None:
        readout_bn_eps = 1e-3 if (model_type == "BNCNN" and new_generation) else 1e-5
    momentum = float(hyps.get("bn_moment", hyps.get("bnorm_momentum", 0.01)))
    noise = hyps.get("noise")
    if noise is None:
        sig = param(_NOISE_INDICES[model_type][0], "sigma")
        noise = float(sig.reshape(-1)[0]) if sig is not None else 0.05
    model = BNCNN(
        n_cells=int(n_cells), history=int(history), frame_shape=(side, side), channels=(int(c1), int(c2)),
        kernel_sizes=(int(k1), int(k2)), noise_std=float(noise), bn="unit" if model_type == "BNCNN" else "channel",
        bn_eps=1e-3, bn_momentum=momentum, conv_bias=param(0, "bias") is not None,
        readout_bias=param(by_name["readout.linear"], "bias") is not None,
        readout_bn_eps=float(readout_bn_eps), readout_bn_momentum=momentum if new_generation else 0.1,
    )
    ours: dict[str, torch.Tensor] = {}
    ignored = {f"sequential.{i}.sigma" for i in _NOISE_INDICES[model_type]}
    for key, value in state.items():
        if key in ignored:
            continue
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "sequential" or not parts[1].isdigit() or int(parts[1]) not in layout:
            raise CheckpointError(f"{path}: unexpected state-dict entry {key!r} for a {model_type}")
        ours[f"{layout[int(parts[1])]}.{parts[2]}"] = value
    expected = set(model.state_dict())
    missing = expected - set(ours)
    # checkpoints from before BatchNorm tracked its batch count lack num_batches_tracked
    for key in [k for k in missing if k.endswith("num_batches_tracked")]:
        ours[key] = torch.tensor(0, dtype=torch.long)
        missing.discard(key)
    if missing:
        raise CheckpointError(f"{path}: model_state_dict lacks {sorted(missing)} for a {model_type}")
    try:
        model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in ours.items()})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a {model_type}: {err}") from err
    model.input_spec = type(model.input_spec)(int(history), side, side, TDR_FRAME_RATE, 1)
    model.norm_stats = _norm_stats(data.get("norm_stats"), path)
    cells = data.get("cells", hyps.get("cells"))
    model.cell_ids = [str(_plain(c)) for c in cells] if isinstance(cells, (list, tuple, np.ndarray)) and \
        len(cells) == n_cells else None
    model.metadata = {
        "source": "torch-deep-retina",
        "source_file": str(path),
        "model_type": model_type,
        "dataset": _plain(data.get("dataset", hyps.get("dataset"))),
        "stim_type": _plain(data.get("stim_type", hyps.get("stim_type"))),
        "cells": _plain(cells),
        "img_shape": _plain(img),
        "hyperparameters": _plain(hyps),
        "scores": {k: _plain(data[k]) for k in ("epoch", "loss", "val_loss", "val_acc", "test_pearson")
                   if k in data},
        "trusted_load": bool(trust),
    }
    return model.eval()
