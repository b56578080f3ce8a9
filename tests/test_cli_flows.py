"""End-to-end command-line flows a neuroscientist runs beyond the demo (recording → fit/model → contributions →
modes → rf), each on a tiny file, checking what the commands write and say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _nwbio_helpers import optical_series, write_nwbfile

from retina_codec.cli.main import main
from retina_codec.models import BNCNN, save_model
from retina_codec.recordings.nwb import read_nwb

TORCH_THREADS = 1

T, H, W, N, HIST = 200, 6, 8, 3, 6


def _imaging_nwb(path, second_series: bool = False):
    """An imaging-style file: a uint8 movie at 100 Hz and ROI rates (Hz) at 50 Hz, no spikes."""
    from pynwb.testing.mock.file import mock_NWBFile
    from pynwb.testing.mock.ophys import mock_PlaneSegmentation, mock_RoiResponseSeries

    rng = np.random.default_rng(0)
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", rng.integers(0, 256, (T, W, H), dtype=np.uint8), starting_time=0.0,
                                  rate=100.0))
    plane = mock_PlaneSegmentation(n_rois=N, nwbfile=f)
    rates = rng.gamma(2.0, 5.0, (T // 2 + 1, N))  # the last sample covers the last frame
    mock_RoiResponseSeries(name="rates", data=rates, unit="Hz", rate=50.0, starting_time=0.0,
                           plane_segmentation=plane, nwbfile=f)
    if second_series:
        mock_RoiResponseSeries(name="dff", data=rates / 10.0, rate=50.0, starting_time=0.0,
                               plane_segmentation=plane, nwbfile=f)
    return write_nwbfile(f, path)


def _rate_model(path):
    """A small BN-CNN as ``fit`` saves one for a rate (Hz) recording."""
    torch.manual_seed(0)
    model = BNCNN(n_cells=N, history=HIST, frame_shape=(H, W), channels=(3, 2), kernel_sizes=(3, 3)).eval()
    model.norm_stats = (127.5, 74.0)
    return save_model(model, path, metadata={"output_unit": "Hz"})


@pytest.fixture(scope="module")
def imaging(tmp_path_factory):
    d = tmp_path_factory.mktemp("imaging")
    _imaging_nwb(d / "one.nwb")
    _imaging_nwb(d / "two.nwb", second_series=True)
    _rate_model(d / "model")
    return d


def _contrib(d, rec, out, *extra):
    return main(["-q", "contributions", str(d / "model"), str(d / rec), "--split", "train", "--max-bins", "60",
                 "--steps", "2", "--device", "cpu", "--out", str(d / out), *extra])


def _modes(d, contrib, out, *extra):
    return main(["-q", "modes", str(d / contrib), "--layer", "conv2", "--kind", "topk", "--k", "2", "--n-modes", "6",
                 "--max-epochs", "2", "--device", "cpu", "--out", str(d / out), *extra])


def test_commands_take_responses_for_a_file_with_two_rate_series(imaging, capsys):
    # the reader's error tells the user to pass --responses NAME; contributions, modes --nwb and rf must take it
    d = imaging
    assert _contrib(d, "two.nwb", "c_two_err.h5") == 2
    assert "--responses" in capsys.readouterr().err
    assert _contrib(d, "two.nwb", "c_two.h5", "--responses", "rates") == 0
    assert _modes(d, "c_two.h5", "m_two.h5", "--nwb", str(d / "two.nwb"), "--responses", "rates",
                  "--model", str(d / "model")) == 0
    assert main(["-q", "rf", str(d / "model"), str(d / "two.nwb"), "--responses", "rates", "--modes",
                 str(d / "m_two.h5"), "--model-sta-samples", "8", "--device", "cpu", "--no-figures",
                 "--out", str(d / "rf_two.h5")]) == 0
    assert (d / "rf_two.h5").exists()


def test_modes_nwb_copy_of_an_imaging_recording_reads_back_with_its_own_rates(imaging):
    # the copy's processing/codec series (loadings, predicted rates) are not response candidates: the copy
    # reads exactly as the recording did, without --responses
    d = imaging
    assert _contrib(d, "one.nwb", "c_one.h5") == 0
    assert _modes(d, "c_one.h5", "m_one.h5", "--nwb", str(d / "one.nwb"), "--model", str(d / "model")) == 0
    with read_nwb(d / "one.nwb") as rec, read_nwb(d / "m_one.nwb") as copy:
        assert copy.provenance["responses"] == rec.provenance["responses"] == "rates"
        np.testing.assert_array_equal(copy.responses, rec.responses)
    with read_nwb(d / "m_one.nwb", responses="predicted_rates") as pred:  # still readable by name
        assert pred.n_cells == N


def test_predicted_rates_in_the_nwb_copy_carry_the_models_output_unit(imaging):
    from pynwb import NWBHDF5IO

    d = imaging
    if not (d / "m_one.nwb").exists():
        assert _contrib(d, "one.nwb", "c_one.h5") == 0
        assert _modes(d, "c_one.h5", "m_one.h5", "--nwb", str(d / "one.nwb"), "--model", str(d / "model")) == 0
    with NWBHDF5IO(str(d / "m_one.nwb"), "r") as io:
        assert io.read().processing["codec"]["predicted_rates"].unit == "Hz"  # a rate model, not spikes per bin
