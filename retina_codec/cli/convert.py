"""``retina-codec convert IN OUT.nwb``: a Baccus-lab h5 file (or an NWB file) to an NWB file, atomically."""

from __future__ import annotations

import argparse
import logging

from ..recordings.convert import convert_recording
from . import options as opt

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``convert`` sub-command."""
    p = opt.add_command(
        subparsers, "convert", run, help="convert a Baccus-lab h5 recording to NWB",
        description="Read a Baccus-lab h5 file (train then test movie; validation carved from the end of train) "
                    "or an NWB file, and write it as NWB (written under a temporary name, then renamed).",
    )
    p.add_argument("input", help="Baccus-lab .h5 file (or .nwb)")
    p.add_argument("output", help="output .nwb file")
    p.add_argument("--response", default="binned", choices=("binned", "firing_rate_10ms"),
                   help="lab h5: spike counts (binned, default) or firing rates in Hz")
    p.add_argument("--stimulus-name", default=None, help="lab h5: name of the stimulus (default: file stem)")
    p.add_argument("--validation-fraction", type=opt.fraction, default=0.1,
                   help="lab h5: fraction at the end of the train movie used for validation (default 0.1)")
    p.add_argument("--stimulus", nargs="+", default=None, metavar="NAME",
                   help="NWB input: stimulus series to keep (default: all)")
    opt.add_responses_argument(p, "NWB input: ")
    opt.add_overwrite_argument(p, "OUTPUT")


def run(args: argparse.Namespace) -> int:
    """Convert; returns 0."""
    out, described = convert_recording(args.input, args.output, response=args.response,
                                       stimulus_name=args.stimulus_name, validation_fraction=args.validation_fraction,
                                       stimulus=args.stimulus, responses=args.responses, overwrite=args.overwrite)
    log.info("wrote %s (%s)", out, ", ".join(described))
    return 0
