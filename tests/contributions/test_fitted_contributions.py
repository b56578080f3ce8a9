"""Contributions on the shipped fitted retina model: completeness with 20 trapezoid steps (issue 4).

Completeness: summed over a layer that cuts every path (each conv block does), the contributions equal
F(x) − F(0) up to the path-integral rule's error. Measured on this model (48 held-out bins, 20 steps): the
aggregate error Σ|err| / Σ|ΔF| is 0.33 % (conv1) and 0.20 % (conv2) for the population-surprisal target,
0.22 % / 0.01 % for the sum of rates, 0.9 % / 0.00 % for one cell. Single bins whose ΔF is close to 0 can
exceed 1 % of their own ΔF (up to ~9 %), so the per-bin check uses the median.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from retina_codec.contributions import contributions
from retina_codec.models import load_model
from retina_codec.sim import simulate_retina

SHIPPED = Path(__file__).resolve().parents[2] / "retina_codec" / "shipped" / "bncnn-sim-default"


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = load_model(SHIPPED)
    rec = simulate_retina("small", seed=3, quiet=True)[0]  # natural scenes the model has not seen
    mean, std = model.norm_stats

    def windows(bins):
        batch = next(rec.iter_windows(bins=bins, history=40, batch_size=len(bins), normalize=False))
        return (torch.from_numpy(np.array(batch.stimulus)) - mean) / std

    test_bins = rec.window_bins("test", model.input_spec.history)
    return model, windows(test_bins[::10][:48]), windows(test_bins)


@pytest.mark.parametrize("target, bound", [("surprisal", 0.01), ("sum", 0.01), (0, 0.02)])
def test_completeness_error_with_20_trapezoid_steps_on_the_fitted_model(fitted, target, bound):
    model, x, reference = fitted
    res = contributions(model, x, ["conv1", "conv2"], target=target, steps=20, rule="trapezoid", quiet=True,
                        reference=reference if target == "surprisal" else None)
    delta = res.f_x - res.f_baseline
    for layer in ("conv1", "conv2"):
        err = np.abs(res.completeness[layer])
        assert err.sum() < bound * np.abs(delta).sum(), (layer, err.sum() / np.abs(delta).sum())
        assert np.median(err / np.abs(delta)) < bound, layer
        # the reported error is exactly what the stored contributions give
        np.testing.assert_allclose(res[layer].sum(-1), delta + res.completeness[layer], rtol=1e-4, atol=1e-5)
