"""Shared test set-up."""

import sys
from pathlib import Path

import pytest
import torch

# Tests sit in one folder per package; the helpers (``_*.py``) stay here in tests/ (on sys.path as this file's
# folder), and two test modules that others import from lie in package folders: test_tdr_import (imported by
# _model_helpers) and test_modes_store (write_store). Put those folders on the path too, so that any subset runs.
_TESTS = Path(__file__).resolve().parent
for _folder in (_TESTS, _TESTS / "models", _TESTS / "modes"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


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
