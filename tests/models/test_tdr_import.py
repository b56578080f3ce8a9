"""Importing torch-deep-retina checkpoints: identical outputs, metadata, and refusal of unsafe pickles.

The reference models below are built the torch-deep-retina way (one ``nn.Sequential`` called
``sequential`` with Flatten/Reshape between layers and a GaussianNoise holding a ``sigma`` parameter), so
their state-dict names are those of its ``BNCNN`` / ``BNCNN2D``; the checkpoints are dicts with the keys
its trainer writes.
"""

import fractions
import os

import pytest
import torch
from _tdr_reference import TDRBNCNN, TDRBNCNN2D, make_reference, tdr_checkpoint

from retina_codec.errors import CheckpointError, UntrustedCheckpointError
from retina_codec.models import BNCNN, get_module, import_tdr_checkpoint


def test_full_size_bncnn_checkpoint_imports_with_identical_outputs(tmp_path):
    ref = make_reference(TDRBNCNN)
    hyps = {"n_units": 4, "noise": 0.05, "bias": True, "linear_bias": None, "chans": [8, 8], "bn_moment": 0.01,
            "softplus": True, "img_shape": [40, 50, 50], "ksizes": [15, 11]}
    torch.save(tdr_checkpoint(ref, "BNCNN", hyps), tmp_path / "test_epoch_12.pt")
    model = import_tdr_checkpoint(tmp_path / "test_epoch_12.pt")
    assert isinstance(model, BNCNN) and model.bn == "unit" and not model.training
    assert model.config()["readout_bias"] is False and model.readout_bn_eps == 1e-3
    x = torch.randn(3, 40, 50, 50)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-6, atol=1e-7)
        inter = ref.sequential[:6](x)  # after ReLU and Reshape: the bipolar-like layer
        torch.testing.assert_close(get_module(model, "conv1")(x), inter, rtol=1e-6, atol=1e-7)
    assert model.norm_stats == (51.25, 30.5)
    assert model.cell_ids == ["0", "1", "2", "3"]
    assert model.input_spec.shape == (40, 50, 50) and model.input_spec.frame_rate == 100.0
    assert model.input_spec.offset == 1 and model.noise_std == 0.05
    meta = model.metadata
    assert meta["dataset"] == "15-10-07" and meta["stim_type"] == "naturalscene" and meta["model_type"] == "BNCNN"
    assert meta["scores"]["val_acc"] == pytest.approx(0.61) and meta["trusted_load"] is False


def test_older_generation_bncnn_with_linear_bias_and_default_readout_eps(tmp_path):
    ref = make_reference(TDRBNCNN, seed=1, img_shape=(10, 30, 30), ksizes=(9, 7), chans=(4, 5), linear_bias=True,
                         old=True)
    hyps = {"n_units": 4, "noise": 0.1, "bias": True, "linear_bias": None, "adapt_gauss": False,
            "chans": [4, 5], "bnorm_momentum": 0.01}
    torch.save(tdr_checkpoint(ref, "BNCNN", hyps, img_shape=[10, 30, 30]), tmp_path / "old.pt")
    model = import_tdr_checkpoint(tmp_path / "old.pt")
    assert model.readout_bias and model.readout_bn_eps == 1e-5 and model.channels == (4, 5)
    assert model.kernel_sizes == (9, 7) and model.input_spec.shape == (10, 30, 30) and model.noise_std == 0.1
    x = torch.randn(5, 10, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-6, atol=1e-7)


def test_bncnn2d_checkpoint_imports_as_channel_batchnorm(tmp_path):
    ref = make_reference(TDRBNCNN2D, seed=2, img_shape=(8, 28, 28), ksizes=(7, 5))
    hyps = {"n_units": 4, "noise": 0.05, "chans": [8, 8], "bnorm_momentum": 0.1}
    torch.save(tdr_checkpoint(ref, "BNCNN2D", hyps, img_shape=[8, 28, 28]), tmp_path / "bn2d.pt")
    model = import_tdr_checkpoint(tmp_path / "bn2d.pt")
    assert model.bn == "channel"
    x = torch.randn(5, 8, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-6, atol=1e-7)


class RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    ref = make_reference(TDRBNCNN, img_shape=(6, 30, 30), ksizes=(9, 7))
    marker = tmp_path / "pwned"
    ckpt = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 30, 30], "ksizes": [9, 7]}, payload=RunsCode(marker))
    torch.save(ckpt, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(UntrustedCheckpointError) as err:
        import_tdr_checkpoint(tmp_path / "evil.pt")
    msg = str(err.value)
    assert "system" in msg and "trust=True" in msg and "evil.pt" in msg
    assert not marker.exists()


def test_extra_types_need_trust_and_load_with_it(tmp_path):
    ref = make_reference(TDRBNCNN, img_shape=(6, 30, 30), ksizes=(9, 7))
    ckpt = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 30, 30], "ksizes": [9, 7]}, lr=fractions.Fraction(1, 1000))
    torch.save(ckpt, tmp_path / "frac.pt")
    with pytest.raises(UntrustedCheckpointError, match="fractions.Fraction"):
        import_tdr_checkpoint(tmp_path / "frac.pt")
    model = import_tdr_checkpoint(tmp_path / "frac.pt", trust=True)
    assert model.metadata["trusted_load"] is True
    x = torch.randn(2, 6, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-6, atol=1e-7)


def test_unsupported_or_broken_checkpoints_raise_checkpoint_error(tmp_path):
    ref = make_reference(TDRBNCNN, img_shape=(6, 30, 30), ksizes=(9, 7))
    torch.save(tdr_checkpoint(ref, "SkipAmacRNN", {}), tmp_path / "rnn.pt")
    with pytest.raises(CheckpointError, match="model_type"):
        import_tdr_checkpoint(tmp_path / "rnn.pt")
    bad = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 30, 30]})
    bad["model_state_dict"]["sequential.7.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected state-dict entry 'sequential.7.weight'"):
        import_tdr_checkpoint(tmp_path / "extra.pt")
    wrong = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 40, 40]})
    torch.save(wrong, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="img_shape"):
        import_tdr_checkpoint(tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        import_tdr_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        import_tdr_checkpoint(tmp_path / "missing.pt")


def test_load_model_dispatches_torch_pickles_to_the_safe_importer(tmp_path):
    from retina_codec.models import load_model

    ref = make_reference(TDRBNCNN, img_shape=(6, 30, 30), ksizes=(9, 7))
    torch.save(tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 30, 30], "ksizes": [9, 7]}), tmp_path / "ok.pt")
    model = load_model(tmp_path / "ok.pt")
    x = torch.randn(2, 6, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-6, atol=1e-7)
    marker = tmp_path / "pwned"
    torch.save({"model_type": "BNCNN", "x": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UntrustedCheckpointError):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()
