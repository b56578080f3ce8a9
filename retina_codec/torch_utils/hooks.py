"""Hooks by layer name, always inside context managers that remove them (even on error).

Layers are addressed by their ``model.named_modules()`` names (``"conv1"``, ``"layer3.2"``). Every
temporary change to a model — forward hooks, swapped sub-modules, eval mode, frozen parameters, a
different device or dtype — is made by a context manager here and undone when the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import LayerNotFoundError, LayerOutputError

__all__ = [
    "canonical_name",
    "resolve_module",
    "capture_outputs",
    "replace_outputs",
    "swap_modules",
    "prepared_model",
    "Replay",
    "has_hooks",
]


def canonical_name(model: nn.Module, name: str) -> str:
    """The ``named_modules()`` name of layer ``name``: itself, or what ``model.layer_aliases`` maps it to
    (a wrapped module's own names: ``"conv1"`` → ``"net.conv1"``)."""
    aliases = getattr(model, "layer_aliases", None)
    if aliases and name in aliases:
        return aliases[name]
    return name


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (a ``named_modules()`` name or one of ``model.layer_aliases``);
    raises :class:`LayerNotFoundError` listing the names the model offers."""
    modules = dict(model.named_modules())
    asked, name = name, canonical_name(model, name)
    if name not in modules or name == "":
        aliases = getattr(model, "layer_aliases", None)
        known = list(aliases) if aliases else [n for n in modules if n]
        shown = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
        raise LayerNotFoundError(
            f"layer {asked!r} not found in {type(model).__name__}; available layers: {shown or 'none'}"
        )
    return modules[name]


class Replay(nn.Module):
    """Ignores its input and returns a fixed tensor (the precomputed output of a swapped-out module)."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:  # noqa: ARG002
        return self.output


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    name = canonical_name(model, name)
    parent_name, _, attr = name.rpartition(".")
    parent = resolve_module(model, parent_name) if parent_name else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = module
    else:
        setattr(parent, attr, module)


@contextlib.contextmanager
def swap_modules(model: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[None]:
    """Temporarily put other modules at the given names; the originals are restored on exit."""
    originals = {name: resolve_module(model, name) for name in replacements}
    done: list[str] = []
    try:
        for name, module in replacements.items():
            _set_module(model, name, module)
            done.append(name)
        yield
    finally:
        for name in reversed(done):
            _set_module(model, name, originals[name])


def _first_tensor(output: object, name: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    raise LayerOutputError(f"layer {name!r}: expected its forward to return one tensor, found {type(output).__name__}")


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str],
                    store: dict[str, torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named layers in a dict, as tensors that gradients can be taken for.

    An output that does not already depend on something requiring grad (parameters are frozen and the
    input does not require grad) is replaced by a detached leaf with ``requires_grad=True``, so
    ``torch.autograd.grad(F, [store[n] for n in names])`` gives ∂F/∂a for every layer from one graph.
    The dict is filled anew on every forward pass.
    """
    store = {} if store is None else store
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> torch.Tensor:
            out = _first_tensor(output, name)
            if torch.is_grad_enabled() and not out.requires_grad:
                out = out.detach().requires_grad_(True)
            store[name] = out
            return out

        return hook

    try:
        for name in names:
            handles.append(resolve_module(model, name).register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def replace_outputs(model: nn.Module,
                    fns: Mapping[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace the named layers' outputs by ``fn(output)`` during the block."""
    handles = []
    try:
        for name, fn in fns.items():
            handles.append(resolve_module(model, name).register_forward_hook(
                lambda m, a, out, fn=fn, name=name: fn(_first_tensor(out, name))))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def prepared_model(model: nn.Module, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> Iterator[nn.Module]:
    """Eval mode, parameters frozen (``requires_grad=False``), optionally moved; all undone on exit."""
    was_training = {m: m.training for m in model.modules()}
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    orig_device = first.device if first is not None else None
    float_dtypes = {t.dtype for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()}
    orig_dtype = float_dtypes.pop() if len(float_dtypes) == 1 else None
    moved = (device is not None and orig_device is not None and torch.device(device) != orig_device) or (
        dtype is not None and orig_dtype is not None and dtype != orig_dtype)
    try:
        model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        if moved:
            model.to(device=device, dtype=dtype)
        yield model
    finally:
        if moved:
            model.to(device=orig_device, dtype=orig_dtype)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        for m, flag in was_training.items():
            m.training = flag


def has_hooks(model: nn.Module) -> bool:
    """True when any sub-module carries a forward (pre-)hook or backward hook (used by tests)."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
