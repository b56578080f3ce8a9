"""SAE training throughput (samples/s) for every kind and training variant, and the retina-size fit time.

Two parts, both in one run on the same machine:

1. **Large SAE** (d = 2048, K = 6144, k = 32 for TopK / BatchTopK): training samples/s (forward,
   backward, Adam step, decoder renormalisation) of each kind and variant, on CPU (float32) and on the GPU
   when present (bf16 autocast), as one table. The peers run in the same process on the same inputs:
   **topk-naive** (dense codes ``(B, K)``, ``codes @ W_dec``, dense encoder gradient, plain Adam) and
   **codec-naive** (the unmodified dense CODEC step ``s · mask``, ``codes @ dictionary``, plain Adam).
   Variants: TopK encoder backward ``gather`` (``sparse_encoder=True``: gathered encoder rows, scattered
   gradients) or ``dense-dW`` (``sparse_encoder=False``: one GEMM for ∂W_enc); decoder ``bag``
   (``embedding_bag``, fp32) or ``gemm`` (three bf16 tensor-core products); whole steps eager or replayed
   as CUDA graphs; CODEC eager or compiled; batch 4096 and 16384; and ``train_sae`` itself (the library's
   loop with its defaults, sustained rate after its warm-up steps). The CODEC rows report the mean L0 of
   the codes after the timed steps (speed depends on it).
2. **Retina-size SAE** (≈ 6000 bins, d = 16, K = 160, default settings): wall time of
   ``ModeDecomposer(kind).fit`` on a planted dictionary, with the held-out explained variance and L0.

    python benchmarks/bench_sae.py [--steps 5] [--batch 1024]                     # everything
    python benchmarks/bench_sae.py --gpu-only [--quick] [--budget 55]              # GPU table only

On the GPU every row is timed with ``torch.cuda.synchronize`` around ``--gpu-steps`` steps after warm-up,
each row in its own try/except (a failure prints and the run goes on), and rows are skipped once the
``--budget`` (seconds for the whole GPU part, compilation included) would be exceeded.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from retina_codec.modes import ModeDecomposer, atom_recovery, make_sae, planted_dictionary
from retina_codec.modes.base import TrainStep
from retina_codec.modes.codec_sae import CodecSAE
from retina_codec.modes.topk_sae import TopKSAE
from retina_codec.modes.trainer import StepRunner, TrainConfig, make_optimizer, train_sae

D, K_LATENTS, K_ACTIVE = 2048, 6144, 32


class NaiveTopK(TopKSAE):
    """The TopK peer: computed densely (same parameters and loss, no use of the sparsity)."""

    kind = "topk-naive"

    def training_loss(self, x, progress):
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.k, dim=1)
        codes = torch.zeros_like(pre).scatter(1, idx, F.relu(vals))
        recon = codes @ self.W_dec + self.b_dec
        mse = (recon - x).pow(2).mean()
        return TrainStep(mse, recon, codes.detach(), {"mse": mse.detach()})


class NaiveCodec(CodecSAE):
    """The CODEC peer: the unmodified dense step (sigmoid, detached mask, product, dense decoder)."""

    kind = "codec-naive"

    def training_loss(self, x, progress):
        s = self.scores(x)
        mask = (s >= self.threshold).to(s.dtype)
        codes = s * mask
        recon = codes @ self.dictionary
        mse = (recon - x).pow(2).mean()
        sparsity = self.dictionary.abs().mean()
        return TrainStep(mse + self.l1 * sparsity, recon, codes.detach(), {"mse": mse.detach()})


@dataclass
class Variant:
    """One row of the table: an SAE ``kind`` built with ``options``, trained at ``batch``."""

    kind: str
    label: str
    batch: int
    options: dict
    peer: bool = False  # a peer row (plain Adam, eager, no graph); others are compared with it
    compile: bool = False
    graph: bool = False
    trainer: bool = False


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def build(kind: str, options: dict) -> torch.nn.Module:
    if kind == "topk-naive":
        return NaiveTopK(D, K_LATENTS, K_ACTIVE, dead_after=10**12)
    if kind == "codec-naive":
        return NaiveCodec(D, K_LATENTS)
    if kind in ("topk", "batchtopk"):
        return make_sae(kind, D, K_LATENTS, k=K_ACTIVE, dead_after=10**12, **options)
    return make_sae(kind, D, K_LATENTS, **options)


def measure(v: Variant, device: torch.device, steps: int, bf16: bool, warmup: int = 3) -> tuple[float, float]:
    """``(samples/s, mean L0 of the codes after the timed steps)`` of variant ``v``."""
    torch.manual_seed(0)
    with device:
        sae = build(v.kind, v.options)
    x = torch.randn(v.batch, D, device=device)
    dtype = torch.bfloat16 if bf16 else None
    if v.trainer:  # the library's own loop with its defaults: sustained rate after its warm-up steps
        # on CUDA >= 100 steps: large CODEC SAEs are compiled by default from there
        n_steps = max(steps + 5, 110) if device.type == "cuda" else steps + 6
        data = torch.randn(n_steps * v.batch, D, device=device)
        cfg = TrainConfig(max_epochs=1, batch_size=v.batch, device=str(device), quiet=True,
                          precision="bfloat16" if bf16 else "float32")
        res = train_sae(sae, data, None, cfg)
        if not res.steady_steps:
            raise RuntimeError("training too short for a sustained rate")
        return res.steady_steps * v.batch / res.steady_seconds, float("nan")
    if v.peer:
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    else:
        opt = make_optimizer(list(sae.parameters()), 1e-4, device, capturable=v.graph)
    if v.compile and not sae.compile_training(True):
        raise RuntimeError("torch.compile is not available for this SAE")
    runner = StepRunner(sae, opt, dtype, device, cuda_graph=v.graph, warmup=2)
    for _ in range(warmup):  # allocations, kernels, compilation, graph capture
        runner(x, 0.5)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        runner(x, 0.5)
    sync()
    rate = v.batch * steps / (time.perf_counter() - t0)
    if v.graph and runner.n_replays < steps:
        raise RuntimeError(f"only {runner.n_replays} of {steps} timed steps were graph replays")
    l0 = float("nan")
    if v.kind.startswith("codec"):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            l0 = float((sae.training_loss(x, 0.5).codes > 0).sum(1).float().mean())
    sae.compile_training(False)
    return rate, l0


PEER_OF = {"topk": "topk-naive", "codec": "codec-naive"}


def disagreement(v: Variant, device: torch.device, bf16: bool, batch: int = 64) -> float:
    """Largest relative difference between variant ``v`` and its peer in the loss and every parameter
    gradient of one training step on the same inputs from the same initialisation (eager, no optimizer).
    ``nan`` when ``v`` has no peer."""
    peer_kind = PEER_OF.get(v.kind)
    if peer_kind is None or v.peer or v.trainer:
        return float("nan")
    x = torch.randn(batch, D, generator=torch.Generator().manual_seed(1)).to(device)
    out = []
    for kind, options in ((peer_kind, {}), (v.kind, v.options)):
        torch.manual_seed(0)
        with device:
            sae = build(kind, options)
        torch.manual_seed(2)  # the same dropout draws, if any
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sae.training_loss(x, 0.5).loss
        loss.float().backward()
        out.append((loss.detach().float(), {n: q.grad for n, q in sae.named_parameters() if q.grad is not None}))
    (l_p, g_p), (l_o, g_o) = out
    if set(g_p) != set(g_o):
        return float("inf")
    errs = [float((l_o - l_p).abs() / l_p.abs().clamp_min(1e-12))]
    errs += [float((g_o[n].float() - g_p[n].float()).abs().max() / g_p[n].float().abs().max().clamp_min(1e-12))
             for n in g_p]
    return max(errs)


def variants(batches: tuple[int, ...], compile_rows: bool, gpu: bool) -> list[Variant]:
    """The table's rows: the peer first at each batch, then the variants compared with it."""
    rows = []
    for b in batches:
        rows.append(Variant("topk-naive", "PEER: dense TopK, Adam", b, {}, peer=True))
        if gpu:
            rows += [
                Variant("topk", "dense-dW, gemm dec, graph (default)", b, {}, graph=True),
                Variant("topk", "dense-dW, gemm dec, eager", b, {}),
                Variant("topk", "dense-dW, bag dec (fp32), eager", b, {"sparse_encoder": False, "decoder": "bag"}),
                Variant("topk", "gather enc, bag dec, eager", b, {"sparse_encoder": True, "decoder": "bag"}),
            ]
        else:
            rows += [
                Variant("topk", "dense-dW enc, bag dec (default)", b, {}),
                Variant("topk", "gather enc, bag dec", b, {"sparse_encoder": True}),
                Variant("topk", "dense-dW enc, gemm dec", b, {"sparse_encoder": False, "decoder": "gemm"}),
            ]
        rows.append(Variant("codec-naive", "PEER: dense CODEC step, Adam", b, {}, peer=True))
        if gpu:
            if compile_rows:
                rows += [Variant("codec", "compile + graph (default)", b, {}, compile=True, graph=True),
                         Variant("codec", "compile, eager", b, {}, compile=True)]
            rows += [Variant("codec", "graph", b, {}, graph=True),
                     Variant("codec", "eager, fused Adam", b, {})]
        else:
            rows.append(Variant("codec", "eager (default)", b, {}))
    b0 = batches[0]
    rows += [
        Variant("topk", "train_sae loop (defaults)", b0, {}, trainer=True),
        Variant("codec", "train_sae loop (defaults)", b0, {}, trainer=True),
        *[Variant(kind, "train_sae loop (defaults)", b, {}, trainer=True)
          for b in batches[1:] for kind in ("topk", "codec")],
        Variant("batchtopk", "defaults", b0, {}),
        Variant("relu", "defaults", b0, {}, graph=gpu),
    ]
    return rows


