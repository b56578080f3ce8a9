"""Import torch-deep-retina ``.pt`` checkpoints without running code from the file.

torch-deep-retina's trainer saves a torch pickle holding a dict: ``model_type`` (class name),
``model_state_dict`` (its ``nn.Sequential`` named ``sequential``), the optimiser state, scores,
``norm_stats`` (scalar stimulus mean and std) and its hyper-parameters (``hyps`` / ``model_hyps``, every
entry also copied to the top level: ``dataset``, ``cells``, ``stim_type``, ``img_shape``, ...). Among them
is ``model_class``, the model class object itself — a reference to ``torchdeepretina.models.<model_type>``
— and there may be other objects of its modules.

Reading
-------
Files are read with :func:`~.safe_pickle.safe_torch_load` (a restricted unpickler that never imports a
module or runs the file's code; ``trust=True`` unpickles fully). Classes the file names, such as
``model_class``, come back as inert :class:`~.safe_pickle.StandIn` objects.

Import
------
Supported ``model_type``: ``BNCNN`` and ``BNCNN2D`` (plain convolutions, ``BatchNorm1d`` per unit or
``BatchNorm2d`` per channel → our ``BNCNN(bn="unit" | "channel")``) and ``LinearStackedBNCNN``
(``LinearStackedConv2d`` / ``OneToOneLinearStackedConv2d`` layers and ``AbsBatchNorm`` with ``|scale|``;
each stack is folded exactly into one convolution, see :mod:`.tdr_linear_stacked`, into the same
``BNCNN``). The layout is read from the state-dict entries of every torch-deep-retina generation (module
indices moved when ``Reshape`` / ``Flatten`` modules were added); the architecture from the weight shapes.
BatchNorm ``eps`` (not stored in state dicts) follows torch-deep-retina: 1e-3 in the conv layers; in the
readout 1e-3 for ``LinearStackedBNCNN`` and for ``BNCNN`` of its ``TDRModel`` generation
(hyper-parameters ``bn_moment`` / ``ksizes`` / ``img_shape``), PyTorch's 1e-5 for the earlier ``BNCNN``
and ``BNCNN2D``; 1e-5 inside a stack.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .bncnn import BNCNN
from .safe_pickle import StandIn, safe_torch_load
from .tdr_linear_stacked import Conv, fold_affine_convs, one_to_one_ops, stacked_conv_ops

__all__ = ["import_tdr_checkpoint", "load_tdr_pickle", "TDR_FRAME_RATE"]

TDR_FRAME_RATE = 100.0  # Hz: torch-deep-retina's data are binned at 10 ms


def load_tdr_pickle(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict, read with :class:`~.safe_pickle.RestrictedUnpickler` (fully unpickled only when ``trust``
    and needed). Classes and functions the file names but that are not on the allow-list are
    :class:`~.safe_pickle.StandIn` objects (``model_class`` among them); objects of them are
    :class:`~.safe_pickle.StandInObject`.
    Raises :class:`~retina_codec.errors.UntrustedCheckpointError` when the file asks to call code outside
    the allow-list and ``trust`` is false, :class:`~retina_codec.errors.CheckpointError` when unreadable."""
    data = safe_torch_load(path, trust).data
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------------------
# import


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


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-ready copy of simple hyper-parameter values (stand-ins become their name, others their repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, StandIn):
        return value.qualname
    if isinstance(value, np.generic):
        return value.item()
    if depth > 16:  # a (possibly cyclic) structure nested this deep is not a hyper-parameter
        return repr(value)[:200]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.size and np.size(value) <= 64:
        return np.asarray(value).tolist()
    return repr(value)[:200]


# model type -> (accepted conv kinds, accepted batchnorm kind)
_SUPPORTED = {"BNCNN": ({"conv"}, "bn"), "BNCNN2D": ({"conv"}, "bn"),
              "LinearStackedBNCNN": ({"stacked", "one2one"}, "absbn")}
_BN_KEYS = {"weight", "bias", "running_mean", "running_var"}
_ABS_BN_KEYS = {"scale", "shift", "running_mean", "running_var"}


