"""The shared path-and-batching core: every method and target runs through :class:`ContributionEngine`.

Cost floor (docs/definitions.md#cost): the S path points are folded into the batch (one forward of ``S·B`` rows);
gradients are taken w.r.t. the hooked activations only (parameters frozen, the input never requires
grad); every hooked layer comes from the same passes; an affine stem is computed once per sample
(:mod:`.paths`); per-cell targets get all their gradients from one batched backward over the shared
forward: ``is_grads_batched`` (autograd's legacy vmap, which runs ops without a batching rule once per
target) or, with ``batched_backward="func"``, ``torch.func.vjp`` w.r.t. zero perturbations of the hooked
outputs vmapped over the targets (every op batched).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ContributionStateError, ContributionTypeError, TargetError
from ..io_utils import available_memory_bytes
from ..torch_utils.devices import resolve_device
from ..torch_utils.fft_conv import conv_speed_policy, fft_conv_swaps
from ..torch_utils.fold_bn import batchnorm_folds
from ..torch_utils.hooks import (
    canonical_name,
    capture_outputs,
    prepared_model,
    replace_outputs,
    resolve_module,
    swap_modules,
)
from .methods import Conductance, Method
from .paths import AffineStem, baseline_like, dummy_input, find_stem, interpolate, stem_before_layers
from .reductions import reduce_map, reduced_shape
from .spec import BATCHED_BACKWARD, FAST_CONV, ContributionSpec, RunOptions, build
from .stem_search import discover_stem
from .targets import Target

__all__ = ["ContributionEngine", "ChunkResult", "default_device", "to_device", "FAST_CONV", "BATCHED_BACKWARD"]

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return resolve_device("auto")


def to_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``x`` on ``device`` as ``dtype``; an overlapping strided view (history windows over shared frames)
    moves only its storage and is re-viewed there, never materialised on the host."""
    x = torch.as_tensor(x)
    if x.device == device or x.numel() == 0 or any(st < 0 for st in x.stride()):
        return x.to(device=device, dtype=dtype)
    # the span of storage elements the view touches; smaller than numel when windows overlap
    span = 1 + sum((n - 1) * st for n, st in zip(x.shape, x.stride()))
    if span >= x.numel():
        return x.to(device=device, dtype=dtype, non_blocking=x.is_pinned())
    flat = x.new_empty(0).set_(x.untyped_storage(), x.storage_offset(), (span,), (1,))
    flat = flat.to(device=device, dtype=dtype)
    return flat.as_strided(x.shape, x.stride(), 0)


@contextlib.contextmanager
def _cudnn_autotune(enabled: bool):
    """cuDNN picks the fastest algorithm per shape (chunks repeat their shape) within the block."""
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled) or prev
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


@contextlib.contextmanager
def _memory_format(model: nn.Module, channels_last: bool):
    """Parameters and buffers in channels-last layout within the block: 4-D ones ``channels_last``, 5-D ones
    (3-D convolutions) ``channels_last_3d``; restored on exit. ``nn.Module.to(memory_format=...)`` cannot
    be used: it converts 5-D tensors with the 4-D format and fails."""
    if not channels_last:
        yield
        return
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    changed = []
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dim() in formats:
            changed.append((t, t.data))
            t.data = t.data.contiguous(memory_format=formats[t.dim()])
    try:
        yield
    finally:
        for t, data in changed:
            t.data = data


@dataclass
class ChunkResult:
    """Contributions of one chunk of B samples.

    ``contributions[layer]`` is ``(B, [K,] *features)`` (reduced); ``f_x`` / ``f_baseline`` the target at
    the input and at the baseline ``(B, [K])``; ``error[layer]`` the signed completeness error
    ``Σ_units C − (F(x) − F(x₀))`` ``(B, [K])``.
    """

    contributions: dict[str, torch.Tensor]
    f_x: torch.Tensor
    f_baseline: torch.Tensor
    error: dict[str, torch.Tensor]

    @staticmethod
    def cat(parts: list[ChunkResult]) -> ChunkResult:
        """Concatenate results of consecutive sub-chunks along samples."""
        first = parts[0]
        return ChunkResult({n: torch.cat([p.contributions[n] for p in parts]) for n in first.contributions},
                           torch.cat([p.f_x for p in parts]), torch.cat([p.f_baseline for p in parts]),
                           {n: torch.cat([p.error[n] for p in parts]) for n in first.error})


