"""Contribution engine vs captum ``LayerConductance`` (called once per layer), same model, steps and device.

Sections (ratios measured in one run, never asserted):
1. retina BN-CNN, full size (40×50×50 input, 8@15×15 → 8@11×11), both conv layers, 20 steps, target "sum":
   bins/s of ours vs captum and the ratio (targets: ≥ 10× CPU, ≥ 40× GPU).
1b. the same network written as a plain ``nn.Module`` (conv1/bn1/relu1, conv2/bn2/relu2, linear, softplus;
   no ``affine_stem`` attribute, default arguments: the engine finds the stem itself; target ≥ 15× CPU).
2. per-cell: all K cells' per-cell contributions in one batched pass (autograd's ``is_grads_batched`` and
   ``torch.func``) vs looping over the cells one at a time with the same engine (target ≥ 3×).
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


def _seeded_eval(cls, n_cells: int, device: torch.device) -> torch.nn.Module:
    """``cls(n_cells)`` from seed 0 in eval mode, BatchNorm running variance 0.3, on ``device``."""
    torch.manual_seed(0)
    model = cls(n_cells).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.fill_(0.3)
    return model.to(device)


def retina_model(n_cells: int, device: torch.device) -> torch.nn.Module:
    from retina_codec.models import BNCNN

    return _seeded_eval(BNCNN, n_cells, device)


class PlainBNCNN(torch.nn.Module):
    """The BN-CNN as a user writes it: no retina-codec base class, no declared stem."""

    def __init__(self, n_cells: int, history: int = 40, side: int = 50, channels: int = 8) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(history, channels, 15), nn.BatchNorm2d(channels), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(channels, channels, 11), nn.BatchNorm2d(channels), nn.ReLU()
        out = side - 15 - 11 + 2
        self.linear, self.softplus = nn.Linear(channels * out * out, n_cells), nn.Softplus()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.softplus(self.linear(x.flatten(1)))


def plain_model(n_cells: int, device: torch.device) -> torch.nn.Module:
    return _seeded_eval(PlainBNCNN, n_cells, device)


def captum_per_layer(model, x, layers, steps, chunk, device, target=None):
    """captum LayerConductance once per layer, ``chunk`` samples per call (its steps are batched)."""
    from captum.attr import LayerConductance

    from retina_codec.torch_utils.hooks import resolve_module

    fwd = (lambda z: model(z).sum(1)) if target is None else model
    for name in layers:
        lc = LayerConductance(fwd, resolve_module(model, name))
        for a in range(0, len(x), chunk):
            xb = x[a:a + chunk].to(device)
            tgt = None if target is None else target[a:a + chunk]
            lc.attribute(xb, target=tgt, n_steps=steps, method="riemann_trapezoid").sum().item()


def captum_reference(model, x, layers, steps, device) -> dict:
    """captum's per-unit conductance of every layer for the few samples ``x`` (target: sum of cells)."""
    from captum.attr import LayerConductance

    from retina_codec.torch_utils.hooks import resolve_module

    fwd = lambda z: model(z).sum(1)  # noqa: E731
    return {name: LayerConductance(fwd, resolve_module(model, name)).attribute(
        x.to(device), n_steps=steps, method="riemann_trapezoid").detach().float().cpu().numpy() for name in layers}


def disagreement(model, x, layers, steps, device, ref: dict, opts: dict) -> float:
    """Largest relative difference (max |ours - captum| / max |captum| per layer) of our per-unit
    contributions with rule "left" (captum's sum; the same gradient evaluations as the default rule)."""
    import numpy as np

    from retina_codec.contributions import contributions

    res = contributions(model, x, layers, target="sum", steps=steps, rule="left", reduce=None,
                        batch_size=len(x), device=device, quiet=True, **opts)
    return max(float(np.abs(np.asarray(res[n]) - ref[n]).max() / max(np.abs(ref[n]).max(), 1e-30))
               for n in layers)


def _ours(model, x, layers, args, device, chunk, **opts):
    from retina_codec.contributions import contributions

    return contributions(model, x, layers, target="sum", steps=args.steps, batch_size=chunk, device=device,
                         quiet=True, **opts)


def _variants(args, device) -> list[tuple[str, dict]]:
    """Engine settings to time. On a GPU every speed option, one per row; on CPU the default only."""
    if device.type != "cuda":
        return [("default", {})]
    rows = [("default (cuDNN autotune)", {}),
            ("no autotune (plain cuDNN heuristics, prototype-like)", {"autotune": False}),
            ("BatchNorm folded", {"fold_batchnorm": True}),
            ("fft convolutions", {"fast_conv": "fft"}), ("channels-last", {"channels_last": True}),
            ("fft + channels-last", {"fast_conv": "fft", "channels_last": True}),
            ("bf16 autocast", {"autocast": True}), ("bf16 autocast + channels-last", {"autocast": True, "channels_last": True})]
    return [r for r in rows if args.variants is None or any(v in r[0] for v in args.variants)]


