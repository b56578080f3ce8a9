"""Mode-conditioned receptive fields (CODEC Fig. 8), streamed as running sums.

Given per-bin mode loadings ``a (T_b, K)`` aligned with bins ``(T_b,)``, a mode k is *active* at bin t
when ``a_k(t) > threshold``.

* **Single mode:** ``RF_k = Σ_{t: active_k} a_k(t) IRF(t) / Σ_{t: active_k} a_k(t)``.
* **Exact combination S** (the set of active modes is exactly S; ``()`` = no mode active):
  ``RF_S = Σ_{t: active(t)=S} w(t) IRF(t) / Σ w(t)`` with ``w(t)`` the mean loading of the active modes
  (1 for the empty set); its frequency is the fraction of bins with that exact set. The combinations kept
  are the ``max_combinations`` most frequent ones with at least ``min_count`` bins (the loadings are
  known up front, so they are chosen before the pass).
* The unconditioned mean IRF over every bin is kept as a reference.

IRFs come from :func:`~retina_codec.rf.irf.iter_irfs` batch by batch and are added to the sums with one
matrix product per batch, ``weights (K+M+1, B) @ IRFs (B, C·h·H·W)``; nothing of size T × cells × window is
ever held (one test movie × 17 cells of full IRFs would be 40 GB). ``keep="rank1"`` accumulates each
bin's rank-1 spatial and temporal parts instead of full IRFs (``(H·W + h)`` instead of ``h·H·W`` per
cell). :func:`mode_conditioned_rfs` optionally feeds a
:class:`~retina_codec.rf.sources.SourcesAccumulator` in the same pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ModesError, ShapeMismatchError
from ..recordings import Recording
from .decompose import batched_rank1, space_time_svd, working_precision
from .irf import iter_irfs, model_window
from .sources import DynamicRFSources, SourcesAccumulator, spatial_features

__all__ = ["ConditionedRFs", "ConditionedRFAccumulator", "active_combinations", "mode_conditioned_rfs",
           "conditioned_rfs_by_set", "most_active_modes"]


def active_combinations(loadings: np.ndarray, threshold: float = 0.0, max_combinations: int = 32,
                        min_count: int = 1) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The most frequent exact sets of active modes and each bin's code: ``(combos, code (T_b,))``.

    ``code[t]`` is the index of bin t's set in ``combos``, or -1 when the set was not kept.
    """
    active = np.asarray(loadings) > threshold
    keys = [tuple(np.flatnonzero(r).tolist()) for r in active]
    counts = Counter(keys)
    ranked = sorted(((c, k) for k, c in counts.items() if c >= min_count), key=lambda ck: (-ck[0], ck[1]))
    combos = [k for _, k in ranked[:max_combinations]]
    index = {k: i for i, k in enumerate(combos)}
    code = np.array([index.get(k, -1) for k in keys], dtype=np.int64)
    return combos, code


def most_active_modes(loadings: np.ndarray, top: int | None = None, threshold: float = 0.0) -> np.ndarray:
    """Indices of the modes sorted by the number of bins they are active in (``loading > threshold``; most
    first, ties in index order), at most ``top``; modes that are never active are left out."""
    count = (np.asarray(loadings) > threshold).sum(0)
    order = np.argsort(-count, kind="stable")
    order = order[count[order] > 0]
    return order[:top] if top else order


@dataclass
class ConditionedRFs:
    """Mode- and combination-conditioned RFs of C cells (K modes, M kept combinations).

    mode_rf : (K, C, h, H, W) loading-weighted mean IRF (``keep="full"``; ``None`` for ``"rank1"``).
    mode_spatial : (K, C, H, W), mode_temporal : (K, C, h): rank-1 parts (sign convention of
        :mod:`~retina_codec.rf.decompose`): of ``mode_rf`` for ``"full"``, or the weighted means of
        each bin's rank-1 parts for ``"rank1"``.
    mode_weight : (K,) Σ loadings over active bins; mode_count : (K,) active bins.
    combos : M tuples of mode indices (``()`` = none active); combo_rf / combo_spatial / combo_temporal as
        for modes; combo_count : (M,); combo_frequency : (M,) count / n_bins.
    mean_rf / mean_spatial / mean_temporal : unconditioned mean over every bin.
    NaN where a mode or combination never occurs.
    """

    mode_rf: np.ndarray | None
    mode_spatial: np.ndarray
    mode_temporal: np.ndarray
    mode_weight: np.ndarray
    mode_count: np.ndarray
    combos: list[tuple[int, ...]]
    combo_rf: np.ndarray | None
    combo_spatial: np.ndarray
    combo_temporal: np.ndarray
    combo_count: np.ndarray
    combo_frequency: np.ndarray
    mean_rf: np.ndarray | None
    mean_spatial: np.ndarray
    mean_temporal: np.ndarray
    threshold: float
    keep: str
    n_bins: int
    cells: list[int] = field(default_factory=list)


