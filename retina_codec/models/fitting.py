"""Fitting retina models to recordings (Poisson loss, Adam, early stopping) and evaluating them.

The model sees z-scored history windows ``(B, history, H, W)`` (z-scored with the recording's
train-split statistics, which are stored in the model) and predicts the response per bin in the unit of
``recording.responses`` (spike counts per bin for spike data). Training windows are drawn in a shuffled
order each epoch, gathered from the z-scored movie held once in memory (on the GPU when one is used).

Reproducibility: the model is initialised from ``seed``, and epoch ``e`` reseeds every random draw
(shuffling, training noise) from ``(seed, e)``, so a run resumed from ``checkpoint_dir`` continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, FitError, ShapeMismatchError
from ..io_utils import atomic_path
from ..progress import progress
from ..recordings.recording import Recording
from ..torch_utils.devices import resolve_device
from ..torch_utils.fft_conv import fft_convolutions, fft_inference
from .base import RetinaModel, input_norm, model_windows, warn_frame_rate
from .bncnn import BNCNN

__all__ = ["fit", "evaluate", "predict", "pearson_r", "FitResult", "Evaluation", "resolve_device",
           "SMALL_CONFIG", "RESUME_FILE"]

log = logging.getLogger(__name__)

RESUME_FILE = "fit_state.pt"

#: A reduced BN-CNN for quick fits on CPU (tests, ``retina-codec fit --small``): shorter history and
#: smaller kernels than the torch-deep-retina defaults; about 5x fewer FLOPs per bin.
SMALL_CONFIG: dict[str, Any] = {"history": 20, "channels": (8, 8), "kernel_sizes": (9, 7), "bn_momentum": 0.1,
                                "readout_bn_momentum": 0.1}


def pearson_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation of two ``(T, N)`` arrays; NaN where either column is constant."""
    a = np.asarray(pred, np.float64)
    b = np.asarray(target, np.float64)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"pearson_r: shapes differ, {a.shape} vs {b.shape}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def _mean_r(r: np.ndarray) -> float:
    """Mean over cells, counting cells with undefined r (constant prediction) as 0."""
    return float(np.nan_to_num(r, nan=0.0).mean()) if r.size else float("nan")


# ------------------------------------------------------------------------------------------------
# evaluation


@dataclass
class Evaluation:
    """Held-out performance of a model on one split.

    r_response : (N,) Pearson r of the prediction with the recorded responses, per cell.
    r_true_rate : (N,) Pearson r with the simulator's true rate (``None`` without ground truth).
    """

    split: str | None
    n_bins: int
    r_response: np.ndarray
    r_true_rate: np.ndarray | None = None
    poisson_loss: float | None = None

    @property
    def mean_r_response(self) -> float:
        return _mean_r(self.r_response)

    @property
    def mean_r_true_rate(self) -> float | None:
        return None if self.r_true_rate is None else _mean_r(self.r_true_rate)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-cell lists, NaN as ``None``)."""
        def cells(r: np.ndarray | None) -> list[float | None] | None:
            return None if r is None else [None if not np.isfinite(v) else float(v) for v in r]

        return {"split": self.split, "n_bins": self.n_bins, "mean_r_response": self.mean_r_response,
                "mean_r_true_rate": self.mean_r_true_rate, "poisson_loss": self.poisson_loss,
                "r_response": cells(self.r_response), "r_true_rate": cells(self.r_true_rate)}


def _check_compatible(model: RetinaModel, recording: Recording) -> None:
    from .contract import check_retina_model

    check_retina_model(model, "predict")
    warn_frame_rate(model, recording)
    spec = model.input_spec
    if tuple(recording.frame_shape) != (spec.height, spec.width):
        raise ShapeMismatchError(
            f"recording {recording.stimulus_name!r}: frames are {recording.frame_shape[0]}x"
            f"{recording.frame_shape[1]}, the model expects {spec.height}x{spec.width}"
        )
    n_model = getattr(model, "n_cells", None)
    if n_model is not None and recording.n_cells != n_model:
        raise ShapeMismatchError(
            f"recording {recording.stimulus_name!r}: has {recording.n_cells} cells, the model predicts "
            f"{n_model}"
        )


@torch.no_grad()
def predict(model: RetinaModel, recording: Recording, split: str | None = "test", *,
            bins: np.ndarray | None = None, batch_size: int = 1024, device: str | torch.device | None = None,
            quiet: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Model responses ``(n_bins, N)`` float32 for the windows of ``split`` (or explicit ``bins``).

    Windows follow the model's input spec (history, offset) and are z-scored with the model's
    ``norm_stats`` (the recording's train statistics when the model has none). Returns ``(bins, rates)``.
    """
    _check_compatible(model, recording)
    spec = model.input_spec
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(dev)
    mean, std = input_norm(model, recording)
    out_bins, outs = [], []
    with fft_inference(model):  # eval mode, frozen; FFT convolutions on a CPU (≈ 2× faster); restored on exit
        batches = recording.iter_windows(split if bins is None else None, history=spec.history,
                                         offset=spec.offset, batch_size=batch_size, normalize=False, bins=bins)
        for batch in progress(batches, desc=f"predict {split or 'bins'}", quiet=quiet, unit="batch"):
            x = model_windows(batch.stimulus, mean, std, dev)  # z-scored frames, windows as a view
            outs.append(model(x).float().cpu().numpy())
            out_bins.append(batch.bins)
    if not outs:
        return np.zeros(0, np.int64), np.zeros((0, model.n_cells), np.float32)
    return np.concatenate(out_bins), np.concatenate(outs)