@dataclass
class _Module:
    index: int
    kind: str  # conv, linear, bn, absbn, noise, stacked, one2one
    params: dict[str, torch.Tensor]


def _classify(index: int, params: dict[str, torch.Tensor], path: Path) -> _Module:
    names = set(params)
    w = params.get("weight")
    if names == {"sigma"}:
        kind = "noise"
    elif names in ({"weight"}, {"weight", "bias"}) and w.dim() in (2, 4):
        kind = "conv" if w.dim() == 4 else "linear"
    elif _BN_KEYS <= names <= _BN_KEYS | {"num_batches_tracked"} and w.dim() == 1:
        kind = "bn"
    elif names == _ABS_BN_KEYS:
        kind = "absbn"
    elif all(n.startswith("convs.") for n in names):
        kind = "stacked"
    elif all(n.startswith(("first_conv.", "seqs.")) for n in names):
        kind = "one2one"
    else:
        raise CheckpointError(f"{path}: unexpected state-dict entry 'sequential.{index}.{sorted(names)[0]}'")
    return _Module(index, kind, params)


def _modules(state: dict[str, Any], path: Path) -> list[_Module]:
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "sequential" or not parts[1].isdigit():
            raise CheckpointError(f"{path}: unexpected state-dict entry {key!r}")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state-dict entry {key!r} is a {type(value).__name__}, not a tensor")
        groups.setdefault(int(parts[1]), {})[parts[2]] = value
    return [_classify(i, groups[i], path) for i in sorted(groups)]


