"""Image classifiers (torchvision, timm, the digits CNN) with stable layer names and local weights only.

:func:`load_classifier` builds a model by name and loads its weights from a **local** file (a safetensors
state dict, or a ``torch.save`` file read with ``weights_only=True``); nothing is ever downloaded.
:func:`adapt_classifier` attaches what the contribution engine and the statistics need:

- ``model.layer_info`` — ``{module name: LayerInfo}`` for every addressable layer, with a friendly alias,
  a kind (``block``, ``mlp``, ``attention``, ``heads``, ``conv``) and the channel axis of the module's
  output (1 for ``(B, C, H, W)`` maps and ``(B, heads, T, d_head)`` head outputs, −1 for ``(B, T, D)``
  token maps, whose tokens the reductions sum like space);
- ``model.layer_names`` — the default hidden layers (ResNet: the bottleneck / basic blocks, ``layer1.0`` …
  ``layer4.2`` — the 16 blocks of ResNet-50; ViT: the encoder block outputs);
- ``model.affine_stem`` — the leading modules that are affine in eval mode (ResNet ``conv1`` + ``bn1``,
  ViT ``conv_proj`` / ``patch_embed.proj``), so the engine computes them once per path;
- ``model.preprocess`` — image size and per-channel mean / std for :mod:`.data`.

Torchvision ViTs get their ``nn.MultiheadAttention`` replaced by :class:`HeadSplitAttention` (same
parameters and state-dict keys) so that each head's output is a hookable ``...self_attention.heads``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ..errors import CheckpointError, ClassifierError, LayerNotFoundError
from ..models.registry import SHIPPED_DIR, resolve_model_path

__all__ = ["LayerInfo", "HeadSplitAttention", "adapt_classifier", "load_classifier", "load_state_dict_file",
           "resolve_layers", "channel_dim", "layer_alias", "IMAGENET_MEAN", "IMAGENET_STD", "default_digits_path"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer: module ``name``, friendly ``alias``, ``kind`` and output ``channel_dim``."""

    name: str
    alias: str
    kind: str
    channel_dim: int


def default_digits_path() -> Path:
    """The shipped digits CNN's folder, package data in ``retina_codec/shipped/digits-cnn``."""
    return SHIPPED_DIR / "digits-cnn"


# ------------------------------------------------------------------------------------------ ViT heads
class HeadSplitAttention(nn.Module):
    """Self-attention equal to a batch-first ``nn.MultiheadAttention`` whose per-head outputs pass a module.

    Shares the original's parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) and state-dict
    keys. ``heads`` (an ``nn.Identity``) sees the head outputs ``(B, n_heads, T, d_head)`` before the
    output projection: hook it to get per-head contributions, zero channels of it to ablate heads.
    Only self-attention (query = key = value), no masks, no attention weights returned.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not (mha.batch_first and mha._qkv_same_embed_dim and mha.in_proj_weight is not None):
            raise ClassifierError("HeadSplitAttention: expected a batch-first MultiheadAttention with a packed in_proj")
        self.embed_dim, self.num_heads = int(mha.embed_dim), int(mha.num_heads)
        self.dropout = float(mha.dropout)
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.heads = nn.Identity()

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                need_weights: bool = False, **kwargs: Any) -> tuple[torch.Tensor, None]:
        if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
            raise ClassifierError("HeadSplitAttention: masks are not supported")
        b, t, d = query.shape
        h = self.num_heads
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, h, d // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, dh)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        o = self.heads(o)
        return self.out_proj(o.transpose(1, 2).reshape(b, t, d)), None


class TimmHeadView(nn.Module):
    """Stands in for a timm ``Attention``'s parameter-free ``norm`` (an ``nn.Identity``, which sees the
    concatenated head outputs ``(B, T, n_heads·d_head)`` before the output projection) and passes them
    through ``heads`` (an ``nn.Identity``) as ``(B, n_heads, T, d_head)``: hook or ablate heads there.
    Output and state-dict keys are unchanged."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = int(num_heads)
        self.heads = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        o = self.heads(x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2))
        return o.transpose(1, 2).reshape(b, t, d)


# ------------------------------------------------------------------------------------------- families
def _is_resnet(model: nn.Module) -> bool:
    return all(isinstance(getattr(model, f"layer{i}", None), nn.Sequential) for i in range(1, 5)) and hasattr(
        model, "fc")


def _adapt_resnet(model: nn.Module) -> tuple[dict[str, LayerInfo], tuple[str, ...], tuple[str, ...]]:
    info: dict[str, LayerInfo] = {}
    blocks: list[str] = []
    k = 0
    for i in range(1, 5):
        for j, _ in enumerate(getattr(model, f"layer{i}")):
            k += 1
            name = f"layer{i}.{j}"
            info[name] = LayerInfo(name, f"block{k}", "block", 1)
            blocks.append(name)
    stem: tuple[str, ...] = ()
    if isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(getattr(model, "bn1", None),
                                                                          nn.BatchNorm2d):
        stem = ("conv1", "bn1")
    return info, tuple(blocks), stem


