"""One trainer for every SAE kind: Adam, warm-up + cosine schedule, early stopping on a held-out split.

The trainer is deterministic for a given ``seed`` (shuffling and dropout draw from seeded generators),
uses the GPU when present (``device="auto"``) and bf16 autocast there (``precision="auto"``), and shows a
progress bar (:func:`retina_codec.progress.progress`) that ``quiet`` silences.

The step loop never waits for the GPU (the epoch loss is summed on the device and read once per epoch);
Adam is the fused CUDA kernel on GPUs. On CUDA a whole step (forward, backward, Adam, decoder
renormalisation) is captured once as a CUDA graph and replayed (``cuda_graph``; one graph per
:meth:`SparseAutoencoder.begin_step` key, eager for SAEs that cannot be captured), which removes the
per-kernel launch cost that otherwise bounds small steps. ``compile`` runs the SAE's loss through
``torch.compile`` where the SAE supports it (:meth:`SparseAutoencoder.compile_training`). Both fall back
to eager steps, with a warning, when capture or compilation fails.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..errors import DeviceError, ModesError
from ..progress import progress
from ..torch_utils.devices import resolve_device as _resolve_device
from .base import SparseAutoencoder

__all__ = ["TrainConfig", "TrainResult", "train_sae", "resolve_device", "resolve_dtype", "make_optimizer",
           "set_lr", "StepRunner"]


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``lr_warmup``: fraction of steps with a linear learning-rate ramp; afterwards cosine decay to
    ``lr · lr_final``. ``patience``: epochs without a relative held-out improvement of ``min_delta``
    before stopping. ``max_steps`` caps the number of
    optimiser steps (benchmarks). ``compile``: ``torch.compile`` the loss (CODEC SAE; others ignore it);
    ``"auto"`` = on CUDA for large SAEs (d·K ≥ 2²⁰ and ≥ 100 steps, where the compile time pays back).
    ``cuda_graph``: capture and replay whole steps on CUDA (``"auto"`` = on CUDA).
    """

    max_epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    lr_warmup: float = 0.02
    lr_final: float = 0.1
    patience: int = 15
    min_delta: float = 1e-3
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_steps: int | None = None
    quiet: bool | None = None
    compile: bool | str = "auto"
    cuda_graph: bool | str = "auto"


