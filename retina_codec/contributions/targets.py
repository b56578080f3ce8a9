"""Scalar targets F whose contributions are computed (docs/definitions.md#targets).

A target maps the model's outputs along the path to the value(s) being explained. It is called as
``target(outputs, out_x)``: ``outputs`` is ``(S, B, ...)`` (path steps × samples), ``out_x`` the
detached outputs at the input itself ``(B, ...)`` — used by targets that pick a class from the
prediction at x (top-1 logit, softmax probability, contrastive), which stays fixed along the path.
It returns ``(S, B)`` for one scalar per sample or ``(S, B, K)`` for K per-cell targets (``per_cell``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ContributionStateError, ModelContractError, TargetError
from ..hashing import tensor_hash
from ..stores.codec import to_json

__all__ = [
    "Target",
    "CellTarget",
    "CellsTarget",
    "SumTarget",
    "SurprisalTarget",
    "TopLogitTarget",
    "SoftmaxProbTarget",
    "ContrastiveTarget",
    "CallableTarget",
    "DescribedTarget",
    "make_target",
]


class Target:
    """Base class: a named scalar (or K per-cell scalars) computed from model outputs."""

    name: str = "target"
    per_cell: bool = False
    needs_reference: bool = False

    @property
    def n_targets(self) -> int:
        """K, the number of per-cell targets (1 for a scalar target)."""
        return 1

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored with the contributions."""
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({to_json(self.describe(), sort_keys=False)})"


def _cells_dim(outputs: torch.Tensor, indices: Sequence[int] = ()) -> torch.Tensor:
    if outputs.ndim != 3:
        found = tuple(outputs.shape[2:])
        hint = ("; a model with time-resolved outputs (B, T', N) (openretina's) gives rates per bin once wrapped: "
                "retina_codec.models.wrap(module, ..., channels=C) takes its last step, and load_model reads "
                "openretina checkpoints that way") if len(found) == 2 else ""
        raise ModelContractError(f"cell targets expect model outputs (B, n_cells); found per-sample shape {found}"
                                 + hint)
    _check_cells(indices, outputs.shape[-1])
    return outputs


def _check_cells(indices: Sequence[int], n: int) -> None:
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise TargetError(f"target: cell index {bad[0]} out of range; the model has {n} cells (indices 0…{n - 1})")


class CellTarget(Target):
    """The output of one cell (column ``index`` of a ``(B, n_cells)`` output)."""

    name = "cell"

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        return _cells_dim(outputs, [self.index])[..., self.index]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "cell": self.index}


class CellsTarget(Target):
    """Each listed cell's output as its own target: per-cell contributions ``(B, K, ...)``."""

    name = "cells"
    per_cell = True

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = [int(i) for i in indices]
        if not self.indices:
            raise TargetError("cells target: expected at least one cell index, found none")

    @property
    def n_targets(self) -> int:
        return len(self.indices)

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        return _cells_dim(outputs, self.indices)[..., self.indices]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "cells": self.indices}


class SumTarget(Target):
    """Sum of the outputs of all cells (or of the listed ones)."""

    name = "sum"

    def __init__(self, indices: Sequence[int] | None = None) -> None:
        self.indices = None if indices is None else [int(i) for i in indices]

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        out = outputs.flatten(2)
        _check_cells(self.indices or (), out.shape[-1])
        return (out if self.indices is None else out[..., self.indices]).sum(-1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "cells": self.indices}


