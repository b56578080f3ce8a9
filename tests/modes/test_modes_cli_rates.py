"""``retina-codec modes --nwb REC --model MODEL``: predicted rates beside the loadings in the NWB copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _nwbio_helpers import natural_recording

from retina_codec.cli.main import main
from retina_codec.models import BNCNN, save_model
from retina_codec.models.fitting import predict
from retina_codec.recordings.nwb import read_nwb, write_nwb


def _model(seed: int) -> BNCNN:
    torch.manual_seed(seed)
    model = BNCNN(n_cells=4, history=6, frame_shape=(5, 7), channels=(3, 2), kernel_sizes=(3, 3)).eval()
    model.norm_stats = (0.5, 0.29)
    return model


@pytest.fixture
def pipeline(tmp_path):
    write_nwb(natural_recording(t=240), tmp_path / "rec.nwb")
    save_model(_model(0), tmp_path / "model")
    save_model(_model(1), tmp_path / "other")
    rc = main(["-q", "contributions", str(tmp_path / "model"), str(tmp_path / "rec.nwb"), "--split", "train",
               "--target", "sum", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "contrib.h5")])
    assert rc == 0
    return tmp_path, ["-q", "modes", str(tmp_path / "contrib.h5"), "--layer", "conv2", "--kind", "topk", "--k", "2",
                      "--n-modes", "8", "--max-epochs", "2", "--device", "cpu", "--nwb", str(tmp_path / "rec.nwb"),
                      "--out", str(tmp_path / "modes.h5")]


def test_model_rates_are_exported_beside_the_loadings_on_the_same_bins(pipeline):
    from pynwb import NWBHDF5IO

    tmp_path, args = pipeline
    assert main([*args, "--model", str(tmp_path / "model")]) == 0
    with read_nwb(tmp_path / "rec.nwb") as rec:
        bins = rec.window_bins("train", history=6)
        _, want = predict(_model(0), rec, bins=bins, device="cpu")
        times = rec.frame_times[bins]
    with NWBHDF5IO(str(tmp_path / "modes.nwb"), "r") as io:
        mod = io.read().processing["codec"]
        rates = mod["predicted_rates"]
        np.testing.assert_allclose(rates.data[:], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rates.get_timestamps(), times)
        np.testing.assert_allclose(mod["mode_loadings"].get_timestamps(), times)


def test_a_model_other_than_the_stores_is_refused_before_training(pipeline, capsys):
    tmp_path, args = pipeline
    assert main([*args, "--model", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the model the contributions" in err[0]
    assert not (tmp_path / "modes.h5").exists() and not (tmp_path / "modes.nwb").exists()


def test_model_without_nwb_is_a_usage_error(pipeline, capsys):
    tmp_path, args = pipeline
    args = args[: args.index("--nwb")] + args[args.index("--out"):]
    assert main([*args, "--model", str(tmp_path / "model")]) == 2
    assert "pass --nwb as well" in capsys.readouterr().err