def _time_variant(model, x, layers, args, device, opts) -> tuple[float, int, str, list]:
    from retina_codec.contributions import ContributionEngine

    with ContributionEngine.from_settings(model, layers, "sum", steps=args.steps, device=device, **opts) as eng:
        chunk = eng.auto_batch_size(tuple(x.shape[1:])) if args.chunk is None else args.chunk
    prev = torch.backends.cudnn.benchmark
    try:
        _ours(model, x[: min(len(x), chunk)], layers, args, device, chunk, **opts)  # warm-up + autotune
        if chunk < len(x) and len(x) % chunk:
            _ours(model, x[: len(x) % chunk], layers, args, device, chunk, **opts)  # the last chunk's shape
        box = []
        t = timed(lambda: box.append(_ours(model, x, layers, args, device, chunk, **opts)), device)
    finally:
        torch.backends.cudnn.benchmark = prev
    summary = box[0].summary()
    return t, chunk, "/".join(f"{summary[n]['total_rel']:.2%}" for n in layers), box[0].settings["affine_stem"]


def section_retina(args, device, plain: bool = False) -> None:
    model = plain_model(args.cells, device) if plain else retina_model(args.cells, device)
    layers = ["relu1", "relu2"] if plain else ["conv1", "conv2"]
    x = torch.randn(args.bins, 40, 50, 50, generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        x = x.to(device)  # both sides read their inputs from GPU memory
    xc = x[: args.captum_bins]
    cap_rates = {}
    prev = torch.backends.cudnn.benchmark
    # the peer at its best: each chunk size, with and (on a GPU) without cuDNN autotuning
    for tune in ((False, True) if device.type == "cuda" else (False,)):
        torch.backends.cudnn.benchmark = tune
        for cchunk in args.captum_chunk:
            xw = xc[: cchunk + (len(xc) % cchunk)]
            captum_per_layer(model, xw, layers, args.steps, cchunk, device)  # warm-up, both chunk shapes
            t_cap = timed(lambda c=cchunk: captum_per_layer(model, xc, layers, args.steps, c, device), device)
            cap_rates[(cchunk, tune)] = len(xc) / t_cap
    torch.backends.cudnn.benchmark = prev
    cap = max(cap_rates.values())
    what = "plain nn.Module BN-CNN (no affine_stem attribute), relu1+relu2" if plain else "retina BN-CNN, conv1+conv2"
    print(f"[{what}, {args.steps} steps, target sum, {machine(device)}]")
    print(f"  captum: {len(xc)} bins, LayerConductance per layer: "
          + ", ".join(f"{r:,.0f} bins/s ({c} bins per call{', autotune' if t else ''})"
                      for (c, t), r in cap_rates.items())
          + f" -> best {cap:,.0f} bins/s")
    xs = xc[:2]  # the agreement check: ours vs captum per unit on a few bins, before any ratio
    ref = captum_reference(model, xs, layers, args.steps, device)
    for name, opts in _variants(args, device):
        try:
            err = disagreement(model, xs, layers, args.steps, device, ref, dict(opts))
            t, chunk, compl, stem = _time_variant(model, x, layers, args, device, dict(opts))
        except Exception as exc:  # noqa: BLE001 - report and go on with the other variants
            print(f"  ours [{name}]: FAILED {type(exc).__name__}: {str(exc)[:200]}")
            continue
        ours = len(x) / t
        low = bool(opts.get("autocast"))  # bf16: a lower precision than captum's float32
        ok = err <= (5e-2 if low else 1e-3)
        verdict = (f"ratio ours/captum = {ours / cap:.1f}x" + (" (bf16 vs captum's float32)" if low else "")
                   if ok else "DIFFERS from captum: no ratio")
        print(f"  ours [{name}]: {len(x)} bins in {t:.3f} s = {ours:,.0f} bins/s (chunk {chunk}, completeness "
              f"error {compl}, max rel. diff vs captum {err:.1e}, stem {'+'.join(stem) or 'none'}) -> {verdict}")
    if device.type == "cuda" and not args.no_recording and not plain:
        section_recording(args, device, model, layers)
    if device.type == "cuda" and args.profile and not plain:
        profile_chunk(args, device, model, layers, x)


def section_recording(args, device, model, layers) -> None:
    """End to end from an in-memory Recording: windows cut on the host as views, frames moved to the GPU."""
    import numpy as np

    from retina_codec.recordings import Recording

    rng = np.random.default_rng(0)
    t = args.bins + 41
    rec = Recording(stimulus=rng.standard_normal((t, 50, 50)).astype(np.float32),
                    frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                    responses=rng.poisson(1.0, (t, args.cells)).astype(np.float32),
                    intervals={"test": np.array([[0.0, t / 100.0]])})
    model.norm_stats = (0.0, 1.0)
    try:
        _ours(model, rec, layers, args, device, "auto", split="test")
        tt = timed(lambda: _ours(model, rec, layers, args, device, "auto", split="test"), device)
        n = len(rec.window_bins("test", 40, 1))
        print(f"  ours [from a Recording in host memory, windows as views, frames moved]: {n} bins in {tt:.3f} s"
              f" = {n / tt:,.0f} bins/s")
    except Exception as exc:  # noqa: BLE001
        print(f"  ours [from a Recording]: FAILED {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        del model.norm_stats


def profile_chunk(args, device, model, layers, x) -> None:
    """The GPU kernels of one chunk of the default path, heaviest first."""
    try:
        from torch.profiler import ProfilerActivity, profile

        xx = x[: min(len(x), 1024)]
        _ours(model, xx, layers, args, device, len(xx))
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            _ours(model, xx, layers, args, device, len(xx))
            sync(device)
        print(f"  profile of one chunk of {len(xx)} bins (default path):")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
    except Exception as exc:  # noqa: BLE001
        print(f"  profile FAILED {type(exc).__name__}: {str(exc)[:200]}")


def section_per_cell(args, device) -> None:
    from retina_codec.contributions import contributions

    k = args.cells
    model = retina_model(k, device)
    layers = ["conv1", "conv2"]
    x = torch.randn(args.cell_bins, 40, 50, 50, generator=torch.Generator().manual_seed(1)).to(device)
    chunk = args.chunk or (128 if device.type == "cuda" else 16)

    def batched(how):
        return lambda: contributions(model, x, layers, target=list(range(k)), steps=args.steps, batch_size=chunk,
                                     device=device, quiet=True, batched_backward=how)

    def loop():
        for c in range(k):
            contributions(model, x, layers, target=c, steps=args.steps, batch_size=chunk, device=device, quiet=True)

    print(f"[per-cell, {k} cells, {len(x)} bins, {args.steps} steps, {machine(device)}]")
    import numpy as np

    xs = x[:2]  # agreement: per-unit contributions of a few bins, batched vs one cell at a time
    per_cell = [contributions(model, xs, layers, target=c, steps=args.steps, reduce=None, batch_size=len(xs),
                              device=device, quiet=True) for c in range(k)]
    contributions(model, x[:chunk], layers, target=0, steps=args.steps, batch_size=chunk, device=device,
                  quiet=True)  # warm-up of the loop's single-cell path
    t_l = None
    for how in ("autograd", "func"):
        try:
            both = contributions(model, xs, layers, target=list(range(k)), steps=args.steps, reduce=None,
                                 batch_size=len(xs), device=device, quiet=True, batched_backward=how)
            err = 0.0
            for n in layers:
                one = np.stack([np.asarray(r[n]) for r in per_cell], 1)  # (b, K, ...) like the batched result
                got = np.asarray(both[n]).reshape(one.shape)
                err = max(err, float(np.abs(got - one).max() / max(np.abs(one).max(), 1e-30)))
            batched(how)()  # warm-up (also torch.func's first trace)
            t_b = timed(batched(how), device)
        except Exception as exc:  # noqa: BLE001
            print(f"  batched ({how}) FAILED {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if t_l is None:
            t_l = timed(loop, device)
            print(f"  loop over cells:                 {t_l:.2f} s = {len(x) / t_l:,.1f} bins/s")
        verdict = f"ratio loop/batched = {t_l / t_b:.2f}x" if err <= 1e-3 else "DIFFERS from the loop: no ratio"
        print(f"  batched, one backward ({how:8s}): {t_b:.2f} s = {len(x) / t_b:,.1f} bins/s"
              f"  (max rel. diff vs loop {err:.1e}) -> {verdict}")


def section_resnet(args, device) -> None:
    import torchvision

    from retina_codec.contributions import contributions

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval().to(device)
    model.affine_stem = ("conv1", "bn1")
    blocks = [f"layer{i}.{j}" for i, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for j in range(n)]
    size = args.image_size
    x = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        top1 = torch.cat([model(x[a:a + 8]).argmax(1) for a in range(0, len(x), 8)])
    n_cap = max(1, min(len(x), args.captum_images))
    captum_per_layer(model, x[:1], blocks[:1], 10, 1, device, target=top1[:1])
    t_cap = timed(lambda: captum_per_layer(model, x[:n_cap], blocks, 10, args.captum_resnet_chunk, device,
                                           target=top1[:n_cap]), device)
    cap = n_cap / t_cap
    print(f"[ResNet-50 random weights, 16 bottleneck blocks, 10 steps, top-1 logit, {size}x{size}, {machine(device)}]")
    print(f"  captum: {n_cap} images in {t_cap:.2f} s = {cap:,.2f} images/s (LayerConductance per block, "
          f"{args.captum_resnet_chunk} images per call)")
    rows = [("default", {})]
    if device.type == "cuda":
        rows += [("channels-last", {"channels_last": True}), ("bf16 autocast + channels-last",
                                                            {"autocast": True, "channels_last": True})]
    import numpy as np
    from captum.attr import LayerConductance

    from retina_codec.torch_utils.hooks import resolve_module

    check = [blocks[0], blocks[-1]]  # agreement with captum on one image, first and last block
    ref = {b: LayerConductance(model, resolve_module(model, b)).attribute(
        x[:1], target=top1[:1], n_steps=10, method="riemann_trapezoid").detach().float().cpu().numpy() for b in check}
    for name, opts in rows:
        try:
            got = contributions(model, x[:1], check, target="top1_logit", steps=10, rule="left", reduce=None,
                                batch_size=1, device=device, quiet=True, **opts)
            err = max(float(np.abs(np.asarray(got[b]) - ref[b]).max() / max(np.abs(ref[b]).max(), 1e-30))
                      for b in check)
            run = lambda xx, o=opts: contributions(model, xx, blocks, target="top1_logit", steps=10,  # noqa: E731
                                                   batch_size=args.resnet_chunk, device=device, quiet=True, **o)
            run(x[: args.resnet_chunk])
            t_ours = timed(lambda r=run: r(x), device)
        except Exception as exc:  # noqa: BLE001
            print(f"  ours [{name}]: FAILED {type(exc).__name__}: {str(exc)[:200]}")
            continue
        ours = len(x) / t_ours
        low = bool(opts.get("autocast"))
        verdict = (f"ratio ours/captum = {ours / cap:.1f}x" + (" (bf16 vs captum's float32)" if low else "")
                   if err <= (5e-2 if low else 1e-3) else "DIFFERS from captum: no ratio")
        print(f"  ours [{name}]: {len(x)} images in {t_ours:.2f} s = {ours:,.1f} images/s "
              f"({args.resnet_chunk} per chunk, max rel. diff vs captum {err:.1e}) -> {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bins", type=int, default=None, help="bins for our engine (default 300 CPU, 6000 GPU)")
    p.add_argument("--captum-bins", type=int, default=None, help="bins for captum (default 40 CPU, 1000 GPU)")
    p.add_argument("--captum-chunk", type=int, nargs="+", default=None,
                   help="bins per captum call; the fastest is used (default 16 CPU, 32 and 128 GPU)")
    p.add_argument("--variants", nargs="*", default=None, help="GPU engine variants to time (substring match)")
    p.add_argument("--no-recording", action="store_true", help="skip the from-a-Recording GPU row")
    p.add_argument("--profile", action="store_true", help="print the GPU kernel profile of one chunk")
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
    p.add_argument("--captum-resnet-chunk", type=int, default=None)
    p.add_argument("--skip", nargs="*", default=[], choices=["retina", "plain", "per_cell", "resnet"])
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.bins = args.bins or (6000 if gpu else 300)
    args.captum_bins = args.captum_bins or (1000 if gpu else 40)
    args.captum_chunk = args.captum_chunk or ([32, 128] if gpu else [16])
    args.images = args.images or (256 if gpu else 2)
    args.captum_images = args.captum_images or (32 if gpu else 1)
    args.image_size = args.image_size or (224 if gpu else 96)
    args.resnet_chunk = args.resnet_chunk or (32 if gpu else 1)
    args.captum_resnet_chunk = args.captum_resnet_chunk or (8 if gpu else 1)
    print(f"torch {torch.__version__}, device {machine(device)}")
    if "retina" not in args.skip:
        section_retina(args, device)
    if "plain" not in args.skip:
        section_retina(args, device, plain=True)
    if "per_cell" not in args.skip:
        section_per_cell(args, device)
    if "resnet" not in args.skip:
        if gpu or args.resnet:
            section_resnet(args, device)
        else:
            print("[ResNet-50] skipped on CPU (pass --resnet for a tiny CPU run)")


if __name__ == "__main__":
    main()
