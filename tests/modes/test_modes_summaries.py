"""Mode summaries: correlations with classes and rates, k-means of cells by silhouette, activation SAE."""

import numpy as np
import pytest
import torch

from retina_codec.errors import ModesError
from retina_codec.modes.summaries import (
    activation_modes,
    class_correlations,
    cluster_cells,
    loading_correlations,
)


def test_loading_correlations_equal_numpy_pearson_and_nan_for_constant_columns():
    rng = np.random.default_rng(0)
    loadings = rng.random((300, 4))
    loadings[:, 3] = 0.0  # a mode that never fires
    rates = rng.random((300, 5)) + loadings[:, :1]
    r = loading_correlations(loadings, rates)
    assert r.shape == (4, 5)
    full = np.corrcoef(loadings[:, :3].T, rates.T)[:3, 3:]
    np.testing.assert_allclose(r[:3], full, atol=1e-12)
    assert np.isnan(r[3]).all()
    with pytest.raises(ModesError, match=r"targets: expected shape \(300, M\)"):
        loading_correlations(loadings, rates[:10])


def test_class_correlations_find_the_class_a_mode_fires_for():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array(["cat", "dog", "eel"]), size=600)
    loadings = np.zeros((600, 2))
    loadings[labels == "dog", 0] = 1.0 + rng.random((labels == "dog").sum())
    loadings[:, 1] = rng.random(600)
    r, classes = class_correlations(loadings, labels)
    assert list(classes) == ["cat", "dog", "eel"]
    assert classes[np.argmax(r[0])] == "dog" and r[0, 1] > 0.8
    assert np.abs(r[1]).max() < 0.2


def test_kmeans_of_cells_chooses_k_by_silhouette():
    rng = np.random.default_rng(2)
    centres = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 1.0]])
    truth = np.repeat([0, 1, 2], 6)
    profiles = centres[truth] + 0.05 * rng.standard_normal((18, 4))
    out = cluster_cells(profiles)
    assert out.k == 3
    assert max(out.silhouette, key=out.silhouette.get) == 3
    # same grouping up to label names
    for c in range(3):
        assert len(set(out.labels[truth == c])) == 1
    assert len(set(out.labels)) == 3


def test_activation_baseline_trains_the_same_sae_on_spatially_summed_activations():
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    acts = np.maximum(rng.standard_normal((500, 6, 5, 5)), 0).astype(np.float32)
    dec = activation_modes(acts, kind="topk", k=2, n_modes=12, max_epochs=2, quiet=True)
    assert dec.n_features_in_ == 6
    np.testing.assert_allclose(dec.transform(acts.sum(axis=(2, 3)))[:3],
                               dec.transform(acts.reshape(500, 6, -1).sum(-1))[:3])
    flat = activation_modes(acts, reduce=None, kind="topk", k=2, n_modes=12, max_epochs=1, quiet=True)
    assert flat.n_features_in_ == 150
