"""Scale-out: ``torchrun --nproc_per_node=2 -m retina_codec contributions ...`` on CPU (gloo) writes one
store identical to the single-process run; plus the CLI itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn

from retina_codec.cli.main import main
from retina_codec.models import save_model
from retina_codec.recordings import Recording
from retina_codec.recordings.nwb import write_nwb

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


@pytest.fixture(scope="module")
def model_and_recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = small_bncnn(n_cells=3)
    model.norm_stats = (0.5, 0.25)
    save_model(model, d / "model")
    rng = np.random.default_rng(0)
    t = 90
    rec = Recording(stimulus=rng.random((t, 14, 14)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 3)).astype(np.float32),
                    intervals={"train": np.array([[0.0, 0.4]]), "test": np.array([[0.4, 0.9]])},
                    stimulus_name="noise")
    write_nwb(rec, d / "rec.nwb")
    return d / "model", d / "rec.nwb"


ARGS = ["--layers", "conv1", "conv2", "--target", "surprisal", "--steps", "4", "--batch-size", "6",
        "--device", "cpu"]


def _read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        data = {k: f[k][...] for k in ("bins", "f_x", "f_baseline")}
        for g in ("contributions", "completeness"):
            data.update({f"{g}/{k}": f[g][k][...] for k in f[g]})
        attrs = {k: f.attrs[k] for k in ("method", "layers", "target", "model_hash", "completeness")}
    return {"data": data, "attrs": attrs}


def test_cli_writes_a_store_for_a_recording_split(model_and_recording, tmp_path):
    model_dir, nwb = model_and_recording
    out = tmp_path / "c.h5"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(out), *ARGS])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    got = _read(out)
    assert got["data"]["contributions/conv1"].shape == (50, 16)
    np.testing.assert_array_equal(got["data"]["bins"], np.arange(40, 90))
    assert json.loads(got["attrs"]["layers"]) == ["conv1", "conv2"]
    assert json.loads(got["attrs"]["target"])["name"] == "surprisal"


def test_cli_max_bins_explains_the_first_bins_with_moments_from_the_whole_split(model_and_recording, tmp_path):
    model_dir, nwb = model_and_recording
    full, head = tmp_path / "full.h5", tmp_path / "head.h5"
    assert main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(full), *ARGS]) == 0
    assert main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(head), "--max-bins", "7",
                 *ARGS]) == 0
    a, b = _read(full)["data"], _read(head)["data"]
    np.testing.assert_array_equal(b["bins"], np.arange(40, 47))
    for key in ("contributions/conv1", "contributions/conv2", "f_x"):  # same surprisal reference: same rows
        np.testing.assert_allclose(b[key], a[key][:7], rtol=1e-5, atol=1e-7)


def test_cli_unknown_layer_is_one_line_error(model_and_recording, tmp_path, capsys):
    model_dir, nwb = model_and_recording
    rc = main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(tmp_path / "x.h5"),
               "--layers", "conv7"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conv7" in err[0]
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_torchrun_two_cpu_ranks_give_the_single_process_store(model_and_recording, tmp_path):
    model_dir, nwb = model_and_recording
    single = tmp_path / "single.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1", RETINA_CODEC_QUIET="1")
    cmd = [sys.executable, "-m", "retina_codec", "contributions", str(model_dir), str(nwb), "--out"]
    subprocess.run(cmd + [str(single), *ARGS], check=True, env=env, timeout=300)
    sharded = tmp_path / "sharded.h5"
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "retina_codec", "contributions",
                          str(model_dir), str(nwb), "--out", str(sharded), *ARGS],
                         env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not list(tmp_path.glob("*.partial"))
    a, b = _read(single), _read(sharded)
    assert a["data"].keys() == b["data"].keys()
    for k in a["data"]:
        np.testing.assert_array_equal(a["data"][k], b["data"][k], err_msg=k)
    assert a["attrs"] == b["attrs"]


def test_cli_bad_target_is_one_line_error(model_and_recording, tmp_path, capsys):
    model_dir, nwb = model_and_recording
    rc = main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(tmp_path / "x.h5"),
               "--target", "cells"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cells" in err[0]


def test_cli_speed_options_give_the_same_store(model_and_recording, tmp_path):
    model_dir, nwb = model_and_recording
    plain, fast = tmp_path / "plain.h5", tmp_path / "fast.h5"
    assert main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(plain), *ARGS]) == 0
    assert main(["-q", "contributions", str(model_dir), str(nwb), "--out", str(fast), *ARGS,
                 "--fast-conv", "fft", "--channels-last"]) == 0
    a, b = _read(plain)["data"], _read(fast)["data"]
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5)
