#!/usr/bin/env python
"""Predicted vs true rate and spikes over the start of the test split, one cell per type (fit.h5).

Usage: python figures/rate_traces.py FIT.h5 --out fig.png [--stimulus naturalscene] [--seconds 6]
"""

from __future__ import annotations

import argparse

from retina_codec.report import figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fit", help="fit.h5 written by retina-codec demo")
    p.add_argument("--stimulus", default="naturalscene", help="naturalscene or whitenoise")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds of the test split to show")
    p.add_argument("--out", required=True, help="PNG file to write")
    a = p.parse_args(argv)
    print(figures.fit_traces(a.fit, a.out, stimulus=a.stimulus, seconds=a.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
