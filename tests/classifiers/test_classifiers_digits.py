"""The digits CNN end to end: training, the shipped checkpoint, statistics, class-mode ablations, masks, CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from retina_codec.classifiers import (
    adapt_classifier,
    channel_chain_masks,
    class_mode_sweeps,
    default_digits_path,
    evaluate_accuracy,
    fit_layer_modes,
    load_classifier,
    load_digits_cnn,
    load_digits_data,
    save_digits_cnn,
    selectivity_summary,
    train_digits_cnn,
)
from retina_codec.cli.main import main
from retina_codec.errors import CheckpointError
from retina_codec.stats import layer_vectors, net_channels, statistics_table

TORCH_THREADS = 1  # see conftest.py: tiny training runs are fastest on one thread


@pytest.fixture(scope="module")
def data():
    return load_digits_data(seed=0)


@pytest.fixture(scope="module")
def cnn(data):
    """Trained in the set-up (a few seconds on one CPU thread)."""
    return adapt_classifier(train_digits_cnn(data, epochs=8, seed=0, quiet=True))


@pytest.fixture(scope="module")
def train_vectors(cnn, data):
    return layer_vectors(cnn, data.x_train, data.y_train.numpy(), ["block3"], steps=10, quiet=True)


def test_digits_cnn_trains_in_seconds_to_high_test_accuracy(cnn, data):
    assert cnn.metadata["metrics"]["test_accuracy"] >= 0.95
    assert cnn.metadata["training"]["train_seconds"] < 60
    assert evaluate_accuracy(cnn, data.x_test, data.y_test) == cnn.metadata["metrics"]["test_accuracy"]


def test_training_is_deterministic_for_a_seed(data):
    a = train_digits_cnn(data, epochs=1, seed=3, quiet=True)
    b = train_digits_cnn(data, epochs=1, seed=3, quiet=True)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, msg=ka)


def test_save_and_load_round_trip_and_bad_checkpoint(cnn, data, tmp_path):
    save_digits_cnn(cnn, tmp_path / "m")
    back = load_digits_cnn(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(data.x_test[:20]), cnn(data.x_test[:20]))
    assert back.norm_stats == pytest.approx(cnn.norm_stats)
    (tmp_path / "m" / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="format"):
        load_digits_cnn(tmp_path / "m")


def test_shipped_digits_cnn_loads_with_the_accuracy_its_card_states():
    folder = default_digits_path()
    if not (folder / "model.safetensors").exists():
        pytest.skip("retina_codec/shipped/digits-cnn not present in this checkout")
    m = load_classifier("digits-cnn")
    d = load_digits_data(seed=0, norm=m.norm_stats)
    acc = evaluate_accuracy(m, d.x_test, d.y_test)
    assert acc == pytest.approx(m.metadata["metrics"]["test_accuracy"], abs=1e-9)
    assert acc >= 0.95
    card = (folder / "MODEL_CARD.md").read_text()
    assert f"{acc:.4f}" in card and "python -m retina_codec.classifiers.train_digits" in card


def test_statistics_run_end_to_end_and_contributions_are_sparser_than_activations(cnn, data):
    vec = layer_vectors(cnn, data.x_test, data.y_test.numpy(), cnn.layer_names, steps=10, quiet=True)
    stats = statistics_table(vec)
    assert [s.layer for s in stats] == ["act1", "block1", "block2", "block3"]
    for s in stats:
        assert np.isfinite(s.hoyer_contrib).all() and np.isfinite(s.ei_contrib).all()
        assert 1 <= s.dim_contrib["n_pcs"] <= 9 and 1 <= s.dim_act["n_pcs"] <= 9
        assert np.isnan(s.ei_act).all()  # post-ReLU activations are one-signed: E/I undefined
    # the paper's direction: contributions sparser than activations (mean Hoyer). On the digits CNN this
    # holds by a wide margin up to block2; at block3 the two are comparable (measured over training seeds:
    # contributions 0.41-0.45 vs activations 0.42-0.43), so only closeness is asserted there.
    h = [(s.summary()["hoyer_contrib"], s.summary()["hoyer_act"]) for s in stats]
    assert all(c > a + 0.2 for c, a in h[:3]), h
    assert abs(h[3][0] - h[3][1]) < 0.1, h
    assert vec.completeness["block3"]["total_rel"] < 1e-4  # last block → linear read-out: exact


def test_ablating_a_class_top_contribution_mode_hurts_that_class_more(cnn, data, train_vectors):
    dec = fit_layer_modes(train_vectors.contributions["block3"], "contributions", seed=0, quiet=True)
    loadings = dec.transform(train_vectors.contributions["block3"])
    sweeps = class_mode_sweeps(cnn, "block3", data.x_test, data.y_test.numpy(), dec, loadings,
                               data.y_train.numpy(), "contributions", kinds=("ablate",))
    assert len(sweeps) == 10
    # over classes, the accuracy drop on the class exceeds the drop on the other classes (AUC over p);
    # thresholds leave room for SAE seeds (measured over seeds 0-3: ratio 1.4-2.0, 5-9 classes, median
    # selectivity 0.24-1.25)
    auc_t = np.mean([s.sweep.auc_target for s in sweeps])
    auc_o = np.mean([s.sweep.auc_off for s in sweeps])
    assert auc_t > 1.2 * auc_o, (auc_t, auc_o)
    assert sum(s.sweep.auc_target > s.sweep.auc_off for s in sweeps) >= 5
    assert selectivity_summary(sweeps)["contributions/ablate"]["median"] > 0.1


def test_activation_modes_use_net_channel_atoms_for_the_same_protocol(cnn, data, train_vectors):
    act = train_vectors.activations["block3"]
    dec = fit_layer_modes(act, "activations", seed=0, quiet=True, max_epochs=30)
    assert dec.atoms_.shape[1] == 32
    sweeps = class_mode_sweeps(cnn, "block3", data.x_test[:120], data.y_test[:120].numpy(), dec,
                               dec.transform(net_channels(act)), data.y_train.numpy(), "activations",
                               kinds=("preserve",), classes=[0, 1], fractions=(0.0, 0.5, 1.0))
    assert [s.cls for s in sweeps] == [0, 1]
    assert all(s.sweep.target[-1] == pytest.approx(1.0) for s in sweeps)  # keeping every channel = intact


def test_masks_through_all_channels_equal_gradient_times_input_and_add_over_channels(cnn, data):
    x = data.x_test[:6]
    full = channel_chain_masks(cnn, x, "block2", range(16), median_size=0)
    xx = x.clone().requires_grad_(True)
    out = cnn(xx)
    (g,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), xx)
    np.testing.assert_allclose(full, (g * x).sum(1).numpy(), rtol=1e-4, atol=1e-6)
    a = channel_chain_masks(cnn, x, "block2", range(0, 5), median_size=0)
    b = channel_chain_masks(cnn, x, "block2", range(5, 16), median_size=0)
    np.testing.assert_allclose(a + b, full, rtol=1e-4, atol=1e-6)
    filt = channel_chain_masks(cnn, x, "block2", range(0, 5), median_size=3)
    assert filt.shape == (6, 16, 16) and not np.allclose(filt, a)


def test_cli_writes_self_describing_hdf5_and_figures(tmp_path, capsys):
    if not (default_digits_path() / "model.safetensors").exists():
        pytest.skip("retina_codec/shipped/digits-cnn not present in this checkout")
    out = tmp_path / "res"
    args = ["-q", "classify-stats", "digits-cnn", "digits", "--out", str(out), "--max-per-class", "12",
            "--layers", "block2,block3", "--n-fractions", "3", "--mask-images", "2", "--threads", "1"]
    assert main(args) == 0
    for f in ("stats.h5", "layer_stats.png", "interventions.png", "masks_contributions.png",
              "masks_activations.png"):
        assert (out / f).stat().st_size > 0, f
    with h5py.File(out / "stats.h5", "r") as f:
        assert f.attrs["format"] == "retina-codec-classify-stats"
        assert json.loads(f.attrs["layers"]) == ["block2", "block3"]
        assert f.attrs["method"] == "conductance" and f.attrs["steps"] == 10
        assert json.loads(f.attrs["target"])["name"] == "top1_logit"
        assert f["labels"].shape == (120,) and f["layers/block3/contributions"].shape == (120, 64)
        assert f["layers/block3/activations"].attrs["description"]
        assert f["summary/hoyer_contrib"].shape == (2,)
        assert f["interventions/contributions/ablate/target"].shape == (10, 3)
        assert f["masks/contributions/masks"].shape == (10, 2, 16, 16)
        assert f.attrs["model_hash"]
    assert main(args) == 2  # exists: no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert not list(out.glob(".*"))  # no temporary files left behind
