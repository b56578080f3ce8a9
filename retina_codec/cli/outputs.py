"""Output files of the sub-commands: an existing result is never replaced unless the user says so."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OutputExistsError

__all__ = ["add_overwrite_argument", "check_output"]


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "--out") -> None:
    """``--overwrite``: replace an existing ``what``."""
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def check_output(path: str | Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` (one line, exit 2 on the CLI) when ``path`` exists and may not be replaced.

    Called before any work, so a finished store (hours of contributions) is never recomputed by a repeated
    command by accident; an interrupted run resumes from its ``.partial`` file, which is not ``path``.
    """
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists already (pass --overwrite to replace it)")
