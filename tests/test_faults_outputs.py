"""Fault injection on outputs: nothing is lost and nothing is mixed (issue #15, items 1-4).

Kill and resume, inputs swapped between kill and resume, two runs on one output, stale locks, disk full
(a 2 MiB tmpfs; skipped where mounting is not allowed), read-only folders, outputs that are folders, and a
corrupt compressed chunk in an NWB's frames. Each case runs in a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn
from _contrib_store_job import CHUNK, job_inputs
from _nwbio_helpers import natural_recording

from retina_codec.cli.main import main
from retina_codec.contributions.engine import ContributionEngine
from retina_codec.contributions.store import partial_path, read_contributions, write_contributions
from retina_codec.errors import OutputLockedError, OutputPathError
from retina_codec.locking import OutputLock, lock_path
from retina_codec.recordings.nwb import write_nwb
from retina_codec.rf.store import read_rf, write_rf

TESTS = Path(__file__).parent
JOB = TESTS / "_contrib_store_job.py"
REPO = TESTS.parent
MODEL = REPO / "models" / "bncnn-sim-default"
LAYERS = ["conv1", "conv2"]
TORCH_THREADS = 1


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


@pytest.fixture
def full_fs(tmp_path):
    """A 2 MiB tmpfs (root only); skipped where mounting is not allowed."""
    where = tmp_path / "full"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write into: a read-only tmpfs as root, else a chmod 555 folder."""
    where = tmp_path / "ro"
    where.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
                          capture_output=True).returncode != 0:
            pytest.skip("root ignores file modes and cannot mount a read-only tmpfs here")
        yield where
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        return
    where.chmod(0o555)
    yield where
    where.chmod(0o755)


@pytest.fixture(scope="module")
def model_nwb(tmp_path_factory) -> Path:
    """A 600-frame 50x50 NWB file the shipped model can read (frames gzip-chunked by 64)."""
    path = tmp_path_factory.mktemp("rec") / "r.nwb"
    write_nwb(natural_recording(t=600, n=20, h=50, w=50, ground_truth=False), path, chunk_frames=64)
    return path


def _contributions_argv(rec: Path, out: Path, *extra: str) -> list[str]:
    return ["-q", "contributions", str(MODEL), str(rec), "--split", "train", "--target", "sum",
            "--max-bins", "30", "--steps", "2", "--device", "cpu", "--out", str(out), *extra]


def _count_compute(monkeypatch) -> list[int]:
    calls: list[int] = []
    orig = ContributionEngine.compute

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(ContributionEngine, "compute", counting)
    return calls


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


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


def test_second_writer_of_an_atomic_output_is_refused_with_one_line(tmp_path):
    out = tmp_path / "rf.h5"
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            write_rf(out, sta={"sta": np.zeros((2, 3, 4, 4))})
    assert not out.exists() and not lock_path(out).exists()


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


