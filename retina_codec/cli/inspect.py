"""``retina-codec inspect FILE``: describe an NWB or Baccus-lab h5 recording, or an openretina model checkpoint
(``.ckpt``: sessions, cells per session, input shape, channels, history, layers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import options as opt


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``inspect`` sub-command."""
    p = opt.add_command(
        subparsers, "inspect", run, help="describe a recording file (NWB or Baccus-lab h5) or an openretina .ckpt model",
        description="Print a recording's series (name, type, shape, dtype), and per stimulus its frame rate, "
                    "duration, cells, mean rates, splits and whether ground truth is present; for an openretina "
                    "checkpoint (.ckpt) its sessions, cells per session, input shape and channels, temporal "
                    "receptive field (history) and layer names.",
    )
    p.add_argument("file", help="an .nwb file, a Baccus-lab .h5 file or an openretina .ckpt checkpoint")
    p.add_argument("--stimulus", default=None, help="describe only this stimulus series (NWB)")
    opt.add_responses_argument(p)
    p.add_argument("--splits", nargs="+", default=None, metavar="NAME",
                   help="interval names to read (NWB; default: train/validation/test when present)")
    p.add_argument("--response", default="binned", choices=("binned", "firing_rate_10ms"),
                   help="which response of a lab h5 file (default: binned)")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip the scan of float frames for NaN / inf")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    opt.add_trust_argument(p, "FILE")


def run(args: argparse.Namespace) -> int:
    """Print the description; returns 0."""
    if Path(args.file).suffix == ".ckpt":
        from ..models.openretina import describe_openretina, format_openretina

        desc = describe_openretina(args.file, trust=args.trust)
        print(json.dumps(desc, indent=1, default=str) if args.json else format_openretina(desc))
        return 0
    from ..recordings.inspect import describe, format_description

    desc = describe(args.file, stimulus=args.stimulus, responses=args.responses, splits=args.splits,
                    response=args.response, validate=args.validate)
    print(json.dumps(desc, indent=1, default=str) if args.json else format_description(desc))
    return 0
