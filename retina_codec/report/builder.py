"""Build ``report.html`` for a demo folder: one self-contained HTML file, figures embedded as base64 PNG.

Every number in the report is read from the folder's stores (``fit.h5``, ``contributions.h5``,
``modes_<layer>.h5`` and their ``_summary.json``, ``rf.h5``, ``rf_conditioned_<layer>.h5``,
``classifiers/stats.h5``, ``demo.json``); a section whose store is missing says so instead.
Figures are written to ``<folder>/report_figures/`` (beside ``out`` when one is given) first (the same functions the ``figures/`` scripts
call), then embedded.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..io_utils import atomic_path
from ..pipeline.layout import DemoLayout
from ..progress import progress
from ..stores.classifier_stats import read_interventions
from ..stores.codec import decode_attrs, read_json, store_errors
from ..stores.contributions import read_store_info
from ..stores.fit import read_fit
from ..stores.modes import read_modes_header
from ..stores.rf import read_rf, read_rf_header
from ..torch_utils.threads import numpy_blas_single_thread
from . import figures as F

__all__ = ["build_report", "Report"]

log = logging.getLogger(__name__)

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#1d2630;background:#fafbfc;}
main{max-width:1080px;margin:0 auto;padding:16px 28px 60px;background:#fff;}
h1{font-size:26px;margin:18px 0 4px} h2{font-size:20px;border-bottom:2px solid #e3e7ec;padding-bottom:4px;margin-top:38px}
h3{font-size:16px;margin:22px 0 6px} p,li{line-height:1.45;font-size:14px}
nav{font-size:13px;background:#f1f4f7;padding:8px 12px;border-radius:6px} nav a{margin-right:12px;color:#1f5fa8}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 14px} th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:right}
th{background:#f1f4f7} td.l,th.l{text-align:left}
figure{margin:10px 0 18px} figure img{max-width:100%;border:1px solid #eef0f3}
figcaption{font-size:12.5px;color:#4a5866;margin-top:4px}
.note{background:#fff7e0;border-left:4px solid #e0b000;padding:6px 10px;font-size:13px}
.muted{color:#6b7785;font-size:12.5px} code{background:#f1f4f7;padding:0 3px;border-radius:3px}
details summary{cursor:pointer;font-size:14px;margin:6px 0}
"""


