#!/usr/bin/env python
"""Heat map of one layer's reduced contributions over time, with the explained target F(x).

Usage: python figures/contributions_heatmap.py CONTRIB.h5 --layer conv2 --out fig.png [--seconds 10]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("contributions", help="contribution store (retina-codec contributions / demo)")
    p.add_argument("--layer", required=True, help="layer name in the store, e.g. conv2")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds from the first stored bin (0: all)")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.contribution_heatmap(a.contributions, a.layer, a.out, seconds=a.seconds or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
