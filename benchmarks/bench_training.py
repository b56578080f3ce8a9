"""Training throughput of the BN-CNN (bins/s for forward + backward + Adam step) and the estimated wall
time of a full fit on the default simulated recording.

Peer: the same model with PyTorch's own ``nn.Conv2d`` backward (oneDNN's weight-gradient kernel on CPU,
what torch-deep-retina runs), timed in the same run; ours is what ``fit`` runs: on a CPU the large-kernel
convolutions as FFTs (``fft_convolutions``; eval: ``fft_inference``), also timed without them
(``FastCPUConv2d``: weight gradient as one forward convolution). On CUDA both are cuDNN, so only ours is
timed there.

    python benchmarks/bench_training.py [--batch 256] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

import torch
from torch import nn

from retina_codec.models import BNCNN
from retina_codec.models.card import machine_description
from retina_codec.models.fitting import SMALL_CONFIG, resolve_device
from retina_codec.sim import resolve_params
from retina_codec.sim.simulate import SPLIT_FRACTIONS
from retina_codec.torch_utils.fft_conv import fft_convolutions, fft_inference


def with_plain_convs(model: BNCNN) -> BNCNN:
    """The peer: every conv replaced by a plain ``nn.Conv2d`` with the same weights."""
    for name in model.hidden_layers:
        block = getattr(model, name)
        old = block.conv
        new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        block.conv = new.to(old.weight.device)
    return model


def train_rate(model: nn.Module, batch: int, repeats: int, device: torch.device) -> float:
    """Bins per second of forward + Poisson loss + backward + Adam step (after one warm-up step)."""
    h, hh, ww = model.input_spec.shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, h, hh, ww, generator=g).to(device)
    y = torch.poisson(torch.full((batch, model.n_cells), 0.1)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        loss = nn.functional.poisson_nll_loss(model(x), y, log_input=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t)


def loss_and_grads(model: nn.Module, batch: int, device: torch.device,
                   ctx: Any = lambda m: contextlib.nullcontext()) -> tuple[float, dict[str, torch.Tensor]]:
    """Poisson loss and parameter gradients (by the plain model's names) of one training step on fixed
    inputs and training noise, the step run inside ``ctx(model)``."""
    h, hh, ww = model.input_spec.shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, h, hh, ww, generator=g).to(device)
    y = torch.poisson(torch.full((batch, model.n_cells), 0.1), generator=g).to(device)
    model.train()
    model.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats move
    torch.manual_seed(2)  # the same training noise for both convolution paths
    with ctx(model):
        loss = nn.functional.poisson_nll_loss(model(x), y, log_input=False)
        loss.backward()
    model.load_state_dict(state)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def disagreement(ours: tuple[float, dict], peer: tuple[float, dict]) -> float:
    """Largest relative difference in the loss and the parameter gradients (each gradient relative to its
    own largest entry, floored at 1e-2 of the largest of all: a conv bias before a training-mode BatchNorm
    has a gradient of 0 up to rounding)."""
    errs = [abs(ours[0] - peer[0]) / max(abs(peer[0]), 1e-12)]
    floor = 1e-2 * max(float(g.abs().max()) for g in peer[1].values())
    for n, g in peer[1].items():
        errs.append(float((ours[1][n] - g).abs().max()) / max(float(g.abs().max()), floor, 1e-30))
    return max(errs)


@torch.no_grad()
def eval_rate(model: nn.Module, batch: int, repeats: int, device: torch.device) -> float:
    h, hh, ww = model.input_spec.shape
    x = torch.randn(batch, h, hh, ww).to(device)
    model.eval()
    model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    p = resolve_params("default")
    n_cells = p.n_off + p.n_on + p.n_onoff + p.n_ln
    n_frames = round(p.natural_duration_s * p.frame_rate)
    lo, hi = SPLIT_FRACTIONS["train"]
    n_train = round((hi - lo) * n_frames) - 40
    n_val = round((SPLIT_FRACTIONS["validation"][1] - SPLIT_FRACTIONS["validation"][0]) * n_frames)
    print(f"machine: {machine_description(dev)}; device {dev}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"default simulated natural-scene recording: {n_frames} frames, {n_train} train bins, {n_val} "
          f"validation bins, {n_cells} cells; batch {args.batch}")
    configs = {
        "full BN-CNN, bn=channel": dict(),
        "full BN-CNN, bn=unit": dict(bn="unit"),
        "--small BN-CNN": dict(SMALL_CONFIG),
    }
    print(f"{'model':28s} {'ours bins/s':>12s} {'no FFT':>8s} {'peer bins/s':>12s} {'ratio':>6s} "
          f"{'eval bins/s':>12s} {'epoch (min)':>12s}")
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = BNCNN(n_cells, **cfg).to(dev)
        with fft_convolutions(model):
            ours = train_rate(model, args.batch, args.repeats, dev)
        with fft_inference(model):
            ev = eval_rate(model, args.batch, args.repeats, dev)
        no_fft = peer = float("nan")
        ratio = "     -"
        if dev.type == "cpu":
            no_fft = train_rate(model, args.batch, args.repeats, dev)
            check_batch = min(args.batch, 16)
            ours_grads = loss_and_grads(model, check_batch, dev, fft_convolutions)
            plain = loss_and_grads(model, check_batch, dev)
            peer_model = with_plain_convs(model)
            peer_grads = loss_and_grads(peer_model, check_batch, dev)
            err = max(disagreement(ours_grads, peer_grads), disagreement(plain, peer_grads))
            peer = train_rate(peer_model, args.batch, args.repeats, dev)
            ratio = f"{ours / peer:6.2f}" if err < 1e-3 else "DIFFERS"
            if err >= 1e-3:
                print(f"{name}: loss/gradients differ from the peer's by {err:.1e} (relative); no ratio")
        epoch_min = (n_train / ours + n_val / ev) / 60
        print(f"{name:28s} {ours:12.1f} {no_fft:8.1f} {peer:12.1f} {ratio:>6s} {ev:12.1f} "
              f"{epoch_min:12.1f}")
    print("estimated full fit (default preset, full BN-CNN): epochs x the epoch time above; "
          "typically 10-30 epochs before early stopping")


if __name__ == "__main__":
    main()