def evaluate(model: RetinaModel, recording: Recording, split: str | None = "test", *, batch_size: int = 1024,
             device: str | torch.device | None = None, quiet: bool | None = None) -> Evaluation:
    """Per-cell Pearson r of the model's prediction with the responses of ``split``, and with
    ``recording.ground_truth.true_rates`` when the recording is simulated."""
    bins, pred = predict(model, recording, split, batch_size=batch_size, device=device, quiet=quiet)
    resp = recording.responses[bins]
    r_true = None
    gt = recording.ground_truth
    if gt is not None and getattr(gt, "true_rates", None) is not None:
        r_true = pearson_r(pred, np.asarray(gt.true_rates)[bins])
    loss = float(F.poisson_nll_loss(torch.from_numpy(pred).double(), torch.from_numpy(resp).double(),
                                    log_input=False, full=False, eps=1e-8)) if len(bins) else None
    return Evaluation(split, int(len(bins)), pearson_r(pred, resp), r_true, loss)


# ------------------------------------------------------------------------------------------------
# fitting


@dataclass
class FitResult:
    """What :func:`fit` returns.

    model : the fitted model at its best validation epoch, in eval mode, with ``norm_stats``,
        ``input_spec`` (frame rate, offset), ``cell_ids`` and ``metadata`` (training provenance, metrics).
    history : one dict per epoch (``epoch``, ``train_loss``, ``val_loss``, ``val_r``, ``seconds``,
        ``bins_per_s``).
    best_epoch : 1-based epoch whose weights were kept.
    test : evaluation on the test split (``None`` when the recording has none).
    """

    model: RetinaModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_r: float
    stopped_early: bool
    seconds: float
    test: Evaluation | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _split_bins(recording: Recording, train_split: str, val_split: str | None, history: int, offset: int,
                val_fraction: float) -> tuple[np.ndarray, np.ndarray, str]:
    train = recording.window_bins(train_split, history, offset)
    if val_split is not None and val_split in recording.intervals:
        val = recording.window_bins(val_split, history, offset)
        if len(val) == 0:
            raise FitError(f"split {val_split!r}: no bin has a whole {history}-frame history window (offset "
                             f"{offset}) inside the movie; lengthen the interval or pass val_split=None to "
                             f"validate on the last {val_fraction:g} of {train_split!r}")
        return train, val, val_split
    n_val = max(1, int(round(len(train) * val_fraction)))
    if len(train) - n_val < 2:
        raise FitError(f"split {train_split!r}: {len(train)} usable bins is too few to fit")
    log.info("no %r interval: validating on the last %d bins of %r", val_split, n_val, train_split)
    return train[:-n_val], train[-n_val:], f"last {val_fraction:g} of {train_split}"


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919) % (2**63 - 1)


