#!/usr/bin/env python
"""Write a simulated recording in the Baccus-lab h5 layout (a recipe, and a file to try `convert` on).

Layout written (DESIGN.md §2): groups ``train`` and ``test``, each with ``time (T,)`` seconds,
``stimulus (T, 50, 50)`` float32, ``response/binned (N, T)`` spike counts and
``response/firing_rate_10ms (N, T)`` (the simulator's true rates, Hz). Train is the simulated recording's
train + validation splits, test its test split.

Usage: python datasets/make_lab_h5.py OUT.h5 [--preset small] [--seed 0] [--stimulus naturalscene]
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from retina_codec.io_utils import atomic_path
from retina_codec.sim import simulate_retina


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="output .h5 file")
    p.add_argument("--preset", default="small", help="simulation preset (default: small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stimulus", default="naturalscene", choices=("naturalscene", "whitenoise"))
    a = p.parse_args(argv)
    rec = {r.stimulus_name: r for r in simulate_retina(a.preset, seed=a.seed, quiet=True)}[a.stimulus]
    test = rec.split_bins("test")
    parts = {"train": np.arange(test[0]), "test": test}
    with atomic_path(a.out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        for name, bins in parts.items():
            g = f.create_group(name)
            g["time"] = rec.frame_times[bins] - rec.frame_times[bins[0]]
            g["stimulus"] = rec.stimulus[int(bins[0]) : int(bins[-1]) + 1]
            g["response/binned"] = rec.responses[bins].T
            g["response/firing_rate_10ms"] = rec.ground_truth.true_rates[bins].T
    print(f"wrote {a.out}: train {len(parts['train'])} and test {len(parts['test'])} frames, {rec.n_cells} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
