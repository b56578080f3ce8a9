#!/usr/bin/env python
"""Atoms of the most often active contribution modes of one layer (modes store).

Usage: python figures/mode_atoms.py MODES.h5 --out fig.png [--top 20]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modes", help="modes store (retina-codec modes / demo)")
    p.add_argument("--top", type=int, default=20, help="number of modes shown (most often active first)")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.mode_atoms(a.modes, a.out, top=a.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
