"""One trainer for every SAE kind: Adam, warm-up + cosine schedule, early stopping on a held-out split.

The trainer is deterministic for a given ``seed`` (shuffling and dropout draw from seeded generators),
uses the GPU when present (``device="auto"``) and bf16 autocast there (``precision="auto"``), and shows a
progress bar (:func:`retina_codec.progress.progress`) that ``quiet`` silences.

The step loop never waits for the GPU (the epoch loss is summed on the device and read once per epoch);
Adam is the fused CUDA kernel on GPUs; ``compile=True`` runs the SAE's loss through ``torch.compile``
where the SAE supports it (:meth:`SparseAutoencoder.compile_training`), falling back to eager when the
first compiled step fails.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..progress import progress
from .base import SparseAutoencoder

__all__ = ["TrainConfig", "TrainResult", "train_sae", "resolve_device", "resolve_dtype", "make_optimizer"]


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``lr_warmup``: fraction of steps with a linear learning-rate ramp; afterwards cosine decay to
    ``lr · lr_final``. ``patience``: epochs without a relative held-out improvement of ``min_delta``
    before stopping. ``max_steps`` caps the number of
    optimiser steps (benchmarks). ``compile``: ``torch.compile`` the loss (CODEC SAE; others ignore it).
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
    compile: bool = False


@dataclass
class TrainResult:
    """What training did: epochs and steps run, best epoch, per-epoch losses, wall time in seconds."""

    n_epochs: int = 0
    n_steps: int = 0
    best_epoch: int = -1
    train_loss: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA for ``"auto"``/``"bfloat16"``, none (float32) otherwise."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16'; got {precision!r}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if precision == "bfloat16" else None


def make_optimizer(params, lr: float, device: torch.device) -> torch.optim.Adam:  # noqa: ANN001
    """Adam; the fused single-kernel implementation on CUDA (the plain one where fused is unavailable)."""
    if device.type == "cuda":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr)


def _lr_factor(step: int, total: int, warmup: float, final: float) -> float:
    w = max(1, int(round(warmup * total)))
    if step < w:
        return (step + 1) / w
    frac = min(1.0, (step - w) / max(1, total - w))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * frac))


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
    opt = make_optimizer(list(sae.parameters()), cfg.lr, device)
    may_fall_back = bool(cfg.compile) and sae.compile_training(True)

    def forward_backward(xb: torch.Tensor, frac: float):  # noqa: ANN202
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = sae.training_loss(xb, frac)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        return out

    result = TrainResult()
    best, best_state, bad = math.inf, None, 0
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
                xb = x_train[perm[b * bs:(b + 1) * bs]]
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * _lr_factor(step, total, cfg.lr_warmup, cfg.lr_final)
                try:
                    out = forward_backward(xb, step / total)
                except Exception as err:  # noqa: BLE001 - a failed first compiled step falls back to eager
                    if not may_fall_back:
                        raise
                    warnings.warn(f"compiled SAE step failed, training eagerly: {err}", RuntimeWarning,
                                  stacklevel=2)
                    sae.compile_training(False)
                    out = forward_backward(xb, step / total)
                may_fall_back = False
                opt.step()
                sae.after_step()
                running += out.loss.detach().float()
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
        bar.close()
        sae.compile_training(False)
    if best_state is not None:
        sae.load_state_dict(best_state)
    sae.eval()
    result.n_steps = step
    result.seconds = time.perf_counter() - t0
    return result
