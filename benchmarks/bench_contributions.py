"""Contribution engine vs captum ``LayerConductance`` (called once per layer), same model, steps and device.

Sections (ratios measured in one run, never asserted):
1. retina BN-CNN, full size (40×50×50 input, 8@15×15 → 8@11×11), both conv layers, 20 steps, target "sum":
   bins/s of ours vs captum and the ratio (targets: ≥ 10× CPU, ≥ 40× GPU).
2. per-cell: all K cells' per-cell contributions in one batched pass vs looping over the cells one at a
   time with the same engine (target ≥ 3×).
3. ResNet-50 (torchvision, random weights), all 16 bottleneck blocks, 10 steps, top-1 logit (GPU; on CPU
   only with ``--resnet`` at a small image size).

usage: python benchmarks/bench_contributions.py [--bins 300] [--captum-bins 40] [--device cpu] [--resnet]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} torch threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def retina_model(n_cells: int, device: torch.device) -> torch.nn.Module:
    from retina_codec.models import BNCNN

    torch.manual_seed(0)
    model = BNCNN(n_cells).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.fill_(0.3)
    return model.to(device)


def captum_per_layer(model, x, layers, steps, chunk, device, target=None):
    """captum LayerConductance once per layer, ``chunk`` samples per call (its steps are batched)."""
    from captum.attr import LayerConductance

    from retina_codec.contributions.hooks import resolve_module

    fwd = (lambda z: model(z).sum(1)) if target is None else model
    for name in layers:
        lc = LayerConductance(fwd, resolve_module(model, name))
        for a in range(0, len(x), chunk):
            xb = x[a:a + chunk].to(device)
            tgt = None if target is None else target[a:a + chunk]
            lc.attribute(xb, target=tgt, n_steps=steps, method="riemann_trapezoid").sum().item()


def section_retina(args, device) -> None:
    from retina_codec.contributions import ContributionEngine, contributions

    model = retina_model(args.cells, device)
    layers = ["conv1", "conv2"]
    x = torch.randn(args.bins, 40, 50, 50, generator=torch.Generator().manual_seed(0))
    with ContributionEngine(model, layers, "sum", steps=args.steps, device=device) as eng:
        chunk = eng.auto_batch_size((40, 50, 50)) if args.chunk is None else args.chunk
    run = lambda xx: contributions(model, xx, layers, target="sum", steps=args.steps, batch_size=chunk,  # noqa: E731
                                   device=device, quiet=True)
    run(x[: min(len(x), chunk)])  # warm-up
    t_ours = timed(lambda: run(x), device)
    xc = x[: args.captum_bins]
    cchunk = min(chunk, args.captum_chunk)
    captum_per_layer(model, xc[:2], layers, args.steps, cchunk, device)  # warm-up
    t_cap = timed(lambda: captum_per_layer(model, xc, layers, args.steps, cchunk, device), device)
    ours, cap = len(x) / t_ours, len(xc) / t_cap
    print(f"[retina BN-CNN, conv1+conv2, {args.steps} steps, target sum, {machine(device)}]")
    print(f"  ours:   {len(x)} bins in {t_ours:.2f} s = {ours:,.0f} bins/s (chunk {chunk} bins)")
    print(f"  captum: {len(xc)} bins in {t_cap:.2f} s = {cap:,.0f} bins/s (LayerConductance per layer, "
          f"{cchunk} bins per call)")
    print(f"  ratio ours/captum = {ours / cap:.1f}x")


def section_per_cell(args, device) -> None:
    from retina_codec.contributions import contributions

    k = args.cells
    model = retina_model(k, device)
    layers = ["conv1", "conv2"]
    x = torch.randn(args.cell_bins, 40, 50, 50, generator=torch.Generator().manual_seed(1))
    chunk = args.chunk or 16

    def batched():
        contributions(model, x, layers, target=list(range(k)), steps=args.steps, batch_size=chunk, device=device,
                      quiet=True)

    def loop():
        for c in range(k):
            contributions(model, x, layers, target=c, steps=args.steps, batch_size=chunk, device=device, quiet=True)

    contributions(model, x[:2], layers, target=list(range(k)), steps=args.steps, device=device, quiet=True)
    t_b = timed(batched, device)
    t_l = timed(loop, device)
    print(f"[per-cell, {k} cells, {len(x)} bins, {args.steps} steps, {machine(device)}]")
    print(f"  batched (one pass, is_grads_batched): {t_b:.2f} s = {len(x) / t_b:,.1f} bins/s")
    print(f"  loop over cells:                      {t_l:.2f} s = {len(x) / t_l:,.1f} bins/s")
    print(f"  ratio loop/batched = {t_l / t_b:.2f}x")


def section_resnet(args, device) -> None:
    import torchvision

    from retina_codec.contributions import contributions

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval().to(device)
    model.affine_stem = ("conv1", "bn1")
    blocks = [f"layer{i}.{j}" for i, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for j in range(n)]
    size = args.image_size
    x = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        top1 = model(x.to(device)).argmax(1)
    run = lambda xx: contributions(model, xx, blocks, target="top1_logit", steps=10, batch_size=args.resnet_chunk,  # noqa: E731
                                   device=device, quiet=True)
    run(x[:1])
    t_ours = timed(lambda: run(x), device)
    n_cap = max(1, min(len(x), args.captum_images))
    captum_per_layer(model, x[:1], blocks[:1], 10, 1, device, target=top1[:1])
    t_cap = timed(lambda: captum_per_layer(model, x[:n_cap], blocks, 10, args.resnet_chunk, device,
                                           target=top1[:n_cap]), device)
    ours, cap = len(x) / t_ours, n_cap / t_cap
    print(f"[ResNet-50 random weights, 16 bottleneck blocks, 10 steps, top-1 logit, {size}x{size}, {machine(device)}]")
    print(f"  ours:   {len(x)} images in {t_ours:.2f} s = {ours:,.1f} images/s")
    print(f"  captum: {n_cap} images in {t_cap:.2f} s = {cap:,.2f} images/s (LayerConductance per block)")
    print(f"  ratio ours/captum = {ours / cap:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bins", type=int, default=None, help="bins for our engine (default 300 CPU, 6000 GPU)")
    p.add_argument("--captum-bins", type=int, default=None, help="bins for captum (default 40 CPU, 1000 GPU)")
    p.add_argument("--captum-chunk", type=int, default=16)
    p.add_argument("--chunk", type=int, default=None, help="our bins per chunk (default auto)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cells", type=int, default=10)
    p.add_argument("--cell-bins", type=int, default=48)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resnet", action="store_true", help="run the ResNet-50 section on CPU too")
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--captum-images", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--resnet-chunk", type=int, default=None)
    p.add_argument("--skip", nargs="*", default=[], choices=["retina", "per_cell", "resnet"])
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bins = args.bins or (6000 if gpu else 300)
    args.captum_bins = args.captum_bins or (1000 if gpu else 40)
    args.images = args.images or (256 if gpu else 2)
    args.captum_images = args.captum_images or (32 if gpu else 1)
    args.image_size = args.image_size or (224 if gpu else 96)
    args.resnet_chunk = args.resnet_chunk or (32 if gpu else 1)
    print(f"torch {torch.__version__}, device {machine(device)}")
    if "retina" not in args.skip:
        section_retina(args, device)
    if "per_cell" not in args.skip:
        section_per_cell(args, device)
    if "resnet" not in args.skip:
        if gpu or args.resnet:
            section_resnet(args, device)
        else:
            print("[ResNet-50] skipped on CPU (pass --resnet for a tiny CPU run)")


if __name__ == "__main__":
    main()
