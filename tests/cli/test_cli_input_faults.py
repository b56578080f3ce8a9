"""Bad options and bad inputs are one line on stderr and exit 2, before any work and with nothing written;
silent acceptance becomes a refusal or a warning naming what was dropped."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _nwbio_helpers import (
    huge_stimulus_nwb,
    natural_recording,
    new_nwbfile,
    optical_series,
    write_lab_h5,
    write_nwbfile,
)
from pynwb.image import ImageSeries
from pynwb.misc import Units

from retina_codec.cli.main import main
from retina_codec.errors import ModesError, RetinaCodecError, ShapeMismatchError, TimestampError
from retina_codec.recordings import read_nwb
from retina_codec.recordings.nwb import write_nwb

TORCH_THREADS = 1


# ---- helpers ------------------------------------------------------------------------------------------------------
def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code of the command (argparse's SystemExit included) and its stderr lines."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err.strip().splitlines()


def _refused(argv: list[str], capsys, *names: str, out: Path | None = None) -> str:
    """Assert exit 2, exactly one stderr line naming every one of ``names``, and nothing at ``out``."""
    code, lines = _cli(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    for name in names:
        assert name in lines[0], (name, lines[0])
    if out is not None:
        assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return lines[0]


def _model(seed: int = 0):
    from retina_codec.models import BNCNN

    torch.manual_seed(seed)
    model = BNCNN(n_cells=4, history=6, frame_shape=(5, 7), channels=(3, 2), kernel_sizes=(3, 3)).eval()
    model.norm_stats = (0.5, 0.29)
    return model


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 240-frame 5x7 recording, a tiny BN-CNN, its contribution store and a modes file of its test bins."""
    from retina_codec.models import save_model
    from retina_codec.modes import ModeDecomposer
    from retina_codec.modes.store import write_modes

    tmp = tmp_path_factory.mktemp("faults")
    write_nwb(natural_recording(t=240), tmp / "rec.nwb")
    save_model(_model(), tmp / "model")
    assert main(["-q", "contributions", str(tmp / "model"), str(tmp / "rec.nwb"), "--split", "test", "--target",
                 "sum", "--steps", "2", "--device", "cpu", "--out", str(tmp / "contrib.h5")]) == 0
    with read_nwb(tmp / "rec.nwb") as rec:
        bins = rec.window_bins("test", history=6)
    rng = np.random.default_rng(0)
    sae = ModeDecomposer(kind="relu", n_modes=3, max_epochs=2, quiet=True).fit(rng.normal(size=(len(bins), 4)))
    loadings = rng.uniform(0, 1, (len(bins), len(sae.atoms_)))
    write_modes(tmp / "modes.h5", sae, loadings=loadings, bins=bins)
    return tmp


