"""Modes store and ``retina-codec modes``: round trip, link to the contribution store, atomic writes."""


import numpy as np
import pytest
import torch
from _modes_helpers import write_store
from torch import nn

from retina_codec.cli.main import main
from retina_codec.errors import FileFormatError, LayerNotFoundError, ModesError
from retina_codec.modes import ModeDecomposer, planted_dictionary
from retina_codec.modes.store import load_decomposer, write_modes
from retina_codec.stores.contributions import read_layer_contributions
from retina_codec.stores.modes import read_loadings, read_modes

TORCH_THREADS = 1  # see conftest.py: tiny training runs are fastest on one thread


@pytest.fixture(scope="module")
def planted():
    return planted_dictionary(n_samples=1500, n_features=16, n_atoms=12, n_active=2, seed=3)


def test_reader_returns_rows_bins_and_store_attributes(tmp_path, planted):
    path = write_store(tmp_path / "c.h5", planted.X)
    data = read_layer_contributions(path, "conv2")
    np.testing.assert_array_equal(data.X, planted.X)
    np.testing.assert_array_equal(data.bins, np.arange(100, 1600))
    assert data.attrs["model_hash"] == "abc123" and data.attrs["target"] == {"name": "surprisal"}


def test_reader_picks_one_target_of_a_per_cell_store(tmp_path, planted):
    x3 = np.stack([planted.X, -planted.X], axis=1)  # (n, 2 targets, d)
    path = write_store(tmp_path / "c.h5", x3, per_target=True)
    np.testing.assert_array_equal(read_layer_contributions(path, "conv2", target_index=1).X, -planted.X)
    with pytest.raises(ModesError, match=r"choose target_index in \[0, 2\)"):
        read_layer_contributions(path, "conv2")


def test_reader_rejects_unknown_layer_incomplete_and_non_hdf5_files(tmp_path, planted):
    path = write_store(tmp_path / "c.h5", planted.X)
    with pytest.raises(LayerNotFoundError, match=r"'conv9' not in contributions; available: \['conv1', 'conv2'\]"):
        read_layer_contributions(path, "conv9")
    partial = write_store(tmp_path / "p.h5", planted.X, complete=False)
    with pytest.raises(FileFormatError, match="'complete' is False"):
        read_layer_contributions(partial, "conv2")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        read_layer_contributions(junk, "conv2")


def test_modes_round_trip_and_reloaded_decomposer_transforms_identically(tmp_path, planted):
    dec = ModeDecomposer(kind="batchtopk", k=2, n_modes=32, max_epochs=5, quiet=True).fit(planted.X)
    out = write_modes(tmp_path / "m.h5", dec, X=planted.X, bins=np.arange(5, 1505),
                      contributions_path=str(tmp_path / "c.h5"), layer="conv2",
                      contributions_attrs={"model_hash": "abc123"})
    m = read_modes(out)
    np.testing.assert_array_equal(m.atoms, dec.atoms_)
    np.testing.assert_array_equal(m.loadings, dec.transform(planted.X))
    assert m.attrs["kind"] == "batchtopk" and m.attrs["layer"] == "conv2"
    assert m.attrs["contributions_path"] == str((tmp_path / "c.h5").resolve())
    assert m.attrs["contributions_attrs"] == {"model_hash": "abc123"}
    assert m.metrics["explained_variance"] == pytest.approx(dec.explained_variance_)
    assert m.attrs["settings"]["k"] == 2 and m.attrs["settings"]["sae"]["kind"] == "batchtopk"
    loadings, bins, names = read_loadings(out)
    assert loadings.shape == (1500, dec.n_modes_) and bins[0] == 5 and names[0] == "mode0"
    again = load_decomposer(out)
    np.testing.assert_array_equal(again.transform(planted.X[:50]), dec.transform(planted.X[:50]))
    np.testing.assert_allclose(again.inverse_transform(loadings[:50]), dec.inverse_transform(loadings[:50]))


def test_failed_write_leaves_no_partial_file(tmp_path, planted):
    dec = ModeDecomposer(kind="topk", k=2, n_modes=16, max_epochs=1, quiet=True).fit(planted.X)
    with pytest.raises(ModesError, match=r"bins: expected shape \(1500,\)"):
        write_modes(tmp_path / "m.h5", dec, X=planted.X, bins=np.arange(3))

    def broken_state_dict():  # fails after atoms and loadings were written to the temporary file
        raise RuntimeError("disk full")

    dec.sae_.state_dict = broken_state_dict
    with pytest.raises(RuntimeError, match="disk full"):
        write_modes(tmp_path / "m.h5", dec, X=planted.X)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_modes_linked_to_the_contribution_store(tmp_path, planted):
    src = write_store(tmp_path / "contrib.h5", planted.X)
    out = tmp_path / "modes.h5"
    rc = main(["-q", "modes", str(src), "--layer", "conv2", "--out", str(out), "--kind", "topk", "--k", "2",
               "--n-modes", "32", "--max-epochs", "3", "--seed", "1"])
    assert rc == 0
    m = read_modes(out)
    assert m.attrs["layer"] == "conv2" and m.attrs["contributions_path"] == str(src.resolve())
    assert m.attrs["contributions_attrs"]["model_hash"] == "abc123"
    np.testing.assert_array_equal(m.bins, np.arange(100, 1600))
    assert m.loadings.shape == (1500, m.atoms.shape[0])


