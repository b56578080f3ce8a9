"""Where everything sits and who connects to whom: the simulated retina's anatomy, drawn from a seed.

Subunits: one ON and one OFF bipolar subunit at every position of a jittered square grid (ON subunits
first, then OFF, in the same position order). Amacrine cells: a coarser square grid. Ganglion cells of
each type tile the central square; circuit cells pool rectified bipolar terminals with Gaussian weights,
LN cells own a difference-of-Gaussians spatial filter instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import dog, gaussian_weights
from .presets import SimParams

__all__ = ["Layout", "make_layout", "CELL_TYPES"]

CELL_TYPES = ("OFF", "ON", "ON-OFF", "LN")
_ID_PREFIX = {"OFF": "off", "ON": "on", "ON-OFF": "onoff", "LN": "ln"}


@dataclass
class Layout:
    """The anatomy of one simulated retina (positions ``(y, x)`` in pixels).

    Attributes
    ----------
    cell_types : (N,) str, ``"OFF"``, ``"ON"``, ``"ON-OFF"`` or ``"LN"``, grouped in that order.
    cell_ids : (N,) str, e.g. ``"off00"``, ``"onoff01"``.
    cell_centers : (N, 2) RF centres.
    subunit_positions : (S, 2), ``S = 2 P``: ON subunits then OFF subunits at the same P positions.
    subunit_polarity : (S,) int8, +1 ON, -1 OFF.
    pooling_weights : (N, S) ganglion pooling of bipolar terminals (zero rows for LN cells); each
        pathway a cell pools sums to its pathway share (1 for ON or OFF cells).
    amacrine_positions : (A, 2).
    amacrine_pooling : (A, S) amacrine input weights on (pre-inhibition) bipolar output; rows sum to 1.
    amacrine_weights : (S, A) inhibition of each terminal by each amacrine, rows summing to
        ``amacrine_strength``.
    ln_cells : (L,) indices of the LN cells.
    ln_spatial : (L, H, W) LN spatial filters (sign = the cell's polarity).
    thresholds : (N,) output thresholds in generator s.d. units.
    target_rates : (N,) Hz, the mean rate each cell is calibrated to on every stimulus.
    """

    cell_types: np.ndarray
    cell_ids: list[str]
    cell_centers: np.ndarray
    subunit_positions: np.ndarray
    subunit_polarity: np.ndarray
    pooling_weights: np.ndarray
    amacrine_positions: np.ndarray
    amacrine_pooling: np.ndarray
    amacrine_weights: np.ndarray
    ln_cells: np.ndarray
    ln_spatial: np.ndarray
    thresholds: np.ndarray
    target_rates: np.ndarray

    @property
    def n_positions(self) -> int:
        """Number of subunit grid positions P (each holds an ON and an OFF subunit)."""
        return len(self.subunit_positions) // 2


def _grid(extent: tuple[float, float], spacing: float) -> np.ndarray:
    lo, hi = extent
    ticks = np.arange(lo, hi + 1e-9, spacing)
    yy, xx = np.meshgrid(ticks, ticks, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _tile(n: int, extent: tuple[float, float], rng: np.random.Generator, jitter: float) -> np.ndarray:
    """``n`` centres on a near-square grid spanning ``extent``, shifted and jittered at random."""
    rows = max(int(np.floor(np.sqrt(n))), 1)
    cols = -(-n // rows)
    lo, hi = extent
    ys = np.linspace(lo, hi, rows) if rows > 1 else np.array([(lo + hi) / 2])
    xs = np.linspace(lo, hi, cols) if cols > 1 else np.array([(lo + hi) / 2])
    pts = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)[:n]
    pts = pts + rng.uniform(-1.5, 1.5, size=2) + rng.normal(0, jitter, size=pts.shape)
    return np.clip(pts, lo - 2, hi + 2)


def make_layout(p: SimParams, rng: np.random.Generator) -> Layout:
    """Draw the anatomy from ``rng`` (deterministic for a given generator state)."""
    pos = _grid(p.subunit_extent, p.subunit_spacing)
    pos = pos + rng.normal(0, p.subunit_jitter, size=pos.shape)
    n_pos = len(pos)
    sub_pos = np.concatenate([pos, pos])
    polarity = np.concatenate([np.ones(n_pos, np.int8), -np.ones(n_pos, np.int8)])
    is_on = polarity > 0

    amacrine_pos = _grid(p.subunit_extent, p.amacrine_spacing)
    pool = gaussian_weights(amacrine_pos, sub_pos, p.amacrine_pool_sigma)
    pool /= pool.sum(1, keepdims=True)
    inhib = gaussian_weights(sub_pos, amacrine_pos, p.amacrine_inhibit_sigma, cutoff=np.inf)
    inhib *= p.amacrine_strength / inhib.sum(1, keepdims=True)

    counts = {"OFF": p.n_off, "ON": p.n_on, "ON-OFF": p.n_onoff, "LN": p.n_ln}
    types, ids, centers = [], [], []
    for t in CELL_TYPES:
        c = _tile(counts[t], p.ganglion_extent, rng, p.ganglion_jitter)
        types += [t] * counts[t]
        ids += [f"{_ID_PREFIX[t]}{i:02d}" for i in range(counts[t])]
        centers.append(c)
    centers = np.concatenate(centers)
    types_arr = np.asarray(types)
    n = len(types)

    sigma = {"OFF": p.pool_sigma_off, "ON": p.pool_sigma_on, "ON-OFF": p.pool_sigma_onoff}
    pooling = np.zeros((n, len(sub_pos)))
    for i, t in enumerate(types):
        if t == "LN":
            continue
        w = gaussian_weights(centers[i : i + 1], sub_pos, sigma[t])[0]
        on_share = {"ON": 1.0, "OFF": 0.0, "ON-OFF": rng.uniform(0.4, 0.6)}[t]
        for share, mask in ((on_share, is_on), (1 - on_share, ~is_on)):
            w[mask] = share * w[mask] / w[mask].sum() if share > 0 else 0.0
        pooling[i] = w

    ln_cells = np.flatnonzero(types_arr == "LN")
    ln_sign = np.where(np.arange(len(ln_cells)) % 2 == 0, 1.0, -1.0)  # alternate ON- and OFF-centre LN cells
    ln_spatial = dog(centers[ln_cells], p.frame_size, p.ln_center_sigma, p.ln_surround_sigma,
                     p.ln_surround_weight) * ln_sign[:, None, None]

    thresholds = rng.uniform(*p.threshold_range, size=n)
    thresholds[ln_cells] = p.ln_threshold
    targets = rng.uniform(*p.target_rate_range, size=n)
    targets[ln_cells] = p.ln_target_rate
    return Layout(
        cell_types=types_arr, cell_ids=ids, cell_centers=centers, subunit_positions=sub_pos,
        subunit_polarity=polarity, pooling_weights=pooling, amacrine_positions=amacrine_pos,
        amacrine_pooling=pool, amacrine_weights=inhib, ln_cells=ln_cells, ln_spatial=ln_spatial,
        thresholds=thresholds, target_rates=targets,
    )
