"""Shared test set-up."""

import sys
from pathlib import Path

import pytest
import torch

# Tests sit in one folder per package; the shared helpers (``_*.py``) stay here in tests/, which goes on
# sys.path so that any subset of folders runs.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(scope="module", autouse=True)
def _module_torch_threads(request):
    """A test module that sets ``TORCH_THREADS = n`` runs with n torch threads (restored afterwards).

    Small SAE / CNN training on tiny batches is fastest, and reproducible, on one thread.
    """
    n = getattr(request.module, "TORCH_THREADS", None)
    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    yield
    torch.set_num_threads(prev)
