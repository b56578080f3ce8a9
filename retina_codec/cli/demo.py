"""``retina-codec demo``: the whole pipeline on the embedded default, a simulated retina.

Stages (each writes into ``--out``): simulate the retina and write it as NWB (or reuse the file there),
read it back and describe it. Later stages (model, contributions, modes, receptive fields, report) run
when their parts are available.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` sub-command."""
    p = subparsers.add_parser(
        "demo", help="run the pipeline on the embedded simulated retina",
        description="Simulate the retina (natural scenes, then white noise), write it as NWB, read it back "
                    "lazily and describe it; outputs go to --out.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--preset", default="default", choices=("default", "small"),
                   help="simulation size (default: 15 min natural scenes + 7.5 min white noise)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--resimulate", action="store_true", help="simulate again even if OUT has the recording")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo stages; returns 0."""
    from ..recordings.inspect import describe, format_description
    from ..recordings.nwb import write_nwb
    from ..sim import simulate_retina

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / f"simulated_retina_{args.preset}_seed{args.seed}.nwb"
    t0 = time.perf_counter()
    if rec_path.exists() and not args.resimulate:
        print(f"[1/2] using the simulated recording already in {rec_path}")
    else:
        print(f"[1/2] simulating the retina (preset {args.preset!r}, seed {args.seed}) ...")
        recs = simulate_retina(preset=args.preset, seed=args.seed, quiet=True if args.quiet else None)
        write_nwb(recs, rec_path, overwrite=True)
        print(f"      wrote {rec_path} in {time.perf_counter() - t0:.1f} s")
    print("[2/2] reading it back:")
    print(format_description(describe(rec_path)))
    print(f"done in {time.perf_counter() - t0:.1f} s; outputs in {out}/")
    return 0
