"""The README's first command: `retina-codec demo` runs the whole pipeline, resumably, and ends in a report."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _demo_helpers import FAST, demo_folder, manifest

from retina_codec.cli.demo import STAGES, Demo, DemoSettings, classifier_argv
from retina_codec.cli.main import main
from retina_codec.recordings import read_nwb

STORES = ["simulated_retina_small_seed0.nwb", "fit.h5", "contributions.h5", "modes_conv1.h5", "modes_conv2.h5",
          "modes_conv1_summary.json", "modes_conv2_summary.json", "rf.h5", "rf_conditioned_conv1.h5",
          "rf_conditioned_conv2.h5", "report.html", "demo.json"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)


def test_demo_writes_every_store_and_the_report(demo):
    out, model = demo
    for name in STORES:
        assert (out / name).exists(), name
    with read_nwb(out / STORES[0], stimulus="whitenoise") as rec:
        assert rec.n_cells >= 16 and rec.ground_truth is not None
    doc = manifest(out)
    assert set(doc["timings_s"]) == set(STAGES)
    assert doc["model_path"] == str(model) and doc["settings"]["bins"] == 240
    assert "classifiers" in doc["notes"]  # --no-classifiers is recorded, and the report says so
    assert not list(out.glob("*.partial")) and not list(out.glob(".*tmp"))


def test_demo_contributions_use_the_surprisal_of_both_conv_layers_on_the_chosen_bins(demo):
    out, _ = demo
    with h5py.File(out / "contributions.h5", "r") as f:
        assert json.loads(f.attrs["target"])["name"] == "surprisal"
        assert json.loads(f.attrs["layers"]) == ["conv1", "conv2"]
        assert bool(f.attrs["complete"]) and f["bins"].shape == (240,)
        assert f["contributions/conv1"].shape == (240, 16)
        bins = f["bins"][...]
        mu = f["target/mu"][...]
    with h5py.File(out / "fit.h5", "r") as f:  # the first test bins; surprisal moments from the test predictions
        test_bins = f["naturalscene/bins"][...]
        pred = f["naturalscene/predicted"][...]
    np.testing.assert_array_equal(bins, test_bins[:240])
    np.testing.assert_allclose(mu, pred.mean(0), rtol=1e-5)


def test_demo_modes_summaries_and_conditioned_rfs_are_consistent(demo):
    out, _ = demo
    s = json.loads((out / "modes_conv2_summary.json").read_text())
    with h5py.File(out / "modes_conv2.h5", "r") as f:
        n_modes = f["atoms"].shape[0]
        loadings = f["loadings"][...]
    r = np.array(s["correlation"], dtype=float)
    assert r.shape == (n_modes, 20) and np.nanmax(np.abs(r)) <= 1.0
    assert s["active_bins"] == (loadings > 0).sum(0).tolist()
    with h5py.File(out / "rf_conditioned_conv2.h5", "r") as f:
        assert json.loads(f.attrs["cell_ids"]) == ["off00", "on00", "onoff00", "ln00"]  # one cell per type
        assert f["conditioned/mode_spatial"].shape[:2] == (3, 4)  # --rf-modes 3 modes x 4 cells
        assert f["sources/r2_irf"].shape == (4,)
        assert int(f["conditioned"].attrs["n_bins"]) == 64
    with h5py.File(out / "rf.h5", "r") as f:
        assert f["ln_truth/filters"].shape[0] == 4 and f["ln_truth/r_sta"].shape == (4,)


def test_demo_second_run_skips_every_stage(demo, capsys):
    out, model = demo
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "demo.json"}
    assert main(["demo", "--out", str(out), "--model", str(model), *FAST]) == 0
    text = capsys.readouterr().out
    assert "using the simulated recording already" in text
    assert text.count("exists: skipping") >= 5 and "rf_conditioned_*.h5 exist: skipping" in text
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "demo.json"}
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {"report.html"}, changed


def test_demo_recomputes_a_missing_store_and_what_depends_on_it(demo, capsys):
    out, model = demo
    (out / "modes_conv2.h5").unlink()
    keep = {n: (out / n).stat().st_mtime_ns for n in ("modes_conv1.h5", "rf_conditioned_conv1.h5", "rf.h5")}
    old_cond = (out / "rf_conditioned_conv2.h5").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--model", str(model), *FAST]) == 0
    text = capsys.readouterr().out
    assert "made from older inputs: recomputing" in text  # the conv2 summary and conditioned RFs
    assert (out / "modes_conv2.h5").exists()
    assert (out / "rf_conditioned_conv2.h5").stat().st_mtime_ns != old_cond
    assert {n: (out / n).stat().st_mtime_ns for n in keep} == keep


def test_demo_says_so_and_fits_a_small_model_when_the_shipped_one_is_missing(tmp_path, capsys, monkeypatch):
    """With no model given and none shipped, the model stage fits a small BN-CNN into OUT/model."""
    import retina_codec.pipeline.stages as demo_mod

    monkeypatch.setattr(demo_mod, "default_model_path", lambda: tmp_path / "no-such-model")
    d = Demo(DemoSettings(out=str(tmp_path / "out"), preset="small", fit_epochs=1, fit_steps=2, quiet=True))
    d.paths.out.mkdir()
    d.stage_recording()
    d.stage_model()
    text = capsys.readouterr().out
    assert "not found: fitting a small BN-CNN" in text
    assert (tmp_path / "out" / "model" / "model.json").exists()
    assert d.model.input_spec.history == 20
    d.close()


def test_classifier_stage_runs_the_classify_stats_command():
    argv = classifier_argv(Path("x/classifiers"), 3)
    if argv is None:
        pytest.skip("the classifier comparison is not installed")
    from retina_codec.cli.main import build_parser

    args = build_parser().parse_args(argv)  # a valid classify-stats command line
    assert args.command == "classify-stats" and args.model == "digits-cnn" and args.max_per_class == 3


def test_demo_rejects_a_missing_model_before_simulating(tmp_path, capsys):
    assert main(["-q", "demo", "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope"),
                 "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "no fitted model there" in err and str(tmp_path / "nope") in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- demo folder
def test_demo_refuses_a_file_or_a_foreign_folder_as_out(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    assert main(["-q", "demo", "--out", str(afile), "--preset", "small"]) == 2
    assert "is a file" in capsys.readouterr().err
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.tex").write_text("mine")
    (user / "report.html").write_text("my own report")
    assert main(["-q", "demo", "--out", str(user), "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "not a demo folder" in err and "thesis.tex" in err and err.count("\n") == 1
    assert (user / "report.html").read_text() == "my own report" and sorted(p.name for p in user.iterdir()) == [
        "report.html", "thesis.tex"]


def test_demo_out_check_accepts_demo_folders_and_interrupted_ones(demo, tmp_path):
    from retina_codec.cli.demo import check_out_folder

    check_out_folder(demo[0])  # a finished demo folder (with its own files added later too)
    check_out_folder(tmp_path / "new")  # not there yet
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in (".simulated_retina_small_seed0.nwb.abc123.nwb", "simulated_retina_small_seed0.nwb", "fit.h5",
                 "contributions.h5.partial", "contributions.h5.shard0-of-2.partial", "modes_conv1.h5",
                 "modes_conv1_summary.json", "rf_conditioned_conv1.h5"):
        (killed / name).write_bytes(b"")
    (killed / "model").mkdir()
    check_out_folder(killed)  # a demo killed before demo.json was written


@pytest.mark.slow
def test_demo_killed_mid_stage_leaves_no_store_and_resumes(demo, tmp_path):
    """SIGKILL during the fit stage: no fit.h5 under its name (only a hidden temporary file); the next run
    makes a complete fit.h5."""
    src, model = demo
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(src / "simulated_retina_small_seed0.nwb", out)
    cmd = [sys.executable, "-m", "retina_codec.cli.main", "demo", "--out", str(out), "--model", str(model), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("[3/9]"):
                break
        deadline = time.time() + 60
        while not list(out.glob(".fit.h5.*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the fit stage ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (out / "fit.h5").exists()
    from retina_codec.cli.demo import Demo, DemoSettings

    d = Demo(DemoSettings(out=str(out), preset="small", model=str(model), quiet=True))
    try:
        d.stage_recording()
        d.stage_fit()
    finally:
        d.close()
    with h5py.File(out / "fit.h5", "r") as f:
        assert f["naturalscene/r_response"].shape == (20,) and f["whitenoise/predicted"].shape[1] == 20


def test_demo_rejects_unknown_rf_cells_before_the_long_stages(demo, tmp_path, capsys):
    src, model = demo
    out = tmp_path / "cells"
    out.mkdir()
    shutil.copy(src / "simulated_retina_small_seed0.nwb", out)
    for bad in ("nope", "99"):
        assert main(["-q", "demo", "--out", str(out), "--model", str(model), *FAST, "--rf-cells", "on00", bad]) == 2
        err = capsys.readouterr().err
        assert f"--rf-cells {bad}: not a cell id or index (0-19)" in err and "off00" in err
    assert sorted(p.name for p in out.iterdir()) == ["simulated_retina_small_seed0.nwb"]  # nothing computed
