"""Any PyTorch retina network as a toolkit model: :func:`wrap` adds the input spec, cell ids and layer names.

A retina model, for every stage of the toolkit (:mod:`.contract`), maps z-scored greyscale history windows
``(B, h, H, W)`` (oldest frame first) to predicted responses ``(B, N)``. :class:`WrappedModel` makes a
network with another interface meet that contract, without copying or changing it:

- **input**: a network of 2-D convolutions takes the window as ``h`` channels, ``(B, h, H, W)``, as is; a
  network of 3-D convolutions (openretina's cores) takes ``(B, C, h, H, W)`` with a colour axis: pass
  ``channels=C``. A greyscale recording then drives every colour channel with the same luminance, scaled per
  channel by ``colour`` (default 1 each: ``x_c = colour[c] · x``). The map is linear, so an affine stem stays
  affine.
- **output**: a ``(B, N)`` output is taken as is; a time-resolved ``(B, T', N)`` output (openretina's) gives
  the rate of bin t as its *last* time step for the window ending before t (``output="last"``, the
  default for 3-D outputs); an ``int`` picks another step, a callable maps the output itself.
- **extra arguments** (``forward_kwargs``), e.g. openretina's ``data_key`` that picks a session.
- **layer names**: the network's own ``named_modules()`` names address its layers (``"conv1"`` for the
  wrapper's ``"net.conv1"``), plus any ``aliases`` (``{"core.layer0": "core.features.layer0"}``).

The wrapped network's parameters are shared, not copied; ``model.net`` is the original module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelContractError
from .base import InputSpec, RetinaModel

__all__ = ["WrappedModel", "wrap"]

OutputRule = str | int | Callable[[torch.Tensor], torch.Tensor]


def _net_device(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(net.parameters()) + list(net.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


class WrappedModel(RetinaModel):
    """A network ``net`` seen through the toolkit's model contract (see the module docstring).

    Parameters
    ----------
    net : the network (kept as ``self.net``; its parameters are shared).
    history : frames per window ``h`` (for a time-resolved network: its temporal receptive field, so that
        one window gives one output step; longer windows work too).
    frame_shape : ``(H, W)`` in pixels.
    cell_ids : one id per output (default ``"0"`` … ``"N-1"``); N is found by running ``net`` once.
    layers : the interneuron layers (``hidden_layers``), by the network's own names or ``aliases``.
    frame_rate : Hz of the training stimulus (used to warn about recordings at another rate).
    norm_stats : ``(mean, std)`` the stimulus was z-scored with in training (default: the recording's own).
    offset : window convention, as :class:`~.base.InputSpec` (1: bin t from frames t−h … t−1).
    channels : colour channels of a ``(B, C, h, H, W)`` network; ``None`` for a ``(B, h, H, W)`` one.
    colour : per-channel weights of the greyscale luminance, ``(C,)`` (default all 1).
    output : ``"auto"``, ``"last"``, a time-step index, or a callable ``(net output) → (B, N)``.
    forward_kwargs : extra keyword arguments of ``net.forward`` (e.g. ``{"data_key": "session_1"}``).
    aliases : further layer names, ``{alias: net name}``.
    stem : names (net names or aliases) of the leading modules that are affine in eval mode, when known;
        by default the contribution engine finds them itself.
    """

    architecture = "wrapped"

    def __init__(self, net: nn.Module, *, history: int, frame_shape: Sequence[int],
                 cell_ids: Sequence[Any] | None = None, layers: Sequence[str] | None = None,
                 frame_rate: float | None = None, norm_stats: tuple[float, float] | None = None,
                 offset: int = 1, channels: int | None = None, colour: Sequence[float] | None = None,
                 output: OutputRule = "auto", forward_kwargs: Mapping[str, Any] | None = None,
                 aliases: Mapping[str, str] | None = None, stem: Sequence[str] | None = None) -> None:
        if not isinstance(net, nn.Module):
            raise ModelContractError(f"wrap: expected an nn.Module, found {type(net).__name__}")
        history = int(history)
        if history < 1:
            raise ModelContractError(f"wrap: history must be a positive number of frames, found {history}")
        if len(tuple(frame_shape)) != 2:
            raise ModelContractError(f"wrap: frame_shape must be (H, W), found {tuple(frame_shape)}")
        if channels is not None and int(channels) < 1:
            raise ModelContractError(f"wrap: channels must be a positive number or None, found {channels}")
        if colour is not None and channels is None:
            raise ModelContractError("wrap: colour weights need channels= (the network's colour channels)")
        n_ch = None if channels is None else int(channels)
        weights = torch.ones(n_ch or 1) if colour is None else torch.as_tensor(colour, dtype=torch.float32)
        if n_ch is not None and tuple(weights.shape) != (n_ch,):
            raise ModelContractError(f"wrap: colour must have one weight per channel ({n_ch}), found "
                                     f"{tuple(weights.shape)}")
        if isinstance(output, str) and output not in ("auto", "last"):
            raise ModelContractError(f"wrap: output must be 'auto', 'last', an int or a callable, found {output!r}")
        super().__init__(1, history, frame_shape)
        self.net = net
        self.channels = n_ch
        self.register_buffer("colour", weights.view(-1), persistent=False)
        self.output_rule = output
        self.forward_kwargs = dict(forward_kwargs or {})
        self.input_spec = InputSpec(history, self.input_spec.height, self.input_spec.width,
                                    None if frame_rate is None else float(frame_rate), int(offset), n_ch)
        self.norm_stats = None if norm_stats is None else (float(norm_stats[0]), float(norm_stats[1]))
        own = {n: f"net.{n}" for n, _ in net.named_modules() if n}
        extra = {}
        for alias, target in (aliases or {}).items():
            full = own.get(target, target if target.startswith("net.") or target == "net" else None)
            if full is None:
                raise ModelContractError(f"wrap: alias {alias!r} → {target!r}: no such module in "
                                         f"{type(net).__name__}")
            extra[alias] = full
        self.layer_aliases = {**own, **extra}
        self.layer_names = tuple(extra) + tuple(own)
        self.n_cells = self._probe_outputs()
        for name in (layers or ()):
            if name not in self.layer_aliases:
                raise ModelContractError(f"wrap: layer {name!r} not found in {type(net).__name__}; "
                                         f"available: {', '.join(self.layer_names) or 'none'}")
        self.hidden_layers = tuple(layers or ())
        self.affine_stem = tuple(self.layer_aliases.get(n, n) for n in (stem or ()))
        ids = [str(i) for i in range(self.n_cells)] if cell_ids is None else [str(c) for c in cell_ids]
        if len(ids) != self.n_cells:
            raise ModelContractError(f"wrap: {len(ids)} cell_ids for a network with {self.n_cells} outputs")
        if len(set(ids)) != len(ids):
            raise ModelContractError("wrap: cell_ids must be unique")
        self.cell_ids = ids

    # ---- the contract's forward -------------------------------------------------------------------
    def stem_input(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own input for windows ``x (B, h, H, W)``: ``x`` itself, or ``(B, C, h, H, W)`` with
        channel c = ``colour[c] · x``. Linear in ``x``; a constant zero-stride input (the contribution
        engine's stand-in while an affine stem is replayed) stays one, never materialised."""
        if self.channels is None:
            return x
        if x.dim() != 4:
            raise ModelContractError(f"expected windows (B, h, H, W), found {tuple(x.shape)}")
        w = self.colour.to(device=x.device, dtype=x.dtype)
        if x.numel() and all(s == 0 for s in x.stride()):
            first = x.reshape(-1)[:1]
            return (first * w).view(1, -1, 1, 1, 1).expand(x.shape[0], self.channels, *x.shape[1:])
        return x.unsqueeze(1) * w.view(1, -1, 1, 1, 1)

    def select_output(self, out: Any) -> torch.Tensor:
        """The ``(B, N)`` rates in the network's output (see ``output``)."""
        rule = self.output_rule
        if callable(rule):
            out = rule(out)
        elif not isinstance(out, torch.Tensor):
            raise ModelContractError(f"{type(self.net).__name__} returned {type(out).__name__}; pass "
                                     "output=<callable> to wrap() to pick the (B, N) rates from it")
        elif out.dim() == 3 and rule in ("auto", "last"):
            out = out[:, -1]
        elif out.dim() == 3 and isinstance(rule, int):
            out = out[:, rule]
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelContractError(f"{type(self.net).__name__}: expected rates (B, N) (or (B, T', N) over "
                                     f"time), found {shape}")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, H, W)`` z-scored windows → ``(B, N)`` predicted responses."""
        return self.select_output(self.net(self.stem_input(x), **self.forward_kwargs))

    def _probe_outputs(self) -> int:
        device, dtype = _net_device(self.net)
        x = torch.zeros((1, *self.input_spec.shape), device=device, dtype=dtype)
        was = {m: m.training for m in self.net.modules()}
        try:
            self.net.eval()
            with torch.no_grad():
                out = self.forward(x)
        except ModelContractError:
            raise
        except Exception as err:  # the network's own error for the declared input
            raise ModelContractError(
                f"wrap: {type(self.net).__name__} fails on one window of the declared shape "
                f"{self._net_shape()}: {type(err).__name__}: {err}") from err
        finally:
            for m, flag in was.items():
                m.training = flag
        if out.shape[0] != 1 or out.shape[1] < 1:
            raise ModelContractError(f"wrap: expected one row of rates for one window, found {tuple(out.shape)}")
        return int(out.shape[1])

    def _net_shape(self) -> str:
        h, hh, ww = self.input_spec.shape
        return f"(1, {self.channels}, {h}, {hh}, {ww})" if self.channels else f"(1, {h}, {hh}, {ww})"

    # ---- description -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        raise CheckpointError(
            f"a wrapped {type(self.net).__name__} cannot be saved in retina-codec's format (its architecture "
            "is your code): save the network with its own tools and wrap it again after loading")

    def describe(self) -> dict[str, Any]:
        return {"architecture": f"wrapped:{type(self.net).__name__}", "config": None,
                "input_spec": self.input_spec.to_dict(), "norm_stats": None if self.norm_stats is None else
                {"mean": self.norm_stats[0], "std": self.norm_stats[1]}, "cell_ids": list(self.cell_ids or []),
                "n_cells": self.n_cells, "layer_names": list(self.layer_names),
                "hidden_layers": list(self.hidden_layers), "affine_stem": list(self.affine_stem)}

    def extra_repr(self) -> str:
        return (f"history={self.input_spec.history}, frame_shape={self.input_spec.height}x{self.input_spec.width}, "
                f"channels={self.channels}, n_cells={self.n_cells}")


def wrap(module: nn.Module, history: int, frame_shape: Sequence[int], **options: Any) -> WrappedModel:
    """``module`` as a retina model for every stage of the toolkit (see :class:`WrappedModel`).

    ``history`` frames per window, ``frame_shape`` ``(H, W)`` pixels; ``options``: ``cell_ids``,
    ``layers`` (the interneuron layers), ``frame_rate`` (Hz), ``norm_stats`` ``(mean, std)``, ``offset``,
    ``channels`` / ``colour`` (a ``(B, C, h, H, W)`` network), ``output``, ``forward_kwargs``, ``aliases``,
    ``stem``. Raises :class:`~retina_codec.errors.ModelContractError` naming what does not fit.

    >>> model = wrap(my_cnn, history=40, frame_shape=(50, 50), layers=["relu1", "relu2"])  # doctest: +SKIP
    """
    return WrappedModel(module, history=history, frame_shape=frame_shape, **options)
