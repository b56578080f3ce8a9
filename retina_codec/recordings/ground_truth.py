"""Ground truth that a simulated recording carries: what the model should recover.

Conventions: positions are ``(y, x)`` in stimulus pixels (row, column); time series are on the
recording's frame grid (one row per frame bin); filters are in window order, oldest frame first, for
the default ``offset=1`` (the filter's last frame multiplies frame ``t - 1`` for the response in bin t).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["GroundTruth"]


@dataclass
class GroundTruth:
    """Known internals of a simulated retina, aligned with a :class:`~retina_codec.recordings.Recording`.

    Attributes
    ----------
    true_rates : (T, N) float32, the ganglion cells' firing rates in Hz before Poisson sampling.
    cell_types : (N,) str, one of ``"ON"``, ``"OFF"``, ``"ON-OFF"``, ``"LN"`` (and others the simulator
        defines).
    cell_centers : (N, 2) float32, receptive-field centres ``(y, x)`` in pixels.
    pooling_weights : (N, S) float32, weight of each bipolar subunit in each ganglion cell.
    subunit_positions : (S, 2) float32, bipolar subunit centres ``(y, x)`` in pixels.
    subunit_polarity : (S,) int8, +1 for ON bipolar subunits, -1 for OFF.
    amacrine_positions : (A, 2) float32, amacrine cell centres ``(y, x)`` in pixels.
    amacrine_weights : (S, A) float32, inhibition of each bipolar terminal by each amacrine cell.
    ln_cells : (L,) int, indices of the LN cells among the N cells.
    ln_filters : (L, h, H, W) float32, their space–time filters in window order (oldest first).
    bipolar_traces : (T, S) float32, bipolar terminal outputs (after amacrine inhibition and
        rectification) in arbitrary units.
    amacrine_traces : (T, A) float32, amacrine outputs in arbitrary units.
    params : JSON-serialisable dict of every simulator setting (seed, sizes, filter constants).
    amacrine_pooling : (A, S) float32, input weight of each bipolar subunit's (pre-inhibition) output
        on each amacrine cell (empty ``(0, 0)`` when not known).
    """

    true_rates: np.ndarray
    cell_types: np.ndarray
    cell_centers: np.ndarray
    pooling_weights: np.ndarray
    subunit_positions: np.ndarray
    subunit_polarity: np.ndarray
    amacrine_positions: np.ndarray
    amacrine_weights: np.ndarray
    ln_cells: np.ndarray
    ln_filters: np.ndarray
    bipolar_traces: np.ndarray
    amacrine_traces: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    amacrine_pooling: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    TIME_FIELDS = ("true_rates", "bipolar_traces", "amacrine_traces")

    def time_slice(self, start: int, stop: int) -> GroundTruth:
        """The same ground truth restricted to frame bins ``start:stop`` (time series only)."""
        kw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for f in self.TIME_FIELDS:
            kw[f] = kw[f][start:stop]
        return GroundTruth(**kw)

    def select_cells(self, idx: Sequence[int]) -> GroundTruth:
        """The same ground truth for the ganglion cells ``idx`` (in that order): ``true_rates`` columns,
        per-cell rows, and the LN cells among them (``ln_cells`` re-indexed into ``idx``, with their
        filters). Subunit and amacrine fields are shared."""
        idx = np.asarray(idx, dtype=np.int64)
        kw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        n = np.asarray(self.true_rates).shape[1] if np.ndim(self.true_rates) == 2 else len(self.cell_types)
        kw["true_rates"] = np.asarray(self.true_rates)[:, idx]
        for f in ("cell_types", "cell_centers", "pooling_weights"):
            if len(np.asarray(kw[f])) == n:
                kw[f] = np.asarray(kw[f])[idx]
        ln = [int(c) for c in np.asarray(self.ln_cells)]
        keep = [(j, ln.index(int(c))) for j, c in enumerate(idx) if int(c) in ln]
        kw["ln_cells"] = np.array([j for j, _ in keep], dtype=np.asarray(self.ln_cells).dtype)
        if len(np.asarray(self.ln_filters)) == len(ln):
            kw["ln_filters"] = np.asarray(self.ln_filters)[[k for _, k in keep]]
        return GroundTruth(**kw)

    def cells_of_type(self, cell_type: str) -> np.ndarray:
        """Indices of the cells of one type."""
        return np.flatnonzero(np.asarray(self.cell_types) == cell_type)
