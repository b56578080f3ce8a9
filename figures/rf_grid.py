#!/usr/bin/env python
"""Rank-1 spatial RFs of every cell: of the model STA with Gaussian fits, or of the spike STA.

Usage: python figures/rf_grid.py RF.h5 --out fig.png [--source rank1|sta]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rf", help="RF store (retina-codec rf / demo)")
    p.add_argument("--source", choices=("rank1", "sta"), default="rank1", help="rank1: stored rank-1 RFs; sta: STA")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.rf_grid(a.rf, a.out, source=a.source))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
