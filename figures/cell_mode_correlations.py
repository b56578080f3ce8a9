#!/usr/bin/env python
"""Cells x modes: correlation of mode loadings with predicted rates, cells grouped by k-means cluster.

Usage: python figures/cell_mode_correlations.py MODES_SUMMARY.json --out fig.png [--top 20]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("summary", help="modes_<layer>_summary.json written by retina-codec demo")
    p.add_argument("--top", type=int, default=20, help="number of modes shown (most often active first)")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.cell_mode_correlations(a.summary, a.out, top=a.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
