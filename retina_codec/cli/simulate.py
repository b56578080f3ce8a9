"""``retina-codec simulate --out rec.nwb``: simulate the retina and write both recordings to one NWB file."""

from __future__ import annotations

import argparse
import logging

from ..sim.to_nwb import simulate_to_nwb
from . import options as opt

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``simulate`` sub-command."""
    from ..sim.presets import PRESETS

    p = opt.add_command(
        subparsers, "simulate", run, help="simulate a retina with known internals and write it as NWB",
        description="Simulate the bipolar/amacrine/ganglion retina on a natural-scene movie and then on "
                    "white noise, and write both recordings (spike counts, stimulus, intervals, ground "
                    "truth) to one NWB file (written under a temporary name, then renamed).",
    )
    p.add_argument("--out", required=True, help="output .nwb file")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="default: 15 min natural scenes + 7.5 min white noise; small: 90 s + 240 s (tests)")
    p.add_argument("--seed", type=opt.non_negative_int, default=0, help="random seed (anatomy, movies, spikes); default 0")
    opt.add_overwrite_argument(p, "OUT")


def run(args: argparse.Namespace) -> int:
    """Simulate and write; returns 0."""
    res = simulate_to_nwb(args.out, args.preset, args.seed, overwrite=args.overwrite)
    log.info("simulated in %.1f s, wrote %s in %.1f s: %s", res.simulate_s, res.path, res.write_s,
             ", ".join(res.recordings))
    return 0
