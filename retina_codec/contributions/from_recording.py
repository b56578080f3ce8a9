"""The ``retina-codec contributions`` job as one library call: a model (path or name) and an NWB recording
in, a contribution store out (:func:`contributions_from_recording`).

Everything is checked before the long run starts: the output path, the device, the layers, and whether one
bin's path can fit in memory at all (:func:`check_steps_memory`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ContributionError
from ..io_utils import check_new_output, format_bytes
from ..models import load_model
from ..recordings.nwb import read_nwb
from ..stores.contributions import read_completeness
from ..torch_utils.devices import free_memory, resolve_device
from .sources import as_source
from .store import write_contributions
from .targets import Target

__all__ = ["ContributionRun", "contributions_from_recording", "check_steps_memory"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, None: None}


@dataclass
class ContributionRun:
    """What :func:`contributions_from_recording` wrote: the store ``path``, its per-layer completeness
    ``summary`` (``{layer: {"total_rel", "median_rel", ...}}``) and the number of bins ``n_bins``
    (``summary`` is empty and ``n_bins`` 0 on a torch.distributed rank other than 0)."""

    path: Path
    summary: dict[str, dict[str, float]]
    n_bins: int


def check_steps_memory(steps: int, model: Any, rec: Any, device: str | None, dtype: str | None) -> None:
    """A :class:`~retina_codec.errors.ContributionError` naming ``--steps`` when one bin's path (``steps + 1``
    interpolated inputs of the model's window, and as many input gradients) needs more memory than ``device``
    has free.

    A lower bound: the engine needs more (activations of every layer along the path), so a path that does not
    fit by this count can never run; refused before any memory is allocated."""
    spec = getattr(model, "input_spec", None)
    history = int(getattr(spec, "history", 40) or 40)
    frame = tuple(getattr(rec, "frame_shape", ()) or (getattr(spec, "height", 1), getattr(spec, "width", 1)))
    itemsize = 8 if dtype == "float64" else 4
    need = 2 * (int(steps) + 1) * history * math.prod(int(v) for v in frame) * itemsize
    free = free_memory(device or "auto")
    if free is not None and need > free:
        raise ContributionError(f"--steps: expected at most {max(1, int(steps * free / need))} path steps here, found "
                                f"{steps}: one bin's path of {steps + 1} windows of {history}x"
                                f"{'x'.join(str(v) for v in frame)} ({dtype or 'float32'}) with its gradients needs "
                                f"{format_bytes(need)}, more than the {format_bytes(free)} free "
                                f"on {device or 'the default device'}")


def contributions_from_recording(
    model: str | os.PathLike, recording: str | os.PathLike, out: str | os.PathLike, target: Target, *,
    layers: list[str] | None = None, stimulus: str | None = None, responses: str | None = None,
    split: str = "test", max_bins: int | None = None, reference_split: str | None = None,
    method: str = "conductance", rule: str = "trapezoid", steps: int = 20, baseline: float = 0.0,
    reduce: list[str] | None = ("ei_split", "spatial_sum"), batch_size: int | str = "auto",
    device: str | None = None, dtype: str | None = None, resume: bool = True, overwrite: bool = False,
    trust: bool = False, session: str | None = None, fast_conv: str = "auto", channels_last: bool = False,
    autocast: bool = False, batched_backward: str = "auto",
) -> ContributionRun:
    """Load ``model`` and ``recording`` (NWB, ``stimulus``), compute the contributions of ``layers`` (default:
    the model's hidden layers) to ``target`` over the bins of ``split`` (``"all"``: every bin; ``max_bins``:
    only its first N) and write the store ``out`` (resumable; :func:`~.store.write_contributions`).

    ``reference_split``: the split whose model outputs give a surprisal target its mean and covariance
    (default ``split``, all of it also when ``max_bins`` cuts the bins). ``reduce``: ``None`` or
    ``["none"]`` for full maps. ``dtype``: ``"float32"`` / ``"float64"`` / ``None`` (the model's).
    """
    check_new_output(out, overwrite)
    if device is not None:
        resolve_device(device)  # a DeviceError (one line) before the model and recording are read
    net = load_model(model, trust=trust, session=session)
    rec = read_nwb(recording, stimulus=stimulus, responses=responses)
    bins_split = None if split == "all" else split
    full_split = bins_split
    if max_bins is not None:
        if max_bins < 1:
            raise ContributionError(f"--max-bins: expected at least 1 bin, found {max_bins}")
        spec = getattr(net, "input_spec", None)
        bins_split = rec.head_interval(bins_split, max_bins, int(getattr(spec, "history", 40)),
                                       int(getattr(spec, "offset", 1)))
    layers = list(layers or getattr(net, "hidden_layers", ()) or [])
    if not layers:
        raise ContributionError("--layers: the model names no hidden layers; give layer names")
    if reduce is not None and [r.lower() for r in reduce] == ["none"]:
        reduce = None
    check_steps_memory(steps, net, rec, device, dtype)
    reference = None
    if reference_split and reference_split != split:
        reference = as_source(rec, net, split=None if reference_split == "all" else reference_split)
    elif max_bins is not None:  # surprisal moments from the whole split, not only its first bins
        reference = as_source(rec, net, split=full_split)
    attrs = {"model_path": str(model), "recording_path": str(recording)}
    if target.describe().get("name") == "surprisal":  # which model rates gave the surprisal's mean and covariance
        attrs["surprisal_reference"] = (f"model rates over the {reference_split or split!r} split of "
                                        f"stimulus {rec.stimulus_name!r}")
    path = write_contributions(
        net, rec, out, layers, target=target, method=method, steps=steps, rule=rule, baseline=baseline,
        reduce=list(reduce) if reduce is not None else None, batch_size=batch_size, device=device,
        dtype=_DTYPES[dtype], split=bins_split, reference=reference, resume=resume, attrs=attrs,
        fast_conv=fast_conv, channels_last=channels_last or None, autocast=autocast,
        batched_backward=batched_backward,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return ContributionRun(Path(path), {}, 0)
    summary, n = read_completeness(path)
    return ContributionRun(Path(path), summary, n)
