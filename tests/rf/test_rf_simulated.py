"""Acceptance checks on the simulated retina: the LN cell's white-noise STA recovers its true filter;
on a fitted model, the ON–OFF cell's mode-conditioned RFs have opposite polarity for ON and OFF modes."""

from pathlib import Path

import numpy as np
import pytest

from retina_codec.rf.decompose import denoise_rank1
from retina_codec.rf.sta import spike_triggered_average

MODELS = Path(__file__).resolve().parents[2] / "retina_codec" / "shipped"


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


SHIPPED = MODELS / "bncnn-sim-default"


@pytest.mark.slow
def test_on_off_cell_conditioned_rfs_have_opposite_polarity_for_on_and_off_modes():
    """CODEC Fig. 8 on the simulated retina: the shipped fitted model's ON–OFF cells, conditioned on the
    contribution mode that drives the ON cells most (vs the OFF cells), have an ON centre; conditioned on the
    OFF-pathway mode, an OFF centre."""
    import torch

    from retina_codec.contributions import contributions
    from retina_codec.models import load_model
    from retina_codec.modes import ModeDecomposer
    from retina_codec.modes.summaries import loading_correlations
    from retina_codec.rf.conditioned import mode_conditioned_rfs
    from retina_codec.sim import simulate_retina

    torch.manual_seed(0)
    model = load_model(SHIPPED)
    rec = simulate_retina("small", seed=0, quiet=True)[0]  # the same retina as the default preset, seed 0
    gt = rec.ground_truth
    types = np.asarray(gt.cell_types)
    on, off, onoff = (np.flatnonzero(types == t) for t in ("ON", "OFF", "ON-OFF"))
    bins = rec.window_bins("test", model.input_spec.history)
    batch = next(rec.iter_windows(bins=bins, history=model.input_spec.history, batch_size=len(bins),
                                  normalize=False))
    mean, std = model.norm_stats
    x = (torch.from_numpy(np.array(batch.stimulus)) - mean) / std
    with torch.no_grad():
        rates = model(x).numpy()
    layer = model.hidden_layers[-1]
    res = contributions(model, x, [layer], target="surprisal", quiet=True)
    loadings = ModeDecomposer(kind="codec", random_state=0, quiet=True).fit_transform(res[layer])
    r = loading_correlations(loadings, rates)  # (modes, cells)
    pathway = np.nan_to_num(r[:, on].mean(1) - r[:, off].mean(1))
    on_mode, off_mode = int(np.argmax(pathway)), int(np.argmin(pathway))
    assert pathway[on_mode] > 0.3 and pathway[off_mode] < -0.3, pathway
    cond, _ = mode_conditioned_rfs(model, rec, loadings[:, [on_mode, off_mode]], bins, cells=list(onoff),
                                   keep="rank1", sources=False, quiet=True)
    for j, c in enumerate(onoff):
        cy, cx = np.round(gt.cell_centers[c]).astype(int)
        centre_on = cond.mode_spatial[0, j][cy - 1 : cy + 2, cx - 1 : cx + 2].mean()
        centre_off = cond.mode_spatial[1, j][cy - 1 : cy + 2, cx - 1 : cx + 2].mean()
        assert centre_on > 0 > centre_off, (rec.cell_ids[c], centre_on, centre_off)