class ConditionedRFAccumulator:
    """Running sums of loading-weighted IRFs per mode, per kept combination and overall."""

    def __init__(self, n_modes: int, combos: Sequence[tuple[int, ...]], n_cells: int, history: int,
                 frame_shape: tuple[int, int], threshold: float = 0.0, keep: str = "full",
                 device: torch.device | str = "cpu") -> None:
        if keep not in ("full", "rank1"):
            raise ModesError(f"keep: expected 'full' or 'rank1', found {keep!r}")
        self.k, self.combos, self.c = n_modes, list(combos), n_cells
        self.h, self.frame_shape, self.threshold, self.keep = history, tuple(frame_shape), threshold, keep
        rows = n_modes + len(self.combos) + 1
        p = frame_shape[0] * frame_shape[1]
        width = history * p if keep == "full" else p + history
        self.sums = torch.zeros((rows, n_cells, width), dtype=torch.float64, device=device)
        self.weights = torch.zeros(rows, dtype=torch.float64, device=device)
        self.counts = torch.zeros(rows, dtype=torch.float64, device=device)
        self.n_bins = 0

    def state_nbytes(self) -> int:
        """Bytes held by the running sums (independent of the number of bins)."""
        return sum(t.numel() * t.element_size() for t in (self.sums, self.weights, self.counts))

    def bin_weights(self, loadings: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``(K+M+1, B)`` weights: masked loadings, combination one-hots × mean active loading, ones."""
        a = loadings.double()
        active = a > self.threshold
        wk = torch.where(active, a, torch.zeros_like(a)).T  # (K, B)
        n_act = active.sum(1)
        mean_act = torch.where(n_act > 0, wk.sum(0) / n_act.clamp_min(1), torch.ones_like(a[:, 0]))
        onehot = torch.zeros((len(self.combos), a.shape[0]), dtype=a.dtype, device=a.device)
        kept = code >= 0
        onehot[code[kept], torch.nonzero(kept)[:, 0]] = mean_act[kept]
        return torch.cat([wk, onehot, torch.ones((1, a.shape[0]), dtype=a.dtype, device=a.device)])

    def update(self, irfs: torch.Tensor, loadings: torch.Tensor, code: torch.Tensor,
               rank1: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Add a batch: ``irfs (B, C, h, H, W)``, ``loadings (B, K)``, combination ``code (B,)``;
        ``rank1 = (spatial (B·C, H·W), temporal (B·C, h))`` may be passed when already computed."""
        b = irfs.shape[0]
        dev = self.sums.device
        w = self.bin_weights(loadings.to(dev), code.to(dev))
        if self.keep == "full":  # per-batch products in the IRFs' precision, totals in float64
            y = working_precision(irfs.reshape(b, -1).to(dev))
        else:
            if rank1 is None:
                s, t, _ = batched_rank1(irfs.reshape(b * self.c, self.h, -1).double())
            else:
                s, t = rank1
            y = torch.cat([s.reshape(b, self.c, -1), t.reshape(b, self.c, -1)], -1).reshape(b, -1)
            y = y.to(dev, torch.float64)
        self.sums += (w.to(y.dtype) @ y).reshape(self.sums.shape)
        self.weights += w.sum(1)
        self.counts += (w != 0).double().sum(1)
        self.n_bins += b

    def result(self, cells: Sequence[int] = ()) -> ConditionedRFs:
        """Weighted means and their rank-1 parts."""
        hh, ww = self.frame_shape
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self.sums / self.weights[:, None, None]).cpu().numpy()
        k, m = self.k, len(self.combos)
        if self.keep == "full":
            full = mean.reshape((-1, self.c, self.h, hh, ww))
            dec = space_time_svd(full)
            spatial, temporal = dec.spatial[:, :, 0], dec.temporal[:, :, 0]
        else:
            full = None
            spatial = mean[..., : hh * ww].reshape(-1, self.c, hh, ww)
            temporal = mean[..., hh * ww :]
        counts = self.counts.cpu().numpy()

        def part(arr: np.ndarray | None, a: int, b: int) -> np.ndarray | None:
            return None if arr is None else arr[a:b]

        return ConditionedRFs(
            part(full, 0, k), spatial[:k], temporal[:k], self.weights[:k].cpu().numpy(), counts[:k],
            list(self.combos), part(full, k, k + m), spatial[k : k + m], temporal[k : k + m], counts[k : k + m],
            counts[k : k + m] / max(self.n_bins, 1), None if full is None else full[-1], spatial[-1],
            temporal[-1], self.threshold, self.keep, self.n_bins, [int(c) for c in cells])


