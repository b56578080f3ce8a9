"""The demo folder's layout, written once: which store each stage writes, under which name.

The demo (:mod:`retina_codec.pipeline.stages`) writes these names and the report
(:mod:`retina_codec.report`) reads them::

    demo.json                              settings, model, each stage's wall time (the manifest)
    simulated_retina_<preset>_seed<seed>.nwb   the simulated recording (natural scenes + white noise)
    model/                                 a small BN-CNN fitted by the demo (when no model is given)
    fit.h5                                 predicted rates and per-cell r (:mod:`retina_codec.stores.fit`)
    contributions.h5                       CODEC contributions of every hidden layer
    modes_<layer>.h5, modes_<layer>_summary.json   SAE modes; cell x mode correlations, clusters
    rf.h5                                  STA, model STA, rank-1 parts, true LN filters
    rf_conditioned_<layer>.h5              mode-conditioned RFs and dynamic-RF sources
    classifiers/stats.h5                   the classifier comparison
    report.html, report_figures/           the HTML report and its PNG figures
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputExistsError
from ..models.registry import SHIPPED_DIR
from ..stores.codec import store_errors
from ..stores.contributions import read_store_info

__all__ = ["DemoLayout", "DEMO_NAMES", "SHIPPED_MODEL", "NATURAL", "WHITE", "check_out_folder",
           "default_model_path"]

#: the shipped fitted BN-CNN, as the demo has always named it (relative to the working directory)
SHIPPED_MODEL = Path("models") / "bncnn-sim-default"
#: the two stimuli of the simulated recording
NATURAL, WHITE = "naturalscene", "whitenoise"

MANIFEST = "demo.json"
RECORDING = "simulated_retina_{preset}_seed{seed}.nwb"
RECORDING_GLOB = "simulated_retina_*.nwb"
MODEL_DIR = "model"
FIT = "fit.h5"
CONTRIBUTIONS = "contributions.h5"
MODES = "modes_{layer}.h5"
MODES_SUMMARY = "modes_{layer}_summary.json"
RF = "rf.h5"
CONDITIONED = "rf_conditioned_{layer}.h5"
CLASSIFIERS = "classifiers"
CLASSIFIER_STATS = "stats.h5"
REPORT = "report.html"
REPORT_FIGURES = "report_figures"

#: names the demo writes in its folder (a folder holding only these, and hidden files such as the temporary
#: files of an interrupted write, is a demo folder even before ``demo.json`` exists)
DEMO_NAMES = (MANIFEST, RECORDING_GLOB, MODEL_DIR, FIT,
              CONTRIBUTIONS, CONTRIBUTIONS + ".*partial", MODES.format(layer="*"), MODES_SUMMARY.format(layer="*"),
              RF, CONDITIONED.format(layer="*"), CLASSIFIERS, REPORT, REPORT_FIGURES)


def default_model_path() -> Path:
    """The demo's default model: ``models/bncnn-sim-default`` in the working directory when it is there,
    else the copy shipped inside the package (:data:`~retina_codec.models.registry.SHIPPED_DIR`); the
    relative path when neither exists (the demo then says so and fits a small model)."""
    here = SHIPPED_MODEL
    if (here / "model.json").exists():
        return here
    packaged = SHIPPED_DIR / SHIPPED_MODEL.name
    return packaged if (packaged / "model.json").exists() else here


def _ordered(found: list[str], order: list[str]) -> list[str]:
    """``found`` with the names in ``order`` first (in that order), then the others."""
    return [x for x in order if x in found] + [x for x in found if x not in order]


@dataclass
class DemoLayout:
    """Paths of the stores of one demo folder (any may be missing). ``preset`` and ``seed`` name the
    recording; a reader that does not know them finds it with :meth:`recordings`."""

    root: Path
    preset: str = "default"
    seed: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def out(self) -> Path:
        """The folder itself (the demo's ``--out``)."""
        return self.root

    @property
    def recording(self) -> Path:
        return self.root / RECORDING.format(preset=self.preset, seed=self.seed)

    def recordings(self) -> list[Path]:
        """The simulated recordings in the folder (any preset and seed)."""
        return sorted(self.root.glob(RECORDING_GLOB))

    manifest = property(lambda self: self.root / MANIFEST)
    model_dir = property(lambda self: self.root / MODEL_DIR)
    fit = property(lambda self: self.root / FIT)
    contributions = property(lambda self: self.root / CONTRIBUTIONS)
    rf = property(lambda self: self.root / RF)
    classifiers = property(lambda self: self.root / CLASSIFIERS / CLASSIFIER_STATS)
    report = property(lambda self: self.root / REPORT)
    report_figures = property(lambda self: self.root / REPORT_FIGURES)

    def modes(self, layer: str) -> Path:
        return self.root / MODES.format(layer=layer)

    def modes_summary(self, layer: str) -> Path:
        return self.root / MODES_SUMMARY.format(layer=layer)

    def conditioned(self, layer: str) -> Path:
        return self.root / CONDITIONED.format(layer=layer)

    def layers(self) -> list[str]:
        """Layers with a modes store, in the contribution store's order when it exists."""
        prefix, suffix = MODES.split("{layer}")
        found = sorted(p.name[len(prefix):-len(suffix)] for p in self.root.glob(MODES.format(layer="*")))
        if self.contributions.exists():
            with store_errors(self.contributions):
                order = read_store_info(self.contributions).attrs.get("layers") or []
            if isinstance(order, list):
                return _ordered(found, order)
        return found

    def conditioned_layers(self) -> list[str]:
        """Layers with a mode-conditioned RF store (``rf_conditioned_<layer>.h5``): those with a modes store
        first, in :meth:`layers` order, then the others (the RF store does not need its modes store)."""
        prefix, suffix = CONDITIONED.split("{layer}")
        found = sorted(p.name[len(prefix):-len(suffix)] for p in self.root.glob(CONDITIONED.format(layer="*")))
        return _ordered(found, self.layers())


def check_out_folder(out: str | os.PathLike) -> None:
    """Raise :class:`~retina_codec.errors.OutputExistsError` when ``out`` is a file, or a folder with other
    things in it than a demo's outputs and no ``demo.json`` (the demo would write, and replace, its stores
    there: ``fit.h5``, ``report.html``, ...)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: is a file (expected a folder for the demo's outputs)")
    if not out.is_dir() or (out / MANIFEST).exists():
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if not p.name.startswith(".") and not any(p.match(g) for g in DEMO_NAMES))
    if foreign:
        raise OutputExistsError(f"--out {out}: not a demo folder (no demo.json; holds {', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder")