def fit(
    recording: Recording,
    model: RetinaModel | None = None,
    *,
    train_split: str = "train",
    val_split: str | None = "validation",
    test_split: str | None = "test",
    history: int = 40,
    offset: int = 1,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    l2: float = 0.0,
    l1: float = 0.0,
    patience: int = 5,
    min_delta: float = 1e-4,
    steps_per_epoch: int | None = None,
    val_fraction: float = 0.1,
    device: str | torch.device | None = "auto",
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    model_kwargs: dict[str, Any] | None = None,
    eval_batch_size: int = 1024,
    quiet: bool | None = None,
) -> FitResult:
    """Fit ``model`` (default: a new :class:`BNCNN` built with ``model_kwargs``) to ``recording``.

    Loss: Poisson negative log-likelihood of the responses given the predicted rate per bin, plus
    ``l1`` × mean L1 norm of the predictions (torch-deep-retina's activity penalty); ``l2`` is Adam's
    weight decay. After every epoch the mean Pearson r over cells on the validation split decides early
    stopping (``patience`` epochs without an improvement of ``min_delta``) and which weights are kept.
    Without a ``val_split`` interval the last ``val_fraction`` of the training bins validate.

    ``steps_per_epoch`` caps the batches per epoch (``None``: one pass over the training bins).
    ``checkpoint_dir`` keeps a resume state (``fit_state.pt``) written after every epoch; calling
    ``fit`` again with the same directory and settings continues where it stopped (``epochs`` may grow).
    """
    t_start = time.perf_counter()
    if int(epochs) < 1:
        raise FitError(f"epochs: expected at least 1, found {epochs}")
    dev = resolve_device(device)
    if model is None:
        torch.manual_seed(seed)
        kw = {"history": history, **(model_kwargs or {})}
        model = BNCNN(recording.n_cells, frame_shape=recording.frame_shape, **kw)
    elif model_kwargs:
        raise FitError("model_kwargs: only used when no model is given")
    history = model.input_spec.history
    _check_compatible(model, recording)
    mean, std = recording.normalization(train_split)
    model.norm_stats = (float(mean), float(std))
    model.input_spec = replace(model.input_spec, frame_rate=recording.frame_rate, offset=int(offset))
    model.cell_ids = list(recording.cell_ids)
    model.to(dev)

    train_bins, val_bins, val_name = _split_bins(recording, train_split, val_split, history, offset, val_fraction)
    if len(train_bins) < 2:
        raise FitError(f"split {train_split!r}: {len(train_bins)} usable bins is too few to fit")

    # the z-scored movie, once, and the responses; windows are gathered by index per batch
    lo = int(min(train_bins.min(), val_bins.min())) - history - offset + 1
    hi = int(max(train_bins.max(), val_bins.max())) - offset + 1
    frames = torch.from_numpy(np.ascontiguousarray(recording.stimulus[lo:hi], dtype=np.float32))
    frames = ((frames - mean) / std).to(dev)
    responses = torch.from_numpy(np.ascontiguousarray(recording.responses)).to(dev)
    lag = torch.arange(history, device=dev) - history - offset + 1 - lo  # frame index of bin t: t + lag

    def windows(bins: torch.Tensor) -> torch.Tensor:
        return frames[bins[:, None] + lag]

    train_t = torch.from_numpy(train_bins).to(dev)
    val_t = torch.from_numpy(val_bins).to(dev)
    n_train = len(train_bins)
    n_batches = max(1, n_train // batch_size)  # drop the last partial batch (BatchNorm needs full batches)
    if steps_per_epoch is not None:
        n_batches = min(n_batches, int(steps_per_epoch))

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)
    settings = {
        "architecture": model.architecture, "config": model.config(), "history": history, "offset": int(offset),
        "batch_size": int(batch_size), "lr": float(lr), "l2": float(l2), "l1": float(l1), "seed": int(seed),
        "train_split": train_split, "val_split": val_name, "n_train_bins": int(n_train),
        "n_val_bins": int(len(val_bins)), "steps_per_epoch": n_batches,
    }
    state = {"epoch": 0, "history": [], "best_state": None, "best_epoch": 0, "best_val_r": -np.inf,
             "bad_epochs": 0, "stopped_early": False, "seconds": 0.0}
    resume_path = Path(checkpoint_dir) / RESUME_FILE if checkpoint_dir is not None else None
    if resume_path is not None and resume_path.exists():
        state = _load_resume(resume_path, settings, model, optimizer, dev)
        log.info("resuming from %s after epoch %d", resume_path, state["epoch"])

    for epoch in range(state["epoch"], epochs):
        if state["stopped_early"]:
            break
        t0 = time.perf_counter()
        torch.manual_seed(_epoch_seed(seed, epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(n_train, generator=gen)[: n_batches * batch_size].to(dev)
        model.train()
        total = 0.0
        bar = progress(range(n_batches), desc=f"epoch {epoch + 1}/{epochs}", quiet=quiet, unit="batch")
        with fft_convolutions(model):  # on a CPU: FFT convolutions (≈ 1.7–2× faster); state saved outside
            for i in bar:
                bins = train_t[order[i * batch_size:(i + 1) * batch_size]]
                pred = model(windows(bins))
                loss = F.poisson_nll_loss(pred, responses[bins], log_input=False, full=False, eps=1e-8)
                if l1 > 0:
                    loss = loss + l1 * pred.abs().sum(1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{total / (i + 1):.4f}")
        train_seconds = time.perf_counter() - t0
        val_loss, val_r = _validate(model, windows, responses, val_t, eval_batch_size)
        entry = {"epoch": epoch + 1, "train_loss": total / n_batches, "val_loss": val_loss, "val_r": val_r,
                 "seconds": time.perf_counter() - t0, "bins_per_s": n_batches * batch_size / train_seconds}
        state["history"].append(entry)
        state["seconds"] += entry["seconds"]
        log.info("epoch %d/%d: train loss %.4f, validation loss %.4f, r %.3f (%.0f bins/s)", epoch + 1, epochs,
                 entry["train_loss"], val_loss, val_r, entry["bins_per_s"])
        if val_r > state["best_val_r"] + min_delta or state["best_state"] is None:
            state.update(best_val_r=val_r, best_epoch=epoch + 1, bad_epochs=0,
                         best_state=copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}))
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= patience:
                state["stopped_early"] = True
                log.info("early stop: no validation improvement for %d epochs", patience)
        state["epoch"] = epoch + 1
        if resume_path is not None:
            _save_resume(resume_path, settings, model, optimizer, state)

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    test = None
    if test_split is not None and test_split in recording.intervals:
        test = evaluate(model, recording, test_split, batch_size=eval_batch_size, quiet=quiet)
    seconds = time.perf_counter() - t_start
    model.metadata = {
        "training": {
            **settings, "epochs_run": state["epoch"], "epochs_requested": int(epochs), "patience": int(patience),
            "best_epoch": state["best_epoch"], "best_val_r": float(state["best_val_r"]),
            "stopped_early": bool(state["stopped_early"]), "train_seconds": float(state["seconds"]),
            "device": str(dev), "loss": "poisson_nll", "optimizer": "Adam",
            "recording": {"stimulus_name": recording.stimulus_name, "n_frames": recording.n_frames,
                          "frame_rate_hz": recording.frame_rate, "response_unit": recording.response_unit,
                          "provenance": _plain_provenance(recording.provenance)},
            "history": state["history"],
        },
        "output_unit": f"{recording.response_unit} per bin" if recording.response_unit == "count"
        else recording.response_unit,
        "metrics": {"test": test.to_dict()} if test is not None else {},
    }
    return FitResult(model, state["history"], state["best_epoch"], float(state["best_val_r"]),
                     bool(state["stopped_early"]), seconds, test, settings)


@torch.no_grad()
def _validate(model: RetinaModel, windows: Any, responses: torch.Tensor, bins: torch.Tensor,
              batch_size: int) -> tuple[float, float]:
    with fft_inference(model):  # eval mode; FFT convolutions on a CPU; the caller's train() follows
        preds = [model(windows(bins[i:i + batch_size])) for i in range(0, len(bins), batch_size)]
    model.eval()
    pred = torch.cat(preds)
    target = responses[bins]
    loss = float(F.poisson_nll_loss(pred, target, log_input=False, full=False, eps=1e-8))
    r = _mean_r(pearson_r(pred.double().cpu().numpy(), target.double().cpu().numpy()))
    return loss, r


def _plain_provenance(prov: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in prov.items():
        out[str(k)] = v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)[:200]
    return out


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """Settings with tuples as lists, as they come back from a saved state."""
    def norm(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v
    return norm(d)


def _save_resume(path: Path, settings: dict[str, Any], model: RetinaModel, optimizer: torch.optim.Optimizer,
                 state: dict[str, Any]) -> None:
    blob = {"settings": _comparable(settings), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), **state, "best_val_r": float(state["best_val_r"])}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(blob, tmp)


def _load_resume(path: Path, settings: dict[str, Any], model: RetinaModel, optimizer: torch.optim.Optimizer,
                 dev: torch.device) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read the resume state ({err})") from err
    saved, now = blob.get("settings", {}), _comparable(settings)
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise CheckpointError(
            f"{path}: resume state was written with different settings ({', '.join(diff)}: saved "
            f"{[saved.get(k) for k in diff]}, now {[now.get(k) for k in diff]}); use another checkpoint_dir (CLI: "
            f"--out), or delete {path.parent} to start over"
        )
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])  # moves the state to the parameters' device
    return {k: blob[k] for k in ("epoch", "history", "best_state", "best_epoch", "best_val_r", "bad_epochs",
                                 "stopped_early", "seconds")}
