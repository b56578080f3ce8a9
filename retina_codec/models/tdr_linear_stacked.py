"""Exact folding of torch-deep-retina's linearly stacked convolutions into one convolution.

torch-deep-retina's ``LinearStackedBNCNN`` builds each layer's large kernel (15×15, 11×11) out of a chain
of small valid convolutions with no nonlinearity between them:

* ``LinearStackedConv2d`` — state-dict entries ``convs.<j>.weight`` / ``convs.<j>.bias``: a stack of
  ``stack_ksize``×``stack_ksize`` convolutions (3×3 by default; the last one is smaller when the kernel size
  does not split evenly), inner ones without bias, the last with the layer's bias. Older versions
  (``abs_bnorm=True``) put an ``AbsBatchNorm2d`` between the convolutions (entries ``convs.<j>.scale``,
  ``shift``, ``running_mean``, ``running_var``; eval output ``(x − mean)/√(var + 1e-5)·|scale| + shift``),
  newer ones optionally a plain ``BatchNorm2d``; ``Dropout`` entries hold nothing.
* ``OneToOneLinearStackedConv2d`` — entries ``first_conv.*`` (one 3×3 convolution to the output channels)
  and ``seqs.<c>.<i>.*`` (a chain of 1→1-channel 3×3 convolutions per output channel, no cross talk).

In eval mode every step is affine and translation-equivariant, so the chain is one valid convolution with
kernel size ``1 + Σ(kᵢ − 1)`` and a bias. :func:`fold_affine_convs` composes it in float64:
a convolution ``W₂`` after ``W₁`` has kernel ``W[o, i, u + v] = Σ_c W₂[o, c, u]·W₁[c, i, v]`` and bias
``Σ_{c,u} W₂[o, c, u]·b₁[c] + b₂[o]``; a per-channel affine ``s·x + t`` scales the kernel rows and maps the
bias to ``s·b + t``. Zero padding between the steps would not fold exactly (the padded ring of an
intermediate map is zero, not the chain's value there), so only unpadded stacks — torch-deep-retina's
default — are accepted by the importer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CheckpointError

__all__ = ["Conv", "Affine", "stacked_conv_ops", "one_to_one_ops", "fold_affine_convs", "INNER_BN_EPS"]

INNER_BN_EPS = 1e-5  # torch-deep-retina builds the batchnorms inside a stack with PyTorch's default eps


@dataclass(frozen=True)
class Conv:
    """A valid, stride-1 cross-correlation: ``weight`` ``(C_out, C_in, k, k)``, ``bias`` ``(C_out,)`` or None."""

    weight: torch.Tensor
    bias: torch.Tensor | None


@dataclass(frozen=True)
class Affine:
    """A per-channel ``scale·x + shift`` (an eval-mode batchnorm); both ``(C,)``."""

    scale: torch.Tensor
    shift: torch.Tensor


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float64)


def _batchnorm_affine(g: dict[str, torch.Tensor], absolute: bool, eps: float) -> Affine:
    scale = _f64(g["scale"] if absolute else g["weight"])
    scale = scale.abs() if absolute else scale
    shift = _f64(g["shift"] if absolute else g["bias"])
    s = scale / torch.sqrt(_f64(g["running_var"]) + eps)
    return Affine(s, shift - _f64(g["running_mean"]) * s)


_BN_KEYS = {"weight", "bias", "running_mean", "running_var"}
_ABS_BN_KEYS = {"scale", "shift", "running_mean", "running_var"}


def _step(g: dict[str, torch.Tensor], where: str, eps: float) -> Conv | Affine:
    names = set(g)
    if names in ({"weight"}, {"weight", "bias"}) and g["weight"].dim() == 4:
        return Conv(_f64(g["weight"]), None if g.get("bias") is None else _f64(g["bias"]))
    if names == _ABS_BN_KEYS:
        return _batchnorm_affine(g, True, eps)
    if _BN_KEYS <= names <= _BN_KEYS | {"num_batches_tracked"} and g["weight"].dim() == 1:
        return _batchnorm_affine(g, False, eps)
    raise CheckpointError(f"{where}: entries {sorted(names)} are neither a convolution nor a batchnorm")


def stacked_conv_ops(params: dict[str, torch.Tensor], eps: float = INNER_BN_EPS) -> list[Conv | Affine]:
    """The steps of a ``LinearStackedConv2d`` from its state-dict entries (keys relative to the module,
    ``convs.<j>.<name>``), in forward order; ``eps`` is that of its inner batchnorms."""
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in params.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "convs" or not parts[1].isdigit():
            raise CheckpointError(f"unexpected entry {key!r} in a LinearStackedConv2d")
        groups.setdefault(int(parts[1]), {})[parts[2]] = value
    return [_step(groups[j], f"convs.{j}", eps) for j in sorted(groups)]


def one_to_one_ops(params: dict[str, torch.Tensor]) -> list[Conv | Affine]:
    """The steps of a ``OneToOneLinearStackedConv2d`` (``first_conv.*``, ``seqs.<c>.<i>.*``): the first
    convolution, then each per-channel chain step as a diagonal (channel-to-itself) convolution."""
    first: dict[str, torch.Tensor] = {}
    chains: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
    for key, value in params.items():
        parts = key.split(".")
        if len(parts) == 2 and parts[0] == "first_conv" and parts[1] in ("weight", "bias"):
            first[parts[1]] = value
        elif len(parts) == 4 and parts[0] == "seqs" and parts[1].isdigit() and parts[2].isdigit() \
                and parts[3] in ("weight", "bias"):
            chains.setdefault(int(parts[1]), {}).setdefault(int(parts[2]), {})[parts[3]] = value
        else:
            raise CheckpointError(f"unexpected entry {key!r} in a OneToOneLinearStackedConv2d")
    if "weight" not in first or first["weight"].dim() != 4:
        raise CheckpointError("OneToOneLinearStackedConv2d without a 4-D first_conv.weight")
    ops: list[Conv | Affine] = [_step(first, "first_conv", INNER_BN_EPS)]
    n_chan = first["weight"].shape[0]
    if sorted(chains) != list(range(n_chan)):
        raise CheckpointError(f"OneToOneLinearStackedConv2d: expected chains seqs.0 … seqs.{n_chan - 1}, "
                         f"found {sorted(chains)}")
    n_steps = {len(chain) for chain in chains.values()}
    if len(n_steps) != 1 or sorted(chains[0]) != list(range(next(iter(n_steps)))):
        raise CheckpointError("OneToOneLinearStackedConv2d: the per-channel chains differ in length")
    for i in range(next(iter(n_steps))):
        steps = [chains[c][i] for c in range(n_chan)]
        shapes = {tuple(s["weight"].shape) for s in steps if "weight" in s}
        if len(shapes) != 1 or len(steps) != sum("weight" in s for s in steps):
            raise CheckpointError(f"OneToOneLinearStackedConv2d: step {i} differs between channels")
        shape = next(iter(shapes))
        if len(shape) != 4 or shape[:2] != (1, 1):
            raise CheckpointError(f"OneToOneLinearStackedConv2d: step {i} has weight shape {shape}, expected (1, 1, k, k)")
        weight = torch.zeros(n_chan, n_chan, shape[2], shape[3], dtype=torch.float64)
        for c, s in enumerate(steps):
            weight[c, c] = _f64(s["weight"][0, 0])
        has_bias = [("bias" in s) for s in steps]
        if any(has_bias) and not all(has_bias):
            raise CheckpointError(f"OneToOneLinearStackedConv2d: step {i} has a bias in some channels only")
        bias = torch.stack([_f64(s["bias"]).reshape(()) for s in steps]) if all(has_bias) else None
        ops.append(Conv(weight, bias))
    return ops


def fold_affine_convs(ops: list[Conv | Affine], in_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The single valid convolution equal to applying ``ops`` in order to a ``(B, in_channels, H, W)`` input.

    Returns float64 ``weight`` ``(C_out, in_channels, K, K)`` with ``K = 1 + Σ(kᵢ − 1)`` and ``bias``
    ``(C_out,)``. Raises ``ValueError`` when the channel counts do not chain or a kernel is not square.
    """
    weight = torch.eye(in_channels, dtype=torch.float64)[:, :, None, None]
    bias = torch.zeros(in_channels, dtype=torch.float64)
    for n, op in enumerate(ops):
        channels = weight.shape[0]
        if isinstance(op, Conv):
            w2 = op.weight
            if w2.dim() != 4 or w2.shape[1] != channels or w2.shape[2] != w2.shape[3]:
                raise CheckpointError(f"step {n}: convolution weight {tuple(w2.shape)} does not take {channels} "
                                 "channels with a square kernel")
            k, size = w2.shape[2], weight.shape[2]
            out = torch.zeros(w2.shape[0], in_channels, size + k - 1, size + k - 1, dtype=torch.float64)
            for u in range(k):
                for v in range(k):
                    out[:, :, u:u + size, v:v + size] += torch.einsum("oc,cikl->oikl", w2[:, :, u, v], weight)
            bias = w2.sum((2, 3)) @ bias + (0.0 if op.bias is None else op.bias)
            weight = out
        else:
            if op.scale.shape != (channels,) or op.shift.shape != (channels,):
                raise CheckpointError(f"step {n}: batchnorm of {op.scale.numel()} channels after {channels} channels")
            weight = op.scale[:, None, None, None] * weight
            bias = op.scale * bias + op.shift
    return weight, bias
