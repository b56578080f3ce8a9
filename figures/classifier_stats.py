#!/usr/bin/env python
"""Per-layer Hoyer sparsity, dimensionality and E/I correlation of contributions vs activations.

Usage: python figures/classifier_stats.py STATS.h5 --out fig.png
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stats", help="stats.h5 written by retina-codec classify-stats")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.classifier_statistics(a.stats, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
