#!/usr/bin/env python
"""Per-cell Pearson r of a fitted model with the responses and with the true rates (demo's fit.h5).

Usage: python figures/model_fit.py FIT.h5 --out fig.png
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fit", help="fit.h5 written by retina-codec demo")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.fit_per_cell(a.fit, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
