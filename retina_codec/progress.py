"""Progress bars that every long loop uses, and the one rule that silences them.

A bar is off when the call says ``quiet=True``; a call that says nothing (``quiet=None``) follows the
innermost :func:`quiet_scope` block (the CLI's ``-q`` and the demo open one), else the
``RETINA_CODEC_QUIET`` environment variable. So ``quiet`` is decided once, at the entry point, and is not
threaded through every function in between.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress", "is_quiet", "quiet_scope"]

_SCOPES: list[bool] = []  # a plain stack, not a context variable: worker threads see it too


@contextlib.contextmanager
def quiet_scope(quiet: bool | None = True) -> Iterator[None]:
    """Within the block, progress bars whose call gives no ``quiet`` are off (``quiet=True``) or on
    (``False``); ``None`` leaves the rule as it is."""
    if quiet is None:
        yield
        return
    _SCOPES.append(bool(quiet))
    try:
        yield
    finally:
        _SCOPES.pop()


def is_quiet(quiet: bool | None = None) -> bool:
    """True when progress output is off: the argument wins, then the innermost :func:`quiet_scope`, then the
    ``RETINA_CODEC_QUIET`` environment variable (set and not ``0``)."""
    if quiet is not None:
        return bool(quiet)
    if _SCOPES:
        return _SCOPES[-1]
    return os.environ.get("RETINA_CODEC_QUIET", "") not in ("", "0")


def progress(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
             quiet: bool | None = None, unit: str = "it", **kw: Any) -> tqdm:
    """A tqdm bar (disabled when :func:`is_quiet`)."""
    return tqdm(iterable, desc=desc, total=total, disable=is_quiet(quiet), unit=unit, leave=False,
                dynamic_ncols=True, **kw)
