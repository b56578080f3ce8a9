"""The model contract: what every stage of the toolkit needs of a retina model, checked once at the boundary.

A retina model is an ``nn.Module`` with

- ``input_spec`` (:class:`~.base.InputSpec`): ``history`` frames per window, frame ``height`` × ``width``
  in pixels, ``frame_rate`` (Hz, or ``None``), window ``offset``, colour ``channels`` (or ``None``);
- ``norm_stats``: ``(mean, std)`` of the training stimulus, or ``None`` (the recording's own are used);
- ``cell_ids``: one id per output (or ``None``: ``"0"`` … ``"N-1"``);
- ``hidden_layers``: names of its interneuron layers (what the contributions explain by default);
- ``forward``: z-scored greyscale history windows ``(B, history, H, W)`` (oldest frame first) →
  predicted responses ``(B, N)``.

The toolkit's own models (:class:`~.bncnn.BNCNN`, :class:`~.ln.LNModel`, ...), imported torch-deep-retina
and openretina checkpoints, and any network passed through :func:`~.wrapped.wrap` meet it.
:func:`check_retina_model` checks a model once (by running it on one window) and remembers the result.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ModelContractError
from ..torch_utils.hooks import resolve_module

__all__ = ["RetinaModelLike", "check_retina_model", "window_spec"]

_CHECKED: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()

_HINT = ("wrap it first: retina_codec.models.wrap(module, history=..., frame_shape=(H, W), layers=[...]) "
         "(docs/user_guide.md, 'Your own model')")


@runtime_checkable
class RetinaModelLike(Protocol):
    """Structural type of a retina model (see the module docstring)."""

    input_spec: Any
    norm_stats: tuple[float, float] | None
    cell_ids: list[str] | None
    hidden_layers: tuple[str, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def _first_tensor(model: nn.Module) -> torch.Tensor | None:
    return next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)


def check_retina_model(model: Any, what: str = "this stage") -> nn.Module:
    """``model`` itself when it meets the contract; else :class:`~retina_codec.errors.ModelContractError`
    saying what is missing (``what`` names the caller: ``"contributions"``, ``"IRFs"``, ...).

    Runs the model once on a zero window in eval mode (no gradients) to check its output is ``(1, N)`` with
    one ``cell_ids`` entry per output; the check is remembered per model and input spec.
    """
    if not isinstance(model, nn.Module):
        raise ModelContractError(f"{what}: expected a retina model (an nn.Module), found {type(model).__name__}")
    spec = getattr(model, "input_spec", None)
    if spec is None or not all(hasattr(spec, a) for a in ("history", "height", "width")):
        raise ModelContractError(f"{what}: {type(model).__name__} has no input_spec (history, frame shape); "
                                 + _HINT)
    key = (spec, tuple(getattr(model, "cell_ids", None) or ()))
    if _CHECKED.get(model) == key:
        return model
    ref = _first_tensor(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    x = torch.zeros((1, int(spec.history), int(spec.height), int(spec.width)), device=device, dtype=dtype)
    was = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except ModelContractError:
        raise
    except Exception as err:
        raise ModelContractError(
            f"{what}: {type(model).__name__} fails on one window (1, {spec.history}, {spec.height}, "
            f"{spec.width}) of its input_spec ({type(err).__name__}: {err}); if it takes another input layout "
            "(a colour axis, (B, C, T, H, W)) or returns (B, T', N), " + _HINT) from err
    finally:
        for m, flag in was.items():
            m.training = flag
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelContractError(f"{what}: {type(model).__name__} must return rates (B, N); found {shape} for "
                                 "one window; " + _HINT)
    ids = getattr(model, "cell_ids", None)
    if ids is not None and len(ids) != out.shape[1]:
        raise ModelContractError(f"{what}: {type(model).__name__} has {len(ids)} cell_ids but {out.shape[1]} "
                                 "outputs")
    for name in getattr(model, "hidden_layers", ()) or ():
        resolve_module(model, name)
    _CHECKED[model] = key
    return model


def window_spec(model: Any, history: int | None = None, offset: int | None = None,
                what: str = "this stage") -> tuple[int, int]:
    """``(history, offset)`` of the windows ``model`` takes on a recording: from its checked
    ``input_spec`` (:func:`check_retina_model`); explicit arguments win. A module without an input spec
    needs ``history`` (offset default 1) and gets no check: it is then the caller's own convention."""
    spec = getattr(model, "input_spec", None)
    if spec is None and history is None:
        check_retina_model(model, what)  # raises, naming what is missing
    if spec is not None:
        check_retina_model(model, what)
    h = history if history is not None else spec.history
    o = offset if offset is not None else (getattr(spec, "offset", 1) if spec is not None else 1)
    return int(h), int(o)