def test_cli_reports_a_missing_layer_as_one_line_and_exit_2(tmp_path, planted, capsys):
    src = write_store(tmp_path / "contrib.h5", planted.X)
    rc = main(["-q", "modes", str(src), "--layer", "nope", "--out", str(tmp_path / "m.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "layer 'nope' not in contributions" in err and err.count("\n") == 1
    assert not (tmp_path / "m.h5").exists()


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.relu2 = nn.ReLU()
        self.readout = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.readout(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


def test_modes_of_a_store_written_by_the_contribution_engine(tmp_path):
    from retina_codec.contributions.store import write_contributions

    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(300, 3, 8, 8)
    src = write_contributions(model, x, tmp_path / "contrib.h5", ["conv1", "relu2"], target="sum",
                              steps=4, quiet=True)
    data = read_layer_contributions(src, "relu2")
    assert data.X.shape == (300, 8)  # ei_split + spatial_sum of 4 channels
    rc = main(["-q", "modes", str(src), "--layer", "relu2", "--out", str(tmp_path / "m.h5"),
               "--max-epochs", "2", "--n-modes", "16"])
    assert rc == 0
    m = read_modes(tmp_path / "m.h5")
    np.testing.assert_array_equal(m.bins, data.bins)
    assert m.attrs["contributions_attrs"]["method"] == "conductance"


def test_cli_also_writes_loadings_into_a_copy_of_the_recording(tmp_path):
    from _nwbio_helpers import natural_recording
    from pynwb import NWBHDF5IO

    from retina_codec.recordings.nwb import write_nwb

    rec = natural_recording(t=240)
    write_nwb(rec, tmp_path / "rec.nwb")
    x = planted_dictionary(n_samples=100, n_features=8, n_atoms=6, seed=1).X
    src = write_store(tmp_path / "contrib.h5", x)  # bins 100 … 199 of the 240 frames
    rc = main(["-q", "modes", str(src), "--layer", "conv2", "--out", str(tmp_path / "m.h5"), "--kind", "topk",
               "--k", "2", "--n-modes", "8", "--max-epochs", "2", "--nwb", str(tmp_path / "rec.nwb")])
    assert rc == 0
    with NWBHDF5IO(str(tmp_path / "m.nwb"), "r") as io:
        series = io.read().processing["codec"]["mode_loadings"]
        np.testing.assert_allclose(series.get_timestamps(), rec.frame_times[100:200], atol=1e-9)
        np.testing.assert_array_equal(series.data[:], read_modes(tmp_path / "m.h5").loadings)


# ------------------------------------------------------------------------------------- CLI NWB
@pytest.fixture
def cli_inputs(tmp_path):
    from _modes_helpers import write_store
    from _nwbio_helpers import natural_recording

    from retina_codec.recordings.nwb import write_nwb

    write_nwb(natural_recording(t=240), tmp_path / "rec.nwb")
    x = planted_dictionary(n_samples=100, n_features=8, n_atoms=6, seed=1).X
    src = write_store(tmp_path / "contrib.h5", x)  # bins 100 … 199 of the 240 frames
    return tmp_path, ["-q", "modes", str(src), "--layer", "conv2", "--kind", "topk", "--k", "2", "--n-modes", "8",
                      "--max-epochs", "2", "--nwb", str(tmp_path / "rec.nwb")]


def test_cli_rerun_with_an_existing_nwb_copy_fails_up_front_in_one_line_or_replaces_it(cli_inputs, capsys,
                                                                                       monkeypatch):
    tmp_path, args = cli_inputs
    args = [*args, "--out", str(tmp_path / "m.h5")]
    assert main(args) == 0
    capsys.readouterr()
    before = (tmp_path / "m.h5").read_bytes()

    def no_training(self, *a, **k):
        raise AssertionError("trained before checking the outputs")

    with monkeypatch.context() as mp:
        mp.setattr(ModeDecomposer, "fit", no_training)
        rc = main(args)  # was: a FileExistsError traceback after training, with m.h5 already replaced
    err = capsys.readouterr().err
    assert rc == 2 and "m.nwb: exists already (pass --overwrite" in err and err.count("\n") == 1
    assert (tmp_path / "m.h5").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_cli_refuses_an_nwb_copy_path_equal_to_the_recording(cli_inputs, capsys):
    tmp_path, args = cli_inputs
    before = (tmp_path / "rec.nwb").read_bytes()
    rc = main([*args, "--out", str(tmp_path / "rec.h5"), "--overwrite"])  # default copy path: rec.nwb
    err = capsys.readouterr().err
    assert rc == 2 and "is the recording itself" in err and err.count("\n") == 1
    assert (tmp_path / "rec.nwb").read_bytes() == before and not (tmp_path / "rec.h5").exists()


def test_cli_checks_a_missing_recording_before_training(cli_inputs, capsys, monkeypatch):
    tmp_path, args = cli_inputs

    def no_training(self, *a, **k):
        raise AssertionError("trained before reading the recording")

    monkeypatch.setattr(ModeDecomposer, "fit", no_training)
    rc = main([*args[:-1], str(tmp_path / "nope.nwb"), "--out", str(tmp_path / "m.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.nwb" in err and not (tmp_path / "m.h5").exists()


def test_the_header_reader_gives_attributes_and_shape_without_the_arrays(tmp_path, planted):
    from retina_codec.stores.modes import read_modes_header, read_sae_state

    dec = ModeDecomposer(kind="topk", k=2, n_modes=16, max_epochs=1, quiet=True).fit(planted.X)
    out = write_modes(tmp_path / "m.h5", dec, X=planted.X, layer="conv2", attrs={"frame_rate": 50.0})
    attrs, (n, k) = read_modes_header(out)
    assert (n, k) == (1500, dec.n_modes_) and attrs["layer"] == "conv2" and attrs["frame_rate"] == 50.0
    assert attrs["settings"]["sae"]["kind"] == "topk" and attrs["target_index"] == -1
    state = read_sae_state(out)
    assert set(state) == set(dec.sae_.state_dict())
    with pytest.raises(FileFormatError, match="modes file not found"):
        read_modes_header(tmp_path / "missing.h5")
