"""``retina-codec report DIR``: the self-contained HTML report of a demo folder (``DIR/report.html``)."""

from __future__ import annotations

import argparse

from . import options as opt

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``report`` sub-command."""
    p = opt.add_command(
        subparsers, "report", run, help="write the self-contained HTML report of a demo folder",
        description="Read the stores of a demo folder (fit.h5, contributions.h5, modes_<layer>.h5, rf.h5, "
                    "rf_conditioned_<layer>.h5, classifiers/stats.h5, demo.json) and write one HTML file with every "
                    "figure embedded.")
    p.add_argument("folder", help="demo output folder (retina-codec demo --out FOLDER)")
    p.add_argument("--out", default=None, help="HTML file to write (default: FOLDER/report.html)")


def run(args: argparse.Namespace) -> int:
    """Build the report; returns 0."""
    from ..report import build_report

    path = build_report(args.folder, args.out)
    print(f"wrote {path}")
    return 0
