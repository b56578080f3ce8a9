"""Contribution store under faults: SIGKILL and resume, inputs swapped between kill and resume, output locks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn
from _contrib_store_job import CHUNK, job_inputs
from _nwbio_helpers import natural_recording

from retina_codec.contributions.store import partial_path, read_contributions, write_contributions
from retina_codec.errors import OutputLockedError
from retina_codec.locking import lock_path
from retina_codec.stores.rf import read_rf, write_rf

TORCH_THREADS = 1


TESTS = Path(__file__).parent.parent


JOB = TESTS / "_contrib_store_job.py"


LAYERS = ["conv1", "conv2"]


def _store_kwargs() -> dict:
    return dict(target="surprisal", steps=5, batch_size=CHUNK, quiet=True, device="cpu")


def _start_slow_job(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(JOB), str(out), "slow"], stdout=subprocess.PIPE, text=True,
                            cwd=str(TESTS))


def _wait_for(proc: subprocess.Popen, line: str) -> None:
    for got in proc.stdout:
        if got.strip() == line:
            return
    raise AssertionError(f"the job ended before printing {line!r}")


# ----------------------------------------------------------------------------------------- 1: resume
def test_resume_after_sigkill_at_a_random_chunk_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    model, x = job_inputs()
    ref = read_contributions(write_contributions(model, x, tmp_path / "ref.h5", LAYERS, **_store_kwargs()))
    out = tmp_path / "killed.h5"
    k = random.Random(os.getpid()).randint(1, 8)
    proc = _start_slow_job(out)
    try:
        _wait_for(proc, f"computing {k}")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and partial_path(out).exists()
    write_contributions(model, x, out, LAYERS, **_store_kwargs())
    got = read_contributions(out)
    for layer in LAYERS:
        np.testing.assert_array_equal(got["contributions"][layer], ref["contributions"][layer])
        np.testing.assert_array_equal(got["completeness"][layer], ref["completeness"][layer])
    np.testing.assert_array_equal(got["f_x"], ref["f_x"])
    assert not lock_path(out).exists() and not partial_path(out).exists()


def test_recording_swapped_between_kill_and_resume_restarts_and_never_mixes(tmp_path, caplog):
    model = small_bncnn(n_cells=4, seed=2)
    old = natural_recording(t=160, h=14, w=14, seed=0, ground_truth=False)
    new = natural_recording(t=160, h=14, w=14, seed=1, ground_truth=False)
    kw = dict(target="sum", steps=2, batch_size=8, quiet=True, device="cpu", split="train", history=6)
    out = tmp_path / "c.h5"
    write_contributions(model, old, out, LAYERS, max_chunks=3, **kw)
    assert partial_path(out).exists() and not out.exists()
    with h5py.File(partial_path(out), "r") as f:
        assert len(f.attrs["recording_frames_sha256"]) == 64
    with caplog.at_level("WARNING"):
        write_contributions(model, new, out, LAYERS, **kw)
    assert "starting over" in caplog.text and "recording_frames_sha256" in caplog.text
    ref = read_contributions(write_contributions(model, new, tmp_path / "ref.h5", LAYERS, **kw))
    got = read_contributions(out)
    for layer in LAYERS:
        np.testing.assert_array_equal(got["contributions"][layer], ref["contributions"][layer])


def test_same_recording_resumes_after_its_content_hash_is_checked(tmp_path, caplog):
    model = small_bncnn(n_cells=4, seed=2)
    rec = natural_recording(t=160, h=14, w=14, seed=0, ground_truth=False)
    kw = dict(target="sum", steps=2, batch_size=8, quiet=True, device="cpu", split="train", history=6)
    out = tmp_path / "c.h5"
    write_contributions(model, rec, out, LAYERS, max_chunks=3, **kw)
    with caplog.at_level("INFO"):
        write_contributions(model, rec, out, LAYERS, **kw)
    assert "resuming after 3 of" in caplog.text and "starting over" not in caplog.text


# ------------------------------------------------------------------------------------------ 2: locks
def test_second_run_on_the_same_out_is_refused_naming_the_first_which_completes(tmp_path):
    out = tmp_path / "c.h5"
    proc = _start_slow_job(out)
    try:
        _wait_for(proc, "computing 1")
        model, x = job_inputs()
        with pytest.raises(OutputLockedError) as err:
            write_contributions(model, x, out, LAYERS, **_store_kwargs())
        assert f"pid {proc.pid}" in str(err.value) and "\n" not in str(err.value)
        for _ in proc.stdout:
            pass
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    assert out.exists() and not partial_path(out).exists() and not lock_path(out).exists()
    assert read_contributions(out)["attrs"]["complete"]


def test_stale_lock_of_a_dead_run_is_taken_over_and_removed_at_the_end(tmp_path):
    out = tmp_path / "rf.h5"
    lock_path(out).write_text(json.dumps({"pid": 999999, "host": "gone", "command": "retina-codec rf ..."}))
    write_rf(out, sta={"sta": np.ones((2, 3, 4, 4))})
    assert read_rf(out)["sta"]["sta"].shape == (2, 3, 4, 4)
    assert not lock_path(out).exists()
    model, x = job_inputs()
    c = tmp_path / "c.h5"
    lock_path(c).write_text("{\"pid\": 999999}")
    write_contributions(model, x[:12], c, LAYERS, **_store_kwargs())
    assert c.exists() and not lock_path(c).exists()


def test_a_dataloader_whose_samples_changed_between_kill_and_resume_starts_over(tmp_path, caplog):
    """DataLoader inputs are hashed too (one extra pass): other samples, or another order, start the partial
    store over instead of mixing; the same loader resumes."""
    import logging

    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2)).eval()
    gen = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(24, 3, 8, 8, generator=gen), torch.randn(24, 3, 8, 8, generator=gen)
    kw = {"layers": ["1"], "target": "sum", "steps": 3, "batch_size": 4, "quiet": True}
    out = tmp_path / "c.h5"
    write_contributions(model, DataLoader(TensorDataset(xa), batch_size=5), out, max_chunks=2, **kw)
    with caplog.at_level(logging.INFO):
        write_contributions(model, DataLoader(TensorDataset(xb), batch_size=5), out, **kw)
    assert "starting over" in caplog.text and "input_sha256" in caplog.text
    np.testing.assert_array_equal(read_contributions(out)["contributions"]["1"],
                                  read_contributions(write_contributions(model, xb, tmp_path / "b.h5", **kw))
                                  ["contributions"]["1"])
    again = tmp_path / "again.h5"
    write_contributions(model, DataLoader(TensorDataset(xa), batch_size=5), again, max_chunks=2, **kw)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        write_contributions(model, DataLoader(TensorDataset(xa), batch_size=5), again, **kw)
    assert "resuming after 2 of 6 chunks" in caplog.text and "starting over" not in caplog.text
