"""The engine's speed paths give the same numbers: FFT convolutions, channels-last, strided window chunks
moved to the device by storage, and halving a chunk that runs out of GPU memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _contrib_models import TinyResNet, small_bncnn

from retina_codec.contributions import ContributionEngine, contributions
from retina_codec.contributions.engine import to_device
from retina_codec.contributions.sources import RecordingSource
from retina_codec.models import BNCNN
from retina_codec.recordings import Recording
from retina_codec.torch_utils.fft_conv import FFTConv2d, fft_conv_eligible, fft_conv_swaps
from retina_codec.torch_utils.hooks import has_hooks

F64 = torch.float64
TORCH_THREADS = 1


@pytest.mark.parametrize("cin,cout,k,size,pad", [(6, 4, 5, 14, 0), (4, 3, 3, 9, 1), (3, 2, 7, 11, 3)])
def test_fft_conv_equals_conv2d_in_values_and_input_gradients(cin, cout, k, size, pad):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, padding=pad).double()
    fft = FFTConv2d(conv)
    x = torch.randn(3, cin, size, size + 2, dtype=F64, requires_grad=True)
    ref, got = conv(x), fft(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    (g_ref,) = torch.autograd.grad(ref.sin().sum(), x)
    (g_got,) = torch.autograd.grad(got.sin().sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cin,cout,k,size,pad", [(6, 4, 5, 14, 0), (4, 3, 3, 9, 1), (3, 2, 7, 11, 3)])
def test_fft_conv_with_frozen_weights_has_the_exact_input_gradient_also_batched(cin, cout, k, size, pad):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(cin, cout, k, padding=pad).double().requires_grad_(False)
    fft = FFTConv2d(conv)
    x = torch.randn(3, cin, size, size + 1, dtype=F64, requires_grad=True)
    ref, got = conv(x), fft(x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    (g_ref,) = torch.autograd.grad(ref.sin().sum(), x)
    (g_got,) = torch.autograd.grad(got.sin().sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-10)
    # vmapped backward (is_grads_batched, as the IRFs of many cells use it)
    go = torch.randn(4, *ref.shape, dtype=F64)
    (b_ref,) = torch.autograd.grad(conv(x), x, go, is_grads_batched=True)
    (b_got,) = torch.autograd.grad(fft(x), x, go, is_grads_batched=True)
    torch.testing.assert_close(b_got, b_ref, rtol=1e-10, atol=1e-10)


def test_fft_conv_follows_weight_updates_and_shares_parameters():
    conv = torch.nn.Conv2d(2, 2, 5).double().requires_grad_(False)
    fft = FFTConv2d(conv)
    x = torch.randn(1, 2, 9, 9, dtype=F64)
    fft(x)
    conv.weight.mul_(-2.0)  # in-place change: the cached spectrum must be recomputed
    torch.testing.assert_close(fft(x), conv(x))
    assert list(fft.parameters())[0] is conv.weight


def test_fft_swaps_pick_only_large_plain_convolutions():
    model = BNCNN(3, history=6, frame_shape=(20, 20), kernel_sizes=(9, 3))
    assert set(fft_conv_swaps(model, min_kernel=7)) == {"conv1.conv"}
    assert not fft_conv_eligible(torch.nn.Conv2d(2, 2, 9, stride=2))
    assert not fft_conv_eligible(torch.nn.Conv2d(2, 2, 9, groups=2))
    assert not fft_conv_eligible(torch.nn.Conv2d(2, 2, 9, padding="same"))


def _engine_result(model, x, layers=("conv1", "conv2"), target="sum", steps=6, device="cpu", **kw):
    with ContributionEngine.from_settings(model, list(layers), target, steps=steps, device=device, **kw) as eng:
        return eng.compute(x)


@pytest.mark.parametrize("options", [{"fast_conv": "fft"}, {"channels_last": True},
                                     {"fast_conv": "fft", "channels_last": True}])
def test_speed_options_give_the_same_contributions_and_restore_the_model(options):
    model = small_bncnn(n_cells=4, kernel_sizes=(7, 3)).double()
    x = torch.randn(5, 6, 14, 14, dtype=F64, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _engine_result(model, x, fast_conv="native")
    got = _engine_result(model, x, **options)
    for n in ref.contributions:
        torch.testing.assert_close(got.contributions[n], ref.contributions[n], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(got.error[n], ref.error[n], rtol=1e-9, atol=1e-9)
    assert type(model.conv1.conv) is not FFTConv2d and not has_hooks(model)
    assert model.conv1.conv.weight.is_contiguous()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fft_option_leaves_small_kernel_networks_unchanged():
    torch.manual_seed(0)
    model = TinyResNet().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=F64)
    blocks = ["block1", "block2"]
    kw = {"target": "top1_logit", "steps": 4, "device": "cpu", "quiet": True}
    ref = contributions(model, x, blocks, **kw)
    # TinyResNet's 3x3 convolutions are below the size limit: nothing is swapped, results are the same
    with ContributionEngine.from_settings(model, blocks, "top1_logit", steps=4, device="cpu", fast_conv="fft") as eng:
        assert not any(isinstance(m, FFTConv2d) for m in model.modules())
        got = eng.compute(x)
    for n in blocks:
        np.testing.assert_allclose(got.contributions[n].numpy(), ref[n], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("fast_conv", ["native", "fft"])
def test_func_batched_backward_equals_is_grads_batched_for_per_cell_targets(fast_conv, monkeypatch):
    calls = []
    vjp = torch.func.vjp
    monkeypatch.setattr(torch.func, "vjp", lambda *a, **k: calls.append(1) or vjp(*a, **k))
    model = small_bncnn(n_cells=4, kernel_sizes=(7, 3)).double()
    x = torch.randn(5, 6, 14, 14, dtype=F64, generator=torch.Generator().manual_seed(2))
    for reduce in (("ei_split", "spatial_sum"), None):
        kw = dict(target=[0, 2, 3], reduce=reduce, fast_conv=fast_conv)
        ref = _engine_result(model, x, batched_backward="autograd", **kw)
        got = _engine_result(model, x, batched_backward="func", **kw)
        for n in ref.contributions:
            torch.testing.assert_close(got.contributions[n], ref.contributions[n], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(got.error[n], ref.error[n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.f_x, ref.f_x)
    assert len(calls) == 2  # the func path ran (once per "func" engine), autograd's did not call it
    assert not has_hooks(model) and all(type(m) is not FFTConv2d for m in model.modules())
    # a skip network, a classifier target with one entry per class
    resnet = TinyResNet().double().eval()
    xr = torch.randn(3, 3, 16, 16, dtype=F64, generator=torch.Generator().manual_seed(3))
    kw = dict(target=[1, 4], steps=4, layers=["block1", "block2"])
    ref = _engine_result(resnet, xr, batched_backward="autograd", **kw)
    got = _engine_result(resnet, xr, batched_backward="func", **kw)
    for n in ref.contributions:
        torch.testing.assert_close(got.contributions[n], ref.contributions[n], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="batched_backward"):
        ContributionEngine.from_settings(model, ["conv1"], batched_backward="vmap")
    # bf16 autocast keeps autograd's batched backward (torch.func would mix bf16 and float32 there)
    m32, x32 = small_bncnn(n_cells=4, kernel_sizes=(7, 3)), x.float()
    kw = dict(target=[0, 1], autocast=True, fast_conv=fast_conv)
    ref = _engine_result(m32, x32, batched_backward="autograd", **kw)
    got = _engine_result(m32, x32, batched_backward="func", **kw)
    for n in ref.contributions:
        torch.testing.assert_close(got.contributions[n], ref.contributions[n], rtol=0, atol=0)


def test_an_out_of_memory_chunk_is_split_and_gives_identical_results(monkeypatch):
    model = small_bncnn(n_cells=3).double()
    x = torch.randn(7, 6, 14, 14, dtype=F64, generator=torch.Generator().manual_seed(2))
    ref = _engine_result(model, x)
    calls = []
    with ContributionEngine.from_settings(model, ["conv1", "conv2"], "sum", steps=6, device="cpu") as eng:
        real = eng._compute

        def flaky(xx):
            calls.append(xx.shape[0])
            if xx.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(xx)

        monkeypatch.setattr(eng, "_compute", flaky)
        got = eng.compute(x)
    assert calls == [7, 3, 1, 2, 4, 2, 2]  # halved until each part fits
    for n in ref.contributions:
        torch.testing.assert_close(got.contributions[n], ref.contributions[n], rtol=0, atol=1e-12)
    torch.testing.assert_close(got.f_x, ref.f_x, rtol=0, atol=1e-12)


def _recording(t=80, size=10):
    rng = np.random.default_rng(0)
    return Recording(stimulus=rng.random((t, size, size)).astype(np.float32),
                     frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                     responses=rng.poisson(1.0, (t, 2)).astype(np.float32),
                     intervals={"test": np.array([[0.1, 0.7]])})


def test_recording_chunks_are_views_over_frames_that_move_without_materialising():
    rec = _recording()
    src = RecordingSource(rec, split="test", history=6, norm=(0.5, 0.25))
    (bins, x), *_ = list(src.iter_chunks(16))
    ref = np.stack([(rec.stimulus[b - 6:b] - 0.5) / 0.25 for b in bins]).astype(np.float32)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-6, atol=1e-6)
    assert x.untyped_storage().nbytes() == (16 + 6 - 1) * 100 * 4  # frames, not 16 windows of 6
    y = to_device(x, torch.device("cpu"), torch.float64)  # moved and cast through its storage
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-6, atol=1e-6)
    # a chunk of windows cut from a long frame array moves only the frames it spans
    frames = torch.randn(500, 4, 4)
    view = frames.as_strided((30, 6, 4, 4), (16, 16, 4, 1), 16 * 100)
    moved = to_device(view, torch.device("meta"), torch.float32)
    assert moved.shape == view.shape and moved.untyped_storage().nbytes() == (30 + 6 - 1) * 16 * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_contributions_match_cpu_float64_for_every_speed_option():
    model = BNCNN(4).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_var.fill_(0.3)
    x = torch.randn(24, 40, 50, 50, generator=torch.Generator().manual_seed(0))
    ref = contributions(model.double(), x.double(), ["conv1", "conv2"], target="sum", steps=10, device="cpu",
                        quiet=True)
    model.float()
    for opts in ({}, {"fast_conv": "fft"}, {"channels_last": True}):
        with ContributionEngine.from_settings(model, ["conv1", "conv2"], "sum", steps=10, device="cuda", **opts) as eng:
            got = eng.compute(x)
        for n in ("conv1", "conv2"):
            c = got.contributions[n].double().cpu().numpy()
            scale = np.abs(ref[n]).max()
            assert np.abs(c - ref[n]).max() < 5e-3 * scale, (opts, n)
    xs = torch.randn(50, 10, 10)
    view = xs.as_strided((45, 6, 10, 10), (100, 100, 10, 1))
    moved = to_device(view, torch.device("cuda"), torch.float32)
    assert moved.untyped_storage().nbytes() == xs.numel() * 4
    torch.testing.assert_close(moved.cpu(), view.contiguous())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_per_cell_contributions_agree_between_batched_backwards_and_with_the_cpu():
    model = small_bncnn(n_cells=5, kernel_sizes=(7, 3))
    x = torch.randn(16, 6, 14, 14, generator=torch.Generator().manual_seed(4))
    kw = dict(target=[0, 1, 3, 4], steps=8)
    ref = _engine_result(model.double(), x.double(), **kw)
    model.float()
    for how in ("autograd", "func"):
        got = _engine_result(model, x, device="cuda", batched_backward=how, **kw)
        for n in ref.contributions:
            c, r = got.contributions[n].double().cpu(), ref.contributions[n]
            assert (c - r).abs().max() < 1e-4 * r.abs().max(), (how, n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_recording_input_equals_cpu():
    rec = _recording(t=120, size=14)
    model = small_bncnn(n_cells=3)
    model.norm_stats = (0.5, 0.25)
    kw = {"target": "sum", "steps": 6, "split": "test", "batch_size": 16, "quiet": True}
    ref = contributions(model, rec, ["conv1", "conv2"], device="cpu", **kw)
    got = contributions(model, rec, ["conv1", "conv2"], device="cuda", **kw)
    np.testing.assert_array_equal(got.bins, ref.bins)
    for n in ("conv1", "conv2"):
        np.testing.assert_allclose(got[n], ref[n], rtol=2e-3, atol=2e-3 * np.abs(ref[n]).max())


def test_bf16_autocast_stays_close_to_float32_and_is_recorded():
    model = small_bncnn(n_cells=4, kernel_sizes=(7, 3))
    x = torch.randn(6, 6, 14, 14, generator=torch.Generator().manual_seed(4))
    kw = {"target": "sum", "steps": 10, "device": "cpu", "quiet": True}
    ref = contributions(model, x, ["conv1", "conv2"], **kw)
    got = contributions(model, x, ["conv1", "conv2"], autocast=True, **kw)
    assert got.settings["precision"] == "bf16 autocast" and "precision" not in ref.settings
    assert got["conv1"].dtype == np.float32
    for n in ("conv1", "conv2"):
        scale = np.abs(ref[n]).max()
        assert np.abs(got[n] - ref[n]).max() < 0.05 * scale
        assert got.summary()[n]["total_rel"] < ref.summary()[n]["total_rel"] + 0.06  # bf16 rounding: a few %


@pytest.mark.parametrize("method", ["layer_ig", "act_grad"])
def test_bf16_autocast_for_other_methods_returns_float32_close_to_reference(method):
    model = small_bncnn(n_cells=3, kernel_sizes=(7, 3))
    x = torch.randn(4, 6, 14, 14, generator=torch.Generator().manual_seed(6))
    kw = {"target": "sum", "method": method, "steps": 8, "device": "cpu", "quiet": True}
    ref = contributions(model, x, ["conv1", "conv2"], **kw)
    got = contributions(model, x, ["conv1", "conv2"], autocast=True, **kw)
    for n in ("conv1", "conv2"):
        assert got[n].dtype == np.float32
        assert np.abs(got[n] - ref[n]).max() < 0.05 * np.abs(ref[n]).max()


def test_fold_conv_bn_equals_batchnorm_of_conv():
    from retina_codec.torch_utils.fold_bn import fold_conv_bn

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    bn = torch.nn.BatchNorm2d(4).double().eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)))


def test_batchnorm_folding_finds_conv_bn_pairs_and_keeps_hooked_convs():
    from retina_codec.torch_utils.fold_bn import batchnorm_folds

    model = TinyResNet().double()
    x = torch.randn(1, 3, 16, 16, dtype=F64)
    swaps = batchnorm_folds(model, x)
    assert {"stem_conv", "stem_bn", "block1.conv1", "block1.bn1"} <= set(swaps)
    assert "block1.conv1" not in batchnorm_folds(model, x, keep={"block1.conv1"})


class _SharedConvOutput(torch.nn.Module):
    """conv output feeds a BatchNorm *and* a skip: folding would change the skip, so it must be refused."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(2)
        self.head = torch.nn.Linear(2, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.head((torch.relu(self.bn(y)) + y).mean(dim=(2, 3)))


def test_engine_folds_only_when_outputs_are_unchanged_and_results_match():
    torch.manual_seed(0)
    model = _SharedConvOutput().double().eval()
    model.bn.running_var.fill_(3.0)
    x = torch.randn(3, 2, 6, 6, dtype=F64)
    kw = {"target": "sum", "steps": 5, "device": "cpu"}
    with ContributionEngine.from_settings(model, ["bn"], fold_batchnorm=True, **kw) as eng:
        got = eng.compute(x)
        assert isinstance(model.bn, torch.nn.BatchNorm2d)  # refused: the skip also reads the conv output
    with ContributionEngine.from_settings(model, ["bn"], **kw) as eng:
        ref = eng.compute(x)
    torch.testing.assert_close(got.contributions["bn"], ref.contributions["bn"])
    res = small_bncnn(n_cells=3).double()
    xr = torch.randn(4, 6, 14, 14, dtype=F64, generator=torch.Generator().manual_seed(3))
    with ContributionEngine.from_settings(res, ["conv1", "conv2"], fold_batchnorm=True, **kw) as eng:
        folded = eng.compute(xr)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in res.modules())
    with ContributionEngine.from_settings(res, ["conv1", "conv2"], fold_batchnorm=False, **kw) as eng:
        plain = eng.compute(xr)
    assert n_bn < sum(isinstance(m, torch.nn.BatchNorm2d) for m in res.modules())  # some were folded
    for n in ("conv1", "conv2"):
        torch.testing.assert_close(folded.contributions[n], plain.contributions[n], rtol=1e-9, atol=1e-10)


def test_fft_conv_accepts_half_precision_inputs_in_float32():
    conv = torch.nn.Conv2d(3, 2, 7).requires_grad_(False)
    x = torch.randn(2, 3, 12, 12)
    got = FFTConv2d(conv)(x.to(torch.bfloat16))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, conv(x.to(torch.bfloat16).float()), rtol=1e-4, atol=1e-4)
