"""Thread limits for the demo's small-operation stages.

Multi-threaded OpenBLAS (numpy's) and OpenMP (torch's) pools busy-wait for their workers; when the cores
are shared with other processes, code made of many small operations slows down by one to two orders of
magnitude (measured on 2 shared cores: 48 SVDs of 20 × 2500 in 25 s instead of 0.25 s; a CODEC-SAE fit on
3000 × 16 in 65 s instead of 4 s). The demo's numpy linear algebra and its SAEs gain nothing from threads,
so they run on one; the convolution-heavy stages keep torch's threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["numpy_blas_single_thread", "torch_threads"]


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (the previous number is restored afterwards)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)
