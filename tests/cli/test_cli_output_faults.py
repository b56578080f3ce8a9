"""Output faults on the command line: disk full (a 2 MiB tmpfs; skipped where mounting is not allowed),
read-only folders, outputs that are folders, corrupt compressed frames, atomic writers and --debug."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from _nwbio_helpers import natural_recording

from retina_codec.cli.main import main
from retina_codec.contributions.engine import ContributionEngine
from retina_codec.contributions.store import partial_path
from retina_codec.errors import OutputLockedError, OutputPathError
from retina_codec.locking import OutputLock, lock_path
from retina_codec.recordings.nwb import write_nwb
from retina_codec.stores.rf import write_rf

TORCH_THREADS = 1


TESTS = Path(__file__).parent.parent


REPO = TESTS.parent


MODEL = REPO / "retina_codec" / "shipped" / "bncnn-sim-default"


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


def test_second_writer_of_an_atomic_output_is_refused_with_one_line(tmp_path):
    out = tmp_path / "rf.h5"
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            write_rf(out, sta={"sta": np.zeros((2, 3, 4, 4))})
    assert not out.exists() and not lock_path(out).exists()


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
        from retina_codec.stores.rf import write_rf
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
