"""Options several sub-commands share (their flags and help read the same everywhere), and the output check.

An existing result is never replaced unless the user says so (``--overwrite``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OutputExistsError

__all__ = ["add_overwrite_argument", "add_responses_argument", "add_session_argument", "add_trust_argument",
           "check_output"]


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "--out") -> None:
    """``--overwrite``: replace an existing ``what``."""
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def add_responses_argument(p: argparse.ArgumentParser, when: str = "") -> None:
    """``--responses``: which response series of an NWB file (``when``: a prefix such as ``"with --nwb: "``)."""
    p.add_argument("--responses", default=None,
                   help=f"{when}'units' or the name of a rate series, when the NWB file has several "
                        "(default: automatic)")


def add_trust_argument(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """``--trust``: allow a torch-deep-retina pickle or openretina checkpoint that needs types (or Hydra targets)
    outside the safe set."""
    p.add_argument("--trust", action="store_true",
                   help=f"allow a torch-deep-retina pickle or openretina .ckpt as {what} that needs types or "
                        "Hydra targets outside the safe set (it can run code: only for a file from a source you "
                        "trust)")


def add_session_argument(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """``--session NAME``: which recording session (readout) of a multi-session openretina checkpoint."""
    p.add_argument("--session", default=None, metavar="NAME",
                   help=f"the recording session (readout) of {what} when it is an openretina .ckpt with several "
                        "sessions ('retina-codec inspect MODEL.ckpt' lists them)")


def check_output(path: str | Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` (one line, exit 2 on the CLI) when ``path`` exists and may not be replaced.

    Called before any work, so a finished store (hours of contributions) is never recomputed by a repeated
    command by accident; an interrupted run resumes from its ``.partial`` file, which is not ``path``.
    """
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists already (pass --overwrite to replace it)")
