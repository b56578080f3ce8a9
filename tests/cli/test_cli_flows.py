"""End-to-end command-line flows a neuroscientist runs beyond the demo (recording → fit/model → contributions →
modes → rf), each on a tiny file, checking what the commands write and say."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import torch
from _nwbio_helpers import optical_series, write_nwbfile

from retina_codec.cli.main import main
from retina_codec.models import BNCNN, save_model
from retina_codec.recordings.nwb import read_nwb

TORCH_THREADS = 1

T, H, W, N, HIST = 200, 6, 8, 3, 6


def _imaging_nwb(path, second_series: bool = False, samples: int = T // 2 + 1):
    """An imaging-style file: a uint8 movie at 60 Hz and ROI rates (Hz) at 30 Hz, no spikes (``T // 2 + 1``
    samples cover the movie)."""
    from pynwb.testing.mock.file import mock_NWBFile
    from pynwb.testing.mock.ophys import mock_PlaneSegmentation, mock_RoiResponseSeries

    rng = np.random.default_rng(0)
    f = mock_NWBFile()
    f.add_stimulus(optical_series("movie", rng.integers(0, 256, (T, W, H), dtype=np.uint8), starting_time=0.0,
                                  rate=60.0))
    plane = mock_PlaneSegmentation(n_rois=N, nwbfile=f)
    rates = rng.gamma(2.0, 5.0, (samples, N))
    mock_RoiResponseSeries(name="rates", data=rates, unit="Hz", rate=30.0, starting_time=0.0,
                           plane_segmentation=plane, nwbfile=f)
    if second_series:
        mock_RoiResponseSeries(name="dff", data=rates / 10.0, rate=30.0, starting_time=0.0,
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


def test_commands_take_responses_for_a_file_with_two_rate_series(imaging, capsys, caplog):
    # the reader's error tells the user to pass --responses NAME; contributions, modes --nwb and rf must take it
    d = imaging
    assert _contrib(d, "two.nwb", "c_two_err.h5") == 2
    assert "--responses" in capsys.readouterr().err
    assert _contrib(d, "two.nwb", "c_two.h5", "--responses", "rates") == 0
    assert _modes(d, "c_two.h5", "m_two.h5", "--nwb", str(d / "two.nwb"), "--responses", "rates",
                  "--model", str(d / "model")) == 0
    caplog.set_level(logging.INFO, logger="retina_codec.cli.rf")
    assert main(["rf", str(d / "model"), str(d / "two.nwb"), "--responses", "rates", "--modes",
                 str(d / "m_two.h5"), "--model-sta-samples", "8", "--device", "cpu", "--no-figures",
                 "--out", str(d / "rf_two.h5")]) == 0
    assert (d / "rf_two.h5").exists()
    assert "no STA: the responses of" in caplog.text and "rates (Hz)" in caplog.text  # skipped, and said why
    wrote = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote "))
    assert wrote.endswith("(model_sta, rank1, gaussian, conditioned, sources)"), wrote  # the groups written
    assert main(["-q", "convert", str(d / "two.nwb"), str(d / "two_copy.nwb"), "--responses", "rates"]) == 0
    with read_nwb(d / "two.nwb", responses="rates") as rec, read_nwb(d / "two_copy.nwb") as copy:
        np.testing.assert_allclose(copy.responses, rec.responses, rtol=1e-6)


def test_modes_nwb_copy_of_an_imaging_recording_reads_back_with_its_own_rates(imaging):
    # the copy's processing/codec series (loadings, predicted rates) are not response candidates: the copy
    # reads exactly as the recording did, without --responses
    d = imaging
    assert _contrib(d, "one.nwb", "c_one.h5") == 0
    assert _modes(d, "c_one.h5", "m_one.h5", "--nwb", str(d / "one.nwb"), "--model", str(d / "model")) == 0
    with read_nwb(d / "one.nwb") as rec, read_nwb(d / "m_one.nwb") as copy:
        assert copy.provenance["responses"] == rec.provenance["responses"] == "rates"
        np.testing.assert_array_equal(copy.responses, rec.responses)
    with pytest.warns(RuntimeWarning, match="covers frames"):  # the rates exist on the explained bins only
        pred = read_nwb(d / "m_one.nwb", responses="predicted_rates")  # still readable by name
    with pred:
        assert pred.n_cells == N


def test_predicted_rates_in_the_nwb_copy_carry_the_models_output_unit(imaging):
    from pynwb import NWBHDF5IO

    d = imaging
    if not (d / "m_one.nwb").exists():
        assert _contrib(d, "one.nwb", "c_one.h5") == 0
        assert _modes(d, "c_one.h5", "m_one.h5", "--nwb", str(d / "one.nwb"), "--model", str(d / "model")) == 0
    with NWBHDF5IO(str(d / "m_one.nwb"), "r") as io:
        assert io.read().processing["codec"]["predicted_rates"].unit == "Hz"  # a rate model, not spikes per bin


@pytest.fixture(scope="module")
def two_stimuli(tmp_path_factory):
    """A spike recording with two stimuli, a model, and modes of its natural-scene contributions."""
    from _nwbio_helpers import natural_recording, whitenoise_recording

    from retina_codec.recordings.nwb import write_nwb

    d = tmp_path_factory.mktemp("two_stimuli")
    write_nwb([natural_recording(t=240), whitenoise_recording(t=240)], d / "rec.nwb")
    for name, seed in (("model", 0), ("other", 1)):
        torch.manual_seed(seed)
        m = BNCNN(n_cells=4, history=HIST, frame_shape=(5, 7), channels=(3, 2), kernel_sizes=(3, 3)).eval()
        m.norm_stats = (0.5, 0.29)
        save_model(m, d / name)
    assert main(["-q", "contributions", str(d / "model"), str(d / "rec.nwb"), "--stimulus", "natural",
                 "--split", "train", "--max-bins", "60", "--steps", "2", "--device", "cpu",
                 "--out", str(d / "contrib.h5")]) == 0
    assert _modes(d, "contrib.h5", "modes.h5") == 0
    return d


@pytest.mark.parametrize("extra, message", [
    (["--stimulus", "whitenoise", "--model", "model"], "stimulus 'natural'"),
    (["--stimulus", "natural", "--model", "other"], "not the model"),
])
def test_rf_refuses_modes_of_another_stimulus_or_model(two_stimuli, capsys, extra, message):
    # the modes' bins index the movie (and the loadings the model) the contributions were computed on: another
    # stimulus or model gives conditioned RFs over unrelated frames, silently
    d = two_stimuli
    i = extra.index("--model")
    args = ["-q", "rf", str(d / extra[i + 1]), str(d / "rec.nwb"), *extra[:i], "--modes", str(d / "modes.h5"),
            "--model-sta-samples", "0", "--device", "cpu", "--no-figures", "--out", str(d / "rf.h5")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (d / "rf.h5").exists()
    args[2 + 0] = str(d / "model")
    args[args.index("--stimulus") + 1] = "natural"
    assert main(args) == 0 and (d / "rf.h5").exists()  # the matching model and stimulus run
    (d / "rf.h5").unlink()


def test_a_contributions_run_that_fails_before_its_first_chunk_leaves_no_partial_file(imaging, capsys):
    # an out-of-range cell is found on the first chunk; the empty partial file it left made the next run say
    # "partial file from different settings; starting over"
    d = imaging
    assert _contrib(d, "one.nwb", "bad.h5", "--target", "cells", "--cells", "0", "9") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell index 9 out of range" in err[0]
    assert not list(d.glob("bad.h5*"))


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "nan"], "baseline: expected finite"),
    (["--max-bins", "0"], "--max-bins: expected at least 1"),
    (["--batch-size", "many"], "--batch-size: expected a positive integer"),
    (["--target", "surprisal", "--cells", "0", "1"], "--cells: only for --target cell / cells / sum"),
])
def test_contributions_settings_that_give_no_or_misleading_numbers_are_one_line_errors(imaging, capsys, extra, message):
    d = imaging
    args = ["-q", "contributions", str(d / "model"), str(d / "one.nwb"), "--split", "train", "--steps", "2",
            "--device", "cpu", "--out", str(d / "bad.h5"), *extra]
    if "--max-bins" not in extra:
        args += ["--max-bins", "20"]
    assert main(args) == 2  # a NaN baseline wrote a store of NaNs and exited 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(d.glob("bad.h5*"))


def test_modes_names_the_target_index_option_of_a_per_cell_store(imaging, capsys):
    d = imaging
    assert _contrib(d, "one.nwb", "cells.h5", "--target", "cells", "--cells", "0", "2") == 0
    assert _modes(d, "cells.h5", "m_cells.h5") == 2
    assert "--target-index" in capsys.readouterr().err
    assert _modes(d, "cells.h5", "m_cells.h5", "--target-index", "2") == 2
    assert "--target-index" in capsys.readouterr().err
    assert _modes(d, "cells.h5", "m_cells.h5", "--target-index", "1") == 0


def test_modes_nwb_out_without_the_recording_is_an_error_not_ignored(imaging, capsys):
    d = imaging
    if not (d / "c_one.h5").exists():
        assert _contrib(d, "one.nwb", "c_one.h5") == 0
    assert _modes(d, "c_one.h5", "m_x.h5", "--nwb-out", str(d / "copy.nwb")) == 2  # wrote no copy, exit 0
    assert "pass the recording with --nwb" in capsys.readouterr().err
    assert not (d / "m_x.h5").exists() and not (d / "copy.nwb").exists()


@pytest.mark.parametrize("extra, reference", [
    ([], "'train' split"),  # --max-bins: the moments still come from the whole split
    (["--reference-split", "validation"], "'validation' split"),
])
def test_surprisal_store_records_which_split_gave_its_moments(imaging, extra, reference):
    import h5py

    d = imaging
    out = f"ref{len(extra)}.h5"
    assert _contrib(d, "one.nwb", out, *extra) == 0
    with h5py.File(d / out, "r") as f:
        assert reference in f.attrs["surprisal_reference"] and "'movie'" in f.attrs["surprisal_reference"]


def test_rf_store_carries_what_its_figures_need(imaging):
    # figures/conditioned_rfs.py reads cell ids, frame rate and mode names from the store's attributes; the CLI
    # wrote none of them (lags drawn at 100 Hz for a 60 Hz movie, cells only by index)
    import h5py

    from retina_codec.report.figures import conditioned_gallery
    from retina_codec.stores.modes import read_loadings

    d = imaging
    if not (d / "m_one.h5").exists():
        assert _contrib(d, "one.nwb", "c_one.h5") == 0
        assert _modes(d, "c_one.h5", "m_one.h5") == 0
    with read_nwb(d / "one.nwb") as rec:
        ids, rate = rec.cell_ids, rec.frame_rate
    assert main(["-q", "rf", str(d / "model"), str(d / "one.nwb"), "--modes", str(d / "m_one.h5"), "--cells",
                 ids[2], ids[0], "--model-sta-samples", "0", "--device", "cpu", "--no-figures",
                 "--out", str(d / "rf_one.h5")]) == 0
    with h5py.File(d / "rf_one.h5", "r") as f:
        a = dict(f.attrs)
    assert a["frame_rate"] == pytest.approx(rate) and rate == pytest.approx(60.0)
    assert json.loads(a["cell_ids"]) == [ids[2], ids[0]] and json.loads(a["cells"]) == [2, 0]
    assert json.loads(a["mode_names"]) == read_loadings(d / "m_one.h5")[2]
    assert a["layer"] == "conv2" and a["stimulus"] == "movie"
    assert conditioned_gallery(d / "rf_one.h5", ids[0], d / "gallery.png") and (d / "gallery.png").exists()


def test_fit_with_changed_settings_after_an_interruption_says_how_to_start_over(tmp_path, capsys, monkeypatch):
    # the resume state's error told CLI users to "use another checkpoint_dir", an option fit does not have
    from _nwbio_helpers import natural_recording

    from retina_codec.models import build_model
    from retina_codec.models.fitting import SMALL_CONFIG, fit
    from retina_codec.recordings.nwb import write_nwb

    monkeypatch.setenv("RETINA_CODEC_QUIET", "1")
    rec = natural_recording(t=120, h=16, w=16, ground_truth=False)
    write_nwb(rec, tmp_path / "rec.nwb")
    torch.manual_seed(0)
    model = build_model("BNCNN", {"n_cells": rec.n_cells, "frame_shape": [16, 16], **SMALL_CONFIG, "history": 4})
    state = tmp_path / "out" / ".fit_state"
    fit(rec, model, epochs=1, batch_size=16, steps_per_epoch=1, device="cpu", checkpoint_dir=state, quiet=True)
    assert (state / "fit_state.pt").exists()  # as an interrupted `retina-codec fit --out out` leaves it
    args = ["-q", "fit", str(tmp_path / "rec.nwb"), "--out", str(tmp_path / "out"), "--small", "--history", "4",
            "--epochs", "1", "--batch-size", "16", "--steps-per-epoch", "1", "--device", "cpu", "--lr", "0.01"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr" in err[0] and f"delete {state}" in err[0], err


def test_warnings_print_as_one_line_naming_the_command(tmp_path):
    # a user saw the package's source path and the code line `rec = _read(nwbfile, path, ...)` under a warning
    import subprocess
    import sys

    _imaging_nwb(tmp_path / "short.nwb", samples=T // 4)  # rates cover half the movie: a RuntimeWarning
    run = subprocess.run([sys.executable, "-m", "retina_codec", "inspect", str(tmp_path / "short.nwb")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("retina-codec inspect: warning: ") for ln in lines), lines
    assert any("covers frames 0.." in ln and ln.endswith("(RuntimeWarning)") for ln in lines), lines


def test_a_lab_h5_file_given_where_nwb_is_read_says_to_convert_it(imaging, tmp_path, capsys):
    # pynwb's "TypeError: Missing NWB version in file" did not tell the user what to do
    from _nwbio_helpers import write_lab_h5

    write_lab_h5(tmp_path / "naturalscene.h5")
    assert main(["-q", "contributions", str(imaging / "model"), str(tmp_path / "naturalscene.h5"),
                 "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Baccus-lab h5" in err[0] and "retina-codec convert" in err[0], err


def test_cli_trust_flag_loads_a_torch_deep_retina_pickle_that_needs_it(tmp_path, capsys):
    from _model_helpers import tdr_pickle_and_recording

    from retina_codec.cli.main import main

    tdr_pickle_and_recording(tmp_path)
    args = ["-q", "contributions", str(tmp_path / "frac.pt"), str(tmp_path / "rec.nwb"), "--target", "sum",
            "--steps", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "no.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust" in err[0]
    assert main([*args, "--out", str(tmp_path / "yes.h5"), "--trust"]) == 0
    with h5py.File(tmp_path / "yes.h5", "r") as f:
        assert f["contributions/conv1"].shape[1] == 16
