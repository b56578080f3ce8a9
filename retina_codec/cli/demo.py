"""``retina-codec demo``: the whole pipeline on the embedded default, a simulated retina, ending in a report.

Stages, each writing its own store into ``--out`` (and skipped when that store exists, is complete and
was made with the same model, so an interrupted demo resumes where it stopped)::

    recording      simulated_retina_<preset>_seed<seed>.nwb   natural scenes + white noise, ground truth
    model          the shipped fitted BN-CNN (models/bncnn-sim-default), or a small one fitted into model/
    fit            fit.h5            predicted rates, per-cell r with the responses and the true rates
    contributions  contributions.h5  CODEC conductance of conv1 and conv2 to the population surprisal
    modes          modes_<layer>.h5 + modes_<layer>_summary.json   SAE modes; cell x mode correlations, k-means
    rf             rf.h5             white-noise STA, model STA, rank-1 parts, the LN cells' true filters
    conditioned    rf_conditioned_<layer>.h5   mode-conditioned RFs and dynamic-RF sources
    classifiers    classifiers/stats.h5        the classifier comparison on the digits CNN (``classify-stats``)
    report         report.html       one self-contained HTML file (``retina-codec report DIR``)

``demo.json`` records the settings, the model and each stage's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .options import device_name, non_negative_int, positive_int

log = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "DemoSettings", "Demo", "STAGES", "default_model_path", "check_out_folder"]

SHIPPED_MODEL = Path("models") / "bncnn-sim-default"
NATURAL, WHITE = "naturalscene", "whitenoise"
STAGES = ("recording", "model", "fit", "contributions", "modes", "rf", "conditioned", "classifiers", "report")


def default_model_path() -> Path:
    """``models/bncnn-sim-default`` in the working directory, else next to the installed package (repo root)."""
    here = SHIPPED_MODEL
    if (here / "model.json").exists():
        return here
    root = Path(__file__).resolve().parents[2] / SHIPPED_MODEL
    return root if (root / "model.json").exists() else here


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline on the embedded simulated retina and write an HTML report",
        description="Simulate the retina (natural scenes, then white noise) or reuse the recording in --out, load "
                    "the shipped fitted BN-CNN, compute CODEC contributions to the population surprisal for both "
                    "conv layers, contribution modes, STA / model STA / mode-conditioned RFs and dynamic-RF "
                    "sources, the classifier comparison, and write OUT/report.html. Each stage skips when its "
                    "output exists (resumable).",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--preset", default="default", choices=("default", "small"),
                   help="simulation size (default: 15 min natural scenes + 7.5 min white noise)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="simulation seed (default 0)")
    p.add_argument("--resimulate", action="store_true", help="simulate again even if OUT has the recording")
    p.add_argument("--model", default=None,
                   help=f"fitted model folder (default: the shipped {SHIPPED_MODEL}; when that is missing, a small "
                        "BN-CNN is fitted into OUT/model)")
    p.add_argument("--session", default=None, metavar="NAME",
                   help="with --model MODEL.ckpt: the recording session of a multi-session openretina checkpoint")
    p.add_argument("--fit", action="store_true", help="fit a small BN-CNN into OUT/model instead of using --model")
    p.add_argument("--fit-epochs", type=positive_int, default=2, help="epochs of that fit (default 2)")
    p.add_argument("--fit-steps", type=positive_int, default=100, help="batches of 256 per epoch of that fit (default 100)")
    p.add_argument("--bins", type=positive_int, default=3000,
                   help="test bins (from the start of the natural-scene test split) whose contributions and "
                        "modes are computed (default 3000 = 30 s)")
    p.add_argument("--irf-bins", type=positive_int, default=1500,
                   help="the first N of those bins used for instantaneous / mode-conditioned RFs (default 1500)")
    p.add_argument("--rf-cells", nargs="+", default=None,
                   help="cell ids for the conditioned RFs (default: the first cell of each type)")
    p.add_argument("--rf-modes", type=positive_int, default=8,
                   help="condition RFs on the N most often active modes of each layer (default 8)")
    p.add_argument("--steps", type=positive_int, default=20, help="conductance path steps (default 20)")
    p.add_argument("--sae-epochs", type=positive_int, default=100, help="most epochs of each layer's SAE (default 100)")
    p.add_argument("--model-sta-samples", type=positive_int, default=256,
                   help="white-noise windows for the model STA (mean gradient; default 256)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--force", action="store_true", help="recompute every stage (the recording too only with "
                                                        "--resimulate)")
    p.add_argument("--no-classifiers", action="store_true", help="skip the classifier comparison")
    p.add_argument("--classifier-images", type=positive_int, default=None,
                   help="digits per class for the classifier comparison (default: the whole test split)")
    p.set_defaults(func=run)


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
    def from_args(cls, args: argparse.Namespace) -> DemoSettings:
        return cls(out=args.out, preset=args.preset, seed=args.seed, model=args.model,
                   session=getattr(args, "session", None), fit=args.fit,
                   fit_epochs=args.fit_epochs, fit_steps=args.fit_steps, bins=args.bins, irf_bins=args.irf_bins,
                   rf_cells=args.rf_cells, rf_modes=args.rf_modes, steps=args.steps, sae_epochs=args.sae_epochs,
                   model_sta_samples=args.model_sta_samples, device=args.device, resimulate=args.resimulate,
                   force=args.force, classifiers=not args.no_classifiers,
                   classifier_images=args.classifier_images,
                   quiet=True if getattr(args, "quiet", False) else None)


@dataclass
class DemoPaths:
    """Where each stage writes, inside the demo folder."""

    out: Path
    preset: str
    seed: int

    @property
    def recording(self) -> Path:
        return self.out / f"simulated_retina_{self.preset}_seed{self.seed}.nwb"

    model_dir = property(lambda self: self.out / "model")
    fit = property(lambda self: self.out / "fit.h5")
    contributions = property(lambda self: self.out / "contributions.h5")
    rf = property(lambda self: self.out / "rf.h5")
    classifiers = property(lambda self: self.out / "classifiers" / "stats.h5")
    report = property(lambda self: self.out / "report.html")
    manifest = property(lambda self: self.out / "demo.json")

    def modes(self, layer: str) -> Path:
        return self.out / f"modes_{layer}.h5"

    def modes_summary(self, layer: str) -> Path:
        return self.out / f"modes_{layer}_summary.json"

    def conditioned(self, layer: str) -> Path:
        return self.out / f"rf_conditioned_{layer}.h5"


# ------------------------------------------------------------------------------------------------ helpers
def _h5_attr(path: Path, name: str) -> Any:
    """A root attribute of an HDF5 file (``None`` when the file or attribute is missing or unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get(name)
    except OSError:
        return None
    return v.decode() if isinstance(v, bytes) else v


def file_signature(path: Path) -> str:
    """A store's identity: its ``uid`` / ``finished`` / ``created`` attribute (HDF5), else size and
    modification time."""
    if path.suffix == ".h5":
        for key in ("uid", "finished", "created"):
            v = _h5_attr(path, key)
            if v:
                return str(v)
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def input_signatures(inputs: dict[str, Path]) -> dict[str, str]:
    """``{name: file_signature(path)}`` of a stage's input stores (missing files give ``""``)."""
    return {k: file_signature(p) if p.exists() else "" for k, p in sorted(inputs.items())}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def write_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON atomically (NaN written as null)."""
    from ..io_utils import atomic_path

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, np.generic):
            return clean(o.item())
        return o

    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(clean(doc), indent=1, default=_json_default) + "\n")


def _first_of_each_type(types: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    for i, t in enumerate(types):
        seen.setdefault(str(t), i)
    return sorted(seen.values())


# ------------------------------------------------------------------------------------------------ the demo
@dataclass
class Demo:
    """The demo's stages over one output folder; :meth:`run` runs the missing ones in order."""

    settings: DemoSettings
    paths: DemoPaths = field(init=False)
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
        self.paths = DemoPaths(Path(s.out), s.preset, s.seed)

    # ---- shared resources, loaded on first use --------------------------------------------------
    @property
    def device(self) -> str:
        from ..models.fitting import resolve_device

        return str(resolve_device(self.settings.device))

    def recording(self, stimulus: str) -> Any:
        """The natural-scene or white-noise recording of the demo's NWB file (lazy, kept open)."""
        if stimulus not in self._recs:
            from ..recordings.nwb import read_nwb

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
            from ..hashing import model_hash

            self._model_hash = model_hash(self.model)
        return self._model_hash

    @property
    def layers(self) -> list[str]:
        return list(self.model.hidden_layers)

    def _fresh(self, path: Path, check: Callable[[Path], bool] | None = None,
               inputs: dict[str, Path] | None = None) -> bool:
        """True when ``path`` exists, was made with the current model (its ``model_hash``), from the current
        versions of its ``inputs`` (their signatures, recorded in its ``inputs`` attribute) and passes
        ``check``. A stale store is reported and recomputed."""
        if self.settings.force or not path.exists():
            return False
        doc = json.loads(path.read_text()) if path.suffix == ".json" else \
            {k: _h5_attr(path, k) for k in ("model_hash", "inputs")}
        stored = doc.get("model_hash")
        if stored is not None and stored != self.model_hash:
            print(f"      {path.name} was made with another model: recomputing")
            return False
        if inputs:
            recorded = doc.get("inputs")
            recorded = json.loads(recorded) if isinstance(recorded, str) else (recorded or {})
            if recorded != input_signatures(inputs):
                print(f"      {path.name} was made from older inputs: recomputing")
                return False
        return check(path) if check else True

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
        from ..recordings.nwb import write_nwb
        from ..sim import simulate_retina

        s, path = self.settings, self.paths.recording
        with self._stage("recording", 1, "simulated recording"):
            if path.exists() and not s.resimulate:
                self._skip(f"using the simulated recording already in {path}")
                return
            print(f"      simulating the retina (preset {s.preset!r}, seed {s.seed}) ...")
            recs = simulate_retina(preset=s.preset, seed=s.seed, quiet=s.quiet)
            write_nwb(recs, path, overwrite=True)
            print(f"      wrote {path}")

    def stage_model(self) -> None:
        from ..models import load_model

        s = self.settings
        with self._stage("model", 2, "fitted retina model"):
            shipped = Path(s.model) if s.model else default_model_path()
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
        import torch

        from ..models import save_model
        from ..models.card import machine_description, write_model_card
        from ..models.fitting import SMALL_CONFIG, fit

        s = self.settings
        rec = self.recording(NATURAL)
        print(f"      fitting a small BN-CNN ({why}): {s.fit_epochs} epochs x {s.fit_steps} batches on "
              f"{rec.stimulus_name} ...")
        torch.manual_seed(s.seed)
        res = fit(rec, model_kwargs=dict(SMALL_CONFIG), history=SMALL_CONFIG["history"], epochs=s.fit_epochs,
                  steps_per_epoch=s.fit_steps, device=s.device, seed=s.seed, quiet=s.quiet)
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

    def stage_fit(self) -> None:
        """Predicted rates and per-cell r on both stimuli' test splits → ``fit.h5``."""
        import h5py

        from ..io_utils import atomic_path, h5_create
        from ..models import predict
        from ..models.fitting import pearson_r

        path = self.paths.fit
        with self._stage("fit", 3, "model fit on held-out data"):
            inputs = {"recording": self.paths.recording}
            if self._fresh(path, inputs=inputs):
                self._skip(f"{path.name} exists: skipping")
                return
            with atomic_path(path, suffix=".h5") as tmp, h5_create(tmp) as f:
                f.attrs["model_hash"] = self.model_hash
                f.attrs["model_path"] = str(self._model_path)
                f.attrs["model_source"] = self._model_source
                f.attrs["model"] = json.dumps(self.model.describe(), default=_json_default)
                f.attrs["training"] = json.dumps(self.model.metadata.get("training", {}), default=_json_default)
                f.attrs["content"] = "retina-codec demo: model fit"
                f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                f.attrs["uid"] = uuid.uuid4().hex
                f.attrs["inputs"] = json.dumps(input_signatures(inputs))
                f.attrs["output_unit"] = str(self.model.metadata.get("output_unit", ""))
                f.attrs["hidden_layers"] = json.dumps(self.layers)
                for stim in (NATURAL, WHITE):
                    rec = self.recording(stim)
                    bins, pred = predict(self.model, rec, "test", quiet=self.settings.quiet)
                    g = f.create_group(stim)
                    g.attrs["split"] = "test"
                    g.attrs["frame_rate"] = float(rec.frame_rate)
                    g.create_dataset("bins", data=bins)
                    g.create_dataset("times", data=rec.frame_times[bins])
                    g.create_dataset("predicted", data=pred, compression="gzip")
                    g.create_dataset("responses", data=rec.responses[bins], compression="gzip")
                    r = pearson_r(pred, rec.responses[bins])
                    g.create_dataset("r_response", data=r)
                    g.attrs["mean_r_response"] = float(np.nanmean(r))
                    line = f"      {stim}: mean r {np.nanmean(r):.3f} with the responses"
                    gt = rec.ground_truth
                    if gt is not None:
                        true = np.asarray(gt.true_rates)[bins]
                        r = pearson_r(pred, true)
                        g.create_dataset("true_rates", data=true, compression="gzip")
                        g.create_dataset("r_true_rate", data=r)
                        g.attrs["mean_r_true_rate"] = float(np.nanmean(r))
                        line += f", {np.nanmean(r):.3f} with the true rates"
                    print(line + f" ({len(bins)} test bins)")
                rec = self.recording(NATURAL)
                f.create_dataset("cell_ids", data=np.array(rec.cell_ids, dtype=h5py.string_dtype()))
                if rec.ground_truth is not None:
                    f.create_dataset("cell_types", data=np.array([str(t) for t in rec.ground_truth.cell_types],
                                                                 dtype=h5py.string_dtype()))

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
        import h5py

        from ..contributions.store import write_contributions
        from ..contributions.targets import SurprisalTarget

        path = self.paths.contributions
        with self._stage("contributions", 4, "CODEC contributions (conductance, population surprisal)"):
            inputs = {"fit": self.paths.fit}
            if self._fresh(path, lambda p: bool(_h5_attr(p, "complete")), inputs):
                self._skip(f"{path.name} exists: skipping")
                return
            bins, split = self._demo_bins()
            with h5py.File(self.paths.fit, "r") as f:  # surprisal moments: model rates over the whole test split
                target = SurprisalTarget().fit(f[NATURAL]["predicted"][...])
            print(f"      layers {', '.join(self.layers)}; {len(bins)} natural-scene test bins "
                  f"({len(bins) / self.recording(NATURAL).frame_rate:.0f} s), {self.settings.steps} steps")
            write_contributions(self.model, self.recording(NATURAL), path, self.layers, target=target,
                                steps=self.settings.steps, split=split, device=self.device,
                                quiet=self.settings.quiet, resume=not self.settings.force,
                                attrs={"model_path": str(self._model_path), "recording_path": str(self.paths.recording),
                                       "surprisal_reference": "model rates over the natural-scene test split",
                                       "frame_rate": float(self.recording(NATURAL).frame_rate),
                                       "inputs": json.dumps(input_signatures(inputs))})
            summary = json.loads(_h5_attr(path, "completeness"))
            for layer, v in summary.items():
                print(f"      {layer}: completeness error {100 * v['total_rel']:.2g}% of |F(x) - F(0)|")

    def stage_modes(self) -> None:
        """CODEC SAE modes per layer, their correlations with each cell's predicted rate and k-means of cells."""
        import h5py

        from ..modes import ModeDecomposer, cluster_cells, loading_correlations, write_modes
        from ..modes.store import read_layer_contributions
        from ..report.threads import torch_threads

        with self._stage("modes", 5, "contribution modes per layer"):
            with h5py.File(self.paths.fit, "r") as f:
                fb, pred = f[NATURAL]["bins"][...], f[NATURAL]["predicted"][...]
                ids = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cell_ids"][...]]
                types = [c.decode() if isinstance(c, bytes) else str(c) for c in f["cell_types"][...]] \
                    if "cell_types" in f else [""] * len(ids)
            row = {int(b): i for i, b in enumerate(fb)}
            skipped = 0
            for layer in self.layers:
                path, spath = self.paths.modes(layer), self.paths.modes_summary(layer)
                inputs = {"contributions": self.paths.contributions, "fit": self.paths.fit}
                if self._fresh(path, inputs=inputs) and self._fresh(spath, inputs={"modes": path}):
                    print(f"      {path.name} exists: skipping")
                    skipped += 1
                    continue
                data = read_layer_contributions(self.paths.contributions, layer)
                dec = ModeDecomposer(kind="codec", center=True, random_state=self.settings.seed,
                                     max_epochs=self.settings.sae_epochs, device=self.settings.device,
                                     quiet=self.settings.quiet)
                with torch_threads(1):  # a small MLP: threads only add synchronisation
                    dec.fit(data.X)
                loadings = dec.transform(data.X)
                link = {k: data.attrs[k] for k in ("method", "rule", "steps", "target", "reduction", "model_hash",
                                                   "source") if k in data.attrs}
                write_modes(path, dec, loadings, data.bins, contributions_path=data.path, layer=layer,
                            contributions_attrs=link,
                            attrs={"model_hash": self.model_hash, "frame_rate": float(data.attrs.get("frame_rate", 100.0)),
                                   "inputs": json.dumps(input_signatures(inputs)), "uid": uuid.uuid4().hex})
                rates = pred[[row[int(b)] for b in data.bins]]
                r = loading_correlations(loadings, rates)  # (modes, cells)
                active = (loadings > 0).sum(0)
                doc: dict[str, Any] = {
                    "model_hash": self.model_hash, "layer": layer, "modes_path": path.name,
                    "mode_names": [f"mode{i}" for i in range(dec.n_modes_)], "active_bins": active,
                    "n_bins": int(len(data.bins)), "cell_ids": ids, "cell_types": types, "correlation": r,
                    "correlation_of": "Pearson r of each mode's loadings with each cell's predicted rate",
                    "inputs": input_signatures({"modes": path}),
                }
                try:
                    cl = cluster_cells(r.T, random_state=self.settings.seed)
                    doc["clusters"] = {"labels": cl.labels, "k": cl.k,
                                       "silhouette": {str(k): v for k, v in cl.silhouette.items()}}
                except Exception as err:  # a degenerate profile matrix: report, do not fail the demo
                    doc["clusters"] = None
                    doc["clusters_error"] = str(err)
                write_json(spath, doc)
                print(f"      {layer}: {dec.n_modes_} modes, held-out explained variance "
                      f"{dec.explained_variance_:.3f}, mean L0 {dec.l0_:.2f}"
                      + (f"; cells in {doc['clusters']['k']} clusters" if doc["clusters"] else ""))
            if skipped == len(self.layers):
                self._skipped.add("modes")

    def stage_rf(self) -> None:
        """White-noise STA, model STA (mean gradient), rank-1 parts and Gaussian fits, LN ground truth."""
        from ..rf.decompose import peak_box
        from ..rf.store import write_rf
        from .rf import compute_rfs

        path = self.paths.rf
        with self._stage("rf", 6, "receptive fields: STA, model STA, true LN filters"):
            inputs = {"recording": self.paths.recording}
            if self._fresh(path, inputs=inputs):
                self._skip(f"{path.name} exists: skipping")
                return
            rec = self.recording(WHITE)
            res = compute_rfs(self.model, rec, split=None, model_sta_samples=self.settings.model_sta_samples,
                              quiet=self.settings.quiet)
            groups = {k: v for k, v in res.items() if k != "cell_names" and v is not None}
            gt = rec.ground_truth
            if gt is not None and len(gt.ln_cells):
                h = res["model_sta"]["gradient"].shape[1] if res.get("model_sta") else res["sta"].sta.shape[1]
                ln = np.asarray(gt.ln_cells, dtype=np.int64)
                true = np.asarray(gt.ln_filters)[:, -h:]  # the model's window: the last h frames
                r_sta, r_model = [], []
                for j, c in enumerate(ln):
                    support = np.abs(true[j]) >= 0.1 * np.abs(true[j]).max()
                    for est, out in ((res["sta"].sta if res.get("sta") else None, r_sta),
                                     (res["model_sta"]["gradient"] if res.get("model_sta") else None, r_model)):
                        out.append(float("nan") if est is None else
                                   float(np.corrcoef(np.nan_to_num(est[c][support]), true[j][support])[0, 1]))
                box = [peak_box(true[j]) for j in range(len(ln))]
                groups["ln_truth"] = {
                    "cells": ln, "cell_ids": [rec.cell_ids[c] for c in ln], "filters": true,
                    "r_sta": np.array(r_sta), "r_model_sta": np.array(r_model),
                    "peak_box": np.array([[b[0].start, b[0].stop, b[1].start, b[1].stop] for b in box]),
                    "description": "true LN filters (last h frames of the window), and Pearson r of the STA and "
                                   "the model STA with them on the filter's support (|F| >= 10% of its peak)",
                }
                for c, a, b in zip(groups["ln_truth"]["cell_ids"], r_sta, r_model):
                    print(f"      {c}: r(STA, true filter) {a:.3f}, r(model STA, true filter) {b:.3f}")
            attrs = {"method": "rf", "model_hash": self.model_hash, "recording": str(self.paths.recording),
                     "inputs": json.dumps(input_signatures(inputs)), "stimulus": WHITE, "history": int(self.model.input_spec.history),
                     "offset": int(self.model.input_spec.offset), "frame_rate": float(rec.frame_rate),
                     "cell_ids": json.dumps(list(rec.cell_ids)),
                     "cell_types": json.dumps([str(t) for t in gt.cell_types]) if gt is not None else "[]"}
            write_rf(path, attrs=attrs, **groups)

    def _rf_cells(self) -> list[int]:
        """Indices of the ``--rf-cells`` (ids, or indices into the recording's cells; default: the first cell
        of each type); an unknown one is an :class:`~retina_codec.errors.UnknownCellError`."""
        from ..errors import UnknownCellError
        from ..recordings.recording import cell_index

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
        import torch

        from ..modes.store import read_loadings
        from ..rf.conditioned import ConditionedRFAccumulator, active_combinations
        from ..rf.decompose import batched_rank1
        from ..rf.irf import iter_irfs
        from ..rf.sources import SourcesAccumulator, spatial_features
        from ..rf.store import write_rf

        with self._stage("conditioned", 7, "instantaneous and mode-conditioned RFs, dynamic-RF sources"):
            todo = [layer for layer in self.layers
                    if not self._fresh(self.paths.conditioned(layer), inputs={"modes": self.paths.modes(layer)})]
            if not todo:
                self._skip("rf_conditioned_*.h5 exist: skipping")
                return
            rec = self.recording(NATURAL)
            cells = self._rf_cells()
            spec = self.model.input_spec
            per_layer: dict[str, dict[str, Any]] = {}
            bins = None
            for layer in todo:
                load, lbins, names = read_loadings(self.paths.modes(layer))
                order = np.argsort(lbins, kind="stable")
                load, lbins = load[order][: self.settings.irf_bins], lbins[order][: self.settings.irf_bins]
                if bins is None:
                    bins = lbins
                elif not np.array_equal(bins, lbins):
                    raise ValueError(f"{self.paths.modes(layer)}: bins differ from the other layer's")
                count = (load > 0).sum(0)
                keep = [int(i) for i in np.argsort(-count, kind="stable")[: self.settings.rf_modes] if count[i] > 0]
                a = load[:, keep].astype(np.float64)
                combos, code = active_combinations(a, 0.0, max_combinations=8, min_count=2)
                per_layer[layer] = {"loadings": torch.as_tensor(a), "code": torch.as_tensor(code), "combos": combos,
                                    "modes": keep, "names": [names[i] for i in keep] if names else keep}
            print(f"      {len(bins)} bins x cells {', '.join(rec.cell_ids[c] for c in cells)}; modes per layer: "
                  + "; ".join(f"{k}: {len(v['modes'])}" for k, v in per_layer.items()))
            pos = 0
            for bb, jac, _ in iter_irfs(self.model, rec, bins, cells, history=spec.history, offset=spec.offset,
                                        batch_size=64, quiet=self.settings.quiet):
                b = len(bb)
                s, t, _ = batched_rank1(jac.reshape(b * len(cells), spec.history, -1))
                feats = spatial_features(s, rec.frame_shape).reshape(b, len(cells), -1)
                for st in per_layer.values():
                    if "acc" not in st:
                        k = st["loadings"].shape[1]
                        st["acc"] = ConditionedRFAccumulator(k, st["combos"], len(cells), spec.history,
                                                             rec.frame_shape, 0.0, "full", device=jac.device)
                        st["src"] = SourcesAccumulator(k, len(cells), spec.history, rec.frame_shape, 0.0,
                                                       device=jac.device)
                    a, cd = st["loadings"][pos:pos + b], st["code"][pos:pos + b]
                    st["acc"].update(jac, a, cd, rank1=(s, t))
                    st["src"].update(jac, a, feats)
                pos += b
            for layer, st in per_layer.items():
                cond, src = st["acc"].result(cells), st["src"].result()
                attrs = {"method": "rf", "model_hash": self.model_hash, "layer": layer, "stimulus": NATURAL,
                         "recording": str(self.paths.recording), "modes_file": self.paths.modes(layer).name,
                         "mode_names": json.dumps([str(n) for n in st["names"]]),
                         "mode_index": json.dumps(st["modes"]), "cells": json.dumps(cells),
                         "cell_ids": json.dumps([rec.cell_ids[c] for c in cells]),
                         "history": int(spec.history), "offset": int(spec.offset),
                         "frame_rate": float(rec.frame_rate), "threshold": 0.0,
                         "first_bin": int(bins[0]), "last_bin": int(bins[-1]),
                         "inputs": json.dumps(input_signatures({"modes": self.paths.modes(layer)}))}
                write_rf(self.paths.conditioned(layer), attrs=attrs, conditioned=cond, sources=src)
                best = np.nanargmax(src.r2_irf) if len(src.r2_irf) else 0
                print(f"      {layer}: loadings explain {100 * np.nanmean(src.r2_irf):.0f}% of the IRF variance "
                      f"on average (best {rec.cell_ids[cells[best]]}: {100 * src.r2_irf[best]:.0f}%)")

    def stage_classifiers(self) -> None:
        """The classifier comparison on the shipped digits CNN: ``retina-codec classify-stats digits-cnn digits
        --mode-images digits:train --out OUT/classifiers`` (statistics, modes, sweeps, masks)."""
        from ..report.threads import torch_threads

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
            if path.exists() and not self.settings.force and _h5_attr(path, "format"):
                self._skip(f"{path} exists: skipping")
                return
            from .main import build_parser

            print("      retina-codec " + " ".join(argv))
            args = build_parser().parse_args(argv)
            args.quiet = self.settings.quiet
            with torch_threads(1):  # a small CNN on 8x8 images and SAEs: many small operations
                args.func(args)

    def stage_report(self) -> None:
        from ..report import build_report

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
            with contextlib.suppress(ValueError):
                prev = json.loads(old.read_text()).get("timings_s", {})
                doc["timings_s"] = {k: prev[k] if k in self._skipped and k in prev else v
                                    for k, v in self.timings.items()}
        write_json(old, doc)

    def run(self) -> None:
        """Run every stage in order; each skips when its output is already there."""
        from ..report.threads import numpy_blas_single_thread

        if self.settings.model and not self.settings.fit:
            check_model_path(Path(self.settings.model))  # fail before simulating anything
        check_out_folder(self.paths.out)
        self.paths.out.mkdir(parents=True, exist_ok=True)
        try:
            with numpy_blas_single_thread():
                for stage in STAGES:
                    getattr(self, f"stage_{stage}")()
                    if stage == "recording" and self.settings.rf_cells:
                        self._rf_cells()  # an unknown --rf-cells fails now, not after the long stages
        finally:
            self.close()
            if self._model is not None:
                self.write_manifest()


def check_model_path(path: Path) -> None:
    """Raise :class:`~retina_codec.errors.CheckpointError` unless ``path`` is a model folder (with
    ``model.json``), a ``model.json`` / ``.safetensors`` file, a torch-deep-retina ``.pt`` or an openretina
    ``.ckpt`` file, or names ``FILE.py:FUNCTION`` (your own model, :mod:`~retina_codec.models.factory`)."""
    from ..errors import CheckpointError
    from ..models.factory import is_factory_spec

    if is_factory_spec(path):  # FILE.py:FUNCTION: the loader names a missing file or function itself
        return
    ok = (path / "model.json").exists() if path.is_dir() else path.is_file()
    if not ok:
        raise CheckpointError(f"--model {path}: no fitted model there (expected a folder with model.json, as "
                              "written by 'retina-codec fit', a torch-deep-retina .pt or an openretina .ckpt file, or "
                              "FILE.py:FUNCTION)")


#: names the demo writes in its folder (a folder holding only these, and hidden files such as the temporary
#: files of an interrupted write, is a demo folder even before ``demo.json`` exists)
DEMO_NAMES = ("demo.json", "simulated_retina_*.nwb", "model", "fit.h5", "contributions.h5",
              "contributions.h5.*partial", "modes_*.h5", "modes_*_summary.json", "rf.h5", "rf_conditioned_*.h5",
              "classifiers", "report.html", "report_figures")


def check_out_folder(out: Path) -> None:
    """Raise :class:`~retina_codec.errors.OutputExistsError` when ``out`` is a file, or a folder with other
    things in it than a demo's outputs and no ``demo.json`` (the demo would write, and replace, its stores
    there: ``fit.h5``, ``report.html``, ...)."""
    from ..errors import OutputExistsError

    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: is a file (expected a folder for the demo's outputs)")
    if not out.is_dir() or (out / "demo.json").exists():
        return
    foreign = sorted(p.name for p in out.iterdir()
                     if not p.name.startswith(".") and not any(p.match(g) for g in DEMO_NAMES))
    if foreign:
        raise OutputExistsError(f"--out {out}: not a demo folder (no demo.json; holds {', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder")


def classifier_argv(out: Path, max_per_class: int | None = None) -> list[str] | None:
    """The ``classify-stats`` command line the demo runs, or ``None`` when that command is not installed."""
    try:
        importlib.import_module("retina_codec.cli.classify_stats")
        importlib.import_module("retina_codec.classifiers")
    except ModuleNotFoundError:
        return None
    argv = ["classify-stats", "digits-cnn", "digits", "--mode-images", "digits:train", "--out", str(out),
            "--overwrite"]
    if max_per_class:
        argv += ["--max-per-class", str(max_per_class)]
    return argv


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0."""
    t0 = time.perf_counter()
    demo = Demo(DemoSettings.from_args(args))
    demo.run()
    print(f"done in {time.perf_counter() - t0:.1f} s; outputs in {demo.paths.out}/ (open "
          f"{demo.paths.report})")
    return 0
