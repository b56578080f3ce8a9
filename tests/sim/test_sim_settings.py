"""Simulator settings: no LN cells, and an LN history too short for the kernels."""

from __future__ import annotations

import numpy as np
import pytest

from retina_codec.sim import resolve_params, simulate_retina

TINY = {"natural_duration_s": 2.0, "whitenoise_duration_s": 2.0, "calibration_duration_s": 1.0}


# ---- simulator settings ----------------------------------------------------------------------------------------
def test_simulator_without_ln_cells_runs_and_has_empty_ln_ground_truth():
    nat, wn = simulate_retina("small", seed=3, quiet=True, n_ln=0, **TINY)
    for rec in (nat, wn):
        gt = rec.ground_truth
        assert "LN" not in set(gt.cell_types) and gt.ln_cells.shape == (0,)
        assert gt.ln_filters.shape[0] == 0 and np.isfinite(rec.responses).all()


def test_ln_history_too_short_for_the_kernels_is_refused_before_simulating():
    with pytest.raises(ValueError, match="ln_history"):
        resolve_params("small", ln_history=20)
