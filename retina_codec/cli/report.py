"""``retina-codec report DIR``: the self-contained HTML report of a demo folder (``DIR/report.html``)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report", help="write the self-contained HTML report of a demo folder",
        description="Read the stores of a demo folder (fit.h5, contributions.h5, modes_<layer>.h5, rf.h5, "
                    "rf_conditioned_<layer>.h5, classifiers/stats.h5, demo.json) and write one HTML file with every "
                    "figure embedded.")
    p.add_argument("folder", help="demo output folder (retina-codec demo --out FOLDER)")
    p.add_argument("--out", default=None, help="HTML file to write (default: FOLDER/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report; returns 0."""
    from ..report import build_report

    path = build_report(args.folder, args.out, quiet=True if getattr(args, "quiet", False) else None)
    print(f"wrote {path}")
    return 0
