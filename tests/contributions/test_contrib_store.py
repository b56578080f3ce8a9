"""HDF5 contribution store: attributes, chunking along time, atomic rename, SIGKILL resume, streaming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn
from _contrib_store_job import CHUNK, N, job_inputs
from torch.utils.data import DataLoader, Dataset

from retina_codec import __version__
from retina_codec.contributions import contributions
from retina_codec.contributions.store import model_hash, partial_path, read_contributions, write_contributions

JOB = Path(__file__).parent.parent / "_contrib_store_job.py"
LAYERS = ["conv1", "conv2"]


TORCH_THREADS = 1  # see conftest.py: small convolutions are faster on one thread


def _reference(tmp_path: Path) -> dict:
    model, x = job_inputs()
    out = write_contributions(model, x, tmp_path / "ref.h5", LAYERS, target="surprisal", steps=5,
                              batch_size=CHUNK, quiet=True, device="cpu")
    return read_contributions(out)


def test_store_has_attributes_time_chunks_and_matches_in_memory_result(tmp_path):
    model, x = job_inputs()
    out = tmp_path / "c.h5"
    write_contributions(model, x, out, LAYERS, target="surprisal", steps=5, batch_size=CHUNK, quiet=True)
    assert out.exists() and not partial_path(out).exists()
    mem = contributions(model, x, LAYERS, target="surprisal", steps=5, batch_size=CHUNK, quiet=True)
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["method"] == "conductance" and a["rule"] == "trapezoid" and a["steps"] == 5
        assert json.loads(a["layers"]) == LAYERS
        assert json.loads(a["reduction"]) == ["ei_split", "spatial_sum"]
        assert json.loads(a["target"])["name"] == "surprisal"
        assert a["baseline"] == "0.0"
        assert a["model_hash"] == model_hash(model)
        assert a["package_version"] == __version__
        assert a["complete"]
        summary = json.loads(a["completeness"])
        assert set(summary) == set(LAYERS) and summary["conv2"]["total_rel"] < 0.05
        d = f["contributions/conv1"]
        assert d.shape == (N, 16) and d.chunks[0] <= CHUNK and d.chunks[1:] == (16,)
        np.testing.assert_array_equal(f["bins"][...], np.arange(N))
        np.testing.assert_allclose(f["target/mu"][...].shape, (4,))
        for layer in LAYERS:
            np.testing.assert_array_equal(f["contributions"][layer][...], mem[layer])
            np.testing.assert_array_equal(f["completeness"][layer][...], mem.completeness[layer])
        np.testing.assert_array_equal(f["f_x"][...], mem.f_x)


def test_run_killed_with_sigkill_resumes_from_last_complete_chunk_with_identical_numbers(tmp_path, caplog):
    ref = _reference(tmp_path)
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, str(JOB), str(out), "slow"], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "computing 4":  # chunks 0-3 written and flushed
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and partial_path(out).exists()
    with h5py.File(partial_path(out), "r") as f:
        done = f["progress/chunk_done"][...]
    assert 4 <= done.sum() < len(done)
    model, x = job_inputs()
    calls = []
    from retina_codec.contributions.engine import ContributionEngine

    orig = ContributionEngine.compute

    def counting(self, xx):
        calls.append(len(xx))
        return orig(self, xx)

    ContributionEngine.compute = counting
    try:
        with caplog.at_level("INFO"):
            write_contributions(model, x, out, LAYERS, target="surprisal", steps=5, batch_size=CHUNK,
                                quiet=True, device="cpu")
    finally:
        ContributionEngine.compute = orig
    assert len(calls) == len(done) - done.sum()  # only the missing chunks were computed
    assert f"resuming after {int(done.sum())} of {len(done)} chunks" in caplog.text
    got = read_contributions(out)
    for layer in LAYERS:
        np.testing.assert_array_equal(got["contributions"][layer], ref["contributions"][layer])
    np.testing.assert_array_equal(got["f_x"], ref["f_x"])


def test_partial_file_from_other_settings_is_not_resumed(tmp_path):
    model, x = job_inputs()
    out = tmp_path / "c.h5"
    write_contributions(model, x, out, LAYERS, target=0, steps=3, batch_size=CHUNK, quiet=True, max_chunks=2)
    assert partial_path(out).exists() and not out.exists()
    write_contributions(model, x, out, LAYERS, target=1, steps=3, batch_size=CHUNK, quiet=True)
    mem = contributions(model, x, LAYERS, target=1, steps=3, batch_size=CHUNK, quiet=True)
    np.testing.assert_array_equal(read_contributions(out)["contributions"]["conv1"], mem["conv1"])


def test_full_maps_are_streamed_chunk_by_chunk_without_holding_the_layer_in_memory(tmp_path):
    model = small_bncnn(n_cells=6)
    n = 240
    x = torch.randn(n, 6, 14, 14, generator=torch.Generator().manual_seed(0))
    cells = list(range(6))
    out = tmp_path / "full.h5"
    kw = dict(target=cells, steps=1, reduce=None, batch_size=8, quiet=True)
    write_contributions(model, x[:16], tmp_path / "warm.h5", LAYERS, **kw)  # imports and lazy set-up
    tracemalloc.start()
    try:
        write_contributions(model, x, out, LAYERS, **kw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with h5py.File(out, "r") as f:
        d = f["contributions/conv1"]
        assert d.shape == (n, 6, 8, 10, 10) and d.chunks[0] <= 8
        total = sum(f["contributions"][k].size * 4 for k in LAYERS)
        first = f["contributions/conv1"][:8]
    assert peak < total / 5, (peak, total)  # numpy buffers never approach the size of the stored maps
    mem = contributions(model, x[:8], ["conv1"], **kw)
    np.testing.assert_array_equal(first, mem["conv1"])


def test_store_requires_an_input_of_known_length(tmp_path):
    model = small_bncnn()
    with pytest.raises(ValueError, match="known length"):
        write_contributions(model, (torch.zeros(2, 6, 14, 14) for _ in range(2)), tmp_path / "x.h5", ["conv1"],
                            quiet=True)


def test_store_slices_a_per_sample_baseline_and_records_a_tensor_baseline_by_its_hash(tmp_path):
    model = small_bncnn(n_cells=3)
    x = torch.randn(9, 6, 14, 14, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(9, 6, 14, 14, generator=torch.Generator().manual_seed(1))
    out = write_contributions(model, x, tmp_path / "c.h5", ["conv2"], target=0, steps=3, baseline=x0,
                              batch_size=4, quiet=True)
    mem = contributions(model, x, ["conv2"], target=0, steps=3, baseline=x0, batch_size=9, quiet=True)
    got = read_contributions(out)
    np.testing.assert_allclose(got["contributions"]["conv2"], mem["conv2"], rtol=1e-5, atol=1e-7)
    assert got["attrs"]["baseline"].startswith("tensor [9, 6, 14, 14] sha256 ")


def test_store_does_not_resume_a_partial_file_of_another_baseline_or_other_inputs(tmp_path):
    model = small_bncnn(n_cells=3)
    gen = torch.Generator().manual_seed(2)
    x, x_other = torch.randn(12, 6, 14, 14, generator=gen), torch.randn(12, 6, 14, 14, generator=gen)
    b, b_other = torch.randn(6, 14, 14, generator=gen), torch.randn(6, 14, 14, generator=gen)
    kw = dict(target=0, steps=3, batch_size=4, quiet=True)
    for first, second in (((x, b), (x, b_other)), ((x, b), (x_other, b))):
        out = tmp_path / f"c{id(first) % 997}-{id(second) % 997}.h5"
        write_contributions(model, first[0], out, ["conv2"], baseline=first[1], max_chunks=2, **kw)
        write_contributions(model, second[0], out, ["conv2"], baseline=second[1], **kw)
        mem = contributions(model, second[0], ["conv2"], baseline=second[1], **kw)
        np.testing.assert_array_equal(read_contributions(out)["contributions"]["conv2"], mem["conv2"])


class _CountingDataset(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.reads = x, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.reads += 1
        return self.x[i]


def test_store_reads_a_dataloader_once_not_once_per_chunk(tmp_path):
    model = small_bncnn(n_cells=3)
    x = torch.randn(40, 6, 14, 14, generator=torch.Generator().manual_seed(3))
    ds = _CountingDataset(x)
    out = write_contributions(model, DataLoader(ds, batch_size=4), tmp_path / "c.h5", ["conv2"], target=0,
                              steps=1, batch_size=4, quiet=True)
    # the samples twice (once content-hashed for the resume signature, once explained), plus the first batch
    # to probe shapes; never once per chunk
    assert ds.reads <= 2 * len(x) + 8, ds.reads
    mem = contributions(model, x, ["conv2"], target=0, steps=1, batch_size=4, quiet=True)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["contributions/conv2"][...], mem["conv2"])


def test_an_auto_batch_size_resume_keeps_the_chunks_of_the_partial_file(tmp_path, monkeypatch):
    model, x = small_bncnn(n_cells=3), torch.randn(30, 6, 14, 14, generator=torch.Generator().manual_seed(6))
    out = tmp_path / "c.h5"
    kw = dict(target=0, steps=2, batch_size="auto", quiet=True)
    monkeypatch.setenv("RETINA_CODEC_MEMORY_BUDGET", "2e6")  # the memory free when the run started
    write_contributions(model, x, out, ["conv2"], max_chunks=2, **kw)
    with h5py.File(str(out) + ".partial", "r") as f:
        chunk = int(f.attrs["chunk_size"])
        assert f["progress/chunk_done"][...].sum() == 2
    monkeypatch.setenv("RETINA_CODEC_MEMORY_BUDGET", "5e6")  # more free memory when it is resumed
    computed = []
    from retina_codec.contributions.engine import ContributionEngine

    orig = ContributionEngine.compute
    monkeypatch.setattr(ContributionEngine, "compute", lambda self, xx, *a: computed.append(len(xx)) or orig(self, xx, *a))
    write_contributions(model, x, out, ["conv2"], **kw)
    assert sum(computed) == len(x) - 2 * chunk  # only the missing chunks, cut as before
    with h5py.File(out, "r") as f:
        assert int(f.attrs["chunk_size"]) == chunk
        np.testing.assert_array_equal(f["bins"][...], np.arange(len(x)))


def test_store_does_not_resume_the_partial_file_of_another_function_with_the_same_name(tmp_path):
    # a callable target was recorded by its name only: two different functions called "f" resumed each other
    from retina_codec.contributions.store import partial_path

    torch.manual_seed(0)
    model = small_bncnn(n_cells=3)
    x = torch.randn(12, 6, 14, 14, generator=torch.Generator().manual_seed(1))

    def make(weight):
        def f(out):
            return out @ weight
        return f

    out = tmp_path / "c.h5"
    write_contributions(model, x, out, "conv2", target=make(torch.tensor([1.0, 0.0, 0.0])), steps=2, batch_size=4,
                        quiet=True, max_chunks=1)
    assert partial_path(out).exists()
    write_contributions(model, x, out, "conv2", target=make(torch.tensor([0.0, 0.0, 1.0])), steps=2, batch_size=4,
                        quiet=True)
    want = contributions(model, x, "conv2", target=2, steps=2, batch_size=4, quiet=True)
    np.testing.assert_allclose(read_contributions(out)["contributions"]["conv2"], want["conv2"], rtol=1e-5, atol=1e-7)
