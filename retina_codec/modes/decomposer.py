"""``ModeDecomposer``: contribution (or activation) vectors → contribution modes, sklearn-style.

>>> dec = ModeDecomposer(kind="codec").fit(X)          # X: (n_bins, d) reduced contributions
>>> loadings = dec.transform(X)                         # (n_bins, n_modes_) mode loadings (codes)
>>> dec.atoms_, dec.explained_variance_, dec.l0_, dec.dead_fraction_

Inputs are divided by one global standard deviation (``scale_``) and, with ``center=True``, have their
per-dimension mean (``mean_``) removed first; both are learned in ``fit`` and applied in ``transform``.
Atoms that never fire on the fitted data are dropped: the modes are the alive atoms, in input units, so
that ``X ≈ loadings @ atoms_ + intercept_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError

from ..errors import ModesError
from .base import SparseAutoencoder
from .codec_sae import CodecSAE
from .metrics import explained_variance, firing_counts, mean_l0
from .relu_sae import ReLUSAE
from .topk_sae import BatchTopKSAE, TopKSAE
from .trainer import TrainConfig, TrainResult, resolve_device, train_sae

__all__ = ["ModeDecomposer", "KINDS", "make_sae", "check_matrix"]

KINDS = ("codec", "topk", "batchtopk", "relu")
_DEFAULT_L1 = {"codec": 1e-4, "relu": 0.05}


def check_matrix(x: Any, name: str = "X", n_features: int | None = None, min_samples: int = 1,
                 min_features: int = 1) -> np.ndarray:
    """Validate a 2-D finite float matrix ``(n_samples, n_features)``; returns it as float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ModesError(f"{name}: expected a numeric array of shape (n_samples, n_features); {err}") from None
    if arr.ndim != 2:
        raise ModesError(f"{name}: expected a 2-D array of shape (n_samples, n_features); "
                         f"found {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise ModesError(f"{name}: expected at least {min_samples} samples (rows); found {arr.shape[0]}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ModesError(f"{name}: expected shape (n_samples, {n_features}) as in fit; found {arr.shape}")
    if arr.shape[1] < min_features:
        raise ModesError(f"{name}: expected at least {min_features} feature (column); found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ModesError(f"{name}: expected finite values; found {int((~np.isfinite(arr)).sum())} NaN/inf")
    return arr


def make_sae(kind: str, n_features: int, n_latents: int, *, k: int = 8, threshold: float = 0.9,
             l1: float | None = None, hidden_size: int | None = None, **options: Any) -> SparseAutoencoder:
    """Build an untrained SAE of ``kind`` (one of :data:`KINDS`); ``options`` go to its constructor."""
    l1 = _DEFAULT_L1.get(kind, 0.0) if l1 is None else l1
    builders = {
        "codec": lambda: CodecSAE(n_features, n_latents, hidden_size, threshold=threshold, l1=l1, **options),
        "topk": lambda: TopKSAE(n_features, n_latents, k, **options),
        "batchtopk": lambda: BatchTopKSAE(n_features, n_latents, k, **options),
        "relu": lambda: ReLUSAE(n_features, n_latents, l1=l1, **options),
    }
    if kind not in builders:
        raise ModesError(f"kind: expected one of {KINDS}; found {kind!r}")
    try:
        return builders[kind]()
    except (TypeError, ValueError) as err:  # invalid k, threshold, options: one ModesError (CLI: one line)
        raise ModesError(f"{kind} SAE settings (n_features={n_features}, n_latents={n_latents}): {err}") from None


class ModeDecomposer(TransformerMixin, BaseEstimator):
    """Sparse-autoencoder decomposition of contribution vectors into modes.

    Parameters
    ----------
    kind : ``"codec"`` (CODEC SAE, default), ``"topk"``, ``"batchtopk"`` or ``"relu"``.
    n_modes : number of SAE latents K before dead atoms are dropped (``None``: 10 · d, the retina rule).
    k : active latents per sample for TopK / BatchTopK.
    threshold : τ of the CODEC SAE.
    l1 : atom L1 weight λ (CODEC, default 1e-4) or activation L1 weight (ReLU, default 0.05).
    hidden_size : CODEC encoder width H (``None``: max(64, d)).
    center : remove the per-dimension mean before scaling.
    validation_fraction : fraction of rows held out (random, seeded) for early stopping and metrics.
    max_epochs, batch_size, learning_rate, patience : optimisation (see :class:`TrainConfig`).
    device, precision : ``"auto"`` uses CUDA and bf16 when present.
    random_state : seed; the same seed gives identical atoms on the same device.
    quiet : silence the progress bar (``None``: environment default).
    sae_options : extra keyword arguments for the SAE (e.g. ``{"init_active_fraction": None}`` for the CODEC
        SAE's faithful initialisation, ``{"aux_k": 16}`` for TopK).

    Attributes (set by ``fit``)
    ---------------------------
    atoms_ : (n_modes_, d) float32 alive atoms in input units.
    intercept_ : (d,) float32 so that ``X ≈ transform(X) @ atoms_ + intercept_``.
    alive_ : (K,) bool, which latents are kept; ``n_modes_`` their number.
    mean_ : (d,) per-dimension mean removed (zeros without ``center``); ``scale_`` the global std.
    explained_variance_, l0_ : held-out explained variance and mean L0 (alive modes).
    dead_fraction_ : fraction of the K latents that never fire on ``X`` (the ones dropped).
    n_iter_ : epochs run; ``history_`` : :class:`TrainResult`; ``sae_`` : the trained torch module (CPU).
    """

    def __init__(self, kind: str = "codec", n_modes: int | None = None, *, k: int = 8, threshold: float = 0.9,
                 l1: float | None = None, hidden_size: int | None = None, center: bool = False,
                 validation_fraction: float = 0.1, max_epochs: int = 200, batch_size: int = 256,
                 learning_rate: float = 1e-3, patience: int = 15, device: str = "auto",
                 precision: str = "auto", random_state: int = 0, quiet: bool | None = None,
                 sae_options: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.n_modes = n_modes
        self.k = k
        self.threshold = threshold
        self.l1 = l1
        self.hidden_size = hidden_size
        self.center = center
        self.validation_fraction = validation_fraction
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.quiet = quiet
        self.sae_options = sae_options

    # ------------------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.kind not in KINDS:
            raise ModesError(f"kind: expected one of {KINDS}; found {self.kind!r}")
        if self.n_modes is not None and int(self.n_modes) < 1:
            raise ModesError(f"n_modes: expected a positive integer or None; found {self.n_modes}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ModesError(f"validation_fraction: expected a value in [0, 1); found {self.validation_fraction}")
        if int(self.batch_size) < 1:
            raise ModesError(f"batch_size: expected a positive integer; found {self.batch_size}")
        if int(self.max_epochs) < 1:  # 0 epochs would return the random initialisation as "modes"
            raise ModesError(f"max_epochs: expected a positive integer (an untrained SAE is no result); "
                             f"found {self.max_epochs}")
        if not float(self.learning_rate) > 0.0:
            raise ModesError(f"learning_rate: expected a positive number; found {self.learning_rate}")

    def _scaled(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x - self.mean_) / self.scale_)

    def _encode(self, x: np.ndarray, batch_size: int = 65536) -> torch.Tensor:
        """All K codes ``(n, K)`` (CPU float32) of validated inputs ``x``."""
        sae = self.sae_
        dev = next(sae.parameters()).device
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                out.append(sae.encode(self._scaled(x[i:i + batch_size]).to(dev)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, sae.n_latents)

    def fit(self, X: Any, y: Any = None, *, X_val: Any = None) -> ModeDecomposer:
        """Train the SAE on ``X (n_samples, n_features)``; ``X_val`` (same width) replaces the random split.

        ``y`` is ignored (sklearn convention). Returns ``self``.
        """
        self._check_params()
        x = check_matrix(X, "X", min_samples=2)
        n, d = x.shape
        rng = np.random.default_rng(self.random_state)
        if X_val is not None:
            xv = check_matrix(X_val, "X_val", n_features=d)
            xt = x
        else:
            n_val = int(round(self.validation_fraction * n))
            if n_val >= n:
                raise ModesError(f"validation_fraction: {self.validation_fraction} of {n} samples holds out all "
                                 f"{n_val}, leaving no training samples; expected a smaller fraction or more rows")
            perm = rng.permutation(n)
            xv, xt = x[perm[:n_val]], x[perm[n_val:]]
        self.n_features_in_ = d
        self.mean_ = xt.mean(axis=0).astype(np.float32) if self.center else np.zeros(d, np.float32)
        scale = float(np.std(xt - self.mean_) if self.center else np.std(xt))
        self.scale_ = np.float32(scale if scale > 0 else 1.0)
        n_latents = int(self.n_modes) if self.n_modes is not None else 10 * d
        seed = int(self.random_state)
        device = resolve_device(self.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            sae = make_sae(self.kind, d, n_latents, k=self.k, threshold=self.threshold, l1=self.l1,
                           hidden_size=self.hidden_size, **(self.sae_options or {}))
            xt_t = self._scaled(xt)
            if hasattr(sae, "init_from_data"):
                sae.init_from_data(xt_t)
            cfg = TrainConfig(max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.learning_rate,
                              patience=self.patience, seed=seed, device=str(device),
                              precision=self.precision, quiet=self.quiet)
            self.history_: TrainResult = train_sae(sae, xt_t, self._scaled(xv) if len(xv) else None, cfg)
        self.sae_ = sae.cpu().eval()
        self.n_iter_ = self.history_.n_epochs
        counts = firing_counts(self._encode(x))
        self.alive_ = counts > 0
        self.n_modes_ = int(self.alive_.sum())
        self.dead_fraction_ = float(1.0 - self.n_modes_ / n_latents)
        with torch.no_grad():
            atoms = sae.atoms().detach().float().numpy()
            bias = sae.bias().detach().float().numpy()
        self.atoms_ = (atoms[self.alive_] * self.scale_).astype(np.float32)
        self.intercept_ = (self.mean_ + bias * self.scale_).astype(np.float32)
        held = xv if len(xv) else xt
        codes = self.transform(held)
        self.explained_variance_ = explained_variance(held, self.inverse_transform(codes))
        self.l0_ = mean_l0(codes)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "atoms_"):
            raise NotFittedError("This ModeDecomposer is not fitted yet; call fit(X) first.")

    def transform(self, X: Any) -> np.ndarray:
        """Mode loadings ``(n_samples, n_modes_)`` float32 of ``X (n_samples, n_features_in_)``."""
        self._check_fitted()
        x = check_matrix(X, "X", n_features=self.n_features_in_)
        return self._encode(x)[:, torch.from_numpy(self.alive_)].numpy()

    def inverse_transform(self, loadings: Any) -> np.ndarray:
        """Reconstruction ``(n, d)`` in input units from loadings ``(n, n_modes_)``."""
        self._check_fitted()
        codes = check_matrix(loadings, "loadings", n_features=self.n_modes_, min_features=0)
        return codes @ self.atoms_ + self.intercept_

    def score(self, X: Any, y: Any = None) -> float:
        """Explained variance (per-dimension mean) of the reconstruction of ``X``."""
        x = check_matrix(X, "X", n_features=getattr(self, "n_features_in_", None))
        return explained_variance(x, self.inverse_transform(self.transform(x)))

    def settings(self) -> dict[str, Any]:
        """Hyper-parameters and SAE settings, JSON-serialisable (stored with the modes)."""
        self._check_fitted()
        out: dict[str, Any] = {k: v for k, v in self.get_params().items() if k != "sae_options"}
        out["sae_options"] = dict(self.sae_options or {})
        out["sae"] = self.sae_.settings()
        return out

    def metrics(self) -> dict[str, float]:
        """Held-out explained variance, mean L0, dead fraction, number of modes and epochs."""
        self._check_fitted()
        return {"explained_variance": self.explained_variance_, "l0": self.l0_,
                "dead_fraction": self.dead_fraction_, "n_modes": float(self.n_modes_),
                "n_iter": float(self.n_iter_),
                "train_seconds": float(getattr(getattr(self, "history_", None), "seconds", float("nan")))}
