"""Progress bars that every long loop uses, silenced with ``quiet=True`` or ``RETINA_CODEC_QUIET=1``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress", "is_quiet"]


def is_quiet(quiet: bool | None = None) -> bool:
    """True when progress output is off (argument wins; else the environment variable)."""
    if quiet is not None:
        return bool(quiet)
    return os.environ.get("RETINA_CODEC_QUIET", "") not in ("", "0")


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
             quiet: bool | None = None, unit: str = "it", **kw: Any) -> tqdm:
    """A tqdm bar (disabled when quiet)."""
    return tqdm(iterable, desc=desc, total=total, disable=is_quiet(quiet), unit=unit, leave=False,
                dynamic_ncols=True, **kw)