def _conv3d_workspace(m: nn.Module, out: torch.Tensor) -> int:
    """Bytes of the column buffer a CPU 3-D convolution unfolds its input into, for one output row: a module
    with a 5-D weight ``(C_out, C_in/groups, kT, kH, kW)`` (``nn.Conv3d`` or a user's own calling
    ``F.conv3d``, as openretina's space-time convolutions do) needs ``C_in/groups·kT·kH·kW`` elements per
    output position; 0 for other modules. Only where torch unfolds: on the CPU for float64 (and any dtype
    without oneDNN); oneDNN's float32 kernels need none (measured: 34 MB peak where the column buffer of a
    float64 call took 17.7 GB)."""
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 5 or out.dim() != 5 or out.device.type != "cpu":
        return 0
    if out.dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available():
        return 0
    return int(np.prod(w.shape[1:])) * int(np.prod(out.shape[2:])) * out.element_size()


def _available_bytes() -> int:
    free = available_memory_bytes()
    return 4 << 30 if free is None else free


class ContributionEngine:
    """Per-chunk contributions of a :class:`~.spec.ContributionSpec` run as :class:`~.spec.RunOptions` say
    (use as a context manager); :meth:`from_settings` builds one from keyword settings.

    Inside the ``with`` block the model is in eval mode with frozen parameters (and on ``device`` /
    ``dtype``); everything is restored on exit, also after an exception. :meth:`compute` maps a chunk
    ``x (B, ...)`` to a :class:`ChunkResult`.
    """

    def __init__(self, model: nn.Module, spec: ContributionSpec, options: RunOptions | None = None) -> None:
        """``spec``: what is computed (layers, target, method, steps, rule, reduction, baseline);
        ``options``: how it runs (device, dtype, speed paths; default :class:`~.spec.RunOptions`)."""
        if not isinstance(spec, ContributionSpec):
            raise ContributionTypeError(f"spec: expected a ContributionSpec, found {type(spec).__name__} (keyword "
                                        "settings: ContributionEngine.from_settings(model, layers, ...))")
        options = RunOptions() if options is None else options
        if not isinstance(options, RunOptions):
            raise ContributionTypeError(f"options: expected RunOptions or None, found {type(options).__name__}")
        self.model = model
        self.spec = spec
        self.options = options
        self.layers = list(spec.layers)
        for name in self.layers:
            resolve_module(model, name)
        self.target: Target = spec.target
        self.method: Method = spec.method_impl
        self.baseline = spec.baseline
        self.reduce = spec.reduction
        self.device = resolve_device(options.device)
        self.dtype = options.dtype
        stem = options.stem
        # a hooked layer inside the stem must see its own output: the stem is cut before it (after it when
        # it is one of the stem's modules), since a replayed stem only reproduces the stem's last output
        declared = find_stem(model, None if isinstance(stem, str) and stem == "auto" else (stem or ()))
        self.stem: AffineStem | None = stem_before_layers(declared, self.layers)
        # a model that names no stem gets one searched for on the first probe (stem_search)
        self._search_stem = isinstance(stem, str) and stem == "auto" and declared is None
        self.fast_conv = options.fast_conv
        self.channels_last = options.channels_last
        self.autotune = options.autotune
        self.autocast = options.autocast
        self.fold_batchnorm = options.fold_batchnorm
        self.batched_backward = options.batched_backward  # "func" falls back to "autograd" where it fails
        self._shapes: dict[tuple[int, ...], dict[str, tuple[int, ...]]] = {}
        self._swapped = False
        self._stack: contextlib.ExitStack | None = None
        self._s0_cache: tuple[tuple, torch.Tensor] | None = None
        self._chunk_baseline = False
        # path points per pass: given, or set by auto_batch_size when one sample's path does not fit
        self.points_per_pass: int | None = options.points_per_pass

    @classmethod
    def from_settings(cls, model: nn.Module, layers: list[str] | tuple[str, ...] | str, target: Any = "sum",
                      method: str | Method = "conductance", steps: int = 20, rule: str = "trapezoid",
                      baseline: float | torch.Tensor = 0.0, reduce: Any = ("ei_split", "spatial_sum"),
                      **options: Any) -> ContributionEngine:
        """An engine from keyword settings: the :class:`~.spec.ContributionSpec` fields (``reduce`` is its
        ``reduction``) and any :class:`~.spec.RunOptions` field (``device``, ``dtype``, ``stem``,
        ``fast_conv``, ...)."""
        return cls(model, *build(layers, target, method, steps, rule, baseline, reduce, **options))

    # ---- context ---------------------------------------------------------------------------------
    def __enter__(self) -> ContributionEngine:
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(prepared_model(self.model, self.device, self.dtype))
            gpu = self.device.type == "cuda"
            self._stack.enter_context(_cudnn_autotune(gpu and self.autotune))
            self._stack.enter_context(_memory_format(self.model, bool(self.channels_last)))
        except BaseException:
            self._stack.close()
            self._stack = None
            raise
        first = next(iter(self.model.parameters()), None)
        self.run_dtype = self.dtype or (first.dtype if first is not None else torch.get_default_dtype())
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        self._s0_cache = None
        self._swapped = False
        if stack is not None:
            stack.close()

    def _swap_fast_modules(self, x: torch.Tensor) -> None:
        """Once per ``with`` block, on the first chunk: fold eval BatchNorms into their convolutions (kept
        only if the model's output and every hooked layer are unchanged on a probe), then swap large-kernel
        convolutions for FFT ones (``fast_conv``). Both are undone when the block exits."""
        if self._swapped:
            return
        self._swapped = True
        assert self._stack is not None
        probe = x[:1]
        if self.fold_batchnorm:
            swaps = batchnorm_folds(self.model, probe, keep={canonical_name(self.model, n) for n in self.layers})
            if swaps and self._same_outputs(probe, swaps):
                self._stack.enter_context(swap_modules(self.model, swaps))
            else:
                warnings.warn(f"fold_batchnorm: {type(self.model).__name__} has no eval-mode BatchNorm2d fed by an "
                              "nn.Conv2d that can be folded (exactly); running unfolded", RuntimeWarning,
                              stacklevel=4)
        swaps = self._fft_swaps()
        if swaps:
            self._stack.enter_context(swap_modules(self.model, swaps))
        elif self.fast_conv == "fft":
            warnings.warn(f"fast_conv='fft': {type(self.model).__name__} has no nn.Conv2d with stride 1, one group and "
                          "a kernel side >= 7 (3-D convolutions and functional convolutions are not swapped); "
                          "running its own convolutions", RuntimeWarning, stacklevel=4)

    def _same_outputs(self, probe: torch.Tensor, swaps: dict[str, nn.Module], rtol: float = 1e-4) -> bool:
        def run() -> list[torch.Tensor]:
            with torch.no_grad(), capture_outputs(self.model, self.layers) as store:
                out = self.model(probe)
                return [out] + [store[n] for n in self.layers]

        ref = run()
        with swap_modules(self.model, swaps):
            got = run()
        return all(isinstance(a, torch.Tensor) and a.shape == b.shape
                   and float((a - b).abs().max()) <= rtol * max(float(a.abs().max()), 1e-12)
                   for a, b in zip(ref, got))

    def _fft_swaps(self) -> dict[str, nn.Module]:
        """FFT convolutions to swap in (kernels ≥ 7×7, stride 1) where
        :func:`~retina_codec.torch_utils.fft_conv.conv_speed_policy` says so for ``fast_conv``."""
        if conv_speed_policy(self.device, "contributions", self.fast_conv).fft:
            return fft_conv_swaps(self.model)
        return {}

    def _require_open(self) -> None:
        if self._stack is None:
            raise ContributionStateError("ContributionEngine must be used inside a `with` block")

    # ---- description ------------------------------------------------------------------------------
    @property
    def per_cell(self) -> bool:
        return self.target.per_cell

    def describe(self) -> dict[str, Any]:
        """Settings stored with the results: the spec's (:meth:`~.spec.ContributionSpec.describe`), the
        affine stem in use and, under bf16 autocast, the precision."""
        return {**self.spec.describe(), "affine_stem": self._stem_names(),
                **({"precision": "bf16 autocast"} if self.autocast else {})}

    def _stem_names(self) -> list[str]:
        """The stem's modules by the names the user addresses them with (a wrapped model's own names)."""
        if self.stem is None:
            return []
        back = {v: k for k, v in (getattr(self.model, "layer_aliases", None) or {}).items()}
        return [back.get(n, n) for n in self.stem.names]

    # ---- shapes and batch size --------------------------------------------------------------------
    def _ensure_stem(self, sample_shape: tuple[int, ...]) -> None:
        """Search the model's affine stem once (before any module is swapped for a faster one), on a random
        probe of one sample against the engine's baseline; none found means the plain path."""
        if not self._search_stem:
            return
        self._search_stem = False
        gen = torch.Generator(device="cpu").manual_seed(1234)
        probe = torch.randn((1, *sample_shape), generator=gen).to(device=self.device, dtype=self.run_dtype)
        b = self.baseline
        if isinstance(b, torch.Tensor) and b.ndim == len(sample_shape) + 1:
            b = b[:1]
        found = discover_stem(self.model, probe, baseline_like(b, probe))
        self.stem = stem_before_layers(found, self.layers)

    def probe(self, sample_shape: tuple[int, ...]) -> tuple[dict[str, tuple[int, ...]], int]:
        """Per-sample output shape of every hooked layer and the bytes of all module outputs per row."""
        self._require_open()
        self._ensure_stem(tuple(sample_shape))
        x = torch.zeros((1, *sample_shape), dtype=self.run_dtype, device=self.device)
        total = [0]
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []

        def count(m: nn.Module, a: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                total[0] += out.numel() * out.element_size() + _conv3d_workspace(m, out)

        try:
            for m in self.model.modules():
                if not list(m.children()):
                    handles.append(m.register_forward_hook(count))
            with torch.no_grad(), capture_outputs(self.model, self.layers) as store:
                self.model(x)
                shapes = {n: tuple(store[n].shape[1:]) for n in self.layers}
        finally:
            for h in handles:
                h.remove()
        if self.stem is None:
            total[0] += x.numel() * x.element_size()
        return shapes, total[0]

    def output_shapes(self, sample_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each layer's stored contributions, ``([K,] *features)``."""
        shapes, _ = self.probe(sample_shape)
        k = (self.target.n_targets,) if self.per_cell else ()
        return {n: k + reduced_shape(s, self.reduce) for n, s in shapes.items()}

    def auto_batch_size(self, sample_shape: tuple[int, ...], budget_bytes: int | None = None) -> int:
        """Samples per chunk so that one chunk's path passes fit in the memory budget."""
        shapes, row_bytes = self.probe(sample_shape)
        s = len(self.method.alphas())
        k = self.target.n_targets
        elem = torch.tensor([], dtype=self.run_dtype).element_size()
        hooked = sum(int(np.prod(v)) for v in shapes.values()) * elem
        per_point = 3 * row_bytes + 3 * k * hooked
        per_sample = s * per_point + int(np.prod(sample_shape)) * elem * 2
        if budget_bytes is None:
            env = os.environ.get("RETINA_CODEC_MEMORY_BUDGET")
            if env:
                budget_bytes = int(float(env))
            elif self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                budget_bytes = int(0.4 * free)
            else:
                # smaller chunks run faster on a CPU (cache): the full-size retina BN-CNN did 250–275 bins/s
                # at 16–32 bins per chunk vs 190 at 48 (this budget gives ≈ 22; benchmarks/RESULTS.md)
                budget_bytes = min(512 << 20, _available_bytes() // 4)
        self.points_per_pass = self.options.points_per_pass  # a given value is kept
        if self.points_per_pass is None and per_sample > budget_bytes and self._splittable():
            # one sample's path does not fit: walk it in passes of consecutive points (exact, see _input_path)
            self.points_per_pass = int(min(s - 1, max(2, budget_bytes // max(per_point, 1))))
            log.info("one sample's %d path points need %.0f MB (budget %.0f MB): %d points per pass", s,
                     per_sample / 2**20, budget_bytes / 2**20, self.points_per_pass)
        return int(max(1, min(4096, budget_bytes // max(per_sample, 1))))

    def _splittable(self) -> bool:
        """Conductance along the input path is a sum over consecutive path points: it can be walked in parts."""
        return isinstance(self.method, Conductance) and self.method.path == "input" and len(self.method.alphas()) > 2

    # ---- core passes --------------------------------------------------------------------------------
    def _stem_baseline(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """stem(x₀), cached for a scalar / single-sample baseline (not for a per-chunk baseline)."""
        assert self.stem is not None
        if x0.shape[0] == 1 and not self._chunk_baseline:
            key = (tuple(x.shape[1:]), x.dtype, x.device)
            if self._s0_cache is None or self._s0_cache[0] != key:
                self._s0_cache = (key, self.stem(x0.expand(1, *x.shape[1:]).contiguous()))
            return self._s0_cache[1]
        return self.stem(x0)

    def _forward_path(self, x: torch.Tensor, x0: torch.Tensor, alphas: torch.Tensor,
                      store: dict[str, torch.Tensor] | None, replace: dict | None = None) -> torch.Tensor:
        """Model outputs ``(S, B, ...)`` at ``x₀ + α(x − x₀)``; hooked outputs go to ``store``.

        ``replace`` maps layer names to functions replacing their outputs (layer-space paths).
        """
        s, b = alphas.shape[0], x.shape[0]
        with contextlib.ExitStack() as stack:
            if self.autocast:  # bf16 mixed precision for the passes; targets and sums stay in float32
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if self.stem is not None:
                pts = interpolate(self.stem(x), self._stem_baseline(x0, x), alphas)
                stack.enter_context(self.stem.replaying(pts))
                inp = dummy_input(s * b, x.shape[1:], x)
            else:
                inp = interpolate(x, x0, alphas)
            if store is not None:
                stack.enter_context(capture_outputs(self.model, self.layers, store))
            if replace:
                stack.enter_context(replace_outputs(self.model, replace))
            out = self.model(inp)
        if not isinstance(out, torch.Tensor):
            raise ContributionTypeError(f"model output: expected a tensor, found {type(out).__name__}")
        if self.autocast:
            out = out.to(self.run_dtype)
        return out.reshape(s, b, *out.shape[1:])

    def _values(self, out: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        v = self.target(out, out_x)
        if not self.per_cell:
            v = v.unsqueeze(-1)
        if v.ndim != 3 or v.shape[:2] != out.shape[:2]:
            raise TargetError(f"target {self.target!r}: expected values (S, B[, K]); found {tuple(v.shape)}")
        return v  # (S, B, K)

    def _grads(self, values: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
        """∂F_k/∂a for every target k and tensor a: each ``(K, *a.shape)``, from one (batched) backward."""
        k = values.shape[-1]
        if k == 1:
            gs = torch.autograd.grad(values.sum(), wrt, allow_unused=True)
            gs = [g.unsqueeze(0) if g is not None else torch.zeros((1, *a.shape), dtype=a.dtype, device=a.device)
                  for g, a in zip(gs, wrt)]
            return gs
        eye = torch.eye(k, dtype=values.dtype, device=values.device)
        go = eye.view(k, 1, 1, k).expand(k, *values.shape)
        try:
            gs = torch.autograd.grad(values, wrt, grad_outputs=go, is_grads_batched=True, allow_unused=True,
                                     retain_graph=True)
        except RuntimeError:  # an op without a batching rule: one backward per target
            per = [torch.autograd.grad(values, wrt, grad_outputs=go[i], allow_unused=True, retain_graph=True)
                   for i in range(k)]
            gs = [torch.stack([p[j] if p[j] is not None else torch.zeros_like(a) for p in per])
                  for j, a in enumerate(wrt)]
        return [g if g is not None else torch.zeros((k, *a.shape), dtype=a.dtype, device=a.device)
                for g, a in zip(gs, wrt)]

    def _baseline_values(self, x: torch.Tensor, x0: torch.Tensor, out_x: torch.Tensor) -> torch.Tensor:
        """F(x₀) per sample ``(B, K)`` from a forward of the baseline alone."""
        with torch.no_grad():
            rows = x0.expand(x0.shape[0], *x.shape[1:])
            out0 = self.model(rows.contiguous())
            out0 = out0.expand(x.shape[0], *out0.shape[1:]).unsqueeze(0)
            return self._values(out0, out_x)[0]

    def compute(self, x: torch.Tensor, baseline: torch.Tensor | None = None) -> ChunkResult:
        """Contributions of every layer for the samples ``x (B, ...)``.

        ``baseline``: this chunk's rows ``(B, ...)`` of a per-sample baseline (default: the engine's).
        """
        self._require_open()
        x = to_device(x, self.device, self.run_dtype)
        try:
            return self._compute(x) if baseline is None else self._compute(x, baseline)
        except torch.cuda.OutOfMemoryError:
            if x.shape[0] < 2:
                raise
        # the chunk did not fit in GPU memory: halve it (results are per sample, so this is exact)
        torch.cuda.empty_cache()
        half = x.shape[0] // 2
        per_row = baseline is not None and baseline.ndim == x.ndim and baseline.shape[0] > 1
        parts = [(x[:half], baseline[:half] if per_row else baseline),
                 (x[half:], baseline[half:] if per_row else baseline)]
        return ChunkResult.cat([self.compute(xx, bb) for xx, bb in parts])

    def _compute(self, x: torch.Tensor, baseline: torch.Tensor | None = None) -> ChunkResult:
        self._ensure_stem(tuple(x.shape[1:]))
        self._swap_fast_modules(x)
        self._chunk_baseline = baseline is not None
        x0 = baseline_like(self.baseline if baseline is None else baseline, x)
        if self.stem is not None:
            self.stem.verify(x, x0)
        alphas_l = self.method.alphas()
        alphas = torch.tensor(alphas_l, dtype=self.run_dtype, device=self.device)
        if self.method.path == "input":
            return self._input_path(x, x0, alphas, alphas_l)
        return self._layer_path(x, x0, alphas)

    def _use_func(self) -> bool:
        """``torch.func`` for the per-target backward: when asked for (``"auto"`` keeps autograd's
        ``is_grads_batched``, equal or faster on a CPU; the GPU comparison is in benchmarks/gpu.sh), and not
        under bf16 autocast (torch.func's backward of autocast regions mixes bf16 and float32 operands)."""
        return self.per_cell and self.batched_backward == "func" and not self.autocast

    def _func_pass(self, x, x0, alphas, i1: int):
        """Outputs, hooked activations, target values and per-target gradients ``(K, S·B, ...)`` from
        ``torch.func.vjp`` w.r.t. zero perturbations added to the hooked outputs, vmapped over the K one-hot
        cotangents: one batched backward in which every op runs batched."""
        key = tuple(x.shape[1:])
        if key not in self._shapes:
            self._shapes[key] = self.probe(key)[0]
        rows = alphas.shape[0] * x.shape[0]
        eps = [torch.zeros((rows, *self._shapes[key][n]), dtype=self.run_dtype, device=self.device)
               for n in self.layers]

        def f(*perturbations: torch.Tensor):
            acts: dict[str, torch.Tensor] = {}

            def add(name: str, e: torch.Tensor):
                def fn(o: torch.Tensor) -> torch.Tensor:
                    acts[name] = o + e.to(o.dtype)
                    return acts[name]
                return fn

            # hooked inside _forward_path, after the stem is swapped for its replay: a hooked stem module is
            # then the module that runs along the path, not the original run once on x
            out = self._forward_path(x, x0, alphas, None,
                                     {n: add(n, e) for n, e in zip(self.layers, perturbations)})
            values = self._values(out, out[i1].detach())
            return values, (out.detach(), [acts[n].detach() for n in self.layers])

        with torch.enable_grad():
            values, vjp_fn, (out, acts) = torch.func.vjp(f, *eps, has_aux=True)
            k = values.shape[-1]
            eye = torch.eye(k, dtype=values.dtype, device=values.device)
            grads = torch.func.vmap(vjp_fn)(eye.view(k, 1, 1, k).expand(k, *values.shape))
        return out, acts, values, list(grads)

    def _input_path(self, x, x0, alphas, alphas_l) -> ChunkResult:
        p = self.points_per_pass
        if p is not None and p < len(alphas_l) and self._splittable():
            return self._input_path_in_parts(x, x0, alphas, alphas_l, p)
        s, b = len(alphas_l), x.shape[0]
        i1 = alphas_l.index(1.0)
        func = None
        if self._use_func():
            try:
                func = self._func_pass(x, x0, alphas, i1)
            except RuntimeError as err:  # e.g. an in-place op (clamp_) torch.func cannot batch
                warnings.warn(f"batched_backward='func' failed on {type(self.model).__name__} ({str(err).splitlines()[0]}); "
                              "using autograd's batched backward instead", RuntimeWarning, stacklevel=3)
                self.batched_backward = "autograd"
        if func is not None:
            out, acts, values, grads = func
            out_x = out[i1]
        else:
            store: dict[str, torch.Tensor] = {}
            with torch.enable_grad():
                out = self._forward_path(x, x0, alphas, store)
                out_x = out[i1].detach()
                values = self._values(out, out_x)
                acts = [store[n] for n in self.layers]
                grads = self._grads(values, acts)
        values = values.detach()
        f_x = values[i1]
        f_0 = values[alphas_l.index(0.0)] if 0.0 in alphas_l else self._baseline_values(x, x0, out_x)
        contribs, errors = {}, {}
        with torch.no_grad():
            for name, a, g in zip(self.layers, acts, grads):
                a = a.detach()
                if not isinstance(self.method, Conductance):  # conductance promotes bf16 inputs itself
                    a, g = a.to(self.run_dtype), g.to(self.run_dtype)
                a = a.reshape(s, b, *a.shape[1:])
                g = g.reshape(g.shape[0], s, b, *a.shape[2:])
                a_0 = a[alphas_l.index(0.0)] if 0.0 in alphas_l else None
                c = self.method.combine(a, g, a[i1], a_0).to(self.run_dtype)
                contribs[name], errors[name] = self._finish(c, f_x, f_0)
        return ChunkResult(contribs, self._squeeze(f_x), self._squeeze(f_0), errors)

    def _input_path_in_parts(self, x, x0, alphas, alphas_l, p: int) -> ChunkResult:
        """Conductance walked in passes of ``p`` consecutive path points that share their end points
        (points 0…p−1, p−1…2p−2, ...): both rules are sums over consecutive pairs of points, so the parts'
        sums add up to the whole path's exactly (one point per part boundary is evaluated twice)."""
        s, b = len(alphas_l), x.shape[0]
        starts = list(range(0, s - 1, p - 1))
        total: dict[str, torch.Tensor] = {}
        f_0 = f_x = None
        with torch.no_grad():
            out_x = self._forward_path(x, x0, alphas[-1:], None)[0]  # the target's reference output (α = 1)
        for i in starts:
            j = min(i + p, s)
            part = alphas[i:j]
            store: dict[str, torch.Tensor] = {}
            with torch.enable_grad():
                out = self._forward_path(x, x0, part, store)
                values = self._values(out, out_x)
                acts = [store[n] for n in self.layers]
                grads = self._grads(values, acts)
            values = values.detach()
            if i == 0:
                f_0 = values[0]
            if j == s:
                f_x = values[-1]
            with torch.no_grad():
                for name, a, g in zip(self.layers, acts, grads):
                    a = a.detach().reshape(j - i, b, *a.shape[1:])
                    g = g.reshape(g.shape[0], j - i, b, *a.shape[2:])
                    c = self.method.combine(a, g, a[-1], a[0]).to(self.run_dtype)
                    total[name] = c if name not in total else total[name] + c
        contribs, errors = {}, {}
        with torch.no_grad():
            for name in self.layers:
                contribs[name], errors[name] = self._finish(total[name], f_x, f_0)
        return ChunkResult(contribs, self._squeeze(f_x), self._squeeze(f_0), errors)

    def _layer_path(self, x, x0, alphas) -> ChunkResult:
        store: dict[str, torch.Tensor] = {}
        ends = torch.tensor([0.0, 1.0], dtype=alphas.dtype, device=alphas.device)
        with torch.no_grad():
            out = self._forward_path(x, x0, ends, store)
        out_x = out[1]
        v = self._values(out, out_x)
        f_0, f_x = v[0], v[1]
        b = x.shape[0]
        ones = torch.ones(1, dtype=alphas.dtype, device=alphas.device)
        contribs, errors = {}, {}
        for name in self.layers:
            a = store[name].reshape(2, b, *store[name].shape[1:])
            a_0, a_x = a[0], a[1]
            pts = interpolate(a_x, a_0, alphas).requires_grad_(True)
            with torch.enable_grad():
                out = self._forward_path(x, x0, ones.expand(len(alphas)), None, {name: lambda _o, p=pts: p})
                values = self._values(out, out_x)
                (g,) = self._grads(values, [pts])
            with torch.no_grad():
                g = g.reshape(g.shape[0], len(alphas), b, *a_x.shape[1:])
                c = self.method.combine(None, g.to(self.run_dtype), a_x.to(self.run_dtype), a_0.to(self.run_dtype))
                contribs[name], errors[name] = self._finish(c, f_x, f_0)
        return ChunkResult(contribs, self._squeeze(f_x), self._squeeze(f_0), errors)

    def _finish(self, c: torch.Tensor, f_x: torch.Tensor, f_0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, ...) contributions → reduced ``(B, [K,] ...)`` and the completeness error ``(B, [K])``."""
        c = c.transpose(0, 1)  # (B, K, ...)
        err = c.flatten(2).sum(-1) - (f_x - f_0)
        red = reduce_map(c, self.reduce, lead=2)
        return self._squeeze(red), self._squeeze(err)

    def _squeeze(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.per_cell else t.squeeze(1)