def large(device: torch.device, batches: tuple[int, ...], steps: int, bf16: bool, budget: float,
          compile_rows: bool) -> dict[tuple[str, str, int], float]:
    """Print the throughput table; returns samples/s per (kind, label, batch)."""
    t_start = time.perf_counter()
    rates: dict[tuple[str, str, int], float] = {}
    peers: dict[tuple[str, int], float] = {}
    checked: dict[tuple, float] = {}  # (kind, options) -> disagreement with the peer
    print(f"  {'kind':11s} {'variant':36s} {'batch':>6s} {'samples/s':>13s} {'vs peer':>8s} {'L0':>6s} "
          f"{'row s':>6s}", flush=True)
    for v in variants(batches, compile_rows, device.type == "cuda"):
        spent = time.perf_counter() - t_start
        if spent > budget:
            print(f"  {v.kind:11s} {v.label:36s} {v.batch:6d}  skipped (budget {budget:.0f} s spent)", flush=True)
            continue
        t_row = time.perf_counter()
        try:
            rate, l0 = measure(v, device, steps, bf16)
        except Exception as err:  # noqa: BLE001 - one failing variant must not stop the table
            print(f"  {v.kind:11s} {v.label:36s} {v.batch:6d}  FAILED: {type(err).__name__}: "
                  f"{str(err).splitlines()[0][:200] if str(err) else ''}", flush=True)
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if v.peer:
            peers[(v.kind, v.batch)] = rate
        peer = peers.get((PEER_OF.get(v.kind, ""), v.batch))
        rates[(v.kind, v.label, v.batch)] = rate
        ratio = f"{rate / peer:7.2f}x" if peer and not v.peer else "       -"
        if peer and not v.peer and not v.trainer:  # a ratio only for a step that computes what the peer does
            key = (v.kind, tuple(sorted(v.options.items())))
            if key not in checked:
                checked[key] = disagreement(v, device, bf16)
            if not checked[key] <= (2e-2 if bf16 else 1e-4):
                ratio = " DIFFERS"
                print(f"  {v.kind:11s} {v.label:36s}: loss/gradients differ from the peer's by "
                      f"{checked[key]:.1e} (relative); no ratio", flush=True)
        l0s = f"{l0:6.1f}" if np.isfinite(l0) else "     -"
        print(f"  {v.kind:11s} {v.label:36s} {v.batch:6d} {rate:13,.0f} {ratio} {l0s} "
              f"{time.perf_counter() - t_row:6.1f}", flush=True)
    print(f"  (table took {time.perf_counter() - t_start:.1f} s)")
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
    ap.add_argument("--steps", type=int, default=5, help="timed CPU steps per row")
    ap.add_argument("--batch", type=int, default=1024, help="CPU batch size")
    ap.add_argument("--gpu-steps", type=int, default=30, help="timed GPU steps per row")
    ap.add_argument("--gpu-batches", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--budget", type=float, default=55.0,
                    help="seconds for the GPU table (rows past it are skipped)")
    ap.add_argument("--quick", action="store_true", help="GPU: no torch.compile rows, batch 4096 only")
    ap.add_argument("--no-compile", action="store_true", help="GPU: no torch.compile rows")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU parts")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-retina", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({args.threads} threads), torch {torch.__version__}, numpy {np.__version__}")
    if not args.skip_retina and not args.gpu_only:
        print("Retina-size SAE: 6000 samples, d=16, K=160, default settings, CPU, 1 thread")
        retina(1)
        torch.set_num_threads(args.threads)
    if args.skip_large:
        return
    if not args.gpu_only:
        print(f"Large SAE on CPU (float32): d={D}, K={K_LATENTS}, k={K_ACTIVE}, {args.steps} timed steps")
        large(torch.device("cpu"), (args.batch,), args.steps, bf16=False, budget=float("inf"),
              compile_rows=False)
    if torch.cuda.is_available():
        batches = tuple(args.gpu_batches[:1]) if args.quick else tuple(args.gpu_batches)
        print(f"Large SAE on {torch.cuda.get_device_name()} (bf16 autocast), torch {torch.__version__}: "
              f"d={D}, K={K_LATENTS}, k={K_ACTIVE}, {args.gpu_steps} timed steps per row, budget {args.budget:.0f} s")
        large(torch.device("cuda"), batches, args.gpu_steps, bf16=True, budget=args.budget,
              compile_rows=not (args.quick or args.no_compile))
    else:
        print("No CUDA device: GPU part skipped")


if __name__ == "__main__":
    main()
