"""Every receptive-field estimate of a model and a recording in one call (what ``retina-codec rf`` stores).

:func:`compute_rfs` gives, for the chosen cells: the STA from recorded spikes (when the responses are
counts), the model STA (mean input gradient over white noise), their rank-1 parts and Gaussian fits, and,
given per-bin mode loadings, the mode-conditioned RFs and dynamic-RF sources in one streamed pass.
:func:`estimate_rfs` is the whole command: load the model and the recording, check a modes store against
them, compute, and write the RF store.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModesError, ShapeMismatchError
from ..hashing import model_hash, model_mismatch
from ..models import load_model
from ..recordings.cells import resolve_cells
from ..recordings.nwb import read_nwb
from ..stores.codec import to_json
from ..stores.modes import read_loadings, read_modes_header
from ..stores.rf import write_rf
from ..torch_utils.devices import resolve_device
from .conditioned import mode_conditioned_rfs
from .decompose import space_time_svd
from .gaussian_fit import fit_gaussians
from .irf import model_window
from .model_sta import model_sta_gradient
from .sta import spike_triggered_average

__all__ = ["GAUSSIAN_FIELDS", "RFEstimate", "compute_rfs", "estimate_rfs"]

#: the fields of a :class:`~retina_codec.rf.gaussian_fit.GaussianFit`, in order (the ``gaussian`` group)
GAUSSIAN_FIELDS = ("center_y", "center_x", "sigma_major", "sigma_minor", "angle", "amplitude", "offset", "r2")


def compute_rfs(model: Any, rec: Any, *, cells: list[int] | None = None, loadings: np.ndarray | None = None,
                bins: np.ndarray | None = None, split: str | None = "test", threshold: float = 0.0,
                max_combinations: int = 16, keep: str = "full", model_sta_samples: int = 1024,
                batch_size: int = 64, device: str | torch.device | None = None,
                quiet: bool | None = None) -> dict[str, Any]:
    """Every RF result the ``rf`` command stores, as a dict of group name -> result (``None`` when skipped),
    plus ``cell_names``.

    ``sta``: :class:`~retina_codec.rf.sta.SpikeTriggeredAverage` over ``split`` (``None`` = every bin),
    computed on ``device`` (``None``: CUDA when present); ``model_sta``: ``{gradient (C, h, H, W),
    cells, n_samples}``; ``rank1`` / ``gaussian``: of the model STA (else the STA); ``conditioned`` /
    ``sources``: with ``loadings (T_b, K)`` at ``bins`` (default: the window bins of ``split``).
    """
    history, offset = model_window(model)
    cell_idx = list(range(rec.n_cells)) if cells is None else list(cells)
    split = split if split in rec.intervals else None
    out: dict[str, Any] = {"cell_names": [rec.cell_ids[i] for i in cell_idx]}
    out["sta"] = spike_triggered_average(rec, split, history=history, offset=offset, cells=cell_idx,
                                         device=device, quiet=quiet) if rec.response_unit == "count" else None
    out["model_sta"] = None
    if model_sta_samples > 0:
        grad = model_sta_gradient(model, cell_idx, model_sta_samples, batch_size=batch_size, quiet=quiet)
        out["model_sta"] = {"gradient": grad, "cells": np.asarray(cell_idx), "n_samples": model_sta_samples}
    ref = out["model_sta"]["gradient"] if out["model_sta"] else (out["sta"].sta if out["sta"] else None)
    out["rank1"] = out["gaussian"] = None
    if ref is not None:
        dec = space_time_svd(ref)
        out["rank1"] = {"spatial": dec.spatial[:, 0], "temporal": dec.temporal[:, 0],
                        "singular_values": dec.singular_values[:, 0], "explained": dec.explained[:, 0],
                        "source": "model_sta" if out["model_sta"] else "sta"}
        fits = fit_gaussians(dec.spatial[:, 0])
        out["gaussian"] = {f: np.array([getattr(g, f) for g in fits]) for f in GAUSSIAN_FIELDS}
    out["conditioned"] = out["sources"] = None
    if loadings is not None:
        if bins is None:
            bins = rec.window_bins(split, history, offset)
        cond, src = mode_conditioned_rfs(model, rec, loadings, bins, cells=cell_idx, threshold=threshold,
                                         max_combinations=max_combinations, keep=keep, batch_size=batch_size,
                                         quiet=quiet)
        out["conditioned"], out["sources"] = cond, src
    return out


def _check_modes_link(path: str, stimulus: str, model: Any) -> dict[str, Any]:
    """The modes file's attributes; a :class:`~retina_codec.errors.ModesError` when its contributions were
    computed on another stimulus or with another model (its bins index that movie, its loadings that model's
    units)."""
    attrs, _ = read_modes_header(path)  # attributes only: the loadings are read once, below
    link = attrs.get("contributions_attrs") or {}
    source = link.get("source") if isinstance(link, dict) else None
    theirs = source.get("stimulus") if isinstance(source, dict) else None
    if theirs is not None and str(theirs) != stimulus:
        raise ModesError(f"--modes: {path} holds modes of contributions to stimulus {theirs!r}, not {stimulus!r}; "
                         f"pass --stimulus {theirs}")
    stored = link.get("model_hash") if isinstance(link, dict) else None
    if stored is None:  # a store from the Python API or with stripped attributes: say the check was not made
        warnings.warn(f"--modes: {path}: attribute contributions_attrs/model_hash: expected the hash of the model "
                      "the contributions were computed with, found none; cannot check that the modes belong to "
                      "this model (their loadings may index another model's units)", RuntimeWarning, stacklevel=3)
    differs = model_mismatch(model, stored)
    if differs:
        raise ModesError(f"--modes: the model is not the model the contributions of {path} were computed with "
                         f"({differs})")
    return attrs


def _check_loadings(path: str, loadings: np.ndarray, bins: np.ndarray | None, rec: Any, model: Any) -> None:
    """A :class:`~retina_codec.errors.RetinaCodecError` naming the modes file when its loadings are not finite or
    its bins do not index full model windows of the recording (checked before any IRF is computed)."""
    bad = ~np.isfinite(loadings)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ModesError(f"--modes: {path}: loadings: expected finite values, found {int(bad.sum())} NaN/inf "
                         f"(first in row {row})")
    if bins is None or not len(bins):
        return
    history, offset = model_window(model)
    valid = rec.window_bins(None, history, offset)
    outside = ~np.isin(np.asarray(bins, np.int64), valid)
    if outside.any():
        b = np.asarray(bins)[outside]
        raise ShapeMismatchError(f"--modes: {path}: bins: expected bins with a full {history}-frame window inside "
                                 f"the {rec.n_frames} frames of {rec.stimulus_name!r} in the recording, found "
                                 f"{int(outside.sum())} outside ({int(b.min())}..{int(b.max())})")


@dataclass
class RFEstimate:
    """What :func:`estimate_rfs` computed and wrote: the results (:func:`compute_rfs`), the store's path and
    what figures and messages need of the recording."""

    results: dict[str, Any]
    path: Path
    stimulus: str
    frame_rate: float
    response_unit: str
    mode_names: list[str] | None = None
    groups: list[str] = field(default_factory=list)


def estimate_rfs(model: str | os.PathLike, recording: str | os.PathLike, out: str | os.PathLike, *,
                 modes: str | None = None, stimulus: str | None = None, responses: str | None = None,
                 split: str | None = None, cells: Sequence[str] | None = None, threshold: float = 0.0,
                 max_combinations: int = 16, keep: str = "full", model_sta_samples: int = 1024,
                 batch_size: int = 64, device: str = "auto", trust: bool = False, session: str | None = None,
                 quiet: bool | None = None) -> RFEstimate:
    """``retina-codec rf``: load ``model`` on ``device``, read ``recording`` (its ``stimulus`` series, its
    ``responses``), compute every RF of ``cells`` (ids or indices; default all) with :func:`compute_rfs` —
    the STA over ``split`` (``None`` / ``"all"``: every bin of the stimulus) on the same device, and with a
    ``modes`` store (checked against the model and the stimulus first) the mode-conditioned RFs — and
    write the RF store ``out`` atomically."""
    dev = resolve_device(device)
    net = load_model(model, device=dev, trust=trust, session=session)
    split = None if split == "all" else split
    with read_nwb(recording, stimulus=stimulus, responses=responses) as rec:
        if getattr(net, "norm_stats", None) is not None:
            rec.norm_mean, rec.norm_std = (float(v) for v in net.norm_stats)
        idx = resolve_cells(cells, rec.cell_ids, what="--cells") if cells else None
        if split is not None and split not in rec.intervals:  # a misspelt split is not "every bin"
            rec.split_bins(split)  # raises UnknownIntervalError naming the available splits
        loadings = bins = names = None
        modes_attrs: dict[str, Any] = {}
        if modes:
            modes_attrs = _check_modes_link(modes, rec.stimulus_name, net)
            loadings, bins, names = read_loadings(modes)
            loadings = loadings.astype(np.float64)
            _check_loadings(modes, loadings, bins, rec, net)
        results = compute_rfs(net, rec, cells=idx, loadings=loadings, bins=bins, split=split, threshold=threshold,
                              max_combinations=max_combinations, keep=keep, model_sta_samples=model_sta_samples,
                              batch_size=batch_size, device=dev, quiet=quiet)
    attrs = {"method": "rf", "model": str(model), "model_hash": model_hash(net),
             "recording": str(recording), "modes": str(modes or ""), "threshold": threshold,
             "keep": keep, "history": int(net.input_spec.history),
             "offset": int(getattr(net.input_spec, "offset", 1)), "stimulus": rec.stimulus_name,
             "frame_rate": float(rec.frame_rate),  # what the figures (figures/, report) read: lags, ids, names
             "cells": to_json(idx if idx is not None else list(range(len(results["cell_names"]))), sort_keys=False),
             "cell_ids": to_json(results["cell_names"], sort_keys=False), "sta_split": split or "all"}
    if modes:
        attrs.update({"mode_names": to_json(names, sort_keys=False), "layer": str(modes_attrs.get("layer", ""))})
    write_rf(out, attrs=attrs, **{k: v for k, v in results.items() if k != "cell_names"})
    return RFEstimate(results, Path(out), rec.stimulus_name, float(rec.frame_rate), rec.response_unit, names,
                      [k for k, v in results.items() if v is not None and k != "cell_names"])
