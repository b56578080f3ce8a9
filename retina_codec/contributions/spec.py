"""*What* a contributions run computes (:class:`ContributionSpec`) apart from *how* it runs (:class:`RunOptions`).

The spec holds exactly what the contribution store records about a run (method, steps, rule, target,
layers, reduction, baseline); :meth:`ContributionSpec.to_attrs` gives those attributes under the store's
names and :meth:`ContributionSpec.from_attrs` reads them back. The options (device, dtype, batching, speed
paths, progress output) change how fast the numbers come, not the numbers (to float rounding; bf16
``autocast`` is recorded separately as a precision).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ContributionError, ContributionTypeError
from ..hashing import tensor_hash
from ..stores.codec import decode_attr, to_json
from ..torch_utils.fft_conv import FAST_CONV
from .methods import Method, make_method
from .reductions import normalize_reduce
from .targets import DescribedTarget, make_target

__all__ = ["ContributionSpec", "RunOptions", "build", "FAST_CONV", "BATCHED_BACKWARD", "SPEC_ATTRS"]

BATCHED_BACKWARD = ("auto", "autograd", "func")
#: the contribution store's root attributes that a spec writes and reads back
SPEC_ATTRS = ("method", "rule", "steps", "target", "layers", "reduction", "baseline")


@dataclass(frozen=True)
class ContributionSpec:
    """What is computed: contributions of the hooked ``layers`` to ``target`` by ``method``.

    Fields
    ------
    layers : module names (``model.named_modules()``), at least one, unique.
    target : a :class:`~.targets.Target` (or anything :func:`~.targets.make_target` takes: a cell index, a
        list of cells, a name, a callable).
    method : ``"conductance"``, ``"layer_ig"``, ``"act_grad"``, ``"act_normgrad"`` or a
        :class:`~.methods.Method` (whose own steps and rule then count).
    steps : path steps m (≥ 1); ``rule``: ``"trapezoid"`` (CODEC) or ``"left"`` (captum).
    reduction : ``("ei_split", "spatial_sum")``, either, or ``()`` for full maps (``reduce=`` elsewhere).
    baseline : x₀, a finite scalar or tensor (one sample or one per input sample); a string
        ``"tensor [...] sha256 ..."`` only in a spec read back from a store.
    """

    layers: tuple[str, ...]
    target: Any = "sum"
    method: Any = "conductance"
    steps: int = 20
    rule: str = "trapezoid"
    reduction: tuple[str, ...] = ("ei_split", "spatial_sum")
    baseline: Any = 0.0
    _method: Method = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers or ())
        if not layers:
            raise ContributionError("layers: expected at least one layer name, found none")
        if not all(isinstance(n, str) for n in layers):
            raise ContributionError(f"layers: expected layer names (str), found {list(layers)}")
        if len(set(layers)) != len(layers):
            raise ContributionError(f"layers: names must be unique, found {list(layers)}")
        try:
            steps = int(self.steps)
        except (TypeError, ValueError):
            raise ContributionError(f"steps: expected a positive number of path steps, found {self.steps!r}") from None
        method = make_method(self.method, steps, self.rule)
        baseline = self.baseline
        if isinstance(baseline, str):
            if not baseline.startswith("tensor"):
                raise ContributionError(f"baseline: expected a finite scalar or tensor, found {baseline!r}")
        elif not bool(torch.isfinite(torch.as_tensor(baseline)).all()):
            raise ContributionError("baseline: expected finite values, found NaN or inf")
        put = object.__setattr__
        put(self, "layers", layers)
        put(self, "target", make_target(self.target))
        put(self, "_method", method)
        put(self, "method", method.name)
        put(self, "steps", int(method.steps))
        put(self, "rule", method.rule or "")
        put(self, "reduction", normalize_reduce(self.reduction))

    @property
    def method_impl(self) -> Method:
        """The :class:`~.methods.Method` object that combines activations and gradients."""
        return self._method

    @property
    def path(self) -> str:
        """``"input"`` (every layer from the same input-space passes) or ``"layer"`` (layer IG)."""
        return self._method.path

    def baseline_description(self) -> str:
        """The store's ``baseline`` attribute: the scalar as a string, a tensor by shape and content hash."""
        b = self.baseline
        if isinstance(b, str):
            return b
        if isinstance(b, torch.Tensor):
            return f"tensor {list(b.shape)} sha256 {tensor_hash(b)}"
        return str(float(b))

    def describe(self) -> dict[str, Any]:
        """The settings part of a result's ``settings`` (target described as it is now, e.g. after fitting)."""
        b = self.baseline
        return {"method": self.method, "rule": self.rule, "steps": self.steps, "target": self.target.describe(),
                "layers": list(self.layers), "reduction": list(self.reduction),
                "baseline": "tensor" if isinstance(b, (torch.Tensor, str)) else float(b)}

    def to_attrs(self) -> dict[str, Any]:
        """The contribution store's root attributes for this spec (names and encoded values of
        :data:`SPEC_ATTRS`, as the store has always written them)."""
        return {"method": self.method, "rule": self.rule, "steps": self.steps,
                "target": to_json(self.target.describe()), "layers": to_json(list(self.layers)),
                "reduction": to_json(list(self.reduction)), "baseline": self.baseline_description()}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ContributionSpec:
        """The spec a store was written with, from its root attributes (raw or decoded). The target comes
        back as a :class:`~.targets.DescribedTarget` (its description only)."""
        missing = [k for k in SPEC_ATTRS if k not in attrs]
        if missing:
            raise ContributionError(f"contribution store attributes: expected {list(SPEC_ATTRS)}, missing {missing}")
        a = {k: decode_attr(attrs[k]) for k in SPEC_ATTRS}
        baseline = a["baseline"]
        if not str(baseline).startswith("tensor"):
            baseline = float(baseline)
        return cls(layers=tuple(a["layers"]), target=DescribedTarget(a["target"]), method=a["method"],
                   steps=int(a["steps"]), rule=a["rule"] or "trapezoid", reduction=tuple(a["reduction"]),
                   baseline=baseline)


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: where, in which precision, in which batches and along which speed paths. None of
    these change the numbers beyond float rounding (``autocast``: bf16 rounding, recorded as a precision).

    Fields
    ------
    device : ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` or ``None`` (CUDA when present).
    dtype : run dtype (``None``: the model's parameter dtype).
    batch_size : samples per chunk, or ``"auto"`` (from the memory budget, ``RETINA_CODEC_MEMORY_BUDGET``).
    points_per_pass : path points per pass (``None``: all in one pass unless one sample's path does not fit
        the memory budget; conductance along the input path only).
    stem : ``"auto"`` (declared ``model.affine_stem``, else searched), module names, or ``()`` / ``None``
        for none: the affine stem computed once per sample.
    fold_batchnorm : fold eval BatchNorms into their convolutions (kept when exact on a probe).
    fast_conv : ``"fft"`` / ``"native"`` / ``"auto"`` (see
        :func:`~retina_codec.torch_utils.fft_conv.conv_speed_policy`).
    channels_last : channels-last layout (``None``: off).
    autotune : cuDNN autotuning on a GPU.
    autocast : bf16 mixed precision for the passes (GPU speed).
    batched_backward : per-cell targets' batched backward: ``"auto"`` / ``"autograd"`` / ``"func"``
        (``"func"`` falls back to autograd when torch.func cannot batch the model).
    quiet : progress bars off (``None``: ``RETINA_CODEC_QUIET``; :func:`retina_codec.progress.is_quiet`).
    """

    device: Any = None
    dtype: torch.dtype | None = None
    batch_size: int | str | None = "auto"
    points_per_pass: int | None = None
    stem: Any = "auto"
    fold_batchnorm: bool = False
    fast_conv: str = "auto"
    channels_last: bool | None = None
    autotune: bool = True
    autocast: bool = False
    batched_backward: str = "auto"
    quiet: bool | None = None

    def __post_init__(self) -> None:
        if self.fast_conv not in FAST_CONV:
            raise ContributionError(f"fast_conv: expected one of {FAST_CONV}, found {self.fast_conv!r}")
        if self.batched_backward not in BATCHED_BACKWARD:
            raise ContributionError(f"batched_backward: expected one of {BATCHED_BACKWARD}, "
                                    f"found {self.batched_backward!r}")
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            raise ContributionError(f"dtype: expected a torch.dtype or None, found {self.dtype!r}")
        b = self.batch_size
        if not (b is None or b == "auto"):
            try:
                ok = not isinstance(b, bool) and int(b) == float(b) and int(b) >= 1
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ContributionError(f"batch_size: expected a positive integer or 'auto', found {b!r}")
        p = self.points_per_pass
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 2):
            raise ContributionError(f"points_per_pass: expected an integer >= 2 or None, found {p!r}")
        object.__setattr__(self, "autocast", bool(self.autocast))
        object.__setattr__(self, "fold_batchnorm", bool(self.fold_batchnorm))

    @property
    def auto_batch(self) -> bool:
        """True when the chunk size follows the memory budget."""
        return self.batch_size is None or self.batch_size == "auto"

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def build(layers: Any, target: Any = "sum", method: Any = "conductance", steps: int = 20, rule: str = "trapezoid",
          baseline: Any = 0.0, reduce: Any = ("ei_split", "spatial_sum"),
          **options: Any) -> tuple[ContributionSpec, RunOptions]:
    """The spec and run options of keyword settings (the public functions' parameters): the spec's fields
    (``reduce`` is its ``reduction``) and any :class:`RunOptions` field; another name is a
    :class:`~retina_codec.errors.ContributionTypeError` (as Python's for an unknown keyword)."""
    names = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ContributionTypeError(f"{unknown[0]}: not a contributions setting; expected a ContributionSpec "
                                    f"field or one of the RunOptions {sorted(names)}")
    spec = ContributionSpec(layers=layers, target=target, method=method, steps=steps, rule=rule, reduction=reduce,
                            baseline=baseline)
    return spec, RunOptions(**options)

