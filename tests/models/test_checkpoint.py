"""Our checkpoint format: safetensors + JSON, bit-identical round trip, atomic writes, clear errors."""

import json

import pytest
import torch
from _model_helpers import randomize_batchnorm

import retina_codec.models.checkpoint as ckpt
from retina_codec.errors import CheckpointError
from retina_codec.models import BNCNN, LinearStackedBNCNN, LNModel, load_model, read_metadata, save_model
from retina_codec.models.base import InputSpec

CASES = {
    "bncnn-channel": lambda: BNCNN(3, history=6, frame_shape=(30, 30)),
    "bncnn-unit": lambda: BNCNN(3, history=6, frame_shape=(30, 30), bn="unit", readout_bias=False),
    "linear-stacked": lambda: LinearStackedBNCNN(3, history=6, frame_shape=(30, 30), kernel_sizes=(7, 5)),
    "ln": lambda: LNModel(3, history=6, frame_shape=(30, 30)),
}


def trained_looking(make):
    torch.manual_seed(0)
    model = randomize_batchnorm(make())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.norm_stats = (0.4321, 0.1234)
    model.cell_ids = ["c0", "c1", "c2"]
    model.input_spec = InputSpec(6, 30, 30, frame_rate=100.0, offset=1)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_gives_bit_identical_outputs_and_keeps_the_data_description(tmp_path, name):
    model = trained_looking(CASES[name])
    meta = {"training": {"seed": 7, "epochs": 3}, "metrics": {"test": {"mean_r_true_rate": 0.83}}}
    weights = save_model(model, tmp_path / "m", metadata=meta)
    assert weights == tmp_path / "m" / "model.safetensors" and (tmp_path / "m" / "model.json").exists()
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(4, 6, 30, 30)
    assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.norm_stats == (0.4321, 0.1234)
    assert loaded.cell_ids == ["c0", "c1", "c2"]
    assert loaded.input_spec == model.input_spec
    assert loaded.metadata == meta
    assert loaded.layer_names == model.layer_names and loaded.affine_stem == model.affine_stem


def test_json_sidecar_is_self_describing(tmp_path):
    model = trained_looking(CASES["bncnn-unit"])
    save_model(model, tmp_path / "model.safetensors", metadata={"metrics": {"r": 0.5}})
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["format"] == "retina-codec-model" and doc["architecture"] == "BNCNN"
    assert doc["config"]["bn"] == "unit" and doc["config"]["readout_bias"] is False
    assert doc["input_spec"] == {"history": 6, "height": 30, "width": 30, "frame_rate": 100.0, "offset": 1,
                                 "channels": None}
    assert doc["norm_stats"] == {"mean": 0.4321, "std": 0.1234}
    assert doc["cell_ids"] == ["c0", "c1", "c2"] and doc["metadata"] == {"metrics": {"r": 0.5}}
    assert doc["weights_file"] == "model.safetensors" and len(doc["weights_sha256"]) == 64
    assert doc["layer_names"][:3] == ["conv1.conv", "conv1.bn", "conv1"]


def test_weights_file_alone_is_enough_to_load(tmp_path):
    model = trained_looking(CASES["bncnn-channel"])
    save_model(model, tmp_path / "x.safetensors")
    (tmp_path / "x.json").unlink()
    loaded = load_model(tmp_path / "x.safetensors")
    x = torch.randn(2, 6, 30, 30)
    assert torch.equal(loaded(x), model(x)) and loaded.cell_ids == ["c0", "c1", "c2"]
    assert read_metadata(tmp_path / "x.safetensors")["architecture"] == "BNCNN"


def test_double_precision_models_stay_double(tmp_path):
    model = trained_looking(CASES["bncnn-channel"]).double()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.randn(2, 6, 30, 30, dtype=torch.float64)
    assert loaded.conv1.conv.weight.dtype == torch.float64 and torch.equal(loaded(x), model(x))


def test_failed_write_leaves_no_partial_files(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(trained_looking(CASES["ln"]), tmp_path / "out")
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_loading_something_else_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_model(tmp_path / "missing")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "bad.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="'format'"):
        load_model(tmp_path / "bad.json")


def test_state_dict_not_matching_the_architecture_is_refused(tmp_path):
    save_model(trained_looking(CASES["bncnn-channel"]), tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc["config"]["bn"] = "unit"
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="does not match|size mismatch"):
        load_model(tmp_path)


def test_save_refuses_models_that_are_not_retina_models(tmp_path):
    with pytest.raises(CheckpointError, match="RetinaModel"):
        save_model(torch.nn.Linear(2, 2), tmp_path)
