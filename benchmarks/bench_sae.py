"""SAE training throughput (samples/s) for every kind, and the retina-size fit time.

Two parts, both in one run on the same machine:

1. **Large SAE** (d = 2048, K = 6144, k = 32 for TopK / BatchTopK): training samples/s of each kind
   (optimiser step included) on CPU (float32) and on the GPU when present (bf16 autocast). TopK and
   BatchTopK use the sparsity (only the k selected decoder rows per sample via ``embedding_bag``, and only
   the selected encoder rows receive gradients); the peer is a **naive dense TopK** in the same run
   (dense codes ``(B, K)``, ``codes @ W_dec``, dense encoder gradient), which computes the same loss.
2. **Retina-size SAE** (≈ 6000 bins, d = 16, K = 160, default settings): wall time of
   ``ModeDecomposer(kind).fit`` on a planted dictionary, with the held-out explained variance and L0.

    python benchmarks/bench_sae.py [--steps 5] [--batch 1024] [--gpu-batch 4096] [--gpu-steps 50]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F

from retina_codec.modes import ModeDecomposer, atom_recovery, make_sae, planted_dictionary
from retina_codec.modes.topk_sae import TopKSAE


class NaiveTopK(TopKSAE):
    """The peer: TopK computed densely (same parameters and loss, no use of the sparsity)."""

    kind = "topk-naive"

    def training_loss(self, x, progress):
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.k, dim=1)
        codes = torch.zeros_like(pre).scatter(1, idx, F.relu(vals))
        recon = codes @ self.W_dec + self.b_dec
        mse = (recon - x).pow(2).mean()
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
        fired[idx[vals > 0]] = True
        dead = self._update_dead(fired, x.shape[0])
        aux = self._aux_loss(x, recon, pre, dead)
        from retina_codec.modes.base import TrainStep

        return TrainStep(mse + self.aux_coef * aux, recon, codes.detach(), {"mse": mse.detach()})


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def build(kind: str, d: int, k_latents: int, k: int) -> torch.nn.Module:
    if kind == "topk-naive":
        return NaiveTopK(d, k_latents, k, dead_after=10**12)
    if kind in ("topk", "batchtopk"):
        return make_sae(kind, d, k_latents, k=k, dead_after=10**12)
    return make_sae(kind, d, k_latents)


def throughput(kind: str, device: torch.device, d: int, k_latents: int, k: int, batch: int, steps: int,
               bf16: bool) -> float:
    """Training samples/s (forward, backward, Adam step, decoder renormalisation)."""
    torch.manual_seed(0)
    sae = build(kind, d, k_latents, k).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(batch, d, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = sae.training_loss(x, 0.5)
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        opt.step()
        sae.after_step()

    for _ in range(2):  # warm-up (allocations, kernels)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def large(device: torch.device, batch: int, steps: int, bf16: bool) -> dict[str, float]:
    d, k_latents, k = 2048, 6144, 32
    rates = {}
    for kind in ("topk", "topk-naive", "batchtopk", "codec", "relu"):
        rates[kind] = throughput(kind, device, d, k_latents, k, batch, steps, bf16)
        print(f"  {kind:11s} {rates[kind]:14,.0f} samples/s", flush=True)
    print(f"  TopK sparse / naive dense = {rates['topk'] / rates['topk-naive']:.2f}")
    return rates


def retina(threads: int) -> None:
    torch.set_num_threads(threads)
    data = planted_dictionary(n_samples=6000, n_features=16, n_atoms=24, n_active=2, seed=0)
    for kind, kw in (("codec", {}), ("topk", {"k": 2}), ("batchtopk", {"k": 2}), ("relu", {})):
        t0 = time.perf_counter()
        dec = ModeDecomposer(kind=kind, device="cpu", quiet=True, **kw).fit(data.X)
        dt = time.perf_counter() - t0
        print(f"  {kind:10s} fit {dt:5.1f} s  ({dec.n_iter_} epochs)  held-out EV {dec.explained_variance_:.3f}  "
              f"L0 {dec.l0_:.2f}  modes {dec.n_modes_}  planted atoms recovered "
              f"{atom_recovery(data.atoms, dec.atoms_):.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed CPU steps per kind")
    ap.add_argument("--batch", type=int, default=1024, help="CPU batch size")
    ap.add_argument("--gpu-steps", type=int, default=50)
    ap.add_argument("--gpu-batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-retina", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({args.threads} threads), torch {torch.__version__}, numpy {np.__version__}")
    if not args.skip_retina:
        print("Retina-size SAE: 6000 samples, d=16, K=160, default settings, CPU, 1 thread")
        retina(1)
        torch.set_num_threads(args.threads)
    if not args.skip_large:
        print(f"Large SAE on CPU (float32): d=2048, K=6144, k=32, batch {args.batch}, {args.steps} steps")
        large(torch.device("cpu"), args.batch, args.steps, bf16=False)
        if torch.cuda.is_available():
            print(f"Large SAE on {torch.cuda.get_device_name()} (bf16 autocast): batch {args.gpu_batch}, "
                  f"{args.gpu_steps} steps")
            large(torch.device("cuda"), args.gpu_batch, args.gpu_steps, bf16=True)
        else:
            print("No CUDA device: GPU part skipped")


if __name__ == "__main__":
    main()
