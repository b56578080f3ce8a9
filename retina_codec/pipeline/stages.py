"""The demo's stages as library code: the whole pipeline on the embedded default, a simulated retina,
ending in a report (``retina-codec demo`` is argument parsing around :func:`run_demo`).

Stages, each writing its own store into the demo folder (:mod:`~retina_codec.pipeline.layout`) and skipped
when that store is fresh (:mod:`~retina_codec.pipeline.freshness`: it exists, is complete and was made with
the same model from the same inputs), so an interrupted demo resumes where it stopped::

    recording      simulated_retina_<preset>_seed<seed>.nwb   natural scenes + white noise, ground truth
    model          the shipped fitted BN-CNN (models/bncnn-sim-default), or a small one fitted into model/
    fit            fit.h5            predicted rates, per-cell r with the responses and the true rates
    contributions  contributions.h5  CODEC conductance of conv1 and conv2 to the population surprisal
    modes          modes_<layer>.h5 + modes_<layer>_summary.json   SAE modes; cell x mode correlations, k-means
    rf             rf.h5             white-noise STA, model STA, rank-1 parts, the LN cells' true filters
    conditioned    rf_conditioned_<layer>.h5   mode-conditioned RFs and dynamic-RF sources
    classifiers    classifiers/stats.h5        the classifier comparison on the digits CNN (``classify-stats``)
    report         report.html       one self-contained HTML file (``retina-codec report DIR``)

Each stage calls the library function the matching command calls: ``fit`` :func:`~retina_codec.stores.fit.write_fit`,
``contributions`` :func:`~retina_codec.contributions.write_contributions`, ``modes``
:func:`~retina_codec.modes.from_store.modes_from_store`, ``rf`` :func:`~retina_codec.rf.estimate.compute_rfs`,
``conditioned`` :func:`~retina_codec.rf.conditioned.conditioned_rfs_by_set`, ``classifiers``
:func:`~retina_codec.classifiers.comparison.compare_classifier`, ``report``
:func:`~retina_codec.report.build_report`. ``demo.json`` records the settings, the model and each stage's
wall time.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classifiers.comparison import compare_classifier
from ..contributions import SurprisalTarget, write_contributions
from ..errors import CheckpointError, ModesError, UnknownCellError
from ..hashing import model_hash
from ..models import load_model, predict, resolve_model_path, save_model
from ..models.card import machine_description, write_model_card
from ..models.factory import is_factory_spec
from ..models.fitting import SMALL_CONFIG, fit, pearson_r
from ..modes.from_store import modes_from_store, modes_summary
from ..plots.classifier_figures import write_comparison_figures
from ..progress import quiet_scope
from ..recordings.cells import cell_index
from ..recordings.nwb import read_nwb, write_nwb
from ..report import build_report
from ..rf.conditioned import conditioned_rfs_by_set, most_active_modes
from ..rf.estimate import compute_rfs
from ..rf.ground_truth import score_ln_truth
from ..sim import simulate_retina
from ..stats import sparsity_verdict
from ..stores.classifier_stats import is_stats_file
from ..stores.codec import read_json, to_json, write_json
from ..stores.contributions import is_complete, read_completeness, read_store_info
from ..stores.fit import FitStimulus, read_fit, write_fit
from ..stores.modes import read_loadings
from ..stores.rf import write_rf
from ..torch_utils.devices import resolve_device
from ..torch_utils.threads import numpy_blas_single_thread, torch_threads
from .freshness import input_signatures, is_fresh
from .layout import NATURAL, WHITE, DemoLayout, check_out_folder, default_model_path

log = logging.getLogger(__name__)

__all__ = ["STAGES", "DemoSettings", "Demo", "run_demo", "check_model_path", "classifier_argv",
           "check_out_folder", "default_model_path"]

STAGES = ("recording", "model", "fit", "contributions", "modes", "rf", "conditioned", "classifiers", "report")


# ----------------------------------------------------------------------------------------------- settings
@dataclass
class DemoSettings:
    """Everything that decides the demo's outputs (recorded in ``demo.json``)."""

    out: str = "demo-out"
    preset: str = "default"
    seed: int = 0
    model: str | None = None
    session: str | None = None
    fit: bool = False
    fit_epochs: int = 2
    fit_steps: int = 100
    bins: int = 3000
    irf_bins: int = 1500
    rf_cells: list[str] | None = None
    rf_modes: int = 8
    steps: int = 20
    sae_epochs: int = 100
    model_sta_samples: int = 256
    device: str = "auto"
    resimulate: bool = False
    force: bool = False
    classifiers: bool = True
    classifier_images: int | None = None
    quiet: bool | None = None

    @classmethod
    def from_args(cls, args: Any) -> DemoSettings:
        """The settings of a parsed ``retina-codec demo`` command line (an ``argparse.Namespace``)."""
        return cls(out=args.out, preset=args.preset, seed=args.seed, model=args.model,
                   session=getattr(args, "session", None), fit=args.fit,
                   fit_epochs=args.fit_epochs, fit_steps=args.fit_steps, bins=args.bins, irf_bins=args.irf_bins,
                   rf_cells=args.rf_cells, rf_modes=args.rf_modes, steps=args.steps, sae_epochs=args.sae_epochs,
                   model_sta_samples=args.model_sta_samples, device=args.device, resimulate=args.resimulate,
                   force=args.force, classifiers=not args.no_classifiers,
                   classifier_images=args.classifier_images,
                   quiet=True if getattr(args, "quiet", False) else None)