def _adapt_tv_vit(model: nn.Module) -> tuple[dict[str, LayerInfo], tuple[str, ...], tuple[str, ...]]:
    info: dict[str, LayerInfo] = {}
    blocks: list[str] = []
    for i, (bname, block) in enumerate(model.encoder.layers.named_children()):
        base = f"encoder.layers.{bname}"
        if isinstance(block.self_attention, nn.MultiheadAttention):
            block.self_attention = HeadSplitAttention(block.self_attention)
        info[base] = LayerInfo(base, f"block{i}", "block", -1)
        info[f"{base}.dropout"] = LayerInfo(f"{base}.dropout", f"attn{i}", "attention", -1)
        info[f"{base}.self_attention.heads"] = LayerInfo(f"{base}.self_attention.heads", f"heads{i}", "heads", 1)
        info[f"{base}.mlp.1"] = LayerInfo(f"{base}.mlp.1", f"mlp{i}", "mlp", -1)
        blocks.append(base)
    return info, tuple(blocks), ("conv_proj",)


def _adapt_timm_vit(model: nn.Module) -> tuple[dict[str, LayerInfo], tuple[str, ...], tuple[str, ...]]:
    info: dict[str, LayerInfo] = {}
    blocks: list[str] = []
    for i, block in enumerate(model.blocks):
        base = f"blocks.{i}"
        info[base] = LayerInfo(base, f"block{i}", "block", -1)
        info[f"{base}.attn"] = LayerInfo(f"{base}.attn", f"attn{i}", "attention", -1)
        attn = block.attn
        if isinstance(getattr(attn, "norm", None), (nn.Identity, TimmHeadView)) and getattr(attn, "gate", None) is None \
                and hasattr(attn, "num_heads"):
            if isinstance(attn.norm, nn.Identity):
                attn.norm = TimmHeadView(attn.num_heads)
            info[f"{base}.attn.norm.heads"] = LayerInfo(f"{base}.attn.norm.heads", f"heads{i}", "heads", 1)
        info[f"{base}.mlp.act"] = LayerInfo(f"{base}.mlp.act", f"mlp{i}", "mlp", -1)
        blocks.append(base)
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    return info, tuple(blocks), (("patch_embed.proj",) if isinstance(proj, nn.Conv2d) else ())


def adapt_classifier(model: nn.Module) -> nn.Module:
    """Attach ``layer_info``, ``layer_names``, ``affine_stem`` and ``preprocess`` to ``model`` (in place).

    Recognises ResNets (torchvision or timm), torchvision ``VisionTransformer``, timm ViTs and the digits
    CNN; any other model keeps its ``named_modules()`` names (pass layers explicitly). Returns ``model``.
    """
    from .digits import DigitsCNN

    size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    if isinstance(model, DigitsCNN):
        info = {n: LayerInfo(n, n, "conv", 1) for n in model.layer_names}
        names, stem = tuple(model.layer_names), tuple(model.affine_stem)
        ns = model.norm_stats or (0.0, 1.0)
        size, mean, std = model.size, (ns[0],), (ns[1],)
    elif _is_resnet(model):
        info, names, stem = _adapt_resnet(model)
    elif type(model).__name__ == "VisionTransformer" and hasattr(model, "conv_proj"):
        info, names, stem = _adapt_tv_vit(model)
        size = int(model.image_size)
    elif hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        info, names, stem = _adapt_timm_vit(model)
        img = getattr(model.patch_embed, "img_size", (224, 224))
        size = int(img[0] if isinstance(img, (tuple, list)) else img)
    else:
        info, names, stem = {}, (), ()
    model.layer_info = info
    model.layer_names = names
    model.affine_stem = stem
    if not hasattr(model, "preprocess"):
        model.preprocess = {"size": size, "mean": list(mean), "std": list(std),
                            "channels": 1 if len(mean) == 1 else 3}
    return model


# ----------------------------------------------------------------------------------------- layer names
_GROUPS = {"blocks": "block", "mlp": "mlp", "attention": "attention", "heads": "heads", "conv": "conv"}


