"""Fold eval-mode BatchNorm into the convolution that feeds it (same outputs to float rounding).

In eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w · γ/√(σ² + ε)`` per output channel and
``b' = (b − μ) · γ/√(σ² + ε) + β``, so a pass over the model saves one memory-bound read and write per
folded pair, forwards and backwards. Pairs are found by running the model once and matching each
``BatchNorm2d`` input to the convolution output it *is* (same tensor); the caller verifies the swapped
model on a probe (:func:`batchnorm_folds` returns the swaps, :func:`~retina_codec.contributions.hooks.
swap_modules` applies them), so a convolution whose output has another consumer is never folded silently.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_conv_bn", "batchnorm_folds"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``nn.Conv2d`` equal to ``bn(conv(·))`` with ``bn`` in eval mode (parameters frozen)."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    folded = folded.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(
            bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(scale)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
        folded.bias.copy_(((bias - bn.running_mean) * scale + shift).to(conv.weight.dtype))
    folded.weight.requires_grad_(False)
    folded.bias.requires_grad_(False)
    folded.eval()
    return folded


def _foldable_bn(m: nn.Module) -> bool:
    return (isinstance(m, nn.BatchNorm2d) and not m.training and m.track_running_stats
            and m.running_mean is not None and m.running_var is not None)


def batchnorm_folds(model: nn.Module, probe: torch.Tensor, keep: set[str] | frozenset[str] = frozenset()
                    ) -> dict[str, nn.Module]:
    """Swaps ``{conv name: folded conv, bn name: Identity}`` for every conv → eval BatchNorm2d pair seen on
    ``probe`` (one forward, no grad). Convolutions named in ``keep`` (hooked layers, whose own output must
    stay as it is) are left alone."""
    convs = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in keep}
    bns = {m: n for n, m in model.named_modules() if _foldable_bn(m)}
    if not convs or not bns:
        return {}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []

    def on_conv(m, args, out):
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (convs[m], out)  # the tensor is kept alive so its id stays unique

    def on_bn(m, args):
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) in produced:
            pairs.append((produced[id(args[0])][0], bns[m]))

    try:
        for m in convs:
            handles.append(m.register_forward_hook(on_conv))
        for m in bns:
            handles.append(m.register_forward_pre_hook(on_bn))
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    swaps: dict[str, nn.Module] = {}
    seen_convs = [c for c, _ in pairs]
    for conv_name, bn_name in pairs:
        if seen_convs.count(conv_name) > 1:  # one conv feeding two BatchNorms: leave it alone
            continue
        swaps[conv_name] = fold_conv_bn(modules[conv_name], modules[bn_name])
        swaps[bn_name] = nn.Identity()
    return swaps