class SurprisalTarget(Target):
    """Population surprisal ``S(y) = ½ (y − μ)ᵀ Σ⁻¹ (y − μ)`` of the model's rates ``y`` (CODEC's target).

    ``μ`` (N,) and ``Σ`` (N, N) come from the model's outputs over a reference stimulus
    (:meth:`fit`). When ``Σ`` is singular or ill-conditioned (fewer reference samples than cells, a silent
    cell) a ridge ``λ·I`` is added with ``λ = ridge · trace(Σ)/N`` (``ridge_used`` records it).
    """

    name = "surprisal"
    needs_reference = True

    def __init__(self, mu: np.ndarray | torch.Tensor | None = None, cov: np.ndarray | torch.Tensor | None = None,
                 ridge: float = 1e-3, rcond: float = 1e-8) -> None:
        self.ridge = float(ridge)
        self.rcond = float(rcond)
        self.mu: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self.precision: np.ndarray | None = None
        self.ridge_used = 0.0
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if mu is not None and cov is not None:
            self.set_moments(mu, cov)

    @property
    def fitted(self) -> bool:
        return self.precision is not None

    def set_moments(self, mu: np.ndarray | torch.Tensor, cov: np.ndarray | torch.Tensor) -> SurprisalTarget:
        """Use the given mean (N,) and covariance (N, N); regularise and invert the covariance."""
        mu = np.asarray(torch.as_tensor(mu).detach().cpu(), dtype=np.float64).reshape(-1)
        cov = np.asarray(torch.as_tensor(cov).detach().cpu(), dtype=np.float64)
        n = mu.shape[0]
        if cov.shape != (n, n):
            raise TargetError(f"surprisal: covariance must be ({n}, {n}) to match μ; found {cov.shape}")
        cov = 0.5 * (cov + cov.T)
        eig = np.linalg.eigvalsh(cov) if n else np.zeros(0)
        lam = 0.0
        if n and (eig[0] <= self.rcond * max(eig[-1], 0.0) or eig[-1] <= 0):
            scale = float(np.trace(cov)) / n
            lam = self.ridge * (scale if scale > 0 else 1.0)
        self.mu, self.cov, self.ridge_used = mu, cov, lam
        self.precision = np.linalg.inv(cov + lam * np.eye(n))
        self.precision = 0.5 * (self.precision + self.precision.T)
        self._cache.clear()
        return self

    def fit(self, outputs: np.ndarray | torch.Tensor) -> SurprisalTarget:
        """Moments from reference outputs ``(n, N)`` (the model's rates over a reference stimulus)."""
        y = np.asarray(torch.as_tensor(outputs).detach().cpu(), dtype=np.float64)
        y = y.reshape(y.shape[0], -1)
        mu = y.mean(0)
        d = y - mu
        cov = d.T @ d / max(y.shape[0] - 1, 1)
        return self.set_moments(mu, cov)

    def smallest_spread(self) -> float:
        """Std of the reference rates along their least-varying principal direction (of the regularised Σ)."""
        assert self.mu is not None and self.cov is not None
        low = float(np.linalg.eigvalsh(self.cov + self.ridge_used * np.eye(self.mu.shape[0]))[0])
        return float(np.sqrt(max(low, 0.0)))

    def rounding_ratio(self, dtype: torch.dtype) -> float:
        """``dtype``'s rounding of the rates (``eps · max|μ|``) against :meth:`smallest_spread`. Near or above
        0.01 a surprisal evaluated in ``dtype`` is mostly rounding: a model whose rates barely vary (e.g.
        untrained) gives meaningless float32 surprisals and completeness errors."""
        if self.mu is None or not self.mu.size:
            return 0.0
        spread = self.smallest_spread()
        eps = torch.finfo(dtype).eps * float(np.abs(self.mu).max())
        return float("inf") if spread <= 0 else eps / spread

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.fitted:
            raise ContributionStateError("surprisal target has no μ, Σ yet: call fit(reference_outputs) first")
        key = (like.device, like.dtype)
        if key not in self._cache and like.is_floating_point() and torch.finfo(like.dtype).eps > 1e-10:
            ratio = self.rounding_ratio(like.dtype)
            if ratio > 0.01:
                warnings.warn(
                    f"surprisal: the reference rates vary by as little as {self.smallest_spread():.3g} around rates "
                    f"up to {float(np.abs(self.mu).max()):.3g}; {str(like.dtype)[6:]} rounding is {100 * ratio:.0f}% "
                    "of that spread, so the surprisal and its contributions are mostly rounding (an untrained or "
                    "saturated model?); compute in float64 (dtype=torch.float64, CLI --dtype float64)",
                    RuntimeWarning, stacklevel=4)
        if key not in self._cache:
            self._cache[key] = (torch.as_tensor(self.mu, dtype=like.dtype, device=like.device),
                                torch.as_tensor(self.precision, dtype=like.dtype, device=like.device))
        return self._cache[key]

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        mu, prec = self._tensors(outputs)
        d = outputs.flatten(2) - mu
        return 0.5 * ((d @ prec) * d).sum(-1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "ridge": self.ridge, "ridge_used": self.ridge_used,
                "n_cells": None if self.mu is None else int(self.mu.shape[0])}


def _top_classes(out_x: torch.Tensor, k: int) -> torch.Tensor:
    if out_x.ndim != 2:
        raise TargetError(f"class targets expect logits (B, n_classes); found {tuple(out_x.shape)}")
    if out_x.shape[-1] < k:
        raise TargetError(f"class target: needs at least {k} classes; the model has {out_x.shape[-1]}")
    return out_x.topk(k, dim=-1).indices  # (B, k)


class TopLogitTarget(Target):
    """The logit of the class predicted at x (top-1), held fixed along the path."""

    name = "top1_logit"

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        c = _top_classes(out_x, 1)[:, 0]
        return outputs.gather(-1, c.view(1, -1, 1).expand(outputs.shape[0], -1, 1))[..., 0]