def esc(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x))


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table: NaN/None as an en dash, floats with ``digits`` significant places."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return esc(v)
    if not np.isfinite(f):
        return "–"
    if 1e3 <= abs(f) < 1e15:  # counts and seconds in full (1,571 rather than 1.57e+03)
        return f"{f:,.0f}"
    return f"{f:.{digits}g}" if abs(f) >= 1e-3 or f == 0 else f"{f:.2e}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1, digits: int = 3) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text, the rest formatted numbers."""
    head = "".join(f"<th class='l'>{esc(h)}</th>" if i < left else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for r in rows:
        cells = "".join(f"<td class='l'>{esc(v)}</td>" if i < left else f"<td>{fmt(v, digits)}</td>"
                        for i, v in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass
class Report:
    """Sections of HTML and the figures they embed."""

    folder: DemoLayout
    fig_dir: Path
    sections: list[tuple[str, str, str]] = field(default_factory=list)
    n_figures: int = 0

    def figure(self, name: str, make: Callable[[Path], Any], caption: str) -> str:
        """Make ``fig_dir/name`` with ``make(path)`` and return a ``<figure>`` with it embedded (or a note)."""
        path = self.fig_dir / re.sub(r"[^A-Za-z0-9._+-]", "_", name)  # names hold cell ids: no '/' or '..'
        try:
            make(path)
        except Exception as err:  # a broken store must not take the whole report down
            log.warning("figure %s: %s", name, err)
            return f"<p class='note'>Figure {esc(name)} could not be made: {esc(type(err).__name__)}: {esc(err)}</p>"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.n_figures += 1
        return (f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{caption}</figcaption></figure>")

    def add(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))

    def html(self, title: str, intro: str) -> str:
        nav = "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t, _ in self.sections)
        secs = "".join(f"<section id='{a}'><h2>{esc(t)}</h2>{b}</section>" for a, t, b in self.sections)
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
                f"<body><main><h1>{esc(title)}</h1>{intro}<nav>{nav}</nav>{secs}"
                f"<p class='muted'>retina-codec {esc(__version__)}, report written "
                f"{esc(time.strftime('%Y-%m-%d %H:%M'))}.</p></main></body></html>")


def _missing(what: str, path: Path) -> str:
    return f"<p class='note'>No {esc(what)}: <code>{esc(path.name)}</code> is not in this folder.</p>"


def _needs(store: str, what: str) -> Callable[[Callable[[Report], str]], Callable[[Report], str]]:
    """A section built from the folder's store ``DemoLayout.<store>``: when that file is missing, the
    section is the note :func:`_missing` instead."""
    def wrap(section: Callable[[Report], str]) -> Callable[[Report], str]:
        @functools.wraps(section)
        def checked(rep: Report) -> str:
            path = getattr(rep.folder, store)
            return section(rep) if path.exists() else _missing(what, path)
        return checked
    return wrap


def _per_layer(layers_of: Callable[[DemoLayout], list[str]], note: str, intro: str = ""
               ) -> Callable[[Callable[[Report, list[str]], str]], Callable[[Report], str]]:
    """A section over the layers ``layers_of(folder)`` (passed to it), after the paragraph ``intro``; with
    none, the section is ``note``."""
    def wrap(section: Callable[[Report, list[str]], str]) -> Callable[[Report], str]:
        @functools.wraps(section)
        def checked(rep: Report) -> str:
            layers = layers_of(rep.folder)
            return intro + section(rep, layers) if layers else f"<p class='note'>{note}</p>"
        return checked
    return wrap


def _read(path: Path, read: Callable[..., Any], **kwargs: Any) -> Any:
    """``read(path, **kwargs)``; a failure to read the store is a StoreReadError naming the file."""
    with store_errors(path):
        return read(path, **kwargs)


# -------------------------------------------------------------------------------------------- sections
def _overview(rep: Report) -> str:
    d = rep.folder
    parts = []
    man = read_json(d.manifest) if d.manifest.exists() else None
    if man:
        s = man.get("settings", {})
        parts.append(table(["setting", "value"], [
            ["model", f"{man.get('model_path')} ({man.get('model_source', '')})"],
            ["recording", f"simulated retina, preset {s.get('preset')!r}, seed {s.get('seed')}"],
            ["device", man.get("device", "")],
            ["contribution bins / IRF bins", f"{s.get('bins')} / {s.get('irf_bins')}"],
            ["conductance steps", s.get("steps")],
        ], left=2))
        t = man.get("timings_s", {})
        if t:
            parts.append("<h3>Wall time per stage</h3>" + table(
                ["stage", "seconds"], [[k, v] for k, v in t.items()] + [["total", float(sum(t.values()))]]))
        for k, v in (man.get("notes") or {}).items():
            parts.append(f"<p class='note'>{esc(k)}: {esc(v)}</p>")
    else:
        parts.append("<p class='muted'>No demo.json in this folder (settings and timings unknown).</p>")
    if d.fit.exists():
        fit = read_fit(d.fit)
        types = fit.cell_types
        counts: dict[str, int] = {}
        for t in types:
            counts[t] = counts.get(t, 0) + 1
        m = fit.attrs.get("model", {})
        m = m if isinstance(m, dict) else {}
        cfg = m.get("config") or {}  # None for a wrapped module (its architecture is the user's code)
        spec = m.get("input_spec") or {}
        parts.append("<h3>Model and cells</h3>" + table(["item", "value"], [
            ["architecture", m.get("architecture", "")],
            ["history (frames)", cfg.get("history", spec.get("history", ""))],
            ["channels / kernel sizes", f"{cfg.get('channels', '')} / {cfg.get('kernel_sizes', '')}"],
            ["hidden layers (explained)", ", ".join(fit.attrs.get("hidden_layers") or [])],
            ["cells", ", ".join(f"{n} {t or 'cells'}" for t, n in counts.items())],
        ], left=2))
    return "".join(parts)


@_needs("fit", "model fit")
def _fit_section(rep: Report) -> str:
    d = rep.folder
    fit = read_fit(d.fit)
    rows = []
    for name, g in fit.stimuli.items():
        a = g["attrs"]
        rows.append([name, len(g["bins"]), a.get("mean_r_response"), a.get("mean_r_true_rate")])
    body = ("<p>Pearson r between the model's prediction and the recorded spike counts (bounded by Poisson "
            "noise) and the simulator's true rate, per cell, on each stimulus' test split. The model was "
            "fitted on natural scenes only: white noise tests how it generalises.</p>"
            + table(["stimulus", "test bins", "mean r (responses)", "mean r (true rate)"], rows))
    body += rep.figure("fit_per_cell.png", lambda p: F.fit_per_cell(d.fit, p),
                       "Per-cell r; labels coloured by type (OFF blue, ON red, ON–OFF purple, LN green).")
    if "naturalscene" in fit.stimuli:
        body += rep.figure("fit_traces.png", lambda p: F.fit_traces(d.fit, p),
                           "Model rate (colour) vs the true rate (grey) and the recorded spikes (ticks), first "
                           "seconds of the natural-scene test split, one cell per type.")
    per_cell = []
    for i, c in enumerate(fit.cell_ids):
        row: list[Any] = [c, fit.cell_types[i]]
        for g in fit.stimuli.values():
            row += [g["r_response"][i], g["r_true_rate"][i] if "r_true_rate" in g else None]
        per_cell.append(row)
    header = ["cell", "type"] + [f"{s}: {w}" for s in fit.stimuli for w in ("r responses", "r true rate")]
    body += "<details><summary>Per-cell table</summary>" + table(header, per_cell, left=2) + "</details>"
    return body


@_needs("contributions", "contributions")
def _contrib_section(rep: Report) -> str:
    d = rep.folder
    info = _read(d.contributions, read_store_info)
    a, n, layers, shapes = info.attrs, info.n_samples, info.layers, info.shapes
    comp = a.get("completeness", {}) or {}
    target = a.get("target", {})
    tname = target.get("name", target) if isinstance(target, dict) else target
    src = a.get("source", {}) if isinstance(a.get("source"), dict) else {}
    fr = float(a.get("frame_rate", 100.0))
    body = (f"<p>{esc(a.get('method'))} ({esc(a.get('rule'))} rule, {fmt(a.get('steps'))} steps, baseline "
            f"{esc(a.get('baseline'))}) of every unit of each layer to the <b>{esc(tname)}</b>, for {fmt(n)} bins "
            f"({fmt(n / fr)} s) of the {esc(src.get('stimulus', ''))} recording, reduced by "
            f"{esc(' + '.join(a.get('reduction') or []))}: each channel's negative and positive parts summed over "
            "space. Completeness: summed over a layer, the contributions equal F(x) − F(x₀).</p>")
    rows = [[k, "×".join(str(s) for s in shapes[k]), comp.get(k, {}).get("total_rel"),
             comp.get(k, {}).get("median_rel")] for k in layers]
    body += table(["layer", "features per bin", "completeness error (total, rel.)", "median per bin (rel.)"], rows)
    for layer in layers:
        body += rep.figure(f"contributions_{layer}.png", lambda p, lyr=layer: F.contribution_heatmap(
            d.contributions, lyr, p), f"{esc(layer)}: contributions over the first {fmt(min(n, round(10 * fr)) / fr)} s (channel k− = its "
                                      "negative part, k+ = its positive part); top: the target F(x).")
    return body


@_per_layer(DemoLayout.layers, "No modes stores (<code>modes_&lt;layer&gt;.h5</code>) in this folder.")
def _modes_section(rep: Report, layers: list[str]) -> str:
    d = rep.folder
    rows = []
    seconds = {}  # of loadings shown (the first 10 s at most)
    for layer in layers:
        a, (n, k) = _read(d.modes(layer), read_modes_header)
        fr = float(a.get("frame_rate", 100.0))
        seconds[layer] = min(n, round(10 * fr)) / fr
        m = a.get("metrics", {})
        s = a.get("settings", {})
        rows.append([layer, a.get("kind"), s.get("sae", {}).get("n_latents") if isinstance(s.get("sae"), dict) else None,
                     k, m.get("explained_variance"), m.get("l0"), m.get("dead_fraction"), n])
    body = ("<p>A sparse autoencoder (CODEC SAE) decomposes each layer's per-bin contribution vectors into "
            "modes: recurring patterns of interneuron contributions. Explained variance is on held-out bins.</p>"
            + table(["layer", "SAE", "latents", "alive modes", "held-out explained variance", "mean L0",
                     "dead fraction", "bins"], rows))
    for layer in layers:
        body += f"<h3>{esc(layer)}</h3>"
        body += rep.figure(f"modes_atoms_{layer}.png", lambda p, lyr=layer: F.mode_atoms(d.modes(lyr), p),
                           f"{esc(layer)}: mode atoms (contribution pattern of each mode over the layer's "
                           "channels, negative and positive parts).")
        body += rep.figure(f"modes_loadings_{layer}.png", lambda p, lyr=layer: F.mode_loadings(d.modes(lyr), p),
                           f"{esc(layer)}: loadings of the most active modes over the first {fmt(seconds[layer])} s.")
    return body


@_per_layer(lambda d: [lyr for lyr in d.layers() if d.modes_summary(lyr).exists()],
            "No mode summaries (<code>modes_&lt;layer&gt;_summary.json</code>).")
def _correlation_section(rep: Report, layers: list[str]) -> str:
    d = rep.folder
    body = ("<p>Pearson r between each mode's loadings and each cell's predicted rate over the same bins; cells "
            "are grouped by k-means on these correlation profiles (k chosen by silhouette).</p>")
    for layer in layers:
        s = read_json(d.modes_summary(layer))
        body += f"<h3>{esc(layer)}</h3>"
        body += rep.figure(f"correlations_{layer}.png",
                           lambda p, lyr=layer: F.cell_mode_correlations(d.modes_summary(lyr), p),
                           f"{esc(layer)}: cells (rows, grouped by cluster, coloured by type) × the most active "
                           "modes (columns).")
        cl = s.get("clusters")
        if cl:
            labels = np.asarray(cl["labels"])
            rows = []
            for c in np.unique(labels):
                idx = np.flatnonzero(labels == c)
                types: dict[str, int] = {}
                for i in idx:
                    t = s["cell_types"][i] if s.get("cell_types") else ""
                    types[t] = types.get(t, 0) + 1
                rows.append([f"cluster {int(c)}", ", ".join(s["cell_ids"][i] for i in idx),
                             ", ".join(f"{n} {t}" for t, n in types.items()), len(idx)])
            sil = cl.get("silhouette", {})
            body += table(["cluster", "cells", "types", "number of cells"], rows, left=3)
            body += (f"<p class='muted'>k = {fmt(cl['k'])} (silhouette "
                     + ", ".join(f"k={k}: {fmt(v, 2)}" for k, v in sil.items()) + ").</p>")
        elif s.get("clusters_error"):
            body += f"<p class='note'>No clustering: {esc(s['clusters_error'])}</p>"
    return body


@_needs("rf", "receptive fields")
def _rf_section(rep: Report) -> str:
    d = rep.folder
    head, r = _read(d.rf, read_rf_header), _read(d.rf, read_rf, groups=["ln_truth", "sta"])
    a, has = decode_attrs(head["attrs"]), set(head) - {"attrs"}
    ln = r.get("ln_truth")
    n_spk = r["sta"]["n_spikes"] if "sta" in r else None
    ms_n = decode_attrs(head["model_sta"]).get("n_samples") if "model_sta" in head else None
    body = (f"<p>On the white-noise recording: the spike-triggered average (STA) from the recorded spikes, the "
            f"model STA (mean gradient of the model's rate over {fmt(ms_n)} white-noise windows) and, for the "
            "simulator's LN cells, their true space–time filter. r is the Pearson correlation with the true "
            "filter on its support (elements ≥ 10 % of its peak) over the model's "
            f"{fmt(a.get('history'))}-frame window.</p>")
    if ln is not None:
        ids = [v.decode() if isinstance(v, bytes) else str(v) for v in ln["cell_ids"]]
        body += table(["LN cell", "r(STA, true filter)", "r(model STA, true filter)"],
                      [[c, ln["r_sta"][i], ln["r_model_sta"][i]] for i, c in enumerate(ids)])
        body += rep.figure("sta_vs_truth.png", lambda p: F.sta_vs_truth(d.rf, p),
                           "Rank-1 spatial parts (columns) and time courses (right) of the STA, the model STA and "
                           "the true filter of each LN cell.")
    if "rank1" in has:
        body += rep.figure("rf_grid_model.png", lambda p: F.rf_grid(d.rf, p),
                           "Model STA of every cell: rank-1 spatial part with its 2σ Gaussian-fit ellipse.")
    if "sta" in has:
        body += rep.figure("rf_grid_sta.png", lambda p: F.rf_grid(d.rf, p, source="sta"),
                           "STA of every cell from its recorded spikes"
                           + (f" ({fmt(float(np.nanmin(n_spk)))}–{fmt(float(np.nanmax(n_spk)))} spikes per cell)."
                              if n_spk is not None else "."))
    return body


# the first paragraph of the per-layer sections built by _per_layer
INTROS = {
    "conditioned": (
        "<p>Instantaneous RFs (the gradient of a cell's rate with respect to its stimulus window at each "
        "bin) averaged over the bins where a mode is active, weighted by its loading, and over the bins "
        "whose exact set of active modes is a combination (CODEC Fig. 8). Shown: rank-1 spatial maps on a "
        "shared colour scale (red ON, blue OFF) with their time courses.</p>"),
    "sources": (
        "<p>How much of each cell's instantaneous-RF change over time the mode loadings explain (R² of "
        "regressing the IRF on the loadings), and which modes move the RF: unique R² (the loss when the mode "
        "is left out), the shift of the RF centre and the change of its size between bins where the mode is "
        "active and where it is not, and whether the polarity flips.</p>"),
}


def _each_conditioned(d: DemoLayout, layers: list[str],
                      read: Callable[[Path], dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(layer, read(rf_conditioned_<layer>.h5), its decoded root attributes)`` for each layer."""
    for layer in layers:
        r = _read(d.conditioned(layer), read)
        yield layer, r, decode_attrs(r["attrs"])


@_per_layer(DemoLayout.conditioned_layers, "No mode-conditioned RFs (<code>rf_conditioned_&lt;layer&gt;.h5</code>).",
            INTROS["conditioned"])
def _conditioned_section(rep: Report, layers: list[str]) -> str:
    d = rep.folder
    body = ""
    for n, (layer, head, a) in enumerate(_each_conditioned(d, layers, read_rf_header)):
        n_bins = int(head["conditioned"].get("n_bins", 0))
        ids = a.get("cell_ids", [])
        body += (f"<details{' open' if n == len(layers) - 1 else ''}><summary><b>{esc(layer)} modes</b>: "
                 f"{fmt(n_bins)} bins, the {len(a.get('mode_names', []))} most often active modes, cells "
                 f"{esc(', '.join(ids))}</summary>")
        for j, c in enumerate(ids):
            body += rep.figure(f"conditioned_{layer}_{c}.png",
                               lambda p, lyr=layer, jj=j: F.conditioned_gallery(d.conditioned(lyr), jj, p),
                               f"{esc(c)}: mean IRF, IRFs conditioned on each {esc(layer)} mode (n = active bins) "
                               "and on the most frequent exact combinations.")
        body += "</details>"
    return body


@_per_layer(DemoLayout.conditioned_layers, "No dynamic-RF sources (<code>rf_conditioned_&lt;layer&gt;.h5</code>).",
            INTROS["sources"])
def _sources_section(rep: Report, layers: list[str]) -> str:
    d = rep.folder
    body = ""
    for layer, r, a in _each_conditioned(d, layers, read_rf):
        src = r["sources"]
        ids, names = list(a.get("cell_ids", [])), [str(n) for n in a.get("mode_names", [])]
        r2 = np.asarray(src["r2_irf"])
        uni = np.asarray(src["unique_r2"])
        body += f"<h3>{esc(layer)}</h3>"
        rows = []
        for j, c in enumerate(ids):
            top = np.argsort(-np.nan_to_num(uni[:, j], nan=-np.inf))[:3]
            rows.append([c, ", ".join(names[i] for i in top), r2[j]] + [uni[top[0], j] if len(top) else None])
        body += table(["cell", "modes with the largest unique R²", "R² of the IRF (all modes)",
                       "largest unique R²"], rows, left=2)
        detail = []
        for j, c in enumerate(ids):
            for i in np.argsort(-np.nan_to_num(uni[:, j], nan=-np.inf))[:3]:
                detail.append([c, names[i], int(np.asarray(src["active_count"])[i]), uni[i, j],
                               np.asarray(src["centre_shift"])[i, j], np.asarray(src["size_change"])[i, j],
                               np.asarray(src["feature_mean_active"])[i, j, 3],
                               np.asarray(src["feature_mean_inactive"])[i, j, 3],
                               "yes" if bool(np.asarray(src["flips"])[i, j]) else "no"])
        body += table(["cell", "mode", "active bins", "unique R²", "centre shift (px)", "size change (px)",
                       "polarity (active)", "polarity (inactive)", "flips"], detail, left=2)
    return body


def _classifier_section(rep: Report) -> str:
    d = rep.folder
    if not d.classifiers.exists():
        man = read_json(d.manifest) if d.manifest.exists() else {}
        note = (man.get("notes") or {}).get("classifiers")
        return f"<p class='note'>{esc(note)}</p>" if note else _missing("classifier comparison", d.classifiers)
    stats, aliases, a = _read(d.classifiers, F.read_layer_stats)
    body = (f"<p>The same machinery on an image classifier ({esc(a.get('model'))}, {esc(a.get('model_class'))}; "
            f"top-1 accuracy {fmt(a.get('accuracy'))} on {fmt(a.get('n_images'))} images of {esc(a.get('images'))}): "
            f"{esc(a.get('method'))} contributions ({fmt(a.get('steps'))} steps) to the "
            f"{esc((a.get('target') or {}).get('name', a.get('target')) if isinstance(a.get('target'), dict) else a.get('target'))}"
            " compared with the activations, layer by layer: Hoyer sparsity over channels, the number of principal "
            "components for 95 % of the class-mean variance (and the participation ratio), and the E/I "
            "correlation −r(C⁺, C⁻) across channels.</p>")
    rows = []
    for st, alias in zip(stats, aliases):
        s = st.summary()
        rows.append([alias, st.n_channels, s["hoyer_contrib"], s["hoyer_act"], s["n_pcs_contrib"], s["n_pcs_act"],
                     s["participation_ratio_contrib"], s["participation_ratio_act"], s["ei_correlation_contrib"],
                     s["ei_correlation_act"]])
    body += table(["layer", "channels", "Hoyer (contrib.)", "Hoyer (act.)", "PCs 95 % (contrib.)", "PCs 95 % (act.)",
                   "PR (contrib.)", "PR (act.)", "E/I r (contrib.)", "E/I r (act.)"], rows)
    try:
        from ..stats.layers import sparsity_verdict

        body += f"<p><b>{esc(sparsity_verdict(stats, aliases))}</b></p>"
    except ImportError:  # an older stats module without the verdict
        pass
    body += rep.figure("classifier_statistics.png", lambda p: F.classifier_statistics(d.classifiers, p),
                       "Per-layer statistics of contributions vs activations (mean ± s.d. over images).")
    interventions = _read(d.classifiers, read_interventions)
    if interventions is not None:
        ml, sweeps = interventions
        rows = [[g["source"], g["kind"], len(g["selectivity"]), float(np.nanmean(g["auc_target"])),
                 float(np.nanmean(g["auc_off"])), float(np.nanmean(g["selectivity"]))] for g in sweeps]
        body += (f"<h3>Class-mode interventions at {esc(ml)}</h3><p>Each class's top mode (fitted on "
                 f"{esc(a.get('mode_images') or a.get('images'))}); its top-p channels ablated or all others "
                 "preserved; AUC of the accuracy on the class (target) and on the other classes over p; "
                 "selectivity (AUC_target − AUC_off) / AUC_off, averaged over classes.</p>")
        body += table(["modes of", "intervention", "classes", "AUC target", "AUC off-target", "selectivity"],
                      rows, left=2)
    for src in ("contributions", "activations"):
        png = d.classifiers.parent / f"masks_{src}.png"
        if png.exists():
            body += f"<details><summary>Masks of the {esc(src)} modes</summary>" + rep.figure(f"classifier_masks_{src}.png", lambda p, q=png: p.write_bytes(q.read_bytes()),
                               f"Jacobian-chain masks of each class's top {esc(src)} mode on its top-loading "
                               "images (written by classify-stats).") + "</details>"
    return body


SECTIONS: list[tuple[str, str, Callable[[Report], str]]] = [
    ("overview", "Run", _overview),
    ("fit", "Model fit", _fit_section),
    ("contributions", "Contributions over time", _contrib_section),
    ("modes", "Contribution modes", _modes_section),
    ("correlations", "Cells × modes", _correlation_section),
    ("rf", "STA vs model STA vs true filter", _rf_section),
    ("conditioned", "Mode-conditioned RFs", _conditioned_section),
    ("sources", "Dynamic-RF sources", _sources_section),
    ("classifiers", "Classifier comparison", _classifier_section),
]


def build_report(folder: str | os.PathLike, out: str | os.PathLike | None = None,
                 quiet: bool | None = None) -> Path:
    """Write the report of a demo folder to ``out`` (default ``<folder>/report.html``); returns its path.

    The PNG figures go to ``<folder>/report_figures/``, or beside ``out`` (``<out stem>_figures/``) when ``out``
    is given: a report written elsewhere leaves the demo folder as it was.
    """
    d = DemoLayout(Path(folder))
    if not d.root.is_dir():
        from ..errors import RetinaCodecError

        raise RetinaCodecError(f"{d.root}: not a folder (expected a demo output folder)")
    path = Path(out) if out is not None else d.report
    rep = Report(d, d.report_figures if out is None else path.with_name(path.stem + "_figures"))
    rep.fig_dir.mkdir(parents=True, exist_ok=True)
    with numpy_blas_single_thread():
        for anchor, title, fn in progress(SECTIONS, desc="report", quiet=quiet, unit="section"):
            try:
                body = fn(rep)
            except Exception as err:  # one broken store: say so in its section, keep the rest
                log.warning("report section %s: %s", anchor, err)
                body = f"<p class='note'>This section could not be built: {esc(type(err).__name__)}: {esc(err)}</p>"
            rep.add(anchor, title, body)
    intro = ("<p>CODEC analysis of a retina model: how each model interneuron contributes to the ganglion-cell "
             "population's output over time, the recurring <i>contribution modes</i>, and the receptive fields "
             f"conditioned on them. Folder: <code>{esc(d.root.resolve())}</code>.</p>")
    with atomic_path(path, suffix=".html") as tmp:
        Path(tmp).write_text(rep.html("retina-codec report", intro), encoding="utf-8")
    log.info("%s: %d sections, %d figures", path, len(rep.sections), rep.n_figures)
    return path

