#!/usr/bin/env python
"""Mode-conditioned RF gallery of one cell (CODEC Fig. 8): mean, per-mode and per-combination RFs.

Usage: python figures/conditioned_rfs.py RF_CONDITIONED.h5 --cell on00 --out fig.png
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rf", help="RF store with a conditioned group (retina-codec rf --modes / demo)")
    p.add_argument("--cell", required=True, help="cell id (e.g. on00) or index among the stored cells")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.conditioned_gallery(a.rf, a.cell, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