def _first_of_each_type(types: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    for i, t in enumerate(types):
        seen.setdefault(str(t), i)
    return sorted(seen.values())


def check_model_path(path: Path) -> None:
    """Raise :class:`~retina_codec.errors.CheckpointError` unless ``path`` is a model folder (with
    ``model.json``), a ``model.json`` / ``.safetensors`` file, a torch-deep-retina ``.pt`` or an openretina
    ``.ckpt`` file, or names ``FILE.py:FUNCTION`` (your own model, :mod:`~retina_codec.models.factory`)."""
    if is_factory_spec(path):  # FILE.py:FUNCTION: the loader names a missing file or function itself
        return
    ok = (path / "model.json").exists() if path.is_dir() else path.is_file()
    if not ok:
        raise CheckpointError(f"--model {path}: no fitted model there (expected a folder with model.json, as "
                              "written by 'retina-codec fit', a torch-deep-retina .pt or an openretina .ckpt file, or "
                              "FILE.py:FUNCTION)")


def classifier_argv(out: Path, max_per_class: int | None = None) -> list[str] | None:
    """The ``classify-stats`` command line equivalent to the demo's classifier stage, or ``None`` when the
    classifier comparison is not installed."""
    try:
        importlib.import_module("retina_codec.classifiers")
    except ModuleNotFoundError:
        return None
    argv = ["classify-stats", "digits-cnn", "digits", "--mode-images", "digits:train", "--out", str(out),
            "--overwrite"]
    if max_per_class:
        argv += ["--max-per-class", str(max_per_class)]
    return argv


# ------------------------------------------------------------------------------------------------ the demo
@dataclass
class Demo:
    """The demo's stages over one output folder; :meth:`run` runs the missing ones in order."""

    settings: DemoSettings
    paths: DemoLayout = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    _model: Any = None
    _model_hash: str | None = None
    _model_path: Path | None = None
    _model_source: str = ""
    _recs: dict[str, Any] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)
    _current: str = ""

    def __post_init__(self) -> None:
        s = self.settings
        self.paths = DemoLayout(Path(s.out), s.preset, s.seed)

    # ---- shared resources, loaded on first use --------------------------------------------------
    @property
    def device(self) -> str:
        return str(resolve_device(self.settings.device))

    def recording(self, stimulus: str) -> Any:
        """The natural-scene or white-noise recording of the demo's NWB file (lazy, kept open)."""
        if stimulus not in self._recs:
            self._recs[stimulus] = read_nwb(self.paths.recording, stimulus=stimulus)
        return self._recs[stimulus]

    def close(self) -> None:
        for rec in self._recs.values():
            with contextlib.suppress(Exception):
                rec.close()
        self._recs.clear()

    @property
    def model(self) -> Any:
        if self._model is None:
            self.stage_model()
        return self._model

    @property
    def model_hash(self) -> str:
        if self._model_hash is None:
            self._model_hash = model_hash(self.model)
        return self._model_hash

    @property
    def layers(self) -> list[str]:
        return list(self.model.hidden_layers)

    def _fresh(self, path: Path, check: Callable[[Path], bool] | None = None,
               inputs: dict[str, Path] | None = None) -> bool:
        """:func:`~retina_codec.pipeline.freshness.is_fresh` with the demo's model and ``--force``."""
        return is_fresh(path, self.model_hash, inputs=inputs, check=check, force=self.settings.force)

    def _skipped_fresh(self, path: Path, inputs: dict[str, Path],
                       check: Callable[[Path], bool] | None = None) -> bool:
        """True (and said) when the running stage's store ``path`` is fresh: the stage has nothing to do."""
        if not self._fresh(path, check, inputs):
            return False
        self._skip(f"{path.name} exists: skipping")
        return True

    def _skip(self, message: str) -> None:
        """Report that the running stage found its output and did nothing (its old timing is kept)."""
        print(f"      {message}")
        self._skipped.add(self._current)

    def _stage(self, name: str, number: int, title: str) -> contextlib.AbstractContextManager:
        @contextlib.contextmanager
        def timed() -> Iterator[None]:
            print(f"[{number}/{len(STAGES)}] {title}", flush=True)
            self._current = name
            t0 = time.perf_counter()
            yield
            self.timings[name] = round(time.perf_counter() - t0, 2)
        return timed()

    # ---- stages ---------------------------------------------------------------------------------
    def stage_recording(self) -> None:
        s, path = self.settings, self.paths.recording
        with self._stage("recording", 1, "simulated recording"):
            if path.exists() and not s.resimulate:
                self._skip(f"using the simulated recording already in {path}")
                return
            print(f"      simulating the retina (preset {s.preset!r}, seed {s.seed}) ...")
            recs = simulate_retina(preset=s.preset, seed=s.seed)
            write_nwb(recs, path, overwrite=True)
            print(f"      wrote {path}")

    def stage_model(self) -> None:
        s = self.settings
        with self._stage("model", 2, "fitted retina model"):
            shipped = resolve_model_path(s.model) if s.model else default_model_path()
            local = self.paths.model_dir
            if s.model and not s.fit:
                check_model_path(shipped)
            if s.fit:
                if not (local / "model.json").exists() or s.force:
                    self._fit_small(local, "--fit was given")
                path, source = local, "fitted by the demo (--fit)"
            elif s.model or (shipped / "model.json").exists():
                path, source = shipped, "shipped" if s.model is None else "given with --model"
            elif (local / "model.json").exists():
                print(f"      {shipped} not found: using the model the demo fitted earlier in {local}")
                path, source = local, "fitted by the demo (shipped model missing)"
            else:
                print(f"      {shipped} not found: fitting a small BN-CNN instead (pass --model to use another)")
                self._fit_small(local, "the shipped model is missing")
                path, source = local, "fitted by the demo (shipped model missing)"
            self._model = load_model(path, device=self.device, session=s.session)
            self._model_path, self._model_source = path, source
            m = self._model
            print(f"      {m.architecture} from {path} ({source}): history {m.input_spec.history}, "
                  f"layers {', '.join(m.hidden_layers)}, {m.n_cells} cells, device {self.device}")

    def _fit_small(self, out: Path, why: str) -> None:
        s = self.settings
        rec = self.recording(NATURAL)
        print(f"      fitting a small BN-CNN ({why}): {s.fit_epochs} epochs x {s.fit_steps} batches on "
              f"{rec.stimulus_name} ...")
        torch.manual_seed(s.seed)
        res = fit(rec, model_kwargs=dict(SMALL_CONFIG), history=SMALL_CONFIG["history"], epochs=s.fit_epochs,
                  steps_per_epoch=s.fit_steps, device=s.device, seed=s.seed)
        command = (f"retina-codec demo --out {s.out} --preset {s.preset} --seed {s.seed} --fit "
                   f"--fit-epochs {s.fit_epochs} --fit-steps {s.fit_steps}")
        res.model.metadata["command"] = command
        save_model(res.model.cpu(), out, metadata=res.model.metadata)
        write_model_card(out / "MODEL_CARD.md", res.model, title="small BN-CNN fitted by retina-codec demo",
                         command=command, data={"source": str(self.paths.recording), "stimulus": NATURAL,
                                                "frames": rec.n_frames, "cells": rec.n_cells},
                         machine=machine_description(self.device))
        t = res.test
        print(f"      saved {out}" + ("" if t is None else f": test r {t.mean_r_response:.3f} with the responses"))

    def _fit_stimuli(self) -> Iterator[FitStimulus]:
        """Predicted rates and per-cell r on each stimulus' test split (computed one by one, as written)."""
        for stim in (NATURAL, WHITE):
            rec = self.recording(stim)
            bins, pred = predict(self.model, rec, "test")
            r = pearson_r(pred, rec.responses[bins])
            line = f"      {stim}: mean r {np.nanmean(r):.3f} with the responses"
            gt = rec.ground_truth
            true = r_true = None
            if gt is not None:
                true = np.asarray(gt.true_rates)[bins]
                r_true = pearson_r(pred, true)
                line += f", {np.nanmean(r_true):.3f} with the true rates"
            print(line + f" ({len(bins)} test bins)")
            yield FitStimulus(stim, bins, rec.frame_times[bins], pred, rec.responses[bins], r, float(rec.frame_rate),
                              "test", true, r_true)

    def stage_fit(self) -> None:
        """Predicted rates and per-cell r on both stimuli' test splits → ``fit.h5``."""
        path = self.paths.fit
        with self._stage("fit", 3, "model fit on held-out data"):
            inputs = {"recording": self.paths.recording}
            if self._skipped_fresh(path, inputs):
                return
            rec = self.recording(NATURAL)
            gt = rec.ground_truth
            write_fit(path, self._fit_stimuli(), cell_ids=rec.cell_ids,
                      cell_types=None if gt is None else [str(t) for t in gt.cell_types],
                      model_hash=self.model_hash, model_path=str(self._model_path), model_source=self._model_source,
                      model=self.model.describe(), training=self.model.metadata.get("training", {}),
                      inputs=input_signatures(inputs), output_unit=str(self.model.metadata.get("output_unit", "")),
                      hidden_layers=self.layers)

    def _demo_bins(self) -> tuple[np.ndarray, str]:
        """The natural-scene test bins the contributions cover: the first ``--bins`` of the test split,
        registered as the interval ``demo`` of the recording."""
        rec = self.recording(NATURAL)
        spec = self.model.input_spec
        if "demo" not in rec.intervals:
            rec.head_interval("test", max(self.settings.bins, 1), spec.history, spec.offset, name="demo")
        return rec.window_bins("demo", spec.history, spec.offset), "demo"

    def stage_contributions(self) -> None:
        """Conductance of every hidden layer to the population surprisal → ``contributions.h5``."""
        path = self.paths.contributions
        with self._stage("contributions", 4, "CODEC contributions (conductance, population surprisal)"):
            inputs = {"fit": self.paths.fit}
            if self._skipped_fresh(path, inputs, is_complete):
                return
            bins, split = self._demo_bins()
            # surprisal moments: model rates over the whole test split
            target = SurprisalTarget().fit(read_fit(self.paths.fit).stimuli[NATURAL]["predicted"])
            print(f"      layers {', '.join(self.layers)}; {len(bins)} natural-scene test bins "
                  f"({len(bins) / self.recording(NATURAL).frame_rate:.0f} s), {self.settings.steps} steps")
            write_contributions(self.model, self.recording(NATURAL), path, self.layers, target=target,
                                steps=self.settings.steps, split=split, device=self.device,
                                resume=not self.settings.force,
                                attrs={"model_path": str(self._model_path), "recording_path": str(self.paths.recording),
                                       "surprisal_reference": "model rates over the natural-scene test split",
                                       "frame_rate": float(self.recording(NATURAL).frame_rate),
                                       "inputs": to_json(input_signatures(inputs), sort_keys=False)})
            summary, _ = read_completeness(path)
            for layer, v in summary.items():
                print(f"      {layer}: completeness error {100 * v['total_rel']:.2g}% of |F(x) - F(0)|")

    def stage_modes(self) -> None:
        """CODEC SAE modes per layer, their correlations with each cell's predicted rate and k-means of cells."""
        with self._stage("modes", 5, "contribution modes per layer"):
            fitted = read_fit(self.paths.fit)
            skipped = 0
            for layer in self.layers:
                path, spath = self.paths.modes(layer), self.paths.modes_summary(layer)
                inputs = {"contributions": self.paths.contributions, "fit": self.paths.fit}
                if self._fresh(path, inputs=inputs) and self._fresh(spath, inputs={"modes": path}):
                    print(f"      {path.name} exists: skipping")
                    skipped += 1
                    continue
                with torch_threads(1):  # a small MLP: threads only add synchronisation
                    res = modes_from_store(
                        self.paths.contributions, layer, path, kind="codec", center=True, seed=self.settings.seed,
                        max_epochs=self.settings.sae_epochs, device=self.settings.device, overwrite=True,
                        attrs={"model_hash": self.model_hash,
                               "frame_rate": float(read_store_info(self.paths.contributions).attrs.get("frame_rate", 100.0)),
                               "inputs": to_json(input_signatures(inputs), sort_keys=False),
                               "uid": uuid.uuid4().hex})
                doc = modes_summary(res, fitted, NATURAL, model_hash=self.model_hash,
                                    inputs=input_signatures({"modes": path}), seed=self.settings.seed)
                write_json(spath, doc)
                dec = res.decomposer
                print(f"      {layer}: {dec.n_modes_} modes, held-out explained variance "
                      f"{dec.explained_variance_:.3f}, mean L0 {dec.l0_:.2f}"
                      + (f"; cells in {doc['clusters']['k']} clusters" if doc["clusters"] else ""))
            if skipped == len(self.layers):
                self._skipped.add("modes")

    def stage_rf(self) -> None:
        """White-noise STA, model STA (mean gradient), rank-1 parts and Gaussian fits, LN ground truth."""
        path = self.paths.rf
        with self._stage("rf", 6, "receptive fields: STA, model STA, true LN filters"):
            inputs = {"recording": self.paths.recording}
            if self._skipped_fresh(path, inputs):
                return
            rec = self.recording(WHITE)
            res = compute_rfs(self.model, rec, split=None, model_sta_samples=self.settings.model_sta_samples,
                              device=self.device)
            groups = {k: v for k, v in res.items() if k != "cell_names" and v is not None}
            gt = rec.ground_truth
            if gt is not None and len(gt.ln_cells):
                truth = score_ln_truth(gt.ln_cells, gt.ln_filters, rec.cell_ids,
                                       sta=res["sta"].sta if res.get("sta") else None,
                                       model_sta=res["model_sta"]["gradient"] if res.get("model_sta") else None)
                groups["ln_truth"] = truth
                for c, a, b in zip(truth["cell_ids"], truth["r_sta"], truth["r_model_sta"]):
                    print(f"      {c}: r(STA, true filter) {a:.3f}, r(model STA, true filter) {b:.3f}")
            attrs = {"method": "rf", "model_hash": self.model_hash, "recording": str(self.paths.recording),
                     "inputs": to_json(input_signatures(inputs), sort_keys=False), "stimulus": WHITE,
                     "history": int(self.model.input_spec.history), "offset": int(self.model.input_spec.offset),
                     "frame_rate": float(rec.frame_rate), "cell_ids": to_json(list(rec.cell_ids), sort_keys=False),
                     "cell_types": to_json([str(t) for t in gt.cell_types], sort_keys=False) if gt is not None else "[]"}
            write_rf(path, attrs=attrs, **groups)

    def _rf_cells(self) -> list[int]:
        """Indices of the ``--rf-cells`` (ids, or indices into the recording's cells; default: the first cell
        of each type); an unknown one is an :class:`~retina_codec.errors.UnknownCellError`."""
        rec = self.recording(NATURAL)
        if self.settings.rf_cells:
            out = []
            for c in self.settings.rf_cells:
                i = cell_index(c, rec.cell_ids)
                if i is not None:
                    out.append(i)
                else:
                    raise UnknownCellError(
                        f"--rf-cells {c}: not a cell id or index (0-{rec.n_cells - 1}) of {self.paths.recording.name}; "
                        f"ids: {', '.join(rec.cell_ids[:6])}{', ...' if rec.n_cells > 6 else ''}")
            return out
        gt = rec.ground_truth
        return _first_of_each_type(list(gt.cell_types)) if gt is not None else list(range(min(4, rec.n_cells)))

    def stage_conditioned(self) -> None:
        """One pass of IRFs over the first ``--irf-bins`` contribution bins, conditioned on each layer's modes."""
        with self._stage("conditioned", 7, "instantaneous and mode-conditioned RFs, dynamic-RF sources"):
            todo = [layer for layer in self.layers
                    if not self._fresh(self.paths.conditioned(layer), inputs={"modes": self.paths.modes(layer)})]
            if not todo:
                self._skip("rf_conditioned_*.h5 exist: skipping")
                return
            rec = self.recording(NATURAL)
            cells = self._rf_cells()
            spec = self.model.input_spec
            loadings: dict[str, np.ndarray] = {}
            chosen: dict[str, tuple[list[int], list[Any]]] = {}
            bins = None
            for layer in todo:
                load, lbins, names = read_loadings(self.paths.modes(layer))
                order = np.argsort(lbins, kind="stable")
                load, lbins = load[order][: self.settings.irf_bins], lbins[order][: self.settings.irf_bins]
                if bins is None:
                    bins = lbins
                elif not np.array_equal(bins, lbins):
                    raise ModesError(f"{self.paths.modes(layer)}: bins differ from the other layer's")
                keep = [int(i) for i in most_active_modes(load, self.settings.rf_modes)]
                loadings[layer] = load[:, keep].astype(np.float64)
                chosen[layer] = (keep, [names[i] for i in keep] if names else keep)
            print(f"      {len(bins)} bins x cells {', '.join(rec.cell_ids[c] for c in cells)}; modes per layer: "
                  + "; ".join(f"{k}: {len(v[0])}" for k, v in chosen.items()))
            results = conditioned_rfs_by_set(self.model, rec, loadings, bins, cells=cells, threshold=0.0,
                                             max_combinations=8, min_count=2, keep="full", batch_size=64,
                                             history=spec.history, offset=spec.offset, rank1_float64=False)
            for layer, (cond, src) in results.items():
                keep, names = chosen[layer]
                attrs = {"method": "rf", "model_hash": self.model_hash, "layer": layer, "stimulus": NATURAL,
                         "recording": str(self.paths.recording), "modes_file": self.paths.modes(layer).name,
                         "mode_names": to_json([str(n) for n in names], sort_keys=False),
                         "mode_index": to_json(keep, sort_keys=False), "cells": to_json(cells, sort_keys=False),
                         "cell_ids": to_json([rec.cell_ids[c] for c in cells], sort_keys=False),
                         "history": int(spec.history), "offset": int(spec.offset),
                         "frame_rate": float(rec.frame_rate), "threshold": 0.0,
                         "first_bin": int(bins[0]), "last_bin": int(bins[-1]),
                         "inputs": to_json(input_signatures({"modes": self.paths.modes(layer)}), sort_keys=False)}
                write_rf(self.paths.conditioned(layer), attrs=attrs, conditioned=cond, sources=src)
                best = np.nanargmax(src.r2_irf) if len(src.r2_irf) else 0
                print(f"      {layer}: loadings explain {100 * np.nanmean(src.r2_irf):.0f}% of the IRF variance "
                      f"on average (best {rec.cell_ids[cells[best]]}: {100 * src.r2_irf[best]:.0f}%)")

    def stage_classifiers(self) -> None:
        """The classifier comparison on the shipped digits CNN, as ``retina-codec classify-stats digits-cnn
        digits --mode-images digits:train --out OUT/classifiers`` (statistics, modes, sweeps, masks)."""
        with self._stage("classifiers", 8, "classifier comparison (digits CNN)"):
            path = self.paths.classifiers
            if not self.settings.classifiers:
                self._skip("skipped (--no-classifiers)")
                self.notes["classifiers"] = "skipped (--no-classifiers)"
                return
            argv = classifier_argv(path.parent, self.settings.classifier_images)
            if argv is None:
                msg = ("skipped: the classifier comparison (retina_codec.classifiers, 'retina-codec classify-stats') "
                       "is not installed in this version")
                self._skip(msg)
                self.notes["classifiers"] = msg
                return
            self.notes.pop("classifiers", None)
            if path.exists() and not self.settings.force and is_stats_file(path):
                self._skip(f"{path} exists: skipping")
                return
            print("      retina-codec " + " ".join(argv))
            with torch_threads(1):  # a small CNN on 8x8 images and SAEs: many small operations
                run_classifier_comparison(path.parent, self.settings.classifier_images)

    def stage_report(self) -> None:
        with self._stage("report", 9, "HTML report"):
            self.write_manifest()
            out = build_report(self.paths.out)
            print(f"      wrote {out}")

    def write_manifest(self) -> None:
        doc = {"settings": {k: v for k, v in asdict(self.settings).items() if k != "quiet"},
               "model_path": str(self._model_path) if self._model_path else None,
               "model_source": self._model_source, "model_hash": self._model_hash,
               "device": self.device, "timings_s": self.timings, "notes": self.notes,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        old = self.paths.manifest
        if old.exists():  # stages that found their output keep the timing of the run that made it
            with contextlib.suppress(ValueError, OSError):  # an unreadable old manifest: new timings only
                prev = read_json(old).get("timings_s", {})
                doc["timings_s"] = {k: prev[k] if k in self._skipped and k in prev else v
                                    for k, v in self.timings.items()}
        write_json(old, doc)

    def run(self) -> None:
        """Run every stage in order; each skips when its output is already there."""
        if self.settings.model and not self.settings.fit:
            check_model_path(resolve_model_path(self.settings.model))  # fail before simulating anything
        check_out_folder(self.paths.out)
        self.paths.out.mkdir(parents=True, exist_ok=True)
        try:
            with numpy_blas_single_thread(), quiet_scope(self.settings.quiet):
                for stage in STAGES:
                    getattr(self, f"stage_{stage}")()
                    if stage == "recording" and self.settings.rf_cells:
                        self._rf_cells()  # an unknown --rf-cells fails now, not after the long stages
        finally:
            self.close()
            if self._model is not None:
                self.write_manifest()


def run_classifier_comparison(out: Path, max_per_class: int | None = None) -> None:
    """The demo's classifier comparison: the shipped digits CNN on the digits' test split, modes fitted on
    the train split; ``out/stats.h5`` and the figures, then the summary lines and the sparsity verdict."""
    cmp = compare_classifier("digits-cnn", "digits", out, mode_images="digits:train", max_per_class=max_per_class,
                             overwrite=True)
    write_comparison_figures(cmp, out)
    for line in cmp.summary_lines():
        log.info("%s", line)
    print(sparsity_verdict(cmp.result.stats, cmp.result.aliases))


def run_demo(settings: DemoSettings) -> Demo:
    """Run the demo with ``settings``; returns the finished :class:`Demo` (its ``paths`` name the outputs)."""
    demo = Demo(settings)
    demo.run()
    return demo
