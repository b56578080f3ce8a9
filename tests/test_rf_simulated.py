"""Acceptance checks on the simulated retina: the LN cell's white-noise STA recovers its true filter;
on a fitted model, the ON–OFF cell's mode-conditioned RFs have opposite polarity for ON and OFF modes."""

from pathlib import Path

import numpy as np
import pytest

from retina_codec.rf.decompose import denoise_rank1
from retina_codec.rf.sta import spike_triggered_average

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def whitenoise():
    from retina_codec.sim import simulate_retina

    return simulate_retina(preset="small", seed=0, quiet=True)[1]


@pytest.mark.slow
def test_ln_cell_white_noise_sta_correlates_with_its_true_filter(whitenoise):
    gt = whitenoise.ground_truth
    h = gt.ln_filters.shape[1]
    res = spike_triggered_average(whitenoise, cells=list(gt.ln_cells), history=h, quiet=True)
    for i in range(len(gt.ln_cells)):
        # the raw STA over all 40×50×50 values is mostly noise on empty pixels; its rank-1 core within
        # ±4 px of its own peak (zero elsewhere) is compared with the whole true filter
        est = denoise_rank1(res.sta[i], radius=4)
        r = np.corrcoef(est.ravel(), gt.ln_filters[i].ravel())[0, 1]
        assert r >= 0.95, f"LN cell {gt.ln_cells[i]}: r = {r:.3f}"


def _shipped_simulated_model():
    for path in sorted(MODELS.glob("**/*.safetensors")) if MODELS.is_dir() else []:
        if "sim" in path.name.lower() or "sim" in path.parent.name.lower():
            return path
    return None


@pytest.mark.slow
def test_on_off_cell_conditioned_rfs_have_opposite_polarity_for_on_and_off_modes():
    path = _shipped_simulated_model()
    modes = sorted(MODELS.glob("**/*sim*modes*.h5")) if MODELS.is_dir() else []
    if path is None or not modes:
        pytest.skip(f"needs a fitted simulated-retina model and its contribution modes shipped under {MODELS} "
                    f"(found model: {path}, modes files: {[str(m) for m in modes]}); fit and ship them "
                    "(`retina-codec fit`, `retina-codec modes`) to run this acceptance check")
    pytest.skip(f"model {path.name} and modes {modes[0].name} found, but the ON/OFF-pathway labelling of "
                "modes is not wired up yet (see the rf issue report)")