def _conv_layer(m: _Module, path: Path) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``(weight, bias, description)`` of one conv layer, a stack folded into one convolution."""
    if m.kind == "conv":
        return m.params["weight"], m.params.get("bias"), {}
    try:
        ops = stacked_conv_ops(m.params) if m.kind == "stacked" else one_to_one_ops(m.params)
        first = next(op for op in ops if isinstance(op, Conv))
        weight, bias = fold_affine_convs(ops, int(first.weight.shape[1]))
    except (ValueError, StopIteration) as err:
        raise CheckpointError(f"{path}: sequential.{m.index}: cannot fold the stacked convolution ({err})") from None
    kernels = [int(op.weight.shape[-1]) for op in ops if isinstance(op, Conv)]
    return weight, bias, {"stacked_kernels": kernels, "inner_batchnorms": len(ops) - len(kernels),
                          "one_to_one": m.kind == "one2one"}


def _check_hyps(hyps: dict[str, Any], data: dict[str, Any], path: Path) -> None:
    """Refuse hyper-parameters that make the network something a BNCNN does not compute."""
    def get(key: str) -> Any:
        return hyps.get(key, data.get(key))

    problems = []
    if get("softplus") is False:
        problems.append("softplus=False (exponential output)")
    if get("inference_exp"):
        problems.append("inference_exp=True (exponential at inference)")
    if get("activ_fxn") not in (None, "ReLU"):
        problems.append(f"activ_fxn={get('activ_fxn')!r} (only ReLU)")
    if get("convgc"):
        problems.append("convgc=True (convolutional readout)")
    pads = get("paddings")
    if pads is not None and any(int(p or 0) for p in np.ravel(np.asarray(pads, dtype=object))):
        problems.append(f"paddings={_plain(pads)} (padded stacks do not fold)")
    if get("final_bias"):
        problems.append("final_bias=True")
    if problems:
        raise CheckpointError(f"{path}: unsupported torch-deep-retina hyper-parameters: {', '.join(problems)}")


def _bn_state(m: _Module) -> dict[str, torch.Tensor]:
    p = m.params
    if m.kind == "absbn":  # AbsBatchNorm: eval output (x - mean)/sqrt(var + eps)*|scale| + shift
        out = {"weight": p["scale"].abs(), "bias": p["shift"]}
    else:
        out = {"weight": p["weight"], "bias": p["bias"]}
    out.update(running_mean=p["running_mean"], running_var=p["running_var"],
               num_batches_tracked=p.get("num_batches_tracked", torch.tensor(0, dtype=torch.long)))
    return out


def import_tdr_checkpoint(path: str | os.PathLike, trust: bool = False,
                          readout_bn_eps: float | None = None) -> BNCNN:
    """A :class:`BNCNN` (eval mode) computing what a torch-deep-retina checkpoint's network computes.

    ``BNCNN`` / ``BNCNN2D`` weights are copied; ``LinearStackedBNCNN`` stacks are folded (float64) into one
    convolution per layer and its ``AbsBatchNorm`` scales stored as ``|scale|``. Sets ``input_spec``
    (history and frame shape from the weights, 100 Hz, offset 1), ``norm_stats`` (the checkpoint's scalar
    mean/std: z-score stimuli with them), ``cell_ids`` (``cells``) and ``metadata`` (source file, model type
    and class, dataset, stimulus type, hyper-parameters, saved scores, globals not imported, folding).
    ``readout_bn_eps`` overrides the readout BatchNorm's eps when the checkpoint's generation is known.
    """
    path = Path(path)
    loaded = safe_torch_load(path, trust)
    data = loaded.data
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(data).__name__}")
    hyps = _hyps(data)
    model_class = data.get("model_class", hyps.get("model_class"))
    model_type = data.get("model_type")
    if model_type is None and isinstance(model_class, StandIn):
        model_type = model_class.name
    if not isinstance(model_type, str) or model_type not in _SUPPORTED:
        raise CheckpointError(
            f"{path}: field 'model_type': expected one of {sorted(_SUPPORTED)}, found {model_type!r}"
        )
    state = data.get("model_state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: field 'model_state_dict' missing, empty or not keyed by names")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    _check_hyps(hyps, data, path)
    conv_kinds, bn_kind = _SUPPORTED[model_type]
    modules = _modules(state, path)
    noise = [m for m in modules if m.kind == "noise"]
    body = [m for m in modules if m.kind != "noise"]
    kinds = [m.kind for m in body]
    n_layers = (len(body) - 2) // 2
    layout_ok = len(body) >= 4 and len(body) % 2 == 0 and kinds[-2:] == ["linear", bn_kind] and all(
        kinds[2 * i] in conv_kinds and kinds[2 * i + 1] == bn_kind for i in range(n_layers))
    if not layout_ok:
        found = ", ".join(f"{m.kind}@{m.index}" for m in modules)
        raise CheckpointError(f"{path}: model_state_dict does not have the layout of a {model_type} "
                              f"(conv, batchnorm per layer, then linear, batchnorm); found {found}")
    convs = [_conv_layer(body[2 * i], path) for i in range(n_layers)]
    bns = [body[2 * i + 1] for i in range(n_layers)]
    linear, readout_bn = body[-2], body[-1]
    channels, kernels = [int(w.shape[0]) for w, _, _ in convs], [int(w.shape[-1]) for w, _, _ in convs]
    history = int(convs[0][0].shape[1])
    for i, (w, _, _) in enumerate(convs):
        want_in = history if i == 0 else channels[i - 1]
        if w.shape[1] != want_in or w.shape[2] != w.shape[3]:
            raise CheckpointError(f"{path}: conv layer {i + 1} weight {tuple(w.shape)} does not take {want_in} "
                                  "channels with a square kernel")
    wl = linear.params["weight"]
    n_cells, n_flat = (int(s) for s in wl.shape)
    side = _square_side(n_flat, channels[-1], "the readout input", path)
    sides = [side]
    for k in reversed(kernels):
        sides.insert(0, sides[0] + k - 1)
    frame = sides[0]
    img = hyps.get("img_shape", data.get("img_shape"))
    if img is not None and (int(img[-2]) != frame or int(img[-1]) != frame or int(img[0]) != history):
        raise CheckpointError(f"{path}: img_shape {tuple(img)} disagrees with the weights "
                              f"(history {history}, frames {frame}x{frame})")
    bn_layouts = set()
    for i, m in enumerate(bns):
        size, c, s = int(m.params["running_mean"].numel()), channels[i], sides[i + 1]
        if size not in (c, c * s * s):
            raise CheckpointError(f"{path}: the batchnorm after conv layer {i + 1} has {size} units, not {c} "
                                  f"channels or {c}x{s}x{s} units")
        if c != c * s * s:
            bn_layouts.add("channel" if size == c else "unit")
    if len(bn_layouts) > 1:
        raise CheckpointError(f"{path}: conv layers mix per-channel and per-unit batchnorm")
    bn_layout = bn_layouts.pop() if bn_layouts else "channel"
    if readout_bn.params["running_mean"].numel() != n_cells:
        raise CheckpointError(f"{path}: the readout batchnorm has {readout_bn.params['running_mean'].numel()} "
                              f"units for {n_cells} cells")
    new_generation = any(k in hyps for k in ("bn_moment", "ksizes", "img_shape"))
    if readout_bn_eps is None:
        readout_bn_eps = 1e-3 if model_type == "LinearStackedBNCNN" or (model_type == "BNCNN" and new_generation) \
            else 1e-5
    momentum = float(hyps.get("bn_moment", hyps.get("bnorm_momentum", 0.01)))
    noise_std = hyps.get("noise")
    if noise_std is None:
        noise_std = float(noise[0].params["sigma"].reshape(-1)[0]) if noise else 0.05
    conv_bias = any(b is not None for _, b, _ in convs)
    model = BNCNN(
        n_cells=n_cells, history=history, frame_shape=(frame, frame), channels=channels, kernel_sizes=kernels,
        noise_std=float(noise_std), bn=bn_layout, bn_eps=1e-3, bn_momentum=momentum, conv_bias=conv_bias,
        readout_bias="bias" in linear.params, readout_bn_eps=float(readout_bn_eps),
        readout_bn_momentum=momentum if (new_generation or model_type == "LinearStackedBNCNN") else 0.1,
    )
    ours: dict[str, torch.Tensor] = {}
    for i, (w, b, _) in enumerate(convs):
        ours[f"conv{i + 1}.conv.weight"] = w
        if conv_bias:
            ours[f"conv{i + 1}.conv.bias"] = b if b is not None else torch.zeros(channels[i])
        ours.update({f"conv{i + 1}.bn.{k}": v for k, v in _bn_state(bns[i]).items()})
    ours["readout.linear.weight"] = wl
    if "bias" in linear.params:
        ours["readout.linear.bias"] = linear.params["bias"]
    ours.update({f"readout.bn.{k}": v for k, v in _bn_state(readout_bn).items()})
    try:
        model.load_state_dict({k: v.detach().to(torch.float32) if v.is_floating_point() else v
                               for k, v in ours.items()})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a {model_type}: {err}") from err
    model.input_spec = type(model.input_spec)(history, frame, frame, TDR_FRAME_RATE, 1)
    model.norm_stats = _norm_stats(data.get("norm_stats"), path)
    cells = data.get("cells", hyps.get("cells"))
    model.cell_ids = [str(_plain(c)) for c in cells] if isinstance(cells, (list, tuple, np.ndarray)) and \
        len(cells) == n_cells else None
    folded = [d for _, _, d in convs if d]
    model.metadata = {
        "source": "torch-deep-retina",
        "source_file": str(path),
        "model_type": model_type,
        "model_class": model_class.qualname if isinstance(model_class, StandIn) else _plain(model_class),
        "dataset": _plain(data.get("dataset", hyps.get("dataset"))),
        "stim_type": _plain(data.get("stim_type", hyps.get("stim_type"))),
        "cells": _plain(cells),
        "img_shape": _plain(img),
        "hyperparameters": _plain(hyps),
        "scores": {k: _plain(data[k]) for k in ("epoch", "loss", "val_loss", "val_acc", "test_pearson")
                   if k in data},
        "not_imported": loaded.stand_ins,
        "trusted_load": loaded.full,
    }
    if folded:
        model.metadata["folded_stacks"] = folded
    return model.eval()
