"""Lazy NWB reading: a 1-hour, 100 Hz, 50x50 recording (360,000 uint8 frames) iterated in windows.

1. Writes the movie chunk by chunk to a uint8 memory map on disk (never whole in RAM), wraps it as a
   Recording (ArrayFrames, scale 1/255) with Poisson spike counts, and writes it with ``write_nwb``
   (streamed through an hdmf GenericDataChunkIterator, chunked along time, gzip).
2. In a fresh subprocess, opens the file with ``read_nwb`` and iterates every window batch
   (``iter_windows``, history 40, batch 1024, z-scored), then prints peak RSS (``resource.getrusage``)
   and time. The peer is a plain h5py pass over the same dataset in the same chunks (decompress +
   float32 conversion only), timed in the same subprocess: the ratio says what windowing costs.

Usage: ``python benchmarks/bench_nwb_lazy.py [--frames 360000] [--size 50] [--cells 16] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB from ``resource.getrusage`` (Linux reports KiB).

    Linux keeps ``ru_maxrss`` across fork + exec, so each stage runs in a subprocess of a parent that
    stays small (it imports neither numpy-heavy code nor the movie)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _vm_hwm_mb() -> float:
    """Peak RSS of this process image since exec (``VmHWM`` in /proc/self/status), MB; NaN if absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def write_file(path: Path, n_frames: int, size: int, n_cells: int, seed: int = 0) -> dict:
    """Stream a binary white-noise movie (8x8-pixel checkers) and spike counts to ``path``."""
    from retina_codec.recordings import ArrayFrames, Recording, write_nwb

    rng = np.random.default_rng(seed)
    raw = path.with_suffix(".u8")
    movie = np.lib.format.open_memmap(raw, mode="w+", dtype=np.uint8, shape=(n_frames, size, size))
    t0 = time.perf_counter()
    chunk = 10_000
    checks = -(-size // 8)
    for a in range(0, n_frames, chunk):
        b = min(n_frames, a + chunk)
        boards = rng.integers(0, 2, (b - a, checks, checks), dtype=np.uint8) * np.uint8(255)
        movie[a:b] = boards.repeat(8, 1).repeat(8, 2)[:, :size, :size]
    movie.flush()
    counts = rng.poisson(0.05, (n_frames, n_cells)).astype(np.float32)  # 5 Hz per cell
    rec = Recording(ArrayFrames(movie, scale=1 / 255), np.arange(n_frames) / 100.0, 100.0, counts,
                    stimulus_name="whitenoise", provenance={"benchmark": "bench_nwb_lazy"})
    t1 = time.perf_counter()
    write_nwb(rec, path, overwrite=True)
    t2 = time.perf_counter()
    del rec, movie
    raw.unlink()
    return {"generate_s": t1 - t0, "write_s": t2 - t1, "file_mb": path.stat().st_size / 1e6,
            "n_spikes": int(counts.sum()), "writer_peak_rss_mb": _peak_rss_mb()}


def _run_stage(*argv: str) -> dict:
    env = {**os.environ, "RETINA_CODEC_QUIET": "1"}
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def read_file(path: Path, history: int, batch: int) -> dict:
    """Open lazily and iterate every window batch; the peer reads the raw dataset in the same chunks."""
    import h5py

    from retina_codec.recordings import read_nwb

    t0 = time.perf_counter()
    rec = read_nwb(path)
    t_open = time.perf_counter() - t0
    rss_open = _peak_rss_mb()
    t0 = time.perf_counter()
    rec.normalization()
    t_norm = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_batches = n_windows = 0
    checksum = 0.0
    for wb in rec.iter_windows(None, history=history, batch_size=batch):
        n_batches += 1
        n_windows += len(wb.bins)
        checksum += float(wb.stimulus[:, -1].sum(dtype=np.float64))  # touch the data: each window's last frame
    t_iter = time.perf_counter() - t0
    n_frames, shape = rec.n_frames, rec.frame_shape
    mean, std = rec.normalization()
    rec.close()
    # peer: plain h5py pass over the stored uint8 dataset, same number of frames per read, summing the same
    # frames (history-1 … T-2: the last frame of every window)
    t0 = time.perf_counter()
    with h5py.File(path, "r") as f:
        ds = f["stimulus/presentation/whitenoise/data"]
        conversion, offset = float(ds.attrs.get("conversion", 1.0)), float(ds.attrs.get("offset", 0.0))
        step = batch + history - 1
        total = 0.0
        for a in range(0, ds.shape[0] - history, batch):
            chunk = np.asarray(ds[a : min(a + step, ds.shape[0] - 1)], dtype=np.float32)
            total += float(chunk[history - 1:].sum(dtype=np.float64))
    t_peer = time.perf_counter() - t0
    # the same pixels? our z-scored sum mapped back to stored values
    ours_raw = (checksum * std + n_windows * shape[0] * shape[1] * (mean - offset)) / conversion
    agree = abs(ours_raw - total) <= 1e-6 * max(abs(total), 1.0)
    return {"n_frames": n_frames, "frame_shape": shape, "open_s": t_open, "rss_after_open_mb": rss_open,
            "normalization_s": t_norm, "iterate_s": t_iter, "n_batches": n_batches, "n_windows": n_windows,
            "peer_h5py_s": t_peer, "ratio_iterate_to_peer": t_iter / t_peer, "peak_rss_mb": _peak_rss_mb(),
            "vm_hwm_mb": _vm_hwm_mb(), "checksum": checksum, "ours_stored_sum": ours_raw, "peer_sum": total,
            "agree": agree}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=360_000)
    ap.add_argument("--size", type=int, default=50)
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--history", type=int, default=40)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="where to put the file (default: a temporary folder)")
    ap.add_argument("--read", default=None, help=argparse.SUPPRESS)  # subprocess stages
    ap.add_argument("--write", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        print(json.dumps(write_file(Path(args.write), args.frames, args.size, args.cells)))
        return
    if args.read:
        print(json.dumps(read_file(Path(args.read), args.history, args.batch)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "one_hour.nwb"
        w = _run_stage("--write", str(path), "--frames", str(args.frames), "--size", str(args.size),
                       "--cells", str(args.cells))
        print(f"wrote {args.frames} frames {args.size}x{args.size} uint8 ({args.frames / 100 / 60:.0f} min at 100 Hz)"
              f", {w['n_spikes']} spikes: {w['file_mb']:.0f} MB in {w['write_s']:.1f} s "
              f"(writer peak RSS {w['writer_peak_rss_mb']:.0f} MB, incl. the page-cached memory map)")
        r = _run_stage("--read", str(path), "--history", str(args.history), "--batch", str(args.batch))
    print(f"machine: {_cpu_name()} ({os.cpu_count()} CPUs), python {platform.python_version()}")
    print(f"read_nwb open: {r['open_s']:.2f} s, RSS after open {r['rss_after_open_mb']:.0f} MB")
    print(f"normalization (train split, streamed): {r['normalization_s']:.1f} s")
    print(f"iter_windows over all {r['n_windows']} windows ({r['n_batches']} batches of {args.batch}, history "
          f"{args.history}): {r['iterate_s']:.1f} s = {r['n_windows'] / r['iterate_s']:.0f} windows/s")
    if r["agree"]:
        print(f"peer (plain h5py chunked read + float32): {r['peer_h5py_s']:.1f} s; ratio iter_windows/peer = "
              f"{r['ratio_iterate_to_peer']:.2f} (same pixels: sums {r['ours_stored_sum']:.6g} and "
              f"{r['peer_sum']:.6g})")
    else:
        print(f"peer (plain h5py chunked read + float32): {r['peer_h5py_s']:.1f} s; DIFFERENT pixels (our windows "
              f"sum to {r['ours_stored_sum']:.9g} stored units, the peer's to {r['peer_sum']:.9g}): no ratio")
    print(f"peak RSS of the reading process: {r['peak_rss_mb']:.0f} MB by getrusage, {r['vm_hwm_mb']:.0f} MB by "
          f"VmHWM (limit 2048 MB); parent process {_peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
