"""Your own model on the command line: ``--model FILE.py:FUNCTION`` (retina_codec.models.factory)."""

import textwrap

import numpy as np
import pytest

from retina_codec.cli.main import main
from retina_codec.contributions.store import read_contributions
from retina_codec.errors import CheckpointError, ModelContractError
from retina_codec.models import load_model
from retina_codec.recordings import Recording
from retina_codec.recordings.nwb import write_nwb

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    from retina_codec.models import wrap


    class MyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.relu1 = nn.Conv2d(8, 4, 5), nn.BatchNorm2d(4), nn.ReLU()
            self.conv2, self.relu2 = nn.Conv2d(4, 4, 3), nn.ReLU()
            self.linear = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return nn.functional.softplus(self.linear(x.flatten(1)))


    def build():
        torch.manual_seed(0)
        net = MyCNN().eval()
        return wrap(net, history=8, frame_shape=(14, 14), layers=["relu1", "relu2"], frame_rate=100.0,
                    cell_ids=["a", "b", "c"])


    def plain():
        return MyCNN()
''')


@pytest.fixture
def files(tmp_path):
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)
    t = 80
    rec = Recording(stimulus=rng.random((t, 14, 14)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 3)).astype(np.float32),
                    cell_ids=["a", "b", "c"], intervals={"test": np.array([[0.0, t / 100.0]])},
                    stimulus_name="noise")
    write_nwb(rec, tmp_path / "rec.nwb")
    return tmp_path / "my_model.py", tmp_path / "rec.nwb"


def test_a_python_factory_is_a_model_for_the_api_and_the_cli(files, tmp_path):
    model_file, rec = files
    model = load_model(f"{model_file}:build")
    assert (model.n_cells, model.hidden_layers, model.cell_ids) == (3, ("relu1", "relu2"), ["a", "b", "c"])
    assert load_model(model_file).n_cells == 3  # FUNCTION defaults to build
    out = tmp_path / "c.h5"
    assert main(["-q", "contributions", f"{model_file}:build", str(rec), "--target", "sum", "--steps", "4",
                 "--out", str(out)]) == 0
    store = read_contributions(out)
    assert sorted(store["contributions"]) == ["relu1", "relu2"]  # the model's hidden layers by default
    assert store["attrs"]["affine_stem"] == ["conv1", "bn1"]  # found in a module that declares none
    # the whole chain with the stranger's module: modes (with predicted rates in the NWB copy), then RFs
    # conditioned on those modes
    modes = tmp_path / "modes.h5"
    assert main(["-q", "modes", str(out), "--layer", "relu2", "--max-epochs", "3", "--out", str(modes),
                 "--nwb", str(rec), "--model", f"{model_file}:build", "--device", "cpu"]) == 0
    assert main(["-q", "rf", f"{model_file}:build", str(rec), "--modes", str(modes), "--cells", "a", "b",
                 "--out", str(tmp_path / "rf.h5")]) == 0
    import h5py

    with h5py.File(tmp_path / "rf.h5", "r") as f:
        assert {"sta", "conditioned"} <= set(f)


def test_a_factory_that_does_not_give_a_model_is_named(files, capsys):
    model_file, rec = files
    with pytest.raises(ModelContractError, match="wrap"):
        load_model(f"{model_file}:plain")
    with pytest.raises(CheckpointError, match="no function 'nothere'"):
        load_model(f"{model_file}:nothere")
    with pytest.raises(CheckpointError, match="no such Python file"):
        load_model("missing_model.py:build")
    assert main(["-q", "contributions", f"{model_file}:plain", str(rec), "--out", "x.h5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wrap" in err[0]
