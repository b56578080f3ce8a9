"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) sparse autoencoders with the AuxK loss.

``pre = (x − b_dec) W_encᵀ + b_enc``; TopK keeps the ``k`` largest pre-activations of each sample
(ReLU'd), BatchTopK the ``k·B`` largest of the whole batch during training and, at inference, every
pre-activation above a threshold θ learned as a running mean of the smallest kept activation.
The decoder has unit-norm rows and a bias ``b_dec``. Dead latents (no activation for ``dead_after``
training samples) are trained by the AuxK loss: the ``aux_k`` largest dead pre-activations reconstruct
the residual, ``aux_coef · ‖e − ê‖² / ‖e‖²``.

Training uses the sparsity: only the ``k`` selected decoder rows per sample enter the forward decoder
(``decoder="bag"``: ``embedding_bag`` forward and backward, fp32 weights). On an H200 its gather kernels
ran at a fraction of the tensor cores' speed, so ``decoder="gemm"`` scatters the k values into bf16 codes
``(B, K)`` and uses three tensor-core products (``codes W_dec``, ``codesᵀ g``, ``g W_decᵀ`` read at the
k indices); ``"auto"`` (default) picks ``"gemm"`` on CUDA and ``"bag"`` on CPU. (Triton row-gather
kernels for the forward and ``∂values`` were tried and measured slower than the products on an H200.) Two encoder backward passes give the same gradients:
``sparse_encoder=True`` recomputes the selected pre-activations from the gathered encoder rows
``W_enc[idx] (B, k, d)`` and scatters their gradients back; ``sparse_encoder=False`` back-propagates
through the dense pre-activations with ONE ``(K, B) @ (B, d)`` product for ``∂W_enc`` (the input needs
no gradient, and ``b_dec``'s encoder gradient ``−Σ_b ∂L/∂pre_b · W_enc`` is a vector product carried by
a zero-valued term). The dense backward is the default (``False``, or ``None``): it was faster on an H200
(2.2M vs 0.64M samples/s at d = 2048, K = 6144, k = 32, batch 4096) and on a 2-core CPU (1.9k vs 1.3k
samples/s, batch 512), where the gathered ``B·k·d`` rows and their scattered gradients cost more memory
traffic than the one product. The training step
never synchronises with the host: dead-latent bookkeeping stays on the device and the AuxK loss is
masked instead of sized by the number of dead latents.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModesError
from .base import SparseAutoencoder, TrainStep

__all__ = ["TopKSAE", "BatchTopKSAE", "sparse_decode"]


def sparse_decode(indices: torch.Tensor, values: torch.Tensor, weight: torch.Tensor,
                  offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_j values_j · weight[indices_j] per sample without touching unselected rows.

    ``indices``/``values`` are ``(B, k)`` (fixed k per sample) or flat ``(nnz,)`` with ``offsets (B,)``;
    ``weight`` is ``(K, d)``. Returns ``(B, d)``.
    """
    return F.embedding_bag(indices, weight, offsets, mode="sum", per_sample_weights=values.to(weight.dtype))


class _GemmDecode(torch.autograd.Function):
    """``Σ_j values_j · weight[indices_j]`` (``(B, k)`` indices, unique per row) on tensor cores.

    The values are scattered into dense codes ``(B, K)`` (kept for the backward): forward
    ``codes @ weight``, backward ``∂weight = codesᵀ g`` and ``∂values = (g weightᵀ)`` at the indices.
    (``embedding_bag``'s gather kernels run far below these products' speed on an H200.)
    """

    @staticmethod
    def forward(ctx, indices: torch.Tensor, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        codes = torch.zeros(indices.shape[0], weight.shape[0], dtype=weight.dtype, device=weight.device)
        codes.scatter_(1, indices, values.detach().to(weight.dtype))
        ctx.save_for_backward(indices, codes, weight)
        ctx.values_dtype = values.dtype
        return codes @ weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor | None, torch.Tensor | None]:  # noqa: ANN001
        indices, codes, weight = ctx.saved_tensors
        g = grad.to(weight.dtype)
        d_values = d_weight = None
        if ctx.needs_input_grad[1]:
            d_values = (g @ weight.t()).gather(1, indices).to(ctx.values_dtype)
        if ctx.needs_input_grad[2]:
            d_weight = codes.t() @ g
        return None, d_values, d_weight


class _TopKBase(SparseAutoencoder):
    def __init__(self, n_features: int, n_latents: int, k: int = 8, *, aux_k: int | None = None,
                 aux_coef: float = 1.0 / 32.0, dead_after: int = 20_000, sparse_encoder: bool | None = False,
                 decoder: str = "auto") -> None:
        super().__init__(n_features, n_latents)
        if not 1 <= k <= n_latents:
            raise ModesError(f"k must lie in [1, n_latents={n_latents}]; got {k}")
        self.k = int(k)
        self.aux_k = int(aux_k) if aux_k is not None else min(n_latents, 2 * self.k)
        self.aux_coef = float(aux_coef)
        self.dead_after = int(dead_after)
        self.sparse_encoder = bool(sparse_encoder)
        if decoder not in ("auto", "bag", "gemm"):
            raise ModesError(f"decoder must be 'auto', 'bag' or 'gemm'; got {decoder!r}")
        self.decoder = decoder
        w = torch.randn(n_latents, n_features)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone())
        self.W_enc = nn.Parameter(w.clone())  # tied initialisation (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("samples_since_fired", torch.zeros(n_latents, dtype=torch.long))
        self._seen_bound: int | None = None  # host-side upper bound of samples_since_fired.max()
        self._aux_on = False  # whether the coming step computes the AuxK loss (set by begin_step)
        self._prepared = False  # begin_step was called for the coming step

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super()._load_from_state_dict(*args, **kwargs)
        self._seen_bound = None  # the loaded counters may exceed the bound

    def init_from_data(self, x: torch.Tensor) -> None:
        """Set the decoder bias to the mean of (a sample of) the training data ``(n, d)``."""
        with torch.no_grad():
            self.b_dec.copy_(x.mean(0).to(self.b_dec))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` pre-activations ``(x − b_dec) W_encᵀ + b_enc``."""
        return (x - self.b_dec) @ self.W_enc.t() + self.b_enc

    def _uses_sparse_encoder(self, x: torch.Tensor) -> bool:
        return self.sparse_encoder

    def _pre_for_training(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``(B, K)`` whose backward is one GEMM (``∂W_enc``) plus vector work.

        Same value and gradients as :meth:`pre_activations`: ``x − b_dec`` is formed without autograd (no
        ``(B, K) @ (K, d)`` input gradient) and the zero term ``(b_dec − b_dec.detach()) W_encᵀ`` gives
        ``b_dec`` its encoder gradient.
        """
        xc = x - self.b_dec.detach()
        w = self.W_enc
        dev = x.device.type
        if torch.is_autocast_enabled(dev):  # one cast shared by the product and the carry term
            w = w.to(torch.get_autocast_dtype(dev))
        carry = (self.b_dec - self.b_dec.detach()).to(w.dtype) @ w.detach().t()
        return torch.addmm(self.b_enc - carry, xc, w.t())

    def _selected(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the selected latents ``indices (B, k)``, differentiable in the encoder."""
        xc = x - self.b_dec
        w = self.W_enc[indices]  # (B, k, d)
        return torch.bmm(w, xc.unsqueeze(-1)).squeeze(-1) + self.b_enc[indices]

    def _decode_sparse(self, indices: torch.Tensor, values: torch.Tensor,
                       offsets: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ values · W_dec[indices]`` per sample (``(B, d)``); see the module notes for ``decoder``."""
        dev = indices.device.type
        mode = self.decoder if self.decoder != "auto" else ("gemm" if dev == "cuda" else "bag")
        if offsets is not None or indices.dim() != 2 or mode == "bag":
            return sparse_decode(indices, values, self.W_dec, offsets)
        weight = self.W_dec
        if torch.is_autocast_enabled(dev):
            weight = weight.to(torch.get_autocast_dtype(dev))
        return _GemmDecode.apply(indices, values, weight)

    def atoms(self) -> torch.Tensor:
        return self.W_dec

    def bias(self) -> torch.Tensor:
        return self.b_dec

    def after_step(self) -> None:
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _fired(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``(K,)`` bool: latents with a positive value among ``indices``/``values`` (no host sync)."""
        hits = torch.zeros(self.n_latents, dtype=torch.int32, device=indices.device)
        hits.index_add_(0, indices.reshape(-1), (values.detach() > 0).reshape(-1).to(torch.int32))
        return hits > 0

    def begin_step(self, batch: int) -> Hashable | None:
        """Advance the host-side bound on the dead counters; the key is whether AuxK runs this step.

        The AuxK loss is skipped (without reading the GPU) until ``dead_after`` samples have passed, since
        no latent can be dead before; afterwards it always runs, masked, and is exactly 0 with none dead.
        """
        if self._seen_bound is None:
            self._seen_bound = int(self.samples_since_fired.max()) if self.samples_since_fired.numel() else 0
        self._seen_bound += int(batch)
        self._aux_on = self._seen_bound >= self.dead_after and self.aux_coef != 0.0
        self._prepared = True
        return ("aux", self._aux_on)

    def step_replayed(self) -> None:
        self._prepared = False

    def _take_step(self, batch: int) -> bool:
        """Whether this step computes AuxK (calls :meth:`begin_step` unless the trainer did)."""
        if not self._prepared:
            self.begin_step(batch)
        self._prepared = False
        return self._aux_on

    def _update_dead(self, fired: torch.Tensor, batch: int) -> torch.Tensor:
        """Track samples since each latent fired (``fired (K,)`` bool); returns the dead mask."""
        with torch.no_grad():
            self.samples_since_fired += batch
            self.samples_since_fired.masked_fill_(fired, 0)
        return self.samples_since_fired >= self.dead_after

    def _aux_loss(self, x: torch.Tensor, recon: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor,
                  aux_on: bool, pre_grad: torch.Tensor | None) -> torch.Tensor:
        """AuxK loss; ``pre_grad`` (differentiable pre-activations) replaces the recomputation when given.

        Takes the ``aux_k`` largest pre-activations among dead latents; when fewer are dead the others
        (masked to −inf) get weight 0, and the loss is 0 when none is dead — all without a host sync.
        """
        if not aux_on:
            return recon.new_zeros(())
        kk = min(self.aux_k, self.n_latents)
        top, idx = pre.detach().masked_fill(~dead, float("-inf")).topk(kk, dim=1)
        sel = pre_grad.gather(1, idx) if pre_grad is not None else self._selected(x, idx)
        vals = F.relu(sel).masked_fill(torch.isinf(top), 0.0)
        err = (x - recon).detach()
        err_hat = self._decode_sparse(idx, vals)
        aux = (err_hat - err).pow(2).sum() / err.pow(2).sum().clamp_min(1e-12)
        return aux * dead.any()

    def settings(self) -> dict[str, float | int | str]:
        out = super().settings()
        out.update(k=self.k, aux_k=self.aux_k, aux_coef=self.aux_coef, dead_after=self.dead_after)
        return out


def _dense_codes(indices: torch.Tensor, values: torch.Tensor, n_latents: int):  # noqa: ANN202
    """A closure that scatters ``values`` at ``indices`` (``(B, k)`` or rows/cols) into ``(B, K)`` codes."""
    vals = values.detach()
    dtype = torch.promote_types(vals.dtype, torch.float32)

    def build() -> torch.Tensor:
        out = torch.zeros(indices.shape[0], n_latents, dtype=dtype, device=vals.device)
        return out.scatter_(1, indices, vals.to(dtype))

    return build


class TopKSAE(_TopKBase):
    """TopK SAE: exactly ``k`` (ReLU'd) latents per sample, at training and inference."""

    kind = "topk"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, F.relu(vals))

    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        aux_on = self._take_step(x.shape[0])
        pre_grad = None
        if self._uses_sparse_encoder(x):
            with torch.no_grad():
                pre = self.pre_activations(x)
            idx = pre.topk(self.k, dim=1, sorted=False).indices
            vals = F.relu(self._selected(x, idx))
        else:
            pre = pre_grad = self._pre_for_training(x)
            top, idx = pre.topk(self.k, dim=1, sorted=False)
            vals = F.relu(top)
        recon = self._decode_sparse(idx, vals) + self.b_dec
        mse = F.mse_loss(recon, x)
        dead = self._update_dead(self._fired(idx, vals), x.shape[0])
        aux = self._aux_loss(x, recon, pre, dead, aux_on, pre_grad)
        loss = mse + self.aux_coef * aux if aux_on else mse
        return TrainStep(loss, recon, _dense_codes(idx, vals, self.n_latents),
                         {"mse": mse.detach(), "aux": aux.detach()})


class BatchTopKSAE(_TopKBase):
    """BatchTopK SAE: the ``k · B`` largest activations of a batch in training; a threshold θ at inference."""

    kind = "batchtopk"

    def __init__(self, n_features: int, n_latents: int, k: int = 8, *, threshold_momentum: float = 0.01,
                 **kw) -> None:
        super().__init__(n_features, n_latents, k, **kw)
        self.threshold_momentum = float(threshold_momentum)
        self.register_buffer("theta", torch.tensor(float("nan")))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        theta = 0.0 if torch.isnan(self.theta) else float(self.theta)
        return F.relu(pre) * (pre > theta).to(pre.dtype)

    def begin_step(self, batch: int) -> Hashable | None:
        super().begin_step(batch)
        return None  # the batch-level selection has a data-dependent size: not capturable

    def training_loss(self, x: torch.Tensor, progress: float) -> TrainStep:
        b = x.shape[0]
        aux_on = self._take_step(b)
        sparse = self._uses_sparse_encoder(x)
        pre_grad = None if sparse else self._pre_for_training(x)
        with torch.no_grad():
            pre = self.pre_activations(x) if sparse else pre_grad.detach()
            flat = F.relu(pre).flatten()
            keep = flat.topk(min(self.k * b, flat.numel())).indices
            keep = keep[flat[keep] > 0]
            keep, _ = keep.sort()  # row-major: samples stay contiguous for the offsets
            rows, cols = keep // self.n_latents, keep % self.n_latents
            if keep.numel():
                smallest = flat[keep].min().float()
                self.theta.copy_(smallest if torch.isnan(self.theta)
                                 else (1 - self.threshold_momentum) * self.theta
                                 + self.threshold_momentum * smallest)
            offsets = torch.zeros(b, dtype=torch.long, device=x.device)
            offsets[1:] = torch.bincount(rows, minlength=b).cumsum(0)[:-1]
        if sparse:
            vals = F.relu(((x[rows] - self.b_dec) * self.W_enc[cols]).sum(-1) + self.b_enc[cols])
        else:
            vals = F.relu(pre_grad[rows, cols])
        recon = self._decode_sparse(cols, vals, offsets) + self.b_dec
        mse = (recon - x).pow(2).mean()
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
        fired[cols] = True
        dead = self._update_dead(fired, b)
        aux = self._aux_loss(x, recon, pre, dead, aux_on, pre_grad)
        codes_dtype = torch.promote_types(vals.dtype, torch.float32)

        def codes() -> torch.Tensor:
            out = torch.zeros(b, self.n_latents, dtype=codes_dtype, device=x.device)
            out[rows, cols] = vals.detach().to(codes_dtype)
            return out

        return TrainStep(mse + self.aux_coef * aux, recon, codes, {"mse": mse.detach(), "aux": aux.detach()})

    def settings(self) -> dict[str, float | int | str]:
        out = super().settings()
        out.update(threshold_momentum=self.threshold_momentum,
                   theta=float("nan") if torch.isnan(self.theta) else float(self.theta))
        return out