def resolve_layers(model: nn.Module, layers: str | Sequence[str] | None = None) -> list[str]:
    """Module names for ``layers``: ``None`` → ``model.layer_names``; group names (``"blocks"``, ``"mlp"``,
    ``"attention"``, ``"heads"``, ``"all"``); aliases (``"block5"``, ``"mlp3"``) or ``named_modules`` names.
    A comma-separated string is split. Raises :class:`LayerNotFoundError` naming the known aliases."""
    info: dict[str, LayerInfo] = getattr(model, "layer_info", {}) or {}
    if layers is None:
        names = list(getattr(model, "layer_names", ()) or ())
        if not names:
            raise LayerNotFoundError(f"{type(model).__name__}: no default layers; pass layer names explicitly")
        return names
    items = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
    by_alias = {v.alias: k for k, v in info.items()}
    modules = dict(model.named_modules())
    out: list[str] = []
    for item in items:
        if item == "all":
            out += list(info)
        elif item in _GROUPS:
            out += [k for k, v in info.items() if v.kind == _GROUPS[item]]
        elif item in by_alias:
            out.append(by_alias[item])
        elif item in modules and item:
            out.append(item)
        else:
            aliases = ", ".join(list(by_alias)[:40])
            raise LayerNotFoundError(f"layer {item!r} not found in {type(model).__name__}; known aliases: "
                                     f"{aliases or 'none'} (or any named_modules() name)")
    seen: set[str] = set()
    return [n for n in out if not (n in seen or seen.add(n))]


def channel_dim(model: nn.Module, layer: str) -> int:
    """Channel axis of ``layer``'s output (1 for conv maps and heads, −1 for token maps)."""
    info = getattr(model, "layer_info", {}) or {}
    return info[layer].channel_dim if layer in info else 1


def layer_alias(model: nn.Module, layer: str) -> str:
    """The friendly alias of ``layer`` (itself when it has none)."""
    info = getattr(model, "layer_info", {}) or {}
    return info[layer].alias if layer in info else layer


# ---------------------------------------------------------------------------------------------- weights
def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``).

    Nested ``{"state_dict": ...}`` / ``{"model": ...}`` dicts are unwrapped and a ``module.`` prefix
    (DataParallel) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found (weights are read from local files only)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors / pickle raise many types
        raise CheckpointError(f"{p}: cannot read weights ({type(err).__name__}: {err})") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: expected a state dict (parameter name -> tensor), found {type(state).__name__}")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def _load_into(model: nn.Module, path: str | os.PathLike) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state dict does not match {type(model).__name__} (missing: "
                              f"{missing[:5] or 'none'}{' …' if len(missing) > 5 else ''}; unexpected: "
                              f"{unexpected[:5] or 'none'}{' …' if len(unexpected) > 5 else ''})")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: parameter {k!r}: expected shape {tuple(own[k].shape)}, "
                              f"found {tuple(state[k].shape)}")
    model.load_state_dict(state)


def load_classifier(name: str | os.PathLike, weights: str | os.PathLike | None = None,
                    num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """A classifier in eval mode with layer names attached (:func:`adapt_classifier`).

    ``name``: ``"digits-cnn"`` (the shipped model) or a digits-CNN checkpoint folder / ``model.json``;
    ``"torchvision:<arch>"`` or a bare torchvision architecture (``"resnet50"``, ``"vit_b_16"``);
    ``"timm:<arch>"`` (needs the optional ``timm`` package). ``weights``: a local state-dict file, or
    ``None`` for random initial weights (tests). ``num_classes`` and ``kwargs`` go to the constructor.
    """
    from .digits import load_digits_cnn

    text = str(name)
    p = resolve_model_path(text)  # "digits-cnn" / "models/digits-cnn" -> the shipped copy unless a folder exists
    if text == "digits-cnn" or (p.exists() and (p.is_dir() or p.suffix == ".json")):
        model = load_digits_cnn(default_digits_path() if text == "digits-cnn" and not p.exists() else p)
        if weights is not None:
            _load_into(model, weights)
        return adapt_classifier(model)
    source, _, arch = text.rpartition(":")
    source = source or "torchvision"
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if source == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(arch, weights=None, **kwargs)
        except ValueError as err:
            raise CheckpointError(f"model {text!r}: unknown torchvision architecture ({err})") from err
    elif source == "timm":
        try:
            import timm
        except ModuleNotFoundError as err:
            raise CheckpointError(f"model {text!r}: the optional package timm is not installed "
                                  "(pip install 'retina-codec[vision]')") from err
        try:
            model = timm.create_model(arch, pretrained=False, **kwargs)
        except RuntimeError as err:
            raise CheckpointError(f"model {text!r}: unknown timm architecture ({err})") from err
    else:
        raise CheckpointError(f"model {text!r}: expected 'digits-cnn', a checkpoint folder, 'torchvision:<arch>' "
                              f"or 'timm:<arch>'; found source {source!r}")
    adapt_classifier(model)  # before loading: torchvision ViT attention is swapped, keys unchanged
    if weights is not None:
        _load_into(model, weights)
    return model.eval()
