#!/usr/bin/env python
"""Loadings over time of the most often active contribution modes (modes store).

Usage: python figures/mode_loadings.py MODES.h5 --out fig.png [--top 20] [--seconds 10]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modes", help="modes store (retina-codec modes / demo)")
    p.add_argument("--top", type=int, default=20, help="number of modes shown (most often active first)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds from the first bin (0: all)")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.mode_loadings(a.modes, a.out, top=a.top, seconds=a.seconds or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
