"""The one rule that turns a cell asked for (by id or by index) into a column of the responses.

Every place that selects cells uses it: :meth:`Recording.select_cells`, ``spike_triggered_average(cells=...)``
and the other ``rf`` functions, ``retina-codec rf --cells``, the demo's ``--rf-cells`` and the report's
figures. The rule (:data:`CELL_RULE`):

1. a string that is one of the cell ids selects that cell (an id match wins: lab and ROI ids are often
   digits, ``"0"``, ``"3"``);
2. otherwise an integer, or a string of digits, is an index into the cells (``0 <= i < n``; negative indices
   count from the end only where a caller allows them);
3. anything else is an :class:`~retina_codec.errors.UnknownCellError` listing the ids and the index range.

So ``rf --cells 3`` and ``spike_triggered_average(cells=["3"])`` select the same cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import UnknownCellError

__all__ = ["CELL_RULE", "cell_index", "resolve_cells"]

CELL_RULE = ("a string equal to a cell id selects that cell (an id match wins); otherwise an integer or a "
             "string of digits is an index in [0, n); anything else is an UnknownCellError listing the ids "
             "and the index range")


def cell_index(cell: int | str, ids: Sequence[str], n: int | None = None,
               allow_negative: bool = False) -> int | None:
    """Index of ``cell`` among ``n`` cells (default ``len(ids)``) whose ids are ``ids``, by :data:`CELL_RULE`
    (``-1`` = last with ``allow_negative``). ``None`` when it selects no cell, so a caller can raise the
    error its users need; :func:`resolve_cells` raises the standard one."""
    n = len(ids) if n is None else n
    text = str(cell)
    if isinstance(cell, str) and cell in ids:
        return list(ids).index(cell)
    if isinstance(cell, (int, np.integer)) or text.lstrip("-").isdigit():
        i = int(text)
        if 0 <= i < n:
            return i
        if allow_negative and -n <= i < 0:
            return i % n
    return None


def resolve_cells(cells: Iterable[int | str], ids: Sequence[str], n: int | None = None, *, what: str = "cells",
                  allow_negative: bool = False) -> list[int]:
    """Column indices of ``cells`` (ids or indices, :data:`CELL_RULE`) among ``n`` cells (default
    ``len(ids)``) with ids ``ids``. A cell that selects none is an :class:`UnknownCellError`
    ``"<what>: 'x' is neither a cell id nor an index in [0, n) of the recording; its cells are [...]"``."""
    ids = [str(c) for c in ids]
    n = len(ids) if n is None else n
    out = []
    for c in cells:
        i = cell_index(c, ids, n, allow_negative=allow_negative)
        if i is None:
            raise UnknownCellError(f"{what}: {c!r} is neither a cell id nor an index in [0, {n}) of the "
                                   f"recording; its cells are {ids}")
        out.append(i)
    return out
