"""Contribution modes of one layer of a contribution store, in one call: what ``retina-codec modes`` and the
demo's modes stage both do.

:func:`modes_from_store` reads the layer's reduced contributions (bins x d), trains a sparse autoencoder
(:class:`~retina_codec.modes.decomposer.ModeDecomposer`), writes the modes store (atoms, per-bin loadings,
held-out metrics, settings and the link back to the contribution store) and, given the recording, a copy
of it with the loadings (and the model's predicted rates) in its ``codec`` processing module.
:func:`modes_summary` relates the loadings to each cell's predicted rate (the demo's
``modes_<layer>_summary.json``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModesError, ShapeMismatchError
from ..hashing import model_mismatch
from ..io_utils import check_new_output
from ..models import load_model
from ..models.fitting import predict
from ..recordings.nwb import read_nwb
from ..stores.contributions import LayerContributions, read_layer_contributions
from ..stores.fit import FitStore
from .decomposer import ModeDecomposer
from .nwb_export import export_modes_nwb
from .store import write_modes
from .summaries import cluster_cells, loading_correlations

__all__ = ["LINK_KEYS", "LayerModes", "modes_from_store", "modes_summary"]

#: attributes of the contribution store copied into the modes store's ``contributions_attrs`` (its link back)
LINK_KEYS = ("method", "rule", "steps", "target", "reduction", "model_hash", "source", "package_version")


@dataclass
class LayerModes:
    """What :func:`modes_from_store` fitted and wrote: the layer's contributions, the fitted decomposer,
    the per-bin ``loadings (n, K)`` and the paths written (``nwb_out`` is ``None`` without a recording)."""

    data: LayerContributions
    decomposer: ModeDecomposer
    loadings: np.ndarray
    path: Path
    nwb_out: Path | None = None
    with_rates: bool = False


def _rate_unit(model: object) -> str:
    """The unit of the model's predictions for the NWB copy: ``Hz`` for a model fitted to rates, else spikes per
    bin (``fit`` records it as the model's ``output_unit``)."""
    unit = str(getattr(model, "metadata", {}).get("output_unit", "")) if model is not None else ""
    return "Hz" if unit == "Hz" else "spikes per bin"


def _checked_model(contributions: str, model: str, store_hash: object, trust: bool, session: str | None) -> Any:
    """The ``model`` checkpoint; a :class:`ModesError` when it is not the model of the contribution store."""
    if store_hash is None:  # stripped attributes: the promised check cannot be made, so refuse
        raise ModesError(f"--model: {contributions}: attribute model_hash: expected the hash of the model the "
                         f"contributions were computed with, found none; cannot check that {model} is that "
                         "model (leave out --model to export the loadings without predicted rates)")
    net = load_model(model, trust=trust, session=session)
    differs = model_mismatch(net, store_hash)
    if differs:
        raise ModesError(f"--model: {model} is not the model the contributions in {contributions} were "
                         f"computed with ({differs})")
    return net


def modes_from_store(contributions: str | os.PathLike, layer: str, out: str | os.PathLike, *,
                     target_index: int | None = None, kind: str = "codec", n_modes: int | None = None, k: int = 8,
                     threshold: float = 0.9, l1: float | None = None, center: bool = False,
                     validation_fraction: float = 0.1, max_epochs: int = 200, batch_size: int = 256,
                     learning_rate: float = 1e-3, seed: int = 0, device: str = "auto",
                     attrs: Mapping[str, Any] | None = None, nwb: str | os.PathLike | None = None,
                     nwb_out: str | os.PathLike | None = None, stimulus: str | None = None,
                     responses: str | None = None, model: str | None = None, trust: bool = False,
                     session: str | None = None, overwrite: bool = False, quiet: bool | None = None) -> LayerModes:
    """Fit modes on ``layer`` of the contribution store ``contributions`` and write the modes store ``out``.

    The SAE options (``kind``, ``n_modes``, ``k``, ``threshold``, ``l1``, ``center``, ``validation_fraction``,
    ``max_epochs``, ``batch_size``, ``learning_rate``, ``seed`` = ``random_state``, ``device``) are those of
    :class:`~retina_codec.modes.decomposer.ModeDecomposer`; ``attrs`` are extra root attributes of the store.
    With ``nwb`` (the recording the contributions were computed on), also write a copy of it (``nwb_out``,
    default ``<out stem>.nwb``) with the loadings on its clock, and with ``model`` (checked against the
    store's model hash) the model's predicted rates at the same bins. Inputs and outputs are checked before
    training; an existing output is replaced only with ``overwrite``.
    """
    data = read_layer_contributions(contributions, layer, target_index)
    if model and not nwb:
        raise ModesError("--model: the predicted rates go into the NWB copy; pass --nwb as well")
    if nwb_out and not nwb:
        raise ModesError("--nwb-out: names the NWB copy of the recording; pass the recording with --nwb as well")
    rec = net = None
    if nwb:  # check the recording and the copy's path before training, not after
        nwb_out = nwb_out or str(Path(out).with_suffix(".nwb"))
        if Path(nwb_out).resolve() == Path(nwb).resolve():
            raise ModesError(f"--nwb-out: {nwb_out} is the recording itself, which is never modified; "
                             "choose another --nwb-out (or --out)")
        check_new_output(nwb_out, overwrite)
        rec = read_nwb(nwb, stimulus=stimulus, responses=responses, validate=False)
    try:
        if rec is not None:
            if data.bins.size and (data.bins.min() < 0 or data.bins.max() >= len(rec.frame_times)):
                raise ShapeMismatchError(f"{contributions}: bins {data.bins.min()}..{data.bins.max()} fall "
                                         f"outside the {len(rec.frame_times)} frames of {nwb}")
            if model:
                net = _checked_model(str(contributions), model, data.attrs.get("model_hash"), trust, session)
        check_new_output(out, overwrite)
        dec = ModeDecomposer(kind=kind, n_modes=n_modes, k=k, threshold=threshold, l1=l1, center=center,
                             validation_fraction=validation_fraction, max_epochs=max_epochs, batch_size=batch_size,
                             learning_rate=learning_rate, random_state=seed, device=device, quiet=quiet)
        dec.fit(data.X)
        loadings = dec.transform(data.X)
        link = {key: data.attrs[key] for key in LINK_KEYS if key in data.attrs}
        path = write_modes(out, dec, loadings, data.bins, contributions_path=data.path, layer=layer,
                           target_index=data.target_index, contributions_attrs=link,
                           attrs=dict(attrs) if attrs else None)
        result = LayerModes(data, dec, loadings, Path(path))
        if rec is not None:
            order = np.argsort(data.bins, kind="stable")
            rates = cells = None
            if net is not None:
                _, rates = predict(net, rec, bins=data.bins[order], device=device)
                cells = net.cell_ids or (rec.cell_ids if len(rec.cell_ids) == rates.shape[1] else None)
            result.nwb_out = export_modes_nwb(nwb, nwb_out, loadings[order], rec.frame_times[data.bins[order]],
                                              rates=rates, cell_ids=cells, rate_unit=_rate_unit(net),
                                              description=f"modes of layer {layer} from {data.path}",
                                              overwrite=overwrite)
            result.with_rates = rates is not None
    finally:
        if rec is not None and hasattr(rec, "close"):
            rec.close()
    return result


def modes_summary(modes: LayerModes, fit: FitStore, stimulus: str, *, model_hash: str | None = None,
                  inputs: Mapping[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """How the modes of one layer relate to the cells (the demo's ``modes_<layer>_summary.json``): Pearson r
    of each mode's loadings with each cell's predicted rate (``fit``'s ``stimulus`` group, at the modes'
    bins; ``correlation (K, N)``), active bins per mode, and a k-means clustering of the cells by those
    correlations (``clusters``; ``None``, with ``clusters_error``, for a degenerate matrix). ``model_hash`` and
    ``inputs`` (the signatures of the stores it was made from) are recorded for the resume rule."""
    g = fit.stimuli[stimulus]
    row = {int(b): i for i, b in enumerate(g["bins"])}
    bins, loadings = modes.data.bins, modes.loadings
    r = loading_correlations(loadings, g["predicted"][[row[int(b)] for b in bins]])  # (modes, cells)
    doc: dict[str, Any] = {
        "model_hash": model_hash, "layer": modes.data.layer, "modes_path": modes.path.name,
        "mode_names": [f"mode{i}" for i in range(modes.decomposer.n_modes_)], "active_bins": (loadings > 0).sum(0),
        "n_bins": int(len(bins)), "cell_ids": fit.cell_ids, "cell_types": fit.cell_types, "correlation": r,
        "correlation_of": "Pearson r of each mode's loadings with each cell's predicted rate",
        "inputs": dict(inputs or {}),
    }
    try:
        cl = cluster_cells(r.T, random_state=seed)
        doc["clusters"] = {"labels": cl.labels, "k": cl.k, "silhouette": {str(k): v for k, v in cl.silhouette.items()}}
    except Exception as err:  # noqa: BLE001 - a degenerate profile matrix: report it, the modes stand
        doc["clusters"] = None
        doc["clusters_error"] = str(err)
    return doc
