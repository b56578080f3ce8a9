"""Mode loadings and predicted rates side by side with a recording: TimeSeries in a ``codec`` module.

:func:`export_modes_nwb` copies an NWB recording and appends a processing module ``codec`` holding
``mode_loadings`` (bins × modes, dimensionless SAE codes) and, when given, ``predicted_rates``
(bins × cells) on the recording's time axis, so NWB tools (nwbwidgets, neurosift) show them next to the
stimulus and the spikes. The copy is written atomically; the source file is never modified.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, ModesError, OutputExistsError
from ..io_utils import atomic_path
from ..recordings.nwb import CODEC_MODULE

__all__ = ["export_modes_nwb", "MODULE_NAME"]

MODULE_NAME = CODEC_MODULE  # read_nwb never takes this module's series as responses (they stay readable by name)


def _check_series(name: str, data: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ModesError(f"{name}: expected shape ({n}, k) to match the {n} timestamps; found {arr.shape}")
    return arr


def export_modes_nwb(source: str | os.PathLike, out: str | os.PathLike, loadings: np.ndarray,
                     timestamps: np.ndarray, *, rates: np.ndarray | None = None,
                     rate_unit: str = "spikes per bin", mode_names: Sequence[str] | None = None,
                     cell_ids: Sequence[str] | None = None, description: str = "",
                     overwrite: bool = False) -> Path:
    """Copy NWB ``source`` to ``out`` with a ``codec`` processing module of loadings (and predicted rates).

    ``loadings (n, n_modes)`` and ``rates (n, n_cells)`` are sampled at ``timestamps (n,)`` in seconds
    on the recording's clock (for bin t: the start time of frame t, ``recording.frame_times[bins]``).
    ``rate_unit`` names the model's output unit. Returns ``Path(out)``.
    """
    from pynwb import NWBHDF5IO, TimeSeries

    src, dst = Path(source), Path(out)
    if not src.exists():
        raise FileFormatError(f"{src}: NWB file not found")
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst}: exists; pass overwrite=True to replace it")
    if src.resolve() == dst.resolve():
        raise ModesError(f"out: must differ from the source recording {src} (the recording is never modified)")
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0 or not np.all(np.diff(ts) > 0):
        raise ModesError(f"timestamps: expected a 1-D strictly increasing array in seconds; found shape {ts.shape}")
    load = _check_series("loadings", loadings, ts.size)
    names = list(mode_names) if mode_names is not None else [f"mode{i}" for i in range(load.shape[1])]
    if len(names) != load.shape[1]:
        raise ModesError(f"mode_names: expected {load.shape[1]} names; found {len(names)}")
    steps = np.diff(ts)
    regular = steps.size > 0 and np.allclose(steps, steps[0], rtol=1e-9, atol=0.0)
    # a regular grid is stored as starting_time + rate (NWB best practice), else as timestamps
    clock = {"starting_time": float(ts[0]), "rate": float(1.0 / steps[0])} if regular else {"timestamps": ts}
    with atomic_path(dst, suffix=".nwb.tmp") as tmp:
        shutil.copyfile(src, tmp)
        with NWBHDF5IO(str(tmp), mode="a") as io:
            nwb = io.read()
            if MODULE_NAME in nwb.processing:
                raise ModesError(f"{src}: already has a processing module {MODULE_NAME!r}")
            mod = nwb.create_processing_module(
                MODULE_NAME, "CODEC contribution modes and model predictions (retina-codec)"
                + (f": {description}" if description else ""))
            mod.add(TimeSeries(
                name="mode_loadings", data=load, unit="a.u.", **clock,
                description="per-bin loadings (sparse-autoencoder codes) of the contribution modes; "
                            "columns: " + ", ".join(names),
                comments="dimensionless; 0 = mode inactive"))
            if rates is not None:
                r = _check_series("rates", rates, ts.size)
                cells = list(cell_ids) if cell_ids is not None else [str(i) for i in range(r.shape[1])]
                if len(cells) != r.shape[1]:
                    raise ModesError(f"cell_ids: expected {r.shape[1]} ids; found {len(cells)}")
                mod.add(TimeSeries(
                    name="predicted_rates", data=r, unit=rate_unit,
                    **(clock if regular else {"timestamps": mod["mode_loadings"]}),
                    description="model-predicted response of each cell per bin; columns: cells "
                                + ", ".join(cells)))
            io.write(nwb)
    return dst
