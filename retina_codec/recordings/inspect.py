"""Describe a recording file (NWB or Baccus-lab h5): its series, and per stimulus the frame grid, cells,
mean rates, splits and whether ground truth is present."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pynwb import TimeSeries
from pynwb.misc import Units

from ..errors import FileFormatError
from .hdf5_files import is_nwb_file, open_hdf5
from .labh5 import is_lab_h5, read_lab_h5
from .nwb import open_nwb, read_nwb, stimulus_series
from .recording import Recording

__all__ = ["describe", "format_description"]


def _recording_info(rec: Recording, responses: str) -> dict[str, Any]:
    info = rec.summary()
    info["responses"] = responses
    return info


def _nwb_series(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every TimeSeries and the Units table (path, type, shape, dtype), and the stimulus series' names."""
    io, nwbfile = open_nwb(path)
    try:
        rows = []
        for obj in nwbfile.objects.values():
            if isinstance(obj, TimeSeries):
                data = obj.data
                shape = tuple(int(s) for s in data.shape) if hasattr(data, "shape") else (len(data),)
                dtype = str(getattr(data, "dtype", type(data).__name__))
                where = obj.parent.name if obj.parent is not None and obj.parent is not nwbfile else ""
                if obj.name in nwbfile.stimulus and nwbfile.stimulus[obj.name] is obj:
                    where = "stimulus"
                elif obj.name in nwbfile.acquisition and nwbfile.acquisition[obj.name] is obj:
                    where = "acquisition"
                elif where:
                    where = f"processing/{where}" if where in nwbfile.processing else where
                rows.append({"path": f"{where}/{obj.name}" if where else obj.name, "type": type(obj).__name__,
                             "shape": shape, "dtype": dtype})
            elif isinstance(obj, Units):
                n_spikes = int(len(obj["spike_times"].target.data)) if "spike_times" in obj.colnames else 0
                rows.append({"path": "units", "type": "Units", "shape": (len(obj.id),), "dtype": "spike times",
                             "n_spikes": n_spikes})
        rows.sort(key=lambda r: (not r["path"].startswith("stimulus"), r["path"]))
        names = sorted(stimulus_series(nwbfile))
    finally:
        io.close()
    return rows, names


def _h5_series(f: h5py.File) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            rows.append({"path": name, "type": "dataset", "shape": tuple(int(s) for s in obj.shape),
                         "dtype": str(obj.dtype)})

    f.visititems(visit)
    return rows


def describe(
    path: str | os.PathLike,
    stimulus: str | None = None,
    responses: str | None = None,
    splits: Sequence[str] | None = None,
    response: str = "binned",
    validate: bool = True,
) -> dict[str, Any]:
    """A plain dict describing the file: ``format``, ``size_bytes``, ``series`` (path, type, shape, dtype)
    and ``recordings`` (one :meth:`Recording.summary` per stimulus series, or only ``stimulus``).

    ``responses`` / ``splits`` are passed to :func:`read_nwb`; ``response`` to :func:`read_lab_h5`;
    ``validate`` (scan float frames for NaN / inf) to both. Errors in the file raise the same
    exceptions as the readers.
    """
    path = Path(path)
    f = open_hdf5(path)
    try:
        kind = "nwb" if is_nwb_file(f) else "lab-h5" if is_lab_h5(f) else None
        h5_rows = _h5_series(f) if kind == "lab-h5" else []
    finally:
        f.close()
    out: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    if kind is None:
        raise FileFormatError(f"{path}: neither an NWB file nor a Baccus-lab h5 file (train/ and test/ groups)")
    recordings = []
    if kind == "nwb":
        out["format"] = "NWB"
        out["series"], names = _nwb_series(path)
        # no stimulus series at all: read_nwb raises the MissingStimulusError that says so
        for name in [stimulus] if stimulus is not None else (names or [None]):
            with read_nwb(path, stimulus=name, responses=responses, splits=splits, validate=validate) as rec:
                recordings.append(_recording_info(rec, rec.provenance.get("responses", "?")))
    else:
        out["format"] = "Baccus-lab h5"
        out["series"] = h5_rows
        with read_lab_h5(path, response=response, validate=validate) as rec:
            recordings.append(_recording_info(rec, f"response/{response}"))
    out["recordings"] = recordings
    return out


def _rates_text(rates: Sequence[float], ids: Sequence[str], limit: int = 12) -> str:
    r = np.asarray(rates, dtype=np.float64)
    if len(r) == 0:
        return "none"
    if len(r) <= limit:
        return ", ".join(f"{i} {v:.2f}" for i, v in zip(ids, r))
    return (f"min {np.nanmin(r):.2f}, median {np.nanmedian(r):.2f}, mean {np.nanmean(r):.2f}, "
            f"max {np.nanmax(r):.2f}")


def format_description(desc: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    lines = [f"file: {desc['path']} ({desc['format']}, {desc['size_bytes'] / 1e6:.2f} MB)", "series:"]
    width = max((len(r["path"]) for r in desc["series"]), default=10)
    for r in desc["series"]:
        extra = f", {r['n_spikes']} spikes" if "n_spikes" in r else ""
        lines.append(f"  {r['path']:<{width}}  {r['type']:<18} shape {r['shape']}  {r['dtype']}{extra}")
    for rec in desc["recordings"]:
        t, h, w = rec["stimulus_shape"]
        lines.append(f"stimulus {rec['stimulus_name']!r}: {t} frames of {h}x{w} (H x W) at "
                     f"{rec['frame_rate_hz']:g} Hz, duration {rec['duration_s']:.2f} s from {rec['start_s']:.3f} s")
        lines.append(f"  cells: {rec['n_cells']}; responses: {rec['responses']} ({rec['response_unit']})")
        lines.append(f"  mean rates (Hz): {_rates_text(rec['mean_rate_hz'], rec['cell_ids'])}")
        if rec["intervals"]:
            parts = [f"{k} {v['n_intervals']}x, {v['duration_s']:.2f} s, {v['n_bins']} bins"
                     for k, v in rec["intervals"].items()]
            lines.append("  splits: " + "; ".join(parts))
        else:
            lines.append("  splits: none")
        starts = rec.get("segment_starts", [0])
        if len(starts) > 1:
            lines.append(f"  movie segments: {len(starts)}, starting at frames {', '.join(map(str, starts))}")
        lines.append(f"  ground truth: {'yes' if rec['has_ground_truth'] else 'no'}")
    return "\n".join(lines)
