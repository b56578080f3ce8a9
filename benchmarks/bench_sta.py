"""STA of all cells: retina-codec (one lag-structured product per chunk) vs pyret looping over cells.

Same data for both: binary ±1 white noise, 50×50 pixels at 100 Hz, 40-frame history, Poisson spike
counts with per-cell mean rates spread over 5–30 Hz. pyret gets each cell's spike times (placed inside
their bins) and the in-memory float32 stimulus, as a user would call it; the results are checked to agree.
A second part runs the STA on an HDF5-backed (lazy) recording of two lengths in fresh processes and prints
the peak resident memory of each: it should not grow with the recording.

    python benchmarks/bench_sta.py [--frames 20000] [--cells 16] [--skip-memory] [--irf] [--pyret-repeats 2]
    python benchmarks/bench_sta.py --gpu-only [--irf-batch 128]

``--irf`` adds the throughput of instantaneous RFs of a default BN-CNN (GPU when present): one batched
backward over all cells vs a loop over cells. ``--gpu-only`` runs just that and the STA on the GPU (methods
``fft`` and ``direct``) against pyret on the host CPU, each variant guarded so a failure is printed and the
rest still runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


def make_data(frames: int, cells: int, hw: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    stim = (rng.integers(0, 2, (frames, hw, hw), dtype=np.uint8) * 2.0 - 1.0).astype(np.float32)
    rates_hz = np.linspace(5, 30, cells)
    counts = rng.poisson(rates_hz / 100.0, (frames, cells)).astype(np.float32)
    return stim, counts


def spike_times(times: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    starts = np.repeat(times, counts.astype(int))
    return np.sort(starts + rng.uniform(0.1, 0.9, starts.size) * 0.01)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_speed(frames: int, cells: int, history: int, repeats: int, device: str = "cpu",
                methods: tuple[tuple[str, torch.dtype], ...] | None = None, pyret_repeats: int = 1) -> None:
    """Time pyret's ``filtertools.sta`` (loop over cells) and ours on the same data; each of ours in
    try/except so that one failing variant does not stop the others."""
    from retina_codec.recordings import ArrayFrames, Recording
    from retina_codec.rf.sta import spike_triggered_average

    stim, counts = make_data(frames, cells)
    counts[: history + 1] = 0  # pyret drops bin `history` and normalises by every spike
    counts[-1] = 0
    times = np.arange(frames) / 100.0
    rec = Recording(stim, times, 100.0, counts)
    # the same movie as a recording stores it (NWB keeps white noise as uint8 codes with conversion/offset)
    coded = Recording(ArrayFrames(((stim + 1) / 2).astype(np.uint8), scale=2.0, offset=-1.0), times, 100.0, counts)
    rng = np.random.default_rng(1)
    spikes = [spike_times(times, counts[:, i], rng) for i in range(cells)]
    print(f"data: {frames} frames of 50x50 white noise, {cells} cells, history {history}, "
          f"{int(counts.sum())} spikes in {int((counts > 0).sum())} (cell, bin) pairs; "
          f"load average before: {os.getloadavg()[0]:.2f}")

    t_pyret, ref = np.nan, None
    try:  # pyret may be missing on a GPU machine: ours are still timed
        from pyret import filtertools

        t_pyret = np.inf
        filtertools.sta(times[:2000], stim[:2000], spikes[0][spikes[0] < times[1999]], history)  # warm-up
        for _ in range(pyret_repeats):
            t0 = time.perf_counter()
            ref = np.stack([filtertools.sta(times, stim, s, history)[0] for s in spikes])
            t_pyret = min(t_pyret, time.perf_counter() - t0)
        print(f"pyret filtertools.sta, loop over cells (best of {pyret_repeats}): {t_pyret:8.3f} s")
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"pyret FAILED {type(exc).__name__}: {exc}")

    if methods is None:
        methods = (("auto", torch.float32), ("fft", torch.float32), ("fft", torch.float64),
                   ("direct", torch.float32))
    rows = [(m, d, rec, "") for m, d in methods]
    if device == "cpu" and any(m == "auto" for m, _ in methods):
        rows.insert(1, ("auto", torch.float32, coded, " [stimulus stored as uint8 codes]"))
    for method, dtype, rec, note in rows:
        try:
            best = np.inf
            for _ in range(repeats + (1 if device.startswith("cuda") else 0)):  # CUDA: first call warms up
                _sync(device)
                t0 = time.perf_counter()
                res = spike_triggered_average(rec, history=history, normalize=False, method=method, dtype=dtype,
                                              device=device, quiet=True)
                _sync(device)
                best = min(best, time.perf_counter() - t0)
            err = float(np.abs(res.sta - ref).max()) if ref is not None else np.nan
            scale = float(np.abs(ref).max()) if ref is not None else np.nan
            ok = err <= 1e-4 * scale  # a speed-up only for the same STA
            speed = f"speed-up {t_pyret / best:6.1f}x" if ok else "no speed-up (results differ or no pyret)"
            print(f"retina-codec on {device} method={method:6s} {str(dtype):14s}: {best * 1e3:9.1f} ms   "
                  f"{speed}   max |diff| vs pyret {err:.1e} (max |STA| {scale:.1e}){note}")
        except Exception as exc:  # noqa: BLE001 - report and go on with the other variants
            print(f"retina-codec on {device} method={method} {dtype}: FAILED {type(exc).__name__}: {exc}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


_CHILD = """
import sys, time, h5py, numpy as np
from retina_codec.recordings import Recording, H5Frames
from retina_codec.rf.sta import spike_triggered_average

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return float(line.split()[1]) / 1024
path, cells = sys.argv[1], int(sys.argv[2])
with h5py.File(path, 'r') as f:
    ds = f['stimulus']
    counts = f['counts'][:]
    rec = Recording(H5Frames(ds, scale=2.0, offset=-1.0), np.arange(len(ds)) / 100.0, 100.0, counts)
    before = status('VmRSS')
    open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS
    t0 = time.perf_counter()
    spike_triggered_average(rec, history=40, normalize=False, device='cpu', quiet=True)
    dt = time.perf_counter() - t0
