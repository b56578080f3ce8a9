"""Keep numpy's own OpenBLAS on one thread while the demo and the report run.

The demo's numpy linear algebra is small (rank-1 SVDs of RF stacks, regressions of a few modes) and gains
nothing from threads, but a multi-threaded OpenBLAS that busy-waits for its workers becomes ~100× slower
when the cores are shared with other processes (measured: 25 s instead of 0.25 s for 48 SVDs of 20 × 2500).
torch's own thread pools are not affected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["numpy_blas_single_thread"]


@contextlib.contextmanager
def numpy_blas_single_thread() -> Iterator[None]:
    """Limit every OpenBLAS loaded in the process (numpy's, scipy's) to one thread inside the block."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, change nothing
        yield
        return
    with ThreadpoolController().select(internal_api="openblas").limit(limits=1):
        yield
