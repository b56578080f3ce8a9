"""Figures from stored results: each function reads one or more stores and writes one PNG.

The HTML report and the command-line scripts in ``figures/`` both call these, so a figure in the report
can be rebuilt on its own from the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..recordings.cells import cell_index
from ..rf.conditioned import most_active_modes
from ..stores.codec import decode_attrs, read_json
from ..stores.contributions import read_contributions, read_store_info
from ..stores.fit import read_fit

__all__ = ["fit_per_cell", "fit_traces", "contribution_heatmap", "mode_atoms", "mode_loadings",
           "cell_mode_correlations", "sta_vs_truth", "rf_grid", "conditioned_gallery", "classifier_statistics"]


def _rate_scale(fit: Any, frame_rate: float) -> float:
    """Factor turning the model's output into Hz (counts per bin × frame rate)."""
    return frame_rate if fit.output_unit.startswith("count") or not fit.output_unit else 1.0


def fit_per_cell(fit_path: str | os.PathLike, out: str | os.PathLike) -> str:
    """Per-cell r of the model with the responses and with the true rates, one panel per stimulus."""
    from ..plots.fit import plot_fit_per_cell

    fit = read_fit(fit_path)
    panels = {name: (g["r_response"], g.get("r_true_rate")) for name, g in fit.stimuli.items()}
    return plot_fit_per_cell(panels, fit.cell_ids, out, cell_types=fit.cell_types)


def fit_traces(fit_path: str | os.PathLike, out: str | os.PathLike, stimulus: str = "naturalscene",
               seconds: float = 6.0, cells: list[int] | None = None) -> str:
    """Predicted vs true rate (and spikes) over the first ``seconds`` of the test split, one cell per type."""
    from ..plots.fit import plot_rate_traces

    fit = read_fit(fit_path)
    g = fit.stimuli[stimulus]
    fr = float(g["attrs"].get("frame_rate", 100.0))
    n = int(min(len(g["times"]), round(seconds * fr)))
    if cells is None:
        seen: dict[str, int] = {}
        for i, t in enumerate(fit.cell_types):
            seen.setdefault(t, i)
        cells = sorted(seen.values())
    scale = _rate_scale(fit, fr)
    return plot_rate_traces(g["times"][:n], g["predicted"][:n] * scale, cells, fit.cell_ids, out,
                            true_hz=g["true_rates"][:n] if "true_rates" in g else None,
                            spikes=g["responses"][:n], cell_types=fit.cell_types)


def contribution_heatmap(contrib_path: str | os.PathLike, layer: str, out: str | os.PathLike,
                         seconds: float | None = 10.0) -> str:
    """One layer's reduced contributions over time (first ``seconds``), with the explained target F(x)."""
    from ..plots.contributions import feature_labels, plot_contribution_heatmap

    info = read_store_info(contrib_path)
    attrs = info.attrs
    fr = float(attrs.get("frame_rate", 100.0))
    n = info.n_samples if seconds is None else int(min(info.n_samples, round(seconds * fr)))
    rows = read_contributions(contrib_path, [layer], stop=n)
    bins, fx = rows["bins"], rows["f_x"]
    c = rows["contributions"][layer].reshape(n, -1)
    target = attrs.get("target", {})
    tname = target.get("name", "target") if isinstance(target, dict) else str(target)
    return plot_contribution_heatmap(bins[:n] / fr, c, out, labels=feature_labels(c.shape[1], attrs.get("reduction")),
                                     target=fx.reshape(n, -1)[:, 0] if fx.size else None, target_name=f"F(x): {tname}",
                                     title=f"{layer}: {attrs.get('method', '')} contributions to the {tname}")


def _modes(modes_path: str | os.PathLike) -> dict[str, Any]:
    from ..stores.modes import read_modes

    m = read_modes(modes_path)
    return {"atoms": m.atoms, "loadings": m.loadings, "bins": m.bins, "names": m.mode_names, "attrs": m.attrs}