print(before, status('VmHWM'), dt)
"""


def bench_memory(lengths: list[int], cells: int) -> None:
    import h5py

    print("memory: lazy HDF5 stimulus (uint8), STA of all cells, fresh process per length")
    with tempfile.TemporaryDirectory() as tmp:
        for frames in lengths:
            path = os.path.join(tmp, f"wn_{frames}.h5")
            rng = np.random.default_rng(0)
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("stimulus", (frames, 50, 50), np.uint8, chunks=(1000, 50, 50))
                for a in range(0, frames, 10000):
                    b = min(frames, a + 10000)
                    ds[a:b] = rng.integers(0, 2, (b - a, 50, 50), dtype=np.uint8)
                f["counts"] = rng.poisson(0.15, (frames, cells)).astype(np.float32)
            out = subprocess.run([sys.executable, "-c", _CHILD, path, str(cells)], capture_output=True,
                                 text=True, check=True).stdout.split()
            before, peak, dt = (float(v) for v in out)
            stim_mb = frames * 2500 * 4 / 2**20
            print(f"  {frames:7d} frames ({stim_mb:6.0f} MiB as float32): peak RSS {peak:6.0f} MiB "
                  f"(RSS before the call {before:5.0f} MiB, so +{peak - before:4.0f} MiB), {dt:6.1f} s")


def bench_irf(cells: int, batch: int, repeats: int, device: str | None = None) -> None:
    """IRFs of every cell of a default BN-CNN (40×50×50 input): batched backward vs a loop over cells.
    Each variant in try/except (a failure is printed, the other variant still runs)."""
    import contextlib

    from retina_codec.models.bncnn import BNCNN
    from retina_codec.rf.irf import fast_input_gradients, input_jacobian

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = BNCNN(cells).to(dev).eval()
    x = torch.randn(batch, 40, 50, 50, device=dev)
    cols = list(range(cells))
    rows = [("batched (is_grads_batched)", True, contextlib.nullcontext),
            ("loop over cells", False, contextlib.nullcontext)]
    if dev.type == "cpu":  # what iter_irfs / model STA use on a CPU
        rows.append(("batched, FFT convolutions", True, lambda: fast_input_gradients(model)))
    ref = None
    for label, batched, ctx in rows:
        try:
            best = np.inf
            for _ in range(repeats + 1):  # first call warms up
                _sync(dev.type)
                t0 = time.perf_counter()
                with ctx():
                    jac = input_jacobian(model, x, cols, batched=batched)
                _sync(dev.type)
                best = min(best, time.perf_counter() - t0)
            assert jac.shape == (batch, cells, 40, 50, 50), jac.shape
            ref = jac if ref is None else ref  # the first row is the reference of the others
            err = float((jac - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            print(f"IRF on {dev.type}, BN-CNN {cells} cells, {batch} bins, {label:27s}: "
                  f"{batch * cells / best:9.0f} IRFs/s ({best:.3f} s; max rel. diff vs the first row {err:.1e}"
                  f"{'' if err <= 1e-3 else ': DIFFERS, not comparable'})")
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"IRF on {dev.type}, {label}: FAILED {type(exc).__name__}: {exc}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--history", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--pyret-repeats", type=int, default=1)
    p.add_argument("--device", default="cpu", help="device of our STA (pyret always runs on the CPU)")
    p.add_argument("--memory-lengths", type=int, nargs=2, default=[20000, 80000])
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--irf", action="store_true", help="also time IRFs of a BN-CNN (GPU when present)")
    p.add_argument("--irf-batch", type=int, default=32)
    p.add_argument("--gpu-only", action="store_true",
                   help="only the GPU part: IRF throughput (batched vs loop), then the STA on the GPU vs pyret "
                        "(CPU when no GPU is present)")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
    if args.gpu_only:
        dev = "cuda" if cuda else "cpu"
        if not cuda:
            print("no GPU: running the GPU part on the CPU")
        try:
            bench_irf(args.cells, args.irf_batch, args.repeats, dev)
        except Exception as exc:  # noqa: BLE001
            print(f"IRF benchmark FAILED {type(exc).__name__}: {exc}")
        try:
            bench_speed(args.frames, args.cells, args.history, args.repeats, dev,
                        (("fft", torch.float32), ("direct", torch.float32), ("fft", torch.float64)),
                        args.pyret_repeats)
        except Exception as exc:  # noqa: BLE001
            print(f"STA benchmark FAILED {type(exc).__name__}: {exc}")
        return
    bench_speed(args.frames, args.cells, args.history, args.repeats, args.device,
                pyret_repeats=args.pyret_repeats)
    if not args.skip_memory:
        bench_memory(args.memory_lengths, args.cells)
    if args.irf:
        bench_irf(args.cells, args.irf_batch, args.repeats)


if __name__ == "__main__":
    main()
