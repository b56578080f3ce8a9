"""Contribution modes: SAE kinds recover planted atoms, CODEC SAE's code set, metrics, sklearn contract."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from torch import nn

from retina_codec.errors import ModesError
from retina_codec.modes import (
    BatchTopKSAE,
    CodecSAE,
    ModeDecomposer,
    TopKSAE,
    atom_recovery,
    dead_fraction,
    explained_variance,
    firing_counts,
    make_sae,
    mean_l0,
    planted_dictionary,
)
from retina_codec.modes.topk_sae import sparse_decode
from retina_codec.modes.trainer import resolve_device

TORCH_THREADS = 1  # see conftest.py: tiny training runs are fastest on one thread


@pytest.fixture(scope="module")
def planted():
    return planted_dictionary(n_samples=4000, n_features=16, n_atoms=24, n_active=2, seed=0)


# ----------------------------------------------------------------------------------------- metrics
def test_predicting_the_mean_scores_exactly_zero():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 7)).astype(np.float32) * 3 + 10
    assert explained_variance(x, x.mean(axis=0)) == 0.0
    assert explained_variance(x, np.tile(x.mean(axis=0), (500, 1))) == 0.0


def test_explained_variance_is_one_for_perfect_and_negative_for_worse_than_mean():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5))
    assert explained_variance(x, x) == 1.0
    assert explained_variance(x, x.mean(0) + 2.0) < 0.0
    # the per-dimension mean matters: a global scalar mean is not the baseline
    x[:, 0] += 100.0
    assert explained_variance(x, np.full_like(x, x.mean())) < -10


def test_l0_dead_fraction_and_firing_counts_count_nonzero_codes():
    codes = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert mean_l0(codes) == pytest.approx(4 / 3)
    assert mean_l0(torch.from_numpy(codes)) == pytest.approx(4 / 3)
    np.testing.assert_array_equal(firing_counts(codes), [0, 2, 0, 2])
    assert dead_fraction(codes) == 0.5


# ------------------------------------------------------------------------------- planted dictionary
KIND_SETTINGS = {
    "codec": {},
    "topk": {"k": 2, "learning_rate": 3e-3},
    "batchtopk": {"k": 2, "learning_rate": 3e-3},
    "relu": {"learning_rate": 3e-3},
}


@pytest.mark.parametrize("kind", list(KIND_SETTINGS))
def test_every_sae_kind_recovers_planted_atoms(planted, kind):
    dec = ModeDecomposer(kind=kind, quiet=True, random_state=0, **KIND_SETTINGS[kind])
    dec.fit(planted.X)
    assert atom_recovery(planted.atoms, dec.atoms_, min_cosine=0.9) >= 0.9
    assert dec.explained_variance_ > 0.85
    assert dec.atoms_.shape == (dec.n_modes_, 16)
    assert dec.transform(planted.X[:10]).shape == (10, dec.n_modes_)


def test_atom_recovery_fails_for_random_atoms(planted):
    rng = np.random.default_rng(12345)  # not the planting seed: that would draw the planted atoms again
    assert atom_recovery(planted.atoms, rng.standard_normal((200, 16))) < 0.2


# ---------------------------------------------------------------------------------------- CODEC SAE
def test_codec_codes_at_inference_are_zero_or_between_threshold_and_one(planted):
    dec = ModeDecomposer(kind="codec", threshold=0.85, max_epochs=5, quiet=True).fit(planted.X)
    codes = dec.sae_.encode(torch.from_numpy(planted.X / dec.scale_)).detach().numpy()
    assert (codes != 0).any()
    on = codes[codes != 0]
    assert on.min() >= 0.85 and on.max() <= 1.0
    loadings = dec.transform(planted.X)
    assert set(np.unique(loadings[loadings < 0.85])) <= {0.0}


def test_codec_init_lets_some_codes_pass_the_threshold_where_default_init_is_dead():
    torch.manual_seed(0)
    x = torch.randn(4000, 16)
    fixed = CodecSAE(16, 160, threshold=0.9, init_active_fraction=0.02).eval()
    faithful = CodecSAE(16, 160, threshold=0.9, init_active_fraction=None).eval()
    with torch.no_grad():
        active_fixed = float((fixed.encode(x) > 0).float().mean())
        active_faithful = float((faithful.encode(x) > 0).float().mean())
    assert 0.01 < active_fixed < 0.04
    assert active_faithful < 1e-3


def test_faithful_codec_recipe_stays_dead_where_the_default_init_trains(planted):
    # on the CPU in float32: under bf16 on a GPU a couple of codes can cross τ by rounding
    common = {"kind": "codec", "n_modes": 64, "max_epochs": 20, "quiet": True, "random_state": 0, "device": "cpu"}
    faithful = ModeDecomposer(**common, sae_options={"init_active_fraction": None}).fit(planted.X)
    fixed = ModeDecomposer(**common).fit(planted.X)
    assert faithful.n_modes_ == 0 and faithful.explained_variance_ <= 0.0
    assert fixed.n_modes_ > 10 and fixed.explained_variance_ > 0.5


def test_codec_dictionary_has_no_bias_and_loss_includes_atom_l1():
    sae = CodecSAE(8, 20, l1=0.5)
    assert torch.equal(sae.bias(), torch.zeros(8))
    x = torch.randn(32, 8)
    step = sae.training_loss(x, 0.0)
    expected = (step.recon - x).pow(2).mean() + 0.5 * sae.dictionary.abs().mean()
    assert float(step.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


# ----------------------------------------------------------------------------------- TopK kinds
def test_sparse_decode_matches_dense_matmul():
    torch.manual_seed(0)
    w = torch.randn(50, 12)
    idx = torch.randint(0, 50, (9, 4))
    vals = torch.rand(9, 4)
    dense = torch.zeros(9, 50).scatter_add_(1, idx, vals)
    torch.testing.assert_close(sparse_decode(idx, vals, w), dense @ w)


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_sparse_encoder_gradients_equal_dense_ones(cls):
    torch.manual_seed(0)
    x = torch.randn(64, 12)
    grads = []
    for sparse in (True, False):
        torch.manual_seed(1)
        sae = cls(12, 40, k=3, sparse_encoder=sparse, dead_after=10)
        sae.training_loss(x, 0.0)  # first call marks latents; second one has dead latents for AuxK
        sae.zero_grad()
        sae.training_loss(x, 0.0).loss.backward()
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_topk_keeps_exactly_k_codes_per_sample(planted):
    dec = ModeDecomposer(kind="topk", k=3, max_epochs=3, quiet=True).fit(planted.X)
    codes = dec.sae_.encode(torch.from_numpy(planted.X / dec.scale_))
    assert ((codes > 0).sum(1) <= 3).all()
    assert dec.l0_ <= 3.0


def test_batchtopk_inference_threshold_gives_about_k_codes(planted):
    dec = ModeDecomposer(kind="batchtopk", k=2, learning_rate=3e-3, max_epochs=30, quiet=True).fit(planted.X)
    assert np.isfinite(float(dec.sae_.theta))
    assert 1.0 <= dec.l0_ <= 4.0


# ---------------------------------------------------------------------------- sklearn contract
def test_init_stores_hyper_parameters_unchanged_and_clone_works():
    opts = {"init_active_fraction": 0.05}
    dec = ModeDecomposer(kind="topk", n_modes=33, k=4, sae_options=opts, random_state=7)
    params = dec.get_params()
    assert params["n_modes"] == 33 and params["k"] == 4 and params["sae_options"] is opts
    assert clone(dec).get_params()["random_state"] == 7
    assert not hasattr(dec, "atoms_")


def test_fit_returns_self_and_sets_learned_attributes(planted):
    dec = ModeDecomposer(kind="codec", n_modes=40, max_epochs=4, quiet=True)
    assert dec.fit(planted.X) is dec
    for name in ("atoms_", "intercept_", "alive_", "mean_", "scale_", "explained_variance_", "l0_",
                 "dead_fraction_", "n_iter_", "n_modes_", "n_features_in_"):
        assert hasattr(dec, name), name
    assert dec.alive_.shape == (40,)
    assert dec.dead_fraction_ == pytest.approx(1 - dec.n_modes_ / 40)
    assert 1 <= dec.n_iter_ <= 4


def test_dead_atoms_are_dropped_and_every_mode_fires(planted):
    dec = ModeDecomposer(kind="topk", k=1, n_modes=256, max_epochs=2, quiet=True).fit(planted.X)
    loadings = dec.transform(planted.X)
    assert 0 < dec.n_modes_ < 256
    assert loadings.shape[1] == dec.atoms_.shape[0] == dec.n_modes_
    assert (np.abs(loadings).sum(axis=0) > 0).all()


def test_reconstruction_is_loadings_times_atoms_plus_intercept_in_input_units(planted):
    x = planted.X * 5.0 + 3.0
    dec = ModeDecomposer(kind="topk", k=2, center=True, max_epochs=20, learning_rate=3e-3,
                         quiet=True).fit(x)
    np.testing.assert_allclose(dec.mean_, x.mean(0), atol=0.05)  # mean of the training split
    recon = dec.inverse_transform(dec.transform(x))
    with torch.no_grad():
        ref, _ = dec.sae_(torch.from_numpy((x - dec.mean_) / dec.scale_))
    np.testing.assert_allclose(recon, ref.numpy() * dec.scale_ + dec.mean_, rtol=1e-4, atol=1e-3)
    assert dec.score(x) == pytest.approx(explained_variance(x, recon), abs=1e-6)


def test_scaling_by_one_global_std_is_learned_in_fit_and_applied_in_transform(planted):
    dec = ModeDecomposer(kind="topk", k=2, max_epochs=2, quiet=True).fit(planted.X)
    dec10 = ModeDecomposer(kind="topk", k=2, max_epochs=2, quiet=True).fit(planted.X * 10)
    assert dec10.scale_ == pytest.approx(10 * dec.scale_, rel=1e-5)
    # loadings are dimensionless (codes of the scaled data); the atoms carry the input units
    np.testing.assert_allclose(dec10.transform(planted.X * 10), dec.transform(planted.X), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dec10.atoms_, 10 * dec.atoms_, rtol=1e-3, atol=1e-4)


def test_same_seed_gives_identical_atoms_and_another_seed_differs(planted):
    a = ModeDecomposer(kind="codec", n_modes=48, max_epochs=3, quiet=True, random_state=3).fit(planted.X)
    b = ModeDecomposer(kind="codec", n_modes=48, max_epochs=3, quiet=True, random_state=3).fit(planted.X)
    c = ModeDecomposer(kind="codec", n_modes=48, max_epochs=3, quiet=True, random_state=4).fit(planted.X)
    np.testing.assert_array_equal(a.atoms_, b.atoms_)
    assert a.atoms_.shape != c.atoms_.shape or not np.array_equal(a.atoms_, c.atoms_)


def test_early_stopping_stops_before_max_epochs_and_keeps_the_best_state(planted):
    dec = ModeDecomposer(kind="relu", max_epochs=500, patience=3, learning_rate=1e-2, quiet=True)
    dec.fit(planted.X)
    hist = dec.history_
    assert hist.stopped_early and dec.n_iter_ < 500
    assert min(hist.val_mse) == pytest.approx(hist.val_mse[hist.best_epoch])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros(10), r"X: expected a 2-D array of shape \(n_samples, n_features\); found 1-D"),
        (np.zeros((1, 4)), r"X: expected at least 2 samples"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), r"X: expected finite values"),
    ],
)
def test_fit_validates_input_with_messages_naming_argument_and_shape(bad, match):
    with pytest.raises(ModesError, match=match):
        ModeDecomposer(quiet=True).fit(bad)


def test_transform_checks_width_and_fitted_state(planted):
    with pytest.raises(NotFittedError):
        ModeDecomposer().transform(planted.X)
    dec = ModeDecomposer(kind="topk", k=2, max_epochs=1, quiet=True).fit(planted.X)
    with pytest.raises(ModesError, match=r"X: expected shape \(n_samples, 16\) as in fit; found \(3, 5\)"):
        dec.transform(np.zeros((3, 5)))
    with pytest.raises(ModesError, match="kind"):
        ModeDecomposer(kind="pca").fit(planted.X)


# ------------------------------------------------------------------------------- CODEC SAE (§6)
def test_codec_encoder_is_linear_dropout_relu_layernorm_twice_then_biasless_linear_and_xavier_dictionary():
    torch.manual_seed(0)
    sae = CodecSAE(16, 160, hidden_size=48)
    kinds = [type(m) for m in sae.encoder]
    block = [nn.Linear, nn.Dropout, nn.ReLU, nn.LayerNorm]
    assert kinds == block + block + [nn.Linear]
    assert [m.p for m in sae.encoder if isinstance(m, nn.Dropout)] == [0.05, 0.05]
    assert [(m.in_features, m.out_features) for m in sae.encoder if isinstance(m, nn.Linear)] == \
        [(16, 48), (48, 48), (48, 160)]
    assert sae.encoder[-1].bias is None
    assert sae.dictionary.shape == (160, 16) and torch.equal(sae.bias(), torch.zeros(16))
    bound = np.sqrt(6.0 / (16 + 160))  # xavier_uniform_: U(-b, b)
    assert float(sae.dictionary.detach().abs().max()) <= bound
    assert float(sae.dictionary.detach().std()) == pytest.approx(bound / np.sqrt(3), rel=0.05)


def test_faithful_codec_options_named_in_the_decomposer_docstring_are_accepted():
    doc = ModeDecomposer.__doc__
    m = re.search(r"sae_options : .*?``(\{.*?\})``", doc, re.S)
    assert m, "the docstring gives an example of sae_options"
    opts = ast.literal_eval(m.group(1))
    CodecSAE(8, 16, **opts)  # raised TypeError for the former example {"gate": "detached"}


# ------------------------------------------------------------------------------ settings errors
@pytest.mark.parametrize(("kind", "kw", "match"), [
    ("topk", {"k": 8}, r"topk SAE settings .*n_latents=4.*k must lie in \[1, n_latents=4\]; got 8"),
    ("codec", {"threshold": 1.5}, r"codec SAE settings .*threshold must lie in \(0, 1\); got 1.5"),
    ("relu", {"bogus": 1}, r"relu SAE settings .*bogus"),
])
def test_invalid_sae_settings_raise_one_modes_error(kind, kw, match):
    with pytest.raises(ModesError, match=match):
        make_sae(kind, 8, 4, **kw)


def test_cuda_requested_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModesError, match=r"device: 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ModesError, match=r"device: expected 'auto', 'cpu' or 'cuda\[:N\]'; found 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_explained_variance_names_the_shapes_of_a_mismatched_reconstruction():
    x = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"x_hat: expected shape \(5, 4\) .* found \(5, 3\)"):
        explained_variance(x, np.zeros((5, 3)))


def test_modes_decomposer_refuses_zero_epochs():
    from retina_codec.modes import ModeDecomposer

    with pytest.raises(ModesError, match="max_epochs: expected a positive integer"):
        ModeDecomposer(kind="relu", n_modes=3, max_epochs=0, quiet=True).fit(np.ones((20, 4)))