def mode_atoms(modes_path: str | os.PathLike, out: str | os.PathLike, top: int = 20) -> str:
    """Atoms of the ``top`` most often active modes (rows labelled with their active-bin counts)."""
    from ..plots.contributions import feature_labels
    from ..plots.modes import plot_atoms

    m = _modes(modes_path)
    order = most_active_modes(m["loadings"], top)
    counts = (m["loadings"] > 0).sum(0)
    ca = m["attrs"].get("contributions_attrs", {})
    labels = feature_labels(m["atoms"].shape[1], ca.get("reduction") if isinstance(ca, dict) else None)
    return plot_atoms(m["atoms"][order], out, [m["names"][i] for i in order], labels, counts[order],
                      title=f"{m['attrs'].get('layer', '')}: atoms of the {len(order)} most active modes "
                            f"(of {len(m['names'])}; active bins in brackets)")


def mode_loadings(modes_path: str | os.PathLike, out: str | os.PathLike, top: int = 20,
                  seconds: float | None = 10.0) -> str:
    """Loadings over time (first ``seconds``) of the ``top`` most often active modes."""
    from ..plots.modes import plot_loadings

    m = _modes(modes_path)
    fr = float(m["attrs"].get("frame_rate", 100.0))
    order = most_active_modes(m["loadings"], top)
    srt = np.argsort(m["bins"], kind="stable")
    bins, load = m["bins"][srt], m["loadings"][srt]
    n = len(bins) if seconds is None else int(min(len(bins), round(seconds * fr)))
    return plot_loadings(bins[:n] / fr, load[:n][:, order], out, [m["names"][i] for i in order],
                         title=f"{m['attrs'].get('layer', '')}: mode loadings over time")


def cell_mode_correlations(summary_path: str | os.PathLike, out: str | os.PathLike, top: int = 20) -> str:
    """Cells × modes correlation of loadings with predicted rates, cells grouped by their k-means cluster."""
    from ..plots.modes import plot_cell_mode_correlations

    s = read_json(summary_path)
    r = np.array(s["correlation"], dtype=np.float64)
    order = np.argsort(-np.asarray(s["active_bins"]), kind="stable")[:top]
    cl = s.get("clusters") or {}
    labels = np.asarray(cl["labels"]) if cl else None
    return plot_cell_mode_correlations(np.nan_to_num(r[order]), out, s["cell_ids"],
                                       [s["mode_names"][i] for i in order], clusters=labels,
                                       cell_types=s.get("cell_types"),
                                       title=f"{s['layer']}: r(mode loading, predicted rate)"
                                             + (f", {cl['k']} clusters" if cl else ""))


def _lags_ms(history: int, offset: int, frame_rate: float) -> np.ndarray:
    from ..rf.sta import window_lags

    return window_lags(history, offset) / frame_rate * 1e3


def sta_vs_truth(rf_path: str | os.PathLike, out: str | os.PathLike) -> str:
    """LN cells: white-noise STA, model STA and the simulator's true filter (rank-1 space and time)."""
    from ..plots.rf_truth import plot_sta_model_truth
    from ..stores.rf import read_rf

    d = read_rf(rf_path)
    a = decode_attrs(d["attrs"])
    ln = d["ln_truth"]
    cells = np.asarray(ln["cells"], dtype=np.int64)
    est: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    if "sta" in d:
        est["STA (spikes)"] = np.asarray(d["sta"]["sta"])[cells]
        scores["STA (spikes)"] = np.asarray(ln["r_sta"])
    if "model_sta" in d:
        est["model STA"] = np.asarray(d["model_sta"]["gradient"])[cells]
        scores["model STA"] = np.asarray(ln["r_model_sta"])
    est["true filter"] = np.asarray(ln["filters"])
    return plot_sta_model_truth(est, out, list(ln["cell_ids"]),
                                lags_ms=_lags_ms(int(a["history"]), int(a.get("offset", 1)),
                                                 float(a.get("frame_rate", 100.0))), scores=scores)


