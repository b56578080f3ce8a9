"""Find the affine stem of any module: the leading chain of modules that are affine along the path.

The contribution engine computes such a stem once per sample instead of once per path step
(:class:`~.paths.AffineStem`; for a retina BN-CNN its first convolution is ≈ 95 % of the FLOPs). A model may
name its stem (``model.affine_stem``); for any other module :func:`discover_stem` finds it:

1. one forward pass of a probe records the order in which leaf modules run, with their input and output
   tensors;
2. the chain starts at the first leaf when its input is the model's input (the same tensor, a reshape of
   it, or a wrapped model's linear ``stem_input``) and grows while the next leaf is fed exactly the previous
   one's output;
3. a leaf belongs to the chain when it is affine: a convolution, linear layer, eval-mode BatchNorm,
   dropout in eval mode, a reshape (``Flatten`` / ``Unflatten`` / ``Identity``); a leaf of another type
   with parameters (e.g. a custom space-time convolution) when it passes a numerical affinity test on the
   probe, ``m(x₀ + α(x − x₀)) = m(x₀) + α(m(x) − m(x₀))``;
4. the chain is verified end to end (:meth:`~.paths.AffineStem.verify`: the model's output along the path
   with the stem replayed equals the plain model's); any failure means no stem, silently (the plain path is
   exact, only slower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from .paths import AffineStem

__all__ = ["discover_stem", "is_affine_module"]

log = logging.getLogger(__name__)

_AFFINE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten)


def is_affine_module(m: nn.Module) -> bool | None:
    """``True`` for module types that are affine in their current mode, ``False`` for ones that are not,
    ``None`` for unknown types (tested numerically by :func:`discover_stem`)."""
    from ..models.layers import GaussianNoise  # models imports contributions: resolve at call time

    if isinstance(m, _AFFINE_TYPES):
        return True
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return not m.training and m.running_mean is not None and m.running_var is not None
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return not m.training or m.p == 0
    if isinstance(m, GaussianNoise):
        return not m.training or m.std == 0
    if not any(True for _ in m.parameters(recurse=False)):
        return False  # parameter-free ops of unknown type (activations, pooling, ...) are not trusted
    return None


def _affine_on(m: nn.Module, x: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Numerical test: ``m`` is affine along the line from a perturbed input to ``x`` (three α)."""
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        x0 = x + torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype) * (x.std() + 1)
        with torch.no_grad():
            y, y0 = m(x), m(x0)
            for a in (0.25, 0.5, 1.7):
                got = m(x0 + a * (x - x0))
                want = y0 + a * (y - y0)
                scale = float(want.abs().max().clamp_min(1e-12))
                if not isinstance(got, torch.Tensor) or got.shape != want.shape or \
                        float((got - want).abs().max()) > rtol * scale * 10:
                    return False
        return True
    except Exception:  # a module that cannot run on its own or returns something else is not a stem module
        return False


def _pre_transform(model: nn.Module, x: torch.Tensor, first_input: torch.Tensor
                   ) -> tuple[bool, Callable[[torch.Tensor], torch.Tensor] | None]:
    """How the model's input becomes the first leaf's: ``(found, pre)``."""
    if first_input is x:
        return True, None
    stem_input = getattr(model, "stem_input", None)
    with torch.no_grad():
        if callable(stem_input):
            try:
                mapped = stem_input(x)
            except Exception:
                mapped = None
            if isinstance(mapped, torch.Tensor) and mapped.shape == first_input.shape \
                    and torch.equal(mapped, first_input):
                return True, stem_input
        if first_input.shape[0] == x.shape[0] and first_input.numel() == x.numel() \
                and torch.equal(first_input.reshape(-1), x.reshape(-1)):
            shape = tuple(first_input.shape[1:])
            return True, lambda t, shape=shape: t.reshape(t.shape[0], *shape)
    return False, None


def discover_stem(model: nn.Module, probe: torch.Tensor, baseline: torch.Tensor) -> AffineStem | None:
    """The leading affine chain of ``model`` found on ``probe (1, ...)`` (see the module docstring) and
    verified against ``baseline`` (broadcastable to ``probe``); ``None`` when there is none or it fails.
    The model must be in eval mode."""
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    calls: list[list] = []  # [name, module, input, output]
    handles = []

    def pre_hook(name: str, module: nn.Module):
        def hook(_m: nn.Module, args: tuple) -> None:
            calls.append([name, module, args[0] if args and isinstance(args[0], torch.Tensor) else None, None])
        return hook

    def post_hook(_m: nn.Module, _args: tuple, out: object) -> None:
        for rec in reversed(calls):
            if rec[1] is _m and rec[3] is None:
                rec[3] = out if isinstance(out, torch.Tensor) else False
                break

    try:
        for name, m in leaves:
            handles.append(m.register_forward_pre_hook(pre_hook(name, m)))
            handles.append(m.register_forward_hook(post_hook))
        with torch.no_grad():
            model(probe)
    except Exception as err:  # the plain path will raise the model's own error, if any
        log.debug("stem search: probe forward failed (%s)", err)
        return None
    finally:
        for h in handles:
            h.remove()
    if not calls or calls[0][2] is None:
        return None
    found, pre = _pre_transform(model, probe, calls[0][2])
    if not found:
        return None
    chain: list[str] = []
    seen: set[int] = set()
    prev_out = None
    for name, module, inp, out in calls:
        if id(module) in seen or not isinstance(out, torch.Tensor) or inp is None:
            break
        if chain and inp is not prev_out:
            break
        kind = is_affine_module(module)
        if kind is None:
            kind = _affine_on(module, inp)
        if not kind:
            break
        chain.append(name)
        seen.add(id(module))
        prev_out = out
    # trailing modules that compute nothing are not worth replaying
    while chain and isinstance(dict(leaves)[chain[-1]], (nn.Identity, nn.Dropout, nn.Flatten)):
        chain.pop()
    if not any(any(True for _ in dict(leaves)[n].parameters(recurse=False)) for n in chain):
        return None
    stem = AffineStem(model, tuple(chain), pre)
    try:
        stem.verify(probe, baseline)
    except Exception as err:
        log.debug("stem search: %s rejected (%s)", chain, err)
        return None
    return stem
