"""``retina-codec inspect FILE``: describe an NWB or Baccus-lab h5 recording."""

from __future__ import annotations

import argparse
import json

from ..recordings.inspect import describe, format_description
from .options import add_responses_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``inspect`` sub-command."""
    p = subparsers.add_parser(
        "inspect", help="describe a recording file (NWB or Baccus-lab h5)",
        description="Print a recording's series (name, type, shape, dtype), and per stimulus its frame rate, "
                    "duration, cells, mean rates, splits and whether ground truth is present.",
    )
    p.add_argument("file", help="an .nwb file or a Baccus-lab .h5 file")
    p.add_argument("--stimulus", default=None, help="describe only this stimulus series (NWB)")
    add_responses_argument(p)
    p.add_argument("--splits", nargs="+", default=None, metavar="NAME",
                   help="interval names to read (NWB; default: train/validation/test when present)")
    p.add_argument("--response", default="binned", choices=("binned", "firing_rate_10ms"),
                   help="which response of a lab h5 file (default: binned)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the scan of float frames for NaN / inf")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the description; returns 0."""
    desc = describe(args.file, stimulus=args.stimulus, responses=args.responses, splits=args.splits,
                    response=args.response, validate=args.validate)
    print(json.dumps(desc, indent=1, default=str) if args.json else format_description(desc))
    return 0