def _modes_copy(inputs: Path, tmp: Path, edit) -> Path:
    """A copy of the fixture's modes file with ``edit(h5py.File)`` applied."""
    path = tmp / "edited_modes.h5"
    path.write_bytes((inputs / "modes.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _rf(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "rf", str(inputs / "model"), str(inputs / "rec.nwb"), "--out", str(out), "--device", "cpu",
            "--no-figures", *extra]


# ---- item 6: declared sizes ----------------------------------------------------------------------------------------
def test_huge_declared_stimulus_cli_is_one_line(tmp_path, capsys):
    path = huge_stimulus_nwb(tmp_path)
    out = tmp_path / "fit"
    _refused(["-q", "fit", str(path), "--out", str(out), "--device", "cpu"], capsys, str(path),
             "stimulus/movie/data")
    assert not out.exists()


def test_contributions_steps_beyond_memory_is_one_line_naming_the_option(inputs, tmp_path, capsys):
    out = tmp_path / "c.h5"
    line = _refused(["-q", "contributions", str(inputs / "model"), str(inputs / "rec.nwb"), "--target", "sum",
                     "--steps", "100000000000", "--device", "cpu", "--out", str(out)], capsys, "--steps", out=out)
    assert "B" in line and "free" in line  # the memory it would need and what there is


# ---- item 7: option values (argparse, before any work) -------------------------------------------------------------
BAD_OPTIONS = {
    "fit_epochs_0": (["fit", "sim:small", "--out", "{out}", "--epochs", "0"], "--epochs"),
    "fit_history_0": (["fit", "sim:small", "--out", "{out}", "--history", "0"], "--history"),
    "fit_lr_nan": (["fit", "sim:small", "--out", "{out}", "--lr", "nan"], "--lr"),
    "fit_batch_size_0": (["fit", "sim:small", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
    "rf_batch_size_0": (["rf", "m", "r.nwb", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
    "contributions_device_foo": (["contributions", "m", "r.nwb", "--out", "{out}", "--device", "foo"], "--device"),
    "contributions_cells_negative": (["contributions", "m", "r.nwb", "--out", "{out}", "--target", "cell",
                                      "--cells", "-1"], "--cells"),
    "modes_max_epochs_0": (["modes", "c.h5", "--layer", "conv2", "--out", "{out}", "--max-epochs", "0"],
                           "--max-epochs"),
    "rf_model_sta_samples_negative": (["rf", "m", "r.nwb", "--out", "{out}", "--model-sta-samples", "-1"],
                                      "--model-sta-samples"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_is_argparses_one_line_usage_error(case, tmp_path, capsys):
    argv, option = BAD_OPTIONS[case]
    out = tmp_path / "out"
    line = _refused([a.replace("{out}", str(out)) for a in argv], capsys, option, "expected", out=out)
    assert line.startswith(f"retina-codec {argv[0]}: error: ")


def test_fit_history_longer_than_the_recording_is_one_line(inputs, tmp_path, capsys):
    out = tmp_path / "fit"
    _refused(["-q", "fit", str(inputs / "rec.nwb"), "--out", str(out), "--history", "100000", "--device", "cpu"],
             capsys, "--history", "240", str(inputs / "rec.nwb"))
    assert not out.exists()


def test_rf_modes_with_bins_past_the_recording_is_one_line(inputs, tmp_path, capsys):
    def past(f):
        bins = f["bins"][:]
        bins[-1] = 10_000
        f["bins"][:] = bins

    modes = _modes_copy(inputs, tmp_path, past)
    out = tmp_path / "rf.h5"
    _refused(_rf(inputs, out, "--modes", str(modes), "--model-sta-samples", "0"), capsys, str(modes), "bins",
             "10000", out=out)


def test_rf_modes_with_nan_loadings_is_one_line(inputs, tmp_path, capsys):
    def nan(f):
        a = f["loadings"][:]
        a[3, 0] = np.nan
        f["loadings"][:] = a

    modes = _modes_copy(inputs, tmp_path, nan)
    out = tmp_path / "rf.h5"
    _refused(_rf(inputs, out, "--modes", str(modes), "--model-sta-samples", "0"), capsys, str(modes), "loadings",
             "NaN", out=out)


def test_conditioned_rfs_refuse_nan_loadings_and_bins_outside_up_front(inputs):
    from retina_codec.rf.conditioned import mode_conditioned_rfs

    with read_nwb(inputs / "rec.nwb") as rec:
        bins = rec.window_bins("test", history=6)
        loadings = np.ones((len(bins), 2))
        loadings[0, 1] = np.nan
        with pytest.raises(ModesError, match="loadings: expected finite"):
            mode_conditioned_rfs(_model(), rec, loadings, bins, quiet=True)
        with pytest.raises(ShapeMismatchError, match="bins: expected bins with a full 6-frame window"):
            mode_conditioned_rfs(_model(), rec, np.ones((len(bins), 2)), np.r_[bins[:-1], 999], quiet=True)


def test_modes_model_with_a_store_lacking_model_hash_is_refused(inputs, tmp_path, capsys):
    store = tmp_path / "contrib.h5"
    store.write_bytes((inputs / "contrib.h5").read_bytes())
    with h5py.File(store, "r+") as f:
        for obj in [f, *(f[k] for k in f)]:
            if "model_hash" in obj.attrs:
                del obj.attrs["model_hash"]
    out = tmp_path / "modes.h5"
    _refused(["-q", "modes", str(store), "--layer", "conv2", "--kind", "topk", "--k", "2", "--n-modes", "8",
              "--max-epochs", "2", "--device", "cpu", "--nwb", str(inputs / "rec.nwb"), "--nwb-out",
              str(tmp_path / "copy.nwb"), "--model", str(inputs / "model"), "--out", str(out)], capsys,
             "--model", str(store), "model_hash", out=out)
    assert not (tmp_path / "copy.nwb").exists()


def test_rf_modes_without_model_hash_warns_loudly(inputs, tmp_path):
    out = tmp_path / "rf.h5"
    with pytest.warns(RuntimeWarning, match="model_hash: expected the hash"):
        assert main(_rf(inputs, out, "--modes", str(inputs / "modes.h5"), "--model-sta-samples", "0")) == 0


# ---- item 9: messages name the file and the field ------------------------------------------------------------------
def _external_nwb(tmp: Path) -> Path:
    f = new_nwbfile()
    f.add_stimulus(ImageSeries(name="movie", external_file=["movie.avi"], starting_frame=[0], format="external",
                               rate=100.0, starting_time=0.0, unit="n.a.", num_samples=50))
    f.units = Units(name="units", description="test units")
    f.units.add_unit(spike_times=[0.1])
    return write_nwbfile(f, tmp / "external.nwb")


def _nan_start_nwb(tmp: Path) -> Path:
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((50, 3, 2), np.uint8), starting_time=float("nan"), rate=100.0))
    f.units = Units(name="units", description="test units")
    f.units.add_unit(spike_times=[0.1])
    return write_nwbfile(f, tmp / "nan_start.nwb")


@pytest.mark.parametrize("make, error, field, words", [
    (_external_nwb, RetinaCodecError, "stimulus/movie/external_file", "not supported"),
    (_nan_start_nwb, TimestampError, "stimulus/movie/starting_time", "finite"),
], ids=["external_file", "nan_starting_time"])
def test_malformed_nwb_names_file_and_field(make, error, field, words, tmp_path, capsys):
    path = make(tmp_path)
    with pytest.raises(error) as err:
        read_nwb(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and words in msg and "nan-nan" not in msg
    _refused(["inspect", str(path)], capsys, str(path), field)


def test_lab_h5_bad_counts_name_the_file_on_convert(tmp_path, capsys):
    path = tmp_path / "naturalscene.h5"
    write_lab_h5(path)
    with h5py.File(path, "r+") as f:
        f["train/response/binned"][0, 5] = 0.5
    out = tmp_path / "out" / "converted.nwb"
    _refused(["convert", str(path), str(out)], capsys, str(path), "train/response/binned")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