@dataclass
class TrainResult:
    """What training did: epochs and steps run, best epoch, per-epoch losses, wall time in seconds.

    ``steady_steps`` / ``steady_seconds``: the steps after the first ``warm_steps`` (compilation, graph
    capture, allocator warm-up) and their wall time, device synchronised at both ends (0 when training
    was too short); ``steady_steps · batch / steady_seconds`` is the sustained samples/s.
    """

    n_epochs: int = 0
    n_steps: int = 0
    best_epoch: int = -1
    train_loss: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    steady_steps: int = 0
    steady_seconds: float = 0.0


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``ModesError`` for unknown names or CUDA without a GPU."""
    try:
        return _resolve_device(device)
    except DeviceError as err:
        raise ModesError(str(err)) from None


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA for ``"auto"``/``"bfloat16"``, none (float32) otherwise."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ModesError(f"precision: expected 'auto', 'float32' or 'bfloat16'; found {precision!r}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if precision == "bfloat16" else None


def make_optimizer(params, lr: float, device: torch.device, capturable: bool = False) -> torch.optim.Adam:  # noqa: ANN001
    """Adam: the fused single-kernel implementation on CUDA (plain where fused is unavailable).

    ``capturable``: learning rate held in a device tensor and state kept on the GPU, so that a captured
    CUDA graph replays the update (set the rate with :func:`set_lr`).
    """
    if device.type == "cuda":
        try:
            if capturable:
                return torch.optim.Adam(params, lr=torch.tensor(float(lr), device=device), fused=True,
                                        capturable=True)
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place when it is a device tensor, as captured graphs need)."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _flag(value: bool | str, device: torch.device) -> bool:
    if value == "auto":
        return device.type == "cuda"
    if isinstance(value, str):
        raise ModesError(f"expected True, False or 'auto'; got {value!r}")
    return bool(value)


class StepRunner:
    """Runs training steps of ``sae`` with ``opt``: eagerly, or replayed from CUDA graphs.

    Each call ``runner(xb, progress)`` does one step (forward under autocast ``dtype``, backward, Adam,
    :meth:`SparseAutoencoder.after_step`) and returns the detached float loss (a device tensor). With
    ``cuda_graph`` the first ``warmup`` steps of a :meth:`SparseAutoencoder.begin_step` key run eagerly on
    a side stream, the next is captured, and later ones with the same key and batch shape are replays
    (``progress`` is then frozen at its captured value: no SAE here reads it). ``opt`` must be
    capturable (:func:`make_optimizer`) for graphs.
    """

    def __init__(self, sae: SparseAutoencoder, opt: torch.optim.Optimizer, dtype: torch.dtype | None,
                 device: torch.device, cuda_graph: bool = False, warmup: int = 2) -> None:
        self.sae, self.opt, self.dtype, self.device = sae, opt, dtype, device
        self.graphs_on = bool(cuda_graph) and device.type == "cuda"
        self.warmup = int(warmup)
        self._graphs: dict = {}
        self._warm: dict = {}
        self._side = torch.cuda.Stream(device) if self.graphs_on else None
        self.n_replays = 0

    def _eager(self, xb: torch.Tensor, progress: float, cache: bool = True) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None,
                            cache_enabled=cache):
            out = self.sae.training_loss(xb, progress)
        self.opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        self.opt.step()
        self.sae.after_step()
        return out.loss.detach().float()

    def __call__(self, xb: torch.Tensor, progress: float) -> torch.Tensor:
        key = self.sae.begin_step(xb.shape[0])
        if not self.graphs_on or key is None:
            return self._eager(xb, progress)
        key = (key, tuple(xb.shape))
        graph = self._graphs.get(key)
        if graph is not None:
            static_x, g, loss = graph
            static_x.copy_(xb)
            g.replay()
            self.sae.step_replayed()
            self.n_replays += 1
            return loss
        n = self._warm.get(key, 0)
        if n < self.warmup:
            self._warm[key] = n + 1
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                loss = self._eager(xb, progress)
            torch.cuda.current_stream(self.device).wait_stream(self._side)
            return loss
        try:
            static_x = xb.clone()
            g = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(g):
                loss = self._eager(static_x, progress, cache=False)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to eager steps
            warnings.warn(f"CUDA graph capture of the SAE step failed, training eagerly: {err}",
                          RuntimeWarning, stacklevel=2)
            self.graphs_on = False
            self._graphs.clear()
            torch.cuda.synchronize(self.device)
            self.sae.begin_step(0)
            return self._eager(xb, progress)
        self._graphs[key] = (static_x, g, loss)
        g.replay()
        self.sae.step_replayed()
        return loss


def _lr_factor(step: int, total: int, warmup: float, final: float) -> float:
    w = max(1, int(round(warmup * total)))
    if step < w:
        return (step + 1) / w
    frac = min(1.0, (step - w) / max(1, total - w))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _synced_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def evaluate_mse(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 65536,
                 dtype: torch.dtype | None = None) -> float:
    """Mean squared error of the inference-time reconstruction of ``x (n, d)`` (eval mode)."""
    was_training = sae.training
    sae.eval()
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            recon, _ = sae(xb)
        total += float((recon.float() - xb).pow(2).sum())
    sae.train(was_training)
    return total / max(1, x.numel())


def train_sae(sae: SparseAutoencoder, x_train: torch.Tensor, x_val: torch.Tensor | None = None,
              config: TrainConfig | None = None) -> TrainResult:
    """Train ``sae`` in place on ``x_train (n, d)``; early-stop on ``x_val (m, d)`` and keep its best state.

    Tensors are moved to the configured device. Returns a :class:`TrainResult`.
    """
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    sae.to(device)
    x_train = x_train.to(device=device, dtype=torch.float32)
    x_val = None if x_val is None or x_val.shape[0] == 0 else x_val.to(device=device, dtype=torch.float32)
    n = x_train.shape[0]
    bs = max(1, min(cfg.batch_size, n))
    steps_per_epoch = max(1, n // bs)
    total = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    graphs = _flag(cfg.cuda_graph, device)
    opt = make_optimizer(list(sae.parameters()), cfg.lr, device, capturable=graphs)
    if cfg.compile == "auto":  # compiling takes ~10 s: worth it for large SAEs on a GPU only
        want_compile = device.type == "cuda" and total >= 100 and sae.n_features * sae.n_latents >= 1 << 20
    else:
        want_compile = _flag(cfg.compile, device)
    may_fall_back = want_compile and sae.compile_training(True)
    runner = StepRunner(sae, opt, dtype, device, cuda_graph=graphs)
    result = TrainResult()
    best, best_state, bad = math.inf, None, 0
    warm_steps, t_steady = 5, None
    t0 = time.perf_counter()
    sae.train()
    step = 0
    bar = progress(total=total, desc=f"train {sae.kind} SAE", quiet=cfg.quiet, unit="step")
    try:
        for epoch in range(cfg.max_epochs):
            perm = torch.randperm(n, generator=gen).to(device)
            running = torch.zeros((), device=device)
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                if step == warm_steps:
                    t_steady = _synced_time(device)
                xb = x_train[perm[b * bs:(b + 1) * bs]]
                set_lr(opt, cfg.lr * _lr_factor(step, total, cfg.lr_warmup, cfg.lr_final))
                try:
                    loss = runner(xb, step / total)
                except Exception as err:  # noqa: BLE001 - a failed first compiled step falls back to eager
                    if not may_fall_back:
                        raise
                    warnings.warn(f"compiled SAE step failed, training eagerly: {err}", RuntimeWarning,
                                  stacklevel=2)
                    sae.compile_training(False)
                    loss = runner(xb, step / total)
                may_fall_back = False
                running += loss
                step += 1
                bar.update(1)
            result.n_epochs = epoch + 1
            result.train_loss.append(float(running) / steps_per_epoch)
            if x_val is not None:
                val = evaluate_mse(sae, x_val, dtype=dtype)
                result.val_mse.append(val)
                bar.set_postfix(val_mse=f"{val:.4g}")
                if val < best * (1.0 - cfg.min_delta):
                    best, bad, result.best_epoch = val, 0, epoch
                    best_state = copy.deepcopy(sae.state_dict())
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        result.stopped_early = True
                        break
            if step >= total:
                break
    finally:
        if t_steady is not None:
            result.steady_steps = step - warm_steps
            result.steady_seconds = _synced_time(device) - t_steady
        bar.close()
        sae.compile_training(False)
    if best_state is not None:
        sae.load_state_dict(best_state)
    sae.eval()
    result.n_steps = step
    result.seconds = time.perf_counter() - t0
    return result
