"""Review of the contribution engine (session 4): per-sample baselines across chunks, hooked layers inside
the affine stem, the store's resume signature and DataLoader reads, target validation, the CLI's --trust."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn
from torch.utils.data import DataLoader, Dataset

from retina_codec.contributions import CellTarget, SumTarget, contributions, make_target
from retina_codec.contributions.store import read_contributions, write_contributions
from retina_codec.models.linear_stacked import LinearStackedBNCNN

F64 = torch.float64
TORCH_THREADS = 1  # see conftest.py


@pytest.fixture(scope="module")
def bncnn():
    return small_bncnn(n_cells=4).double()


def _x(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 6, 14, 14, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _conductance_conv2(model, x, x0, cell, m):
    """Trapezoid conductance of conv2 along x₀ + α(x − x₀), written out step by step."""
    acts, grads = [], []
    for k in range(m + 1):
        a = model.conv2(model.conv1(x0 + (k / m) * (x - x0))).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.readout(a)[:, cell].sum(), a)
        acts.append(a.detach())
        grads.append(g)
    return sum(0.5 * (grads[k - 1] + grads[k]) * (acts[k] - acts[k - 1]) for k in range(1, m + 1))


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("stem", ["auto", ()])
def test_a_per_sample_baseline_is_split_with_the_chunks(bncnn, batch_size, stem):
    x, x0 = _x(5, 0), _x(5, 1)
    res = contributions(bncnn, x, ["conv2"], target=2, steps=4, baseline=x0, reduce=None, batch_size=batch_size,
                        stem=stem, quiet=True)
    want = _conductance_conv2(bncnn, x, x0, 2, 4)
    np.testing.assert_allclose(res["conv2"], want.numpy(), rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        np.testing.assert_allclose(res.f_baseline, bncnn(x0)[:, 2].numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="one per input sample"):
        contributions(bncnn, x, ["conv2"], target=2, steps=2, baseline=x0[:3], batch_size=2, quiet=True)


def test_act_grad_of_a_hooked_stem_module_is_its_own_activation_times_gradient(bncnn):
    x = _x(3, 2)
    u = bncnn.conv1.conv(x).detach().requires_grad_(True)  # conv1.conv is the first module of the stem
    out = bncnn.readout(bncnn.conv2(bncnn.conv1.relu(bncnn.conv1.bn(u))))[:, 1].sum()
    (g,) = torch.autograd.grad(out, u)
    for method, want in (("act_grad", u * g), ("act_normgrad", u * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1))):
        res = contributions(bncnn, x, ["conv1.conv", "conv2"], target=1, method=method, reduce=None, quiet=True)
        np.testing.assert_allclose(res["conv1.conv"], want.detach().numpy(), rtol=1e-10, atol=1e-14)
        assert res.settings["affine_stem"] == ["conv1.conv"]  # the stem ends at the hooked module


def test_a_sub_module_of_a_stem_module_can_be_hooked():
    torch.manual_seed(0)
    model = LinearStackedBNCNN(2, history=4, frame_shape=(12, 12), kernel_sizes=(5, 3)).double().eval()
    x = torch.randn(2, 4, 12, 12, dtype=F64)
    layers = ["conv1.conv.stack.0", "conv1"]
    fast = contributions(model, x, layers, target=0, steps=4, reduce=None, quiet=True)
    slow = contributions(model, x, layers, target=0, steps=4, reduce=None, quiet=True, stem=())
    for layer in layers:
        np.testing.assert_allclose(fast[layer], slow[layer], rtol=1e-10, atol=1e-14)
    assert fast.summary()["conv1.conv.stack.0"]["total_rel"] < 0.05


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


def test_out_of_range_cells_and_too_few_classes_are_value_errors_naming_the_cell(bncnn):
    x = _x(2, 4)
    for target in (7, [1, 7], -5, SumTarget([0, 4])):
        with pytest.raises(ValueError, match="cell index (7|-5|4) out of range; the model has 4 cells"):
            contributions(bncnn, x, ["conv2"], target=target, steps=2, quiet=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        contributions(small_bncnn(n_cells=1), x.float(), ["conv2"], target="contrastive", steps=2, quiet=True)


def test_a_zero_dimensional_index_is_one_cell_not_a_list():
    for spec in (torch.tensor(2), np.array(2)):
        t = make_target(spec)
        assert isinstance(t, CellTarget) and t.index == 2 and not t.per_cell


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


@pytest.mark.parametrize("method", ["conductance", "act_grad"])
def test_func_batched_backward_with_a_hooked_stem_layer_equals_autograd(bncnn, method):
    x = _x(2, 5)
    layers = ["conv1.bn", "conv1.conv", "conv2"]
    a = contributions(bncnn, x, layers, target=[0, 2], method=method, steps=3, reduce=None, quiet=True,
                      batched_backward="func")
    b = contributions(bncnn, x, layers, target=[0, 2], method=method, steps=3, reduce=None, quiet=True,
                      batched_backward="autograd")
    for layer in layers:
        np.testing.assert_allclose(a[layer], b[layer], rtol=1e-10, atol=1e-14)


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