def mode_conditioned_rfs(
    model: nn.Module,
    recording: Recording,
    loadings: np.ndarray,
    bins: np.ndarray | None = None,
    *,
    split: str | None = None,
    cells: Sequence[int] | None = None,
    threshold: float = 0.0,
    max_combinations: int = 32,
    min_count: int = 1,
    keep: str = "full",
    sources: bool = True,
    batch_size: int = 64,
    history: int | None = None,
    offset: int | None = None,
    quiet: bool | None = None,
) -> tuple[ConditionedRFs, DynamicRFSources | None]:
    """One streamed pass over the bins: mode-conditioned RFs (and dynamic-RF sources when ``sources``).

    ``loadings (T_b, K)`` must be aligned with ``bins (T_b,)`` (default: the window bins of ``split``).
    """
    return conditioned_rfs_by_set(
        model, recording, {"": loadings}, bins, split=split, cells=cells, threshold=threshold,
        max_combinations=max_combinations, min_count=min_count, keep=keep, sources=sources,
        batch_size=batch_size, history=history, offset=offset, quiet=quiet)[""]


def conditioned_rfs_by_set(model: nn.Module, recording: Recording, loadings: Mapping[str, np.ndarray],
                           bins: np.ndarray | None = None, *, split: str | None = None,
                           cells: Sequence[int] | None = None, threshold: float = 0.0, max_combinations: int = 32,
                           min_count: int = 1, keep: str = "full", sources: bool = True, batch_size: int = 64,
                           history: int | None = None, offset: int | None = None, rank1_float64: bool = True,
                           quiet: bool | None = None) -> dict[str, tuple[ConditionedRFs, DynamicRFSources | None]]:
    """:func:`mode_conditioned_rfs` for several sets of loadings on the same bins (e.g. the modes of each layer)
    in one pass: each IRF batch is computed once and added to every set's sums.

    ``loadings`` maps a name to ``(T_b, K_name)`` loadings aligned with ``bins (T_b,)``; returns
    ``{name: (ConditionedRFs, DynamicRFSources or None)}``. ``rank1_float64``: the per-bin rank-1 parts
    (for ``keep="rank1"`` and the sources' spatial features) in float64 (default) or in the IRFs' own
    precision (``False``, what ``retina-codec demo`` has always used).
    """
    history, offset = model_window(model, history, offset)
    if bins is None:
        bins = recording.window_bins(split, history, offset)
    bins = np.asarray(bins, dtype=np.int64)
    sets = {name: _checked_loadings(a, bins) for name, a in loadings.items()}
    outside = ~np.isin(bins, recording.window_bins(None, history, offset))
    if outside.any():  # checked before any IRF is computed, not when the stream reaches them
        raise ShapeMismatchError(f"bins: expected bins with a full {history}-frame window inside the "
                                 f"{recording.n_frames}-frame recording, found {int(outside.sum())} outside "
                                 f"({int(bins[outside].min())}..{int(bins[outside].max())})")
    order = np.argsort(bins, kind="stable")
    bins = bins[order]
    state: dict[str, dict[str, object]] = {}
    for name, a in sets.items():
        a = a[order]
        combos, code = active_combinations(a, threshold, max_combinations, min_count)
        state[name] = {"loadings": torch.as_tensor(a), "code": torch.as_tensor(code), "combos": combos}
    pos = 0
    for bb, jac, _ in iter_irfs(model, recording, bins, cells, history=history, offset=offset,
                                batch_size=batch_size, quiet=quiet):
        b, n_cells = len(bb), jac.shape[1]
        if cells is None:
            cells = list(range(n_cells))
        irfs = jac.reshape(b * n_cells, history, -1)
        s, t, _ = batched_rank1(irfs.double() if rank1_float64 else irfs)
        feats = spatial_features(s, recording.frame_shape).reshape(b, n_cells, -1) if sources else None
        for st in state.values():
            k = st["loadings"].shape[1]
            if "acc" not in st:
                st["acc"] = ConditionedRFAccumulator(k, st["combos"], n_cells, history, recording.frame_shape,
                                                     threshold, keep, device=jac.device)
                st["src"] = SourcesAccumulator(k, n_cells, history, recording.frame_shape, threshold,
                                               device=jac.device) if sources else None
            a, cd = st["loadings"][pos : pos + b], st["code"][pos : pos + b]
            st["acc"].update(jac, a, cd, rank1=(s, t))
            if st["src"] is not None:
                st["src"].update(jac, a, feats)
        pos += b
    if pos == 0:
        raise ShapeMismatchError("bins: no bins to condition on")
    return {name: (st["acc"].result(list(cells)), st["src"].result() if st["src"] is not None else None)
            for name, st in state.items()}


def _checked_loadings(loadings: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``loadings`` as float64, a :class:`ShapeMismatchError` unless ``(len(bins), K)``, a :class:`ModesError`
    when not finite."""
    loadings = np.asarray(loadings, dtype=np.float64)
    if loadings.ndim != 2 or loadings.shape[0] != len(bins):
        raise ShapeMismatchError(f"loadings: expected shape ({len(bins)}, K) aligned with the bins, "
                                 f"found {loadings.shape}")
    bad = ~np.isfinite(loadings)
    if bad.any():  # NaN loadings would pass no threshold and break the rank-1 fits much later
        raise ModesError(f"loadings: expected finite values, found {int(bad.sum())} NaN/inf "
                         f"(first in row {int(np.flatnonzero(bad.any(axis=1))[0])})")
    return loadings