class SoftmaxProbTarget(Target):
    """Softmax probability of the class predicted at x (or of a fixed ``cls``)."""

    name = "softmax_prob"

    def __init__(self, cls: int | None = None) -> None:
        self.cls = None if cls is None else int(cls)

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(outputs, dim=-1)
        if self.cls is not None:
            return p[..., self.cls]
        c = _top_classes(out_x, 1)[:, 0]
        return p.gather(-1, c.view(1, -1, 1).expand(p.shape[0], -1, 1))[..., 0]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.cls}


class ContrastiveTarget(Target):
    """Logit of the top-1 minus the top-2 class predicted at x."""

    name = "contrastive"

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        c = _top_classes(out_x, 2)
        idx = c.unsqueeze(0).expand(outputs.shape[0], -1, -1)
        v = outputs.gather(-1, idx)
        return v[..., 0] - v[..., 1]


class CallableTarget(Target):
    """Any function of the outputs: ``fn(outputs (R, ...)) -> (R,)`` or ``(R, K)`` per-cell values."""

    name = "callable"

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], n_targets: int | None = None,
                 name: str | None = None) -> None:
        self.fn = fn
        self.per_cell = n_targets is not None
        self._k = 1 if n_targets is None else int(n_targets)
        self.label = name or getattr(fn, "__name__", "callable")

    @property
    def n_targets(self) -> int:
        return self._k

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        s, b = outputs.shape[:2]
        v = self.fn(outputs.reshape(s * b, *outputs.shape[2:]))
        want = (s * b, self._k) if self.per_cell else (s * b,)
        if tuple(v.shape) != want:
            raise TargetError(f"target {self.label!r}: expected values of shape {want}, found {tuple(v.shape)}")
        return v.reshape(s, b, *want[1:])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "function": self.label, "n_targets": self._k if self.per_cell else None,
                "code_sha256": _code_fingerprint(self.fn)}


def _code_fingerprint(fn: Callable) -> str:
    """Hash of a function's byte code, constants and captured values (so a store's resume signature tells two
    functions of the same name apart); empty when ``fn`` has no code object (a C function, a callable object
    without ``__code__``)."""
    code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
    if code is None:
        return ""
    cells = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            v = None
        cells.append(tensor_hash(v) if isinstance(v, torch.Tensor) else repr(v))
    doc = repr((code.co_code, code.co_consts, code.co_names, cells))
    return hashlib.sha256(doc.encode()).hexdigest()


_NAMED = {
    "sum": SumTarget,
    "surprisal": SurprisalTarget,
    "top1": TopLogitTarget,
    "top1_logit": TopLogitTarget,
    "logit": TopLogitTarget,
    "softmax": SoftmaxProbTarget,
    "softmax_prob": SoftmaxProbTarget,
    "prob": SoftmaxProbTarget,
    "contrastive": ContrastiveTarget,
}


def make_target(spec: object) -> Target:
    """A :class:`Target` from an int (cell), a list of ints (per-cell), a name or a callable.

    Names: ``"sum"``, ``"surprisal"``, ``"top1_logit"`` (``"top1"``, ``"logit"``), ``"softmax_prob"``
    (``"softmax"``, ``"prob"``), ``"contrastive"``.
    """
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, (bool, np.bool_)):
        raise TargetError(f"target: expected a cell index, list of cells, name or callable; found {spec!r}")
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, (np.ndarray, torch.Tensor)) and spec.ndim == 0):
        return CellTarget(int(spec))
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key not in _NAMED:
            raise TargetError(f"target: unknown name {spec!r}; expected one of {sorted(_NAMED)}, a cell index, "
                             f"a list of cells or a callable")
        return _NAMED[key]()
    if isinstance(spec, (list, tuple, np.ndarray, torch.Tensor)):
        return CellsTarget([int(i) for i in np.asarray(spec).reshape(-1)])
    if callable(spec):
        return CallableTarget(spec)
    raise TargetError(f"target: expected a cell index, list of cells, name or callable; found {type(spec).__name__}")


class DescribedTarget(Target):
    """A target known only by its stored description (a contribution store's ``target`` attribute, read back
    by :meth:`~.spec.ContributionSpec.from_attrs`): it describes itself but cannot be evaluated."""

    def __init__(self, description: dict[str, Any]) -> None:
        if not isinstance(description, dict) or "name" not in description:
            raise TargetError(f"target: expected a stored description {{'name': ...}}, found {description!r}")
        self.description = dict(description)
        self.name = str(description["name"])
        cells = description.get("cells")
        k = description.get("n_targets")
        self.per_cell = isinstance(cells, list) or k is not None
        self._k = len(cells) if isinstance(cells, list) else int(k or 1)

    @property
    def n_targets(self) -> int:
        return self._k

    def __call__(self, outputs: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        raise ContributionStateError(f"target {self.description}: read back from a store description; build "
                                     "the target itself (make_target) to compute with it")

    def describe(self) -> dict[str, Any]:
        return dict(self.description)
