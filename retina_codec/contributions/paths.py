"""Straight-line paths ``x_k = x₀ + α_k (x − x₀)`` folded into the batch, and the affine-stem shortcut.

Path points are laid out step-major: rows ``k·B … k·B + B − 1`` hold step k for the B samples, so a
model output of ``(S·B, ...)`` rows views as ``(S, B, ...)``.

**Affine stem.** When a model's leading modules are affine along the path (conv / linear, eval-mode
BatchNorm; named by ``model.affine_stem``), ``stem(x₀ + α(x − x₀)) = stem(x₀) + α(stem(x) − stem(x₀))``.
The stem is then run once on x (and once on x₀) instead of once per step: its first module is swapped for a
:class:`~.hooks.Replay` of the per-step outputs, the rest of the stem for ``Identity``, and the model is fed
a zero-stride dummy input that is never materialised. A model that declares no stem gets one found for it
(:mod:`.stem_search`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import ContributionError
from ..torch_utils.hooks import Replay, canonical_name, resolve_module, swap_modules

__all__ = ["AffineStem", "interpolate", "baseline_like", "dummy_input", "find_stem", "stem_before_layers"]


def baseline_like(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The baseline as a tensor broadcastable to ``x`` (B, ...): a scalar, one sample, or one per sample."""
    if isinstance(baseline, torch.Tensor):
        b = baseline.to(device=x.device, dtype=x.dtype)
        if b.ndim == x.ndim - 1:
            b = b.unsqueeze(0)
        if b.ndim != x.ndim or not (b.shape[0] in (1, x.shape[0]) and b.shape[1:] == x.shape[1:]):
            raise ContributionError(f"baseline: expected a scalar, shape {tuple(x.shape[1:])} or "
                             f"{tuple(x.shape)}; found {tuple(baseline.shape)}")
        return b
    return torch.full((1,) * x.ndim, float(baseline), dtype=x.dtype, device=x.device)


def interpolate(a: torch.Tensor, a0: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``a0 + α (a − a0)`` for every α, step-major: ``(S·B, ...)`` from ``a (B, ...)`` and ``a0``."""
    a0 = a0.expand_as(a)
    shape = (-1,) + (1,) * a.ndim
    pts = torch.addcmul(a0.unsqueeze(0), alphas.to(a.dtype).view(shape), (a - a0).unsqueeze(0))  # one pass
    return pts.reshape(-1, *a.shape[1:])


def dummy_input(rows: int, sample_shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """A zero input of ``(rows, *sample_shape)`` that occupies one element (all strides zero)."""
    return torch.zeros((), dtype=like.dtype, device=like.device).expand(rows, *sample_shape)


def find_stem(model: nn.Module, names: Sequence[str] | None = None) -> AffineStem | None:
    """The model's affine stem from ``names`` or its declared ``model.affine_stem``; ``None`` when it has none
    (the engine then searches for one: :func:`~.stem_search.discover_stem`)."""
    names = names if names is not None else getattr(model, "affine_stem", None)
    if not names:
        return None
    return AffineStem(model, tuple(names), getattr(model, "stem_input", None))


class AffineStem:
    """Leading modules of ``model`` that are affine in eval mode and applied in sequence to the input.

    ``pre`` maps the model's input to the first module's (a reshape, or a wrapped model's linear
    :meth:`~retina_codec.models.WrappedModel.stem_input`); ``None`` when the first module takes it as is.
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...],
                 pre: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model = model
        self.names = tuple(canonical_name(model, n) for n in names)
        self.pre = pre
        for n in self.names:  # fail early on a wrong name; the modules themselves are resolved per call
            resolve_module(model, n)
        self.verified = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``stem(x)`` (no autograd)."""
        with torch.no_grad():
            if self.pre is not None:
                x = self.pre(x)
            for n in self.names:  # resolved per call: the engine may have swapped in faster modules
                x = resolve_module(self.model, n)(x)
        return x

    @contextlib.contextmanager
    def replaying(self, outputs: torch.Tensor) -> Iterator[None]:
        """Within the block, the stem returns ``outputs`` whatever it is fed."""
        swaps = {self.names[0]: Replay(outputs)}
        swaps.update({n: nn.Identity() for n in self.names[1:]})
        with swap_modules(self.model, swaps):
            yield

    def verify(self, x: torch.Tensor, x0: torch.Tensor, rtol: float = 1e-4) -> None:
        """Check on one sample that replaying the interpolated stem reproduces the model at α = 1 and ½."""
        if self.verified:
            return
        x1 = x[:1]
        b1 = x0[:1].expand_as(x1)
        alphas = torch.tensor([1.0, 0.5], dtype=x.dtype, device=x.device)
        with torch.no_grad():
            ref = self.model(interpolate(x1, b1, alphas))
            with self.replaying(interpolate(self(x1), self(b1.contiguous()), alphas)):
                got = self.model(dummy_input(2, x1.shape[1:], x1))
        if not isinstance(ref, torch.Tensor) or ref.shape != got.shape:
            raise ContributionError(f"affine_stem {list(self.names)}: replaying the stem changes the output shape")
        scale = ref.abs().max().clamp_min(1e-12)
        diff = float((ref - got).abs().max())
        if diff > rtol * scale:
            raise ContributionError(
                f"affine_stem {list(self.names)}: replaying the stem does not reproduce the model's output "
                f"along the path (max difference {diff:.3g}); these modules are not the model's leading "
                "affine chain"
            )
        self.verified = True


def stem_before_layers(stem: AffineStem | None, layers: Sequence[str]) -> AffineStem | None:
    """``stem`` cut so that every hooked layer still produces its own output along the path.

    A replayed stem returns its *last* module's output at its first module and passes it through the
    others, so a hooked stem module must end the stem, and a hooked sub-module of a stem module (never run
    while its parent is replayed) must lie after it. ``None`` when nothing is left.
    """
    if stem is None:
        return None
    layers = [canonical_name(stem.model, layer) for layer in layers]
    keep = len(stem.names)
    for i, name in enumerate(stem.names):
        if any(layer.startswith(name + ".") for layer in layers):
            keep = min(keep, i)
        elif name in layers:
            keep = min(keep, i + 1)
    if keep == len(stem.names):
        return stem
    return AffineStem(stem.model, stem.names[:keep], stem.pre) if keep else None
