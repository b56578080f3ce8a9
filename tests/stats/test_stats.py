"""Known answers of the §8 statistics: Hoyer sparsity, class-mean dimensionality, participation ratio,
E/I correlation."""

from __future__ import annotations

import numpy as np
import pytest

from retina_codec.stats import (
    class_mean_dimensionality,
    ei_correlation,
    hoyer_sparsity,
    layer_statistics,
    n_components,
    net_channels,
    participation_ratio,
    pca_spectrum,
)


def test_hoyer_is_one_for_one_hot_zero_for_flat_and_matches_formula():
    v = np.array([[0, 0, 5.0, 0], [1, -1, 1, -1], [3, 1, 0, 2]])
    h = hoyer_sparsity(v)
    assert h[0] == pytest.approx(1.0)
    assert h[1] == pytest.approx(0.0, abs=1e-12)
    d = 4
    a = np.abs(v[2])
    expected = (np.sqrt(d) - a.sum() / np.sqrt((a**2).sum())) / (np.sqrt(d) - 1)
    assert h[2] == pytest.approx(expected)


def test_hoyer_is_nan_for_zero_rows_and_scale_invariant():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 12))
    np.testing.assert_allclose(hoyer_sparsity(v), hoyer_sparsity(7.5 * v))
    assert np.isnan(hoyer_sparsity(np.zeros((1, 4)))[0])


def test_dimensionality_counts_the_planted_rank_of_class_means():
    rng = np.random.default_rng(1)
    d, n_classes, rank = 40, 12, 3
    basis = rng.normal(size=(rank, d))
    means = rng.normal(size=(n_classes, rank)) @ basis
    labels = np.repeat(np.arange(n_classes), 30)
    x = means[labels] + 1e-6 * rng.normal(size=(labels.size, d))
    dim = class_mean_dimensionality(x, labels)
    assert dim["n_pcs"] <= rank
    assert dim["n_classes"] == n_classes
    assert 1.0 <= dim["participation_ratio"] <= rank + 1e-6


def test_n_components_and_participation_ratio_known_spectra():
    assert n_components(np.array([1.0, 1.0, 1.0, 1.0]), 0.95) == 4
    assert n_components(np.array([96.0, 3.0, 1.0]), 0.95) == 1
    assert n_components(np.array([90.0, 6.0, 4.0]), 0.95) == 2
    assert participation_ratio(np.array([2.0, 2.0, 2.0])) == pytest.approx(3.0)
    assert participation_ratio(np.array([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    x = np.diag([3.0, 2.0, 1.0]) @ np.random.default_rng(2).normal(size=(3, 500))
    lam = pca_spectrum(x.T)
    assert lam.shape == (3,) and np.all(np.diff(lam) <= 0)


def test_ei_correlation_is_plus_one_when_channels_push_both_ways_in_proportion():
    pos = np.array([[1.0, 2.0, 3.0, 4.0]])
    split = np.concatenate([-0.5 * pos, pos], axis=1)  # C- proportional to -C+
    assert ei_correlation(split)[0] == pytest.approx(1.0)


def test_ei_correlation_near_zero_for_independent_halves_and_nan_for_one_signed():
    rng = np.random.default_rng(3)
    neg = -np.abs(rng.normal(size=(200, 500)))
    pos = np.abs(rng.normal(size=(200, 500)))
    r = ei_correlation(np.concatenate([neg, pos], axis=1))
    assert abs(float(np.mean(r))) < 0.02
    relu_like = np.concatenate([np.zeros((2, 5)), np.abs(rng.normal(size=(2, 5)))], axis=1)
    assert np.isnan(ei_correlation(relu_like)).all()


def test_ei_correlation_negative_when_each_channel_is_purely_excitatory_or_inhibitory():
    # half the channels only excite, the others only inhibit: C+ large exactly where C- is 0
    pos = np.array([[1.0, 1.0, 0.0, 0.0]])
    neg = np.array([[0.0, 0.0, -1.0, -1.0]])
    assert ei_correlation(np.concatenate([neg, pos], axis=1))[0] == pytest.approx(-1.0)


def test_layer_statistics_uses_net_channels_for_sparsity_and_split_for_ei():
    rng = np.random.default_rng(4)
    c = rng.normal(size=(60, 6))
    split = np.concatenate([np.minimum(c, 0), np.maximum(c, 0)], axis=1)
    act = np.concatenate([np.zeros_like(c), np.abs(c)], axis=1)
    labels = np.repeat(np.arange(3), 20)
    st = layer_statistics(split, act, labels, "L")
    np.testing.assert_allclose(net_channels(split), c)
    np.testing.assert_allclose(st.hoyer_contrib, hoyer_sparsity(c))
    np.testing.assert_allclose(st.hoyer_act, hoyer_sparsity(np.abs(c)))  # same magnitudes, same Hoyer
    assert np.isnan(st.ei_act).all()
    s = st.summary()
    assert s["n_channels"] == 6 and s["n_pcs_contrib"] <= 2


def test_bad_shapes_are_rejected_with_the_expected_shape_named():
    with pytest.raises(ValueError, match="even number"):
        ei_correlation(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels"):
        class_mean_dimensionality(np.zeros((4, 2)), [0, 1])


def test_sparsity_verdict_names_the_layers_where_contributions_are_not_sparser():
    from retina_codec.stats import layer_statistics, sparsity_verdict

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    dense = np.abs(rng.normal(size=(60, 8))) + 1.0
    sparse = np.where(rng.random((60, 8)) < 0.15, dense, 0.0)
    split = lambda net: np.concatenate([np.zeros_like(net), net], axis=1)  # noqa: E731 (E/I split, all positive)
    a = layer_statistics(split(sparse), split(dense), labels, "a")  # contributions sparser
    b = layer_statistics(split(dense), split(sparse), labels, "b")  # activations sparser
    text = sparsity_verdict([a, b])
    assert "at 1 of 2 layers: a (" in text
    assert "NOT sparser at: b (" in text


def test_statistics_equal_direct_numpy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 9))
    direct = (3 - np.abs(v).sum(1) / np.linalg.norm(v, axis=1)) / 2
    np.testing.assert_allclose(hoyer_sparsity(v), direct, atol=1e-12)
    x = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    y = rng.integers(0, 30, 300)
    means = np.stack([x[y == c].mean(0) for c in np.unique(y)])
    lam = np.linalg.eigvalsh(np.cov(means.T))[::-1]
    dim = class_mean_dimensionality(x, y)
    assert dim["n_pcs"] == int(np.argmax(np.cumsum(lam) / lam.sum() >= 0.95) + 1)
    assert dim["participation_ratio"] == pytest.approx(lam.sum() ** 2 / np.square(lam).sum())
    s = rng.normal(size=(5, 16))
    neg, pos = np.minimum(s[:, :8], 0), np.maximum(s[:, 8:], 0)
    ref = [-np.corrcoef(pos[i], neg[i])[0, 1] for i in range(5)]
    np.testing.assert_allclose(ei_correlation(np.c_[neg, pos]), ref, atol=1e-12)
