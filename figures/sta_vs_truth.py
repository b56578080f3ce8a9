#!/usr/bin/env python
"""LN cells: white-noise STA vs model STA vs the simulator's true filter (rank-1 space and time).

Usage: python figures/sta_vs_truth.py RF.h5 --out fig.png
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rf", help="rf.h5 written by retina-codec demo (groups sta, model_sta, ln_truth)")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.sta_vs_truth(a.rf, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