# -------------------------------------------------------------------------------------- 3: disk full
_SUBPROCESS_PRELUDE = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from _nwbio_helpers import natural_recording
"""


def _run_script(body: str, **fmt) -> subprocess.CompletedProcess:
    code = _SUBPROCESS_PRELUDE.format(tests=str(TESTS)) + textwrap.dedent(body).format(**fmt)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO))


def _leftovers(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir())


def test_disk_full_in_the_nwb_writer_is_one_line_exit_2_and_no_segfault(full_fs):
    proc = _run_script("""
        import retina_codec.sim
        retina_codec.sim.simulate_retina = lambda **kw: [natural_recording(t=800, n=4, h=60, w=60, seed=3,
                                                                          ground_truth=False)]
        from retina_codec.cli.main import main
        sys.exit(main(["-q", "simulate", "--out", {out!r}]))
    """, out=str(full_fs / "r.nwb"))
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "r.nwb" in line and "no space left" in line and "free" in line
    assert _leftovers(full_fs) == []


def test_disk_full_in_the_rf_store_is_one_line_and_leaves_no_file(full_fs):
    proc = _run_script("""
        from retina_codec.errors import RetinaCodecError
        from retina_codec.rf.store import write_rf
        try:
            write_rf({out!r}, sta={{"sta": np.random.default_rng(0).random((8, 10, 100, 100))}})
        except RetinaCodecError as err:
            print(err, file=sys.stderr)
            sys.exit(2)
    """, out=str(full_fs / "rf.h5"))
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "rf.h5" in line and "no space left" in line
    assert _leftovers(full_fs) == []


def _contributions_in_subprocess(rec: Path, out: Path) -> subprocess.CompletedProcess:
    argv = _contributions_argv(rec, out, "--reduce", "none", "--layers", "conv1", "--batch-size", "4")
    return subprocess.run([sys.executable, "-m", "retina_codec", *argv], capture_output=True, text=True,
                          timeout=120, cwd=str(REPO))


def test_disk_full_in_the_contributions_store_keeps_a_resumable_partial_and_exits_2(full_fs, model_nwb):
    filler = full_fs / "filler"
    filler.write_bytes(b"\0" * (2 * 2**20 - 160 * 2**10))  # leave about 160 KiB
    out = full_fs / "c.h5"
    proc = _contributions_in_subprocess(model_nwb, out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("retina-codec contributions: error: ") and "no space left" in line and "free" in line
    assert not out.exists() and not lock_path(out).exists()
    part = partial_path(out)
    if part.exists():  # resumable: it opens, marks its complete chunks, and a rerun with space finishes it
        with h5py.File(part, "r") as f:
            assert f["progress/chunk_done"][...].sum() >= 1
        filler.unlink()
        proc = _contributions_in_subprocess(model_nwb, out)
        assert proc.returncode == 0, proc.stderr
        assert out.exists()


# ------------------------------------------------------------------------------- 4: OS errors (CLI)
def test_read_only_output_folder_is_refused_before_computing(read_only_dir, model_nwb, capsys, monkeypatch):
    calls = _count_compute(monkeypatch)
    rc = main(_contributions_argv(model_nwb, read_only_dir / "c.h5"))
    assert rc == 2 and not calls
    line = _one_error_line(capsys.readouterr().err)
    assert "not writable" in line and str(read_only_dir) in line


def test_out_that_is_a_folder_is_refused_with_overwrite_before_computing(tmp_path, model_nwb, capsys,
                                                                        monkeypatch):
    calls = _count_compute(monkeypatch)
    folder = tmp_path / "out.h5"
    folder.mkdir()
    rc = main(_contributions_argv(model_nwb, folder, "--overwrite"))
    assert rc == 2 and not calls
    assert "is a directory" in _one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [folder]


def test_partial_that_is_a_folder_is_refused_before_computing(tmp_path, model_nwb, capsys, monkeypatch):
    calls = _count_compute(monkeypatch)
    out = tmp_path / "c.h5"
    partial_path(out).mkdir()
    rc = main(_contributions_argv(model_nwb, out))
    assert rc == 2 and not calls
    line = _one_error_line(capsys.readouterr().err)
    assert "is a directory" in line and "c.h5.partial" in line


def test_atomic_writer_refuses_an_output_that_is_a_folder(tmp_path):
    (tmp_path / "rf.h5").mkdir()
    with pytest.raises(OutputPathError, match="is a directory"):
        write_rf(tmp_path / "rf.h5", sta={"sta": np.zeros((1, 2, 3, 3))})


def _corrupt_frames_chunk(src: Path, dst: Path, k: int = 0) -> None:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r") as f:
        name = next(iter(f["stimulus/presentation"]))
        info = f[f"stimulus/presentation/{name}/data"].id.get_chunk_info(k)
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset + 8)
        fh.write(b"\xff" * 64)


def test_corrupt_compressed_chunk_in_the_frames_is_one_line_naming_the_file(tmp_path, model_nwb, capsys):
    bad = tmp_path / "bad.nwb"
    _corrupt_frames_chunk(model_nwb, bad, k=0)
    rc = main(_contributions_argv(bad, tmp_path / "c.h5"))
    assert rc == 2
    assert str(bad) in _one_error_line(capsys.readouterr().err)


def test_debug_flag_shows_the_traceback_instead_of_one_line(tmp_path, model_nwb):
    folder = tmp_path / "out.h5"
    folder.mkdir()
    with pytest.raises(OutputPathError):
        main(["--debug", *_contributions_argv(model_nwb, folder, "--overwrite")])


def test_a_corrupt_frames_chunk_is_a_recording_error_naming_the_file_in_the_library_too(tmp_path, model_nwb):
    from retina_codec.errors import RecordingError
    from retina_codec.recordings.nwb import read_nwb

    bad = tmp_path / "bad.nwb"
    _corrupt_frames_chunk(model_nwb, bad, k=0)
    with read_nwb(bad) as rec, pytest.raises(RecordingError, match=r"bad\.nwb: stimulus frames 0–"):
        rec.stimulus[0:10]


def test_rf_refuses_an_unwritable_out_before_computing(tmp_path, model_nwb, capsys, monkeypatch):
    import retina_codec.rf.sta as sta

    def never(*a, **k):
        raise AssertionError("the STA was computed before the output was checked")

    monkeypatch.setattr(sta, "spike_triggered_average", never)
    folder = tmp_path / "out.h5"
    folder.mkdir()
    assert main(["-q", "rf", str(MODEL), str(model_nwb), "--out", str(folder), "--overwrite"]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


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