def rf_grid(rf_path: str | os.PathLike, out: str | os.PathLike, source: str = "rank1") -> str:
    """Rank-1 spatial RFs of every cell (``rank1``: of the model STA, with Gaussian-fit ellipses; ``sta``:
    of the spike-triggered average)."""
    from ..plots.rf import plot_rf_grid
    from ..rf.decompose import space_time_svd
    from ..rf.gaussian_fit import GaussianFit
    from ..stores.rf import read_rf

    d = read_rf(rf_path)
    ids = decode_attrs(d["attrs"]).get("cell_ids")
    if source == "sta":
        sp = space_time_svd(np.asarray(d["sta"]["sta"])).spatial[:, 0]  # a silent cell's NaN STA stays blank
        plot_rf_grid(sp, out, titles=ids, ncols=10, suptitle="STA from recorded spikes (white noise), rank-1 space")
        return str(out)
    r1 = d["rank1"]
    g = d.get("gaussian")
    fields = ("center_y", "center_x", "sigma_major", "sigma_minor", "angle", "amplitude", "offset", "r2")
    fits = [GaussianFit(*(float(g[k][i]) for k in fields)) for i in range(len(r1["spatial"]))] if g else None
    plot_rf_grid(np.asarray(r1["spatial"]), out, titles=ids, fits=fits, ncols=10,
                 suptitle=f"rank-1 spatial RFs of the {r1.get('source', 'model STA')} with 2σ Gaussian fits")
    return str(out)


def conditioned_gallery(cond_path: str | os.PathLike, cell: int | str, out: str | os.PathLike) -> str:
    """CODEC Fig. 8-style gallery of one cell: its id among the stored cells, else an index into them.

    A string is tried as an id first (lab and ROI ids are often digits: "0", "1"), then as an index; an
    unknown cell is a ``ValueError`` naming the stored ids.
    """
    from ..plots.rf import plot_conditioned_gallery
    from ..stores.rf import read_rf

    d = read_rf(cond_path)
    a = decode_attrs(d["attrs"])
    ids = [str(c) for c in a.get("cell_ids", [])]
    n = int(np.shape(d["conditioned"]["mean_spatial"])[0])
    j = cell_index(cell, ids, n, allow_negative=True)
    if j is None:
        raise ValueError(f"cell {cell!r}: not among the stored cells ({', '.join(ids) or f'{n} cells, no ids'})"
                         f"{f' nor an index 0..{n - 1}' if n else ''}")
    lags = _lags_ms(int(a["history"]), int(a.get("offset", 1)), float(a.get("frame_rate", 100.0))) / 1e3
    names = [str(n) for n in a.get("mode_names", [])] or None
    plot_conditioned_gallery(d["conditioned"], j, out, mode_names=names, lags_s=lags,
                             cell_name=f"{ids[j] if ids else j} ({a.get('layer', '')} modes)")
    return str(out)


def read_layer_stats(stats_path: str | os.PathLike) -> tuple[list[Any], list[str], dict[str, Any]]:
    """``(LayerStats per layer, layer aliases, root attributes)`` from a ``classify-stats`` ``stats.h5``
    (:func:`retina_codec.classifiers.analysis.read_layer_stats`)."""
    from ..classifiers.analysis import read_layer_stats as read

    return read(stats_path)


def classifier_statistics(stats_path: str | os.PathLike, out: str | os.PathLike) -> str:
    """Hoyer sparsity, class-mean dimensionality and E/I correlation per layer, contributions vs activations
    (CODEC Fig. 3 style), from a ``classify-stats`` ``stats.h5``."""
    from ..plots.stats import plot_layer_stats

    stats, aliases, attrs = read_layer_stats(stats_path)
    name = Path(str(attrs.get("model", "classifier"))).name
    plot_layer_stats(stats, out, labels=aliases,
                     title=f"{name} on {attrs.get('images', '')}: contributions vs activations "
                           f"({attrs.get('n_images', '')} images)")
    return str(out)


def ensure_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
