"""``retina-codec rf MODEL REC.nwb [--modes MODES.h5] --out RF.h5``: receptive fields and their figures.

Computes, for the chosen cells of a recording: the STA from recorded spikes (when the responses are
counts), the model STA (mean input gradient over white noise), and, with ``--modes``, the mode-conditioned
RFs (single modes and exact combinations) and dynamic-RF sources in one streamed pass over the bins the
modes were computed on. Writes ``RF.h5`` atomically and PNG figures (RF grid, rank-1 panels, one
CODEC Fig. 8-style gallery per cell) into ``--figures`` (default: ``<out stem>_figures/``).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .options import (
    add_overwrite_argument,
    add_responses_argument,
    add_session_argument,
    add_trust_argument,
    check_output,
    device_name,
    finite_float,
    non_negative_int,
    positive_int,
)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``rf`` sub-command."""
    p = subparsers.add_parser(
        "rf", help="STA, model STA, mode-conditioned RFs and dynamic-RF sources, with figures",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("model", help="fitted model checkpoint (retina-codec folder, torch-deep-retina .pt or openretina .ckpt)")
    p.add_argument("recording", help="recording (.nwb)")
    p.add_argument("--out", required=True, help="output HDF5 file (written under a temporary name, renamed)")
    add_overwrite_argument(p)
    p.add_argument("--modes", help="modes file with per-bin loadings (datasets 'loadings' (T_b, K) and 'bins')")
    p.add_argument("--stimulus", help="stimulus series name in the NWB file (when it has several)")
    add_responses_argument(p)
    p.add_argument("--split", help="split whose bins the STA uses ('all' or default: every bin of the stimulus "
                   "— a recorded-spike STA needs no held-out data, and more bins give a cleaner STA)")
    p.add_argument("--cells", nargs="+", help="cell ids or indices (default: every cell)")
    p.add_argument("--threshold", type=finite_float, default=0.0, help="a mode is active when its loading > this")
    p.add_argument("--max-combinations", type=positive_int, default=16, help="most frequent exact combinations kept")
    p.add_argument("--keep", choices=("full", "rank1"), default="full",
                   help="accumulate full IRFs (default) or only each bin's rank-1 parts (less memory)")
    p.add_argument("--model-sta-samples", type=non_negative_int, default=1024,
                   help="white-noise windows for the model STA (default 1024; 0 skips it)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per IRF batch")
    p.add_argument("--device", type=device_name, default="auto", help="torch device (auto: CUDA when present)")
    add_trust_argument(p)
    add_session_argument(p)
    p.add_argument("--figures", help="figure folder (default: <out stem>_figures next to OUT)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.set_defaults(func=run)


def read_loadings(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """``(loadings (T_b, K), bins (T_b,), mode names)`` from a modes store (``retina-codec modes``)."""
    from ..modes.store import read_loadings as read_modes_loadings

    loadings, bins, names = read_modes_loadings(path)
    return np.asarray(loadings, np.float64), np.asarray(bins), list(names)


def _cells(arg: list[str] | None, ids: list[str]) -> list[int] | None:
    """Indices of ``--cells`` (ids or indices); an unknown id or an index out of range is a
    :class:`~retina_codec.errors.RecordingError` (one line on stderr)."""
    from ..errors import RecordingError
    from ..recordings.recording import cell_index

    if not arg:
        return None
    out = []
    for c in arg:
        i = cell_index(c, ids)
        if i is not None:
            out.append(i)
        else:
            raise RecordingError(f"--cells: {c!r} is neither a cell id nor an index in [0, {len(ids)}) of the "
                                 f"recording; its cells are {ids}")
    return out


def _check_modes_link(path: str, stimulus: str, model: Any) -> dict[str, Any]:
    """The modes file's attributes; a :class:`~retina_codec.errors.ModesError` when its contributions were
    computed on another stimulus or with another model (its bins index that movie, its loadings that model's
    units)."""
    from ..errors import ModesError
    from ..hashing import model_mismatch
    from ..modes.store import read_modes

    attrs = read_modes(path).attrs
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
                      "this model (their loadings may index another model's units)", RuntimeWarning, stacklevel=2)
    differs = model_mismatch(model, stored)
    if differs:
        raise ModesError(f"--modes: the model is not the model the contributions of {path} were computed with "
                         f"({differs})")
    return attrs


def _check_loadings(path: str, loadings: np.ndarray, bins: np.ndarray | None, rec: Any, model: Any) -> None:
    """A :class:`~retina_codec.errors.RetinaCodecError` naming the modes file when its loadings are not finite or
    its bins do not index full model windows of the recording (checked before any IRF is computed)."""
    from ..errors import ModesError, ShapeMismatchError
    from ..rf.irf import model_window

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


def run(args: argparse.Namespace) -> int:
    """Compute, store and plot; returns 0."""

    from ..models import load_model
    from ..recordings.nwb import read_nwb
    from ..torch_utils.devices import resolve_device

    check_output(args.out, args.overwrite)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, trust=args.trust, session=args.session)
    with read_nwb(args.recording, stimulus=args.stimulus, responses=args.responses) as rec:
        if getattr(model, "norm_stats", None) is not None:
            rec.norm_mean, rec.norm_std = (float(v) for v in model.norm_stats)
        cells = _cells(args.cells, rec.cell_ids)
        if args.split == "all":
            args.split = None
        if args.split is not None and args.split not in rec.intervals:  # a misspelt split is not "every bin"
            rec.split_bins(args.split)  # raises UnknownIntervalError naming the available splits
        loadings = bins = names = None
        modes_attrs: dict[str, Any] = {}
        if args.modes:
            modes_attrs = _check_modes_link(args.modes, rec.stimulus_name, model)
            loadings, bins, names = read_loadings(args.modes)
            _check_loadings(args.modes, loadings, bins, rec, model)
        results = compute_rfs(model, rec, cells=cells, loadings=loadings, bins=bins, split=args.split,
                              threshold=args.threshold, max_combinations=args.max_combinations, keep=args.keep,
                              model_sta_samples=args.model_sta_samples, batch_size=args.batch_size)
    from ..hashing import model_hash
    from ..rf.store import write_rf

    attrs = {"method": "rf", "model": str(args.model), "model_hash": model_hash(model),
             "recording": str(args.recording), "modes": str(args.modes or ""), "threshold": args.threshold,
             "keep": args.keep, "history": int(model.input_spec.history),
             "offset": int(getattr(model.input_spec, "offset", 1)), "stimulus": rec.stimulus_name,
             "frame_rate": float(rec.frame_rate),  # what the figures (figures/, report) read: lags, ids, names
             "cells": json.dumps(cells if cells is not None else list(range(len(results["cell_names"])))),
             "cell_ids": json.dumps(results["cell_names"]), "sta_split": args.split or "all"}
    if args.modes:
        attrs.update({"mode_names": json.dumps(names), "layer": str(modes_attrs.get("layer", ""))})
    write_rf(args.out, attrs=attrs, **{k: v for k, v in results.items() if k != "cell_names"})
    log.info("wrote %s (%s)", args.out, ", ".join(k for k, v in results.items() if v is not None and k != "cell_names"))
    if results["sta"] is None:
        log.info("no STA: the responses of %s are rates (%s), not spike counts", args.recording, rec.response_unit)
    if not args.no_figures:
        fig_dir = Path(args.figures) if args.figures else Path(args.out).with_name(Path(args.out).stem + "_figures")
        written = write_figures(results, fig_dir, mode_names=names, frame_rate=rec.frame_rate)
        log.info("wrote %d figures to %s", len(written), fig_dir)
    return 0


def compute_rfs(model: Any, rec: Any, *, cells: list[int] | None = None, loadings: np.ndarray | None = None,
                bins: np.ndarray | None = None, split: str | None = "test", threshold: float = 0.0,
                max_combinations: int = 16, keep: str = "full", model_sta_samples: int = 1024,
                batch_size: int = 64, quiet: bool | None = None) -> dict[str, Any]:
    """Every RF result the command stores, as a dict of group name -> result (``None`` when skipped)."""
    from ..rf.conditioned import mode_conditioned_rfs
    from ..rf.decompose import space_time_svd
    from ..rf.gaussian_fit import fit_gaussians
    from ..rf.irf import model_window
    from ..rf.model_sta import model_sta_gradient
    from ..rf.sta import spike_triggered_average

    history, offset = model_window(model)
    cell_idx = list(range(rec.n_cells)) if cells is None else list(cells)
    split = split if split in rec.intervals else None
    out: dict[str, Any] = {"cell_names": [rec.cell_ids[i] for i in cell_idx]}
    out["sta"] = spike_triggered_average(rec, split, history=history, offset=offset, cells=cell_idx,
                                         quiet=quiet) if rec.response_unit == "count" else None
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
        out["gaussian"] = {f: np.array([getattr(g, f) for g in fits]) for f in
                           ("center_y", "center_x", "sigma_major", "sigma_minor", "angle", "amplitude",
                            "offset", "r2")}
    out["conditioned"] = out["sources"] = None
    if loadings is not None:
        if bins is None:
            bins = rec.window_bins(split, history, offset)
        cond, src = mode_conditioned_rfs(model, rec, loadings, bins, cells=cell_idx, threshold=threshold,
                                         max_combinations=max_combinations, keep=keep, batch_size=batch_size,
                                         quiet=quiet)
        out["conditioned"], out["sources"] = cond, src
    return out


def _file_part(name: str) -> str:
    """``name`` safe as part of a file name (an openretina cell id is ``"session/index"``)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def write_figures(results: dict[str, Any], fig_dir: Path, mode_names: list[str] | None = None,
                  frame_rate: float | None = None) -> list[Path]:
    """RF grid, rank-1 panels and one conditioned-RF gallery per cell; returns the PNG paths."""
    from ..plots.rf import plot_conditioned_gallery, plot_rank1, plot_rf_grid
    from ..rf.gaussian_fit import GaussianFit
    from ..rf.sta import window_lags

    fig_dir.mkdir(parents=True, exist_ok=True)
    names = results.get("cell_names")
    written = []
    r1 = results.get("rank1")
    lags_s = None
    if r1 is not None:
        h = r1["temporal"].shape[-1]
        lags_s = window_lags(h) / frame_rate if frame_rate else None
        g = results.get("gaussian")
        fits = [GaussianFit(*(float(g[f][i]) for f in ("center_y", "center_x", "sigma_major", "sigma_minor",
                                                        "angle", "amplitude", "offset", "r2")))
                for i in range(len(r1["spatial"]))] if g else None
        plot_rf_grid(r1["spatial"], fig_dir / "rf_grid.png", titles=names, fits=fits,
                     suptitle=f"rank-1 spatial RFs ({r1['source']})")
        plot_rank1(r1["spatial"], r1["temporal"], fig_dir / "rf_rank1.png", lags_s=lags_s, titles=names)
        written += [fig_dir / "rf_grid.png", fig_dir / "rf_rank1.png"]
    sta = results.get("sta")
    if sta is not None:
        from ..rf.decompose import space_time_svd

        dec = space_time_svd(np.nan_to_num(sta.sta))
        plot_rf_grid(dec.spatial[:, 0], fig_dir / "sta_grid.png", titles=names, suptitle="STA, rank-1 space")
        written.append(fig_dir / "sta_grid.png")
    cond = results.get("conditioned")
    if cond is not None:
        for c in range(len(cond.mode_spatial[0]) if len(cond.mode_spatial) else 0):
            name = names[c] if names else str(c)
            path = fig_dir / f"conditioned_{_file_part(name)}.png"
            plot_conditioned_gallery(cond, c, path, mode_names=mode_names, lags_s=lags_s, cell_name=name)
            written.append(path)
    return written
