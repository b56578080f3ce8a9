"""Simulate the retina and write both recordings to one NWB file: what ``retina-codec simulate`` runs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..recordings.nwb import write_nwb
from .simulate import simulate_retina

__all__ = ["SimulatedNWB", "simulate_to_nwb"]


@dataclass
class SimulatedNWB:
    """The file written by :func:`simulate_to_nwb`, a description of its recordings and the wall times (s)."""

    path: Path
    recordings: list[str]
    simulate_s: float
    write_s: float


def simulate_to_nwb(out: str | os.PathLike, preset: str = "default", seed: int = 0, *, overwrite: bool = False,
                    quiet: bool | None = None) -> SimulatedNWB:
    """Simulate the retina of ``preset`` with ``seed`` (natural scenes, then white noise) and write both
    recordings to the NWB file ``out`` (atomically)."""
    t0 = time.perf_counter()
    recs = simulate_retina(preset=preset, seed=seed, quiet=quiet)
    t1 = time.perf_counter()
    path = write_nwb(recs, out, overwrite=overwrite)
    return SimulatedNWB(path, [repr(r) for r in recs], t1 - t0, time.perf_counter() - t1)
