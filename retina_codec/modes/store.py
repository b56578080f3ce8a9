"""A fitted :class:`~retina_codec.modes.decomposer.ModeDecomposer` to and from its modes store.

The layout, the writer of its arrays and the readers are :mod:`retina_codec.stores.modes`; this module only
turns a decomposer into those arrays (:func:`write_modes`) and rebuilds one, SAE included, from a store
(:func:`load_decomposer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModesError
from ..stores.modes import read_modes, read_sae_state, write_modes_arrays
from .decomposer import ModeDecomposer, make_sae

__all__ = ["write_modes", "load_decomposer"]


def write_modes(path: str | os.PathLike, decomposer: ModeDecomposer, loadings: np.ndarray | None = None,
                bins: np.ndarray | None = None, *, X: np.ndarray | None = None,
                contributions_path: str | None = None, layer: str | None = None,
                target_index: int | None = None, contributions_attrs: dict[str, Any] | None = None,
                attrs: dict[str, Any] | None = None) -> Path:
    """Write a fitted ``decomposer`` and the per-bin ``loadings (n, n_modes)`` (or ``transform(X)``) to HDF5.

    ``bins (n,)`` defaults to ``arange(n)``. Layout: :mod:`retina_codec.stores.modes`. Written atomically;
    returns ``Path(path)``.
    """
    decomposer._check_fitted()
    if loadings is None:
        if X is None:
            raise ModesError("write_modes: give loadings (n, n_modes) or X (n, d)")
        loadings = decomposer.transform(X)
    loadings = np.asarray(loadings, dtype=np.float32)
    if loadings.ndim != 2 or loadings.shape[1] != decomposer.n_modes_:
        raise ModesError(f"loadings: expected shape (n, {decomposer.n_modes_}); found {loadings.shape}")
    n = loadings.shape[0]
    bins = np.arange(n, dtype=np.int64) if bins is None else np.asarray(bins, dtype=np.int64)
    if bins.shape != (n,):
        raise ModesError(f"bins: expected shape ({n},) to match loadings; found {bins.shape}")
    state = {name: t.detach().cpu().numpy() for name, t in decomposer.sae_.state_dict().items()}
    return write_modes_arrays(
        path, kind=decomposer.kind, settings=decomposer.settings(), metrics=decomposer.metrics(),
        scale=float(decomposer.scale_), atoms=decomposer.atoms_, loadings=loadings, bins=bins,
        latent_index=np.flatnonzero(decomposer.alive_), intercept=decomposer.intercept_,
        mean=decomposer.mean_, sae_state=state, layer=layer, target_index=target_index,
        contributions_path=contributions_path, contributions_attrs=contributions_attrs, attrs=attrs)


def load_decomposer(path: str | os.PathLike) -> ModeDecomposer:
    """Rebuild the fitted :class:`ModeDecomposer` of a modes store (to ``transform`` new contributions)."""
    m = read_modes(path)
    settings = dict(m.attrs["settings"])
    sae_settings = settings.pop("sae")
    dec = ModeDecomposer(**settings)
    d = int(sae_settings["n_features"])
    k_latents = int(sae_settings["n_latents"])
    state = {name: torch.from_numpy(arr) for name, arr in read_sae_state(path).items()}
    with torch.random.fork_rng(devices=[]):
        sae = make_sae(dec.kind, d, k_latents, k=dec.k, threshold=dec.threshold, l1=dec.l1,
                       hidden_size=dec.hidden_size, **(dec.sae_options or {}))
    sae.load_state_dict(state)
    dec.sae_ = sae.eval()
    dec.n_features_in_ = d
    dec.mean_ = m.mean.astype(np.float32)
    dec.scale_ = np.float32(m.attrs["scale"])
    alive = np.zeros(k_latents, dtype=bool)
    alive[m.latent_index] = True
    dec.alive_ = alive
    dec.n_modes_ = int(alive.sum())
    dec.atoms_ = m.atoms
    dec.intercept_ = m.intercept
    metrics = m.metrics
    dec.explained_variance_ = float(metrics.get("explained_variance", float("nan")))
    dec.l0_ = float(metrics.get("l0", float("nan")))
    dec.dead_fraction_ = float(metrics.get("dead_fraction", float("nan")))
    dec.n_iter_ = int(metrics.get("n_iter", 0))
    return dec
