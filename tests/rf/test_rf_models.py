"""Model RFs: batched IRFs equal per-cell autograd and the analytic filter; model STA recovers LN filters."""

import numpy as np
import pytest
import torch
from _rf_helpers import PlainTinyCNN, movie_recording
from torch import nn

from retina_codec.recordings import Recording
from retina_codec.rf.conditioned import mode_conditioned_rfs
from retina_codec.rf.irf import input_jacobian, instantaneous_rfs, iter_irfs
from retina_codec.rf.model_sta import model_reverse_correlation, model_sta_gradient


class LinearCells(nn.Module):
    """rate_i = f(k_i · window + b_i): a linear (f = identity) or LN (softplus) population."""

    def __init__(self, filters: torch.Tensor, nonlinearity: str = "linear"):
        super().__init__()
        self.k = nn.Parameter(filters.clone())
        self.b = nn.Parameter(torch.zeros(len(filters)))
        self.nonlinearity = nonlinearity

    def forward(self, x):
        u = x.flatten(1) @ self.k.flatten(1).T + self.b
        return u if self.nonlinearity == "linear" else nn.functional.softplus(u)


class TinyCNN(nn.Module):
    def __init__(self, h=4, hw=8, n=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(h, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.lin = nn.Linear(4 * (hw - 2) ** 2, n)

    def forward(self, x):
        return nn.functional.softplus(self.lin(torch.relu(self.bn(self.conv(x))).flatten(1)))


def _filters(n=3, h=4, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, hw, hw, generator=g) * 0.1


def _recording(t=120, hw=8, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return Recording(rng.standard_normal((t, hw, hw)).astype(np.float32), np.arange(t) / 100.0, 100.0,
                     np.zeros((t, n), np.float32))


def test_irf_of_a_linear_model_is_its_filter_at_every_bin():
    k = _filters()
    model = LinearCells(k)
    irfs = instantaneous_rfs(model, _recording(), bins=[30, 10, 77], cells=[2, 0], history=4)
    assert irfs.shape == (3, 2, 4, 8, 8)
    for b in range(3):
        np.testing.assert_allclose(irfs[b, 0], k[2].numpy(), atol=1e-6)
        np.testing.assert_allclose(irfs[b, 1], k[0].numpy(), atol=1e-6)


def test_batched_irfs_equal_a_loop_of_per_cell_autograd():
    model = TinyCNN()
    model.train()  # must be switched to eval inside and restored after
    x = torch.randn(5, 4, 8, 8)
    model.eval()
    batched = input_jacobian(model, x, [0, 2, 1], batched=True)
    model.train()
    rec = _recording()
    bins = np.array([20, 21, 50, 90])
    streamed = np.concatenate([j.numpy() for _, j, _ in iter_irfs(model, rec, bins, [0, 2, 1], history=4,
                                                                  batch_size=3, quiet=True)])
    assert model.training
    model.eval()
    for b in range(5):
        for c, cell in enumerate([0, 2, 1]):
            xb = x[b : b + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xb)[0, cell], xb)
            torch.testing.assert_close(batched[b, c], g[0], atol=1e-6, rtol=1e-5)
    mean, std = rec.normalization()
    for i, t in enumerate(bins):
        xb = torch.as_tensor((rec.stimulus[t - 4 : t] - mean) / std)[None].requires_grad_(True)
        for c, cell in enumerate([0, 2, 1]):
            (g,) = torch.autograd.grad(model(xb)[0, cell], xb)
            np.testing.assert_allclose(streamed[i, c], g[0].numpy(), atol=1e-5)


def test_irfs_use_the_models_normalisation_when_it_carries_one():
    model = TinyCNN().eval()
    model.norm_stats = (0.7, 2.5)  # not the recording's statistics
    rec = _recording()
    bins = np.array([30, 31, 60])
    got = instantaneous_rfs(model, rec, bins, [1, 0], history=4, quiet=True)
    for i, t in enumerate(bins):
        xb = torch.as_tensor((rec.stimulus[t - 4 : t] - 0.7) / 2.5)[None].requires_grad_(True)
        for c, cell in enumerate([1, 0]):
            (g,) = torch.autograd.grad(model(xb)[0, cell], xb)
            np.testing.assert_allclose(got[i, c], g[0].numpy(), atol=1e-6)


def test_loop_fallback_gives_the_same_jacobian():
    model = TinyCNN().eval()
    x = torch.randn(3, 4, 8, 8)
    torch.testing.assert_close(input_jacobian(model, x, [0, 1], batched=False),
                               input_jacobian(model, x, [0, 1], batched=True))


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_model_sta_gradient_of_a_linear_model_equals_the_filter():
    k = _filters(n=2)
    sta = model_sta_gradient(LinearCells(k), [0, 1], n_samples=64, batch_size=32, frame_shape=(8, 8),
                             history=4, quiet=True)
    np.testing.assert_allclose(sta, k.numpy(), atol=1e-6)


def test_model_sta_and_reverse_correlation_of_an_ln_model_are_proportional_to_the_filter():
    k = _filters(n=2) * 3
    model = LinearCells(k, "softplus")
    grad = model_sta_gradient(model, [0, 1], n_samples=512, batch_size=128, frame_shape=(8, 8), history=4,
                              quiet=True)
    rc, mean_rate = model_reverse_correlation(model, n_frames=20000, batch_size=2000, frame_shape=(8, 8),
                                              history=4, kind="gaussian", quiet=True)
    assert rc.shape == (2, 4, 8, 8) and mean_rate.shape == (2,) and np.all(mean_rate > 0)
    for i in range(2):
        assert _corr(grad[i], k[i].numpy()) > 0.999
        assert _corr(rc[i], k[i].numpy()) > 0.95


def test_model_sta_needs_a_frame_shape_when_the_model_has_no_input_spec():
    with pytest.raises(ValueError, match="frame_shape"):
        model_sta_gradient(LinearCells(_filters(n=1)), [0], n_samples=4)


def test_irfs_through_fft_convolutions_equal_plain_autograd_and_restore_the_model():
    from retina_codec.models import BNCNN
    from retina_codec.rf.irf import fast_input_gradients
    from retina_codec.torch_utils.fft_conv import FFTConv2d

    torch.manual_seed(0)
    model = BNCNN(3, history=5, frame_shape=(16, 16), kernel_sizes=(9, 7)).double().eval()
    x = torch.randn(4, 5, 16, 16, dtype=torch.float64)
    ref = input_jacobian(model, x, [0, 2])
    with fast_input_gradients(model):
        assert isinstance(model.conv1.conv, FFTConv2d) and isinstance(model.conv2.conv, FFTConv2d)
        assert not any(p.requires_grad for p in model.parameters())
        got = input_jacobian(model, x, [0, 2])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    assert isinstance(model.conv1.conv, nn.Conv2d) and not isinstance(model.conv1.conv, FFTConv2d)
    assert all(p.requires_grad for p in model.parameters())
    rng = np.random.default_rng(0)
    rec = Recording(rng.standard_normal((40, 16, 16)).astype(np.float32), np.arange(40) / 100.0, 100.0,
                    np.zeros((40, 3), np.float32))
    streamed = instantaneous_rfs(model.float(), rec, np.arange(10, 20), [1], normalize=False, quiet=True)
    plain = np.stack([input_jacobian(model, torch.from_numpy(rec.stimulus[b - 5:b][None]), [1])[0].numpy()
                      for b in range(10, 20)])
    np.testing.assert_allclose(streamed, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max())
    assert not isinstance(model.conv1.conv, FFTConv2d)


def test_irfs_at_unsorted_repeated_bins_and_other_offsets_equal_autograd_of_the_window():
    model, rec = PlainTinyCNN(), movie_recording()
    mean, std = rec.normalization()
    stim = (np.asarray(rec.stimulus[0 : rec.n_frames], np.float64) - mean) / std
    for offset in (0, 3):
        bins = [50, 9 + offset, 51, 66, 50]
        irf = instantaneous_rfs(model, rec, bins, [2, 0], history=4, offset=offset, batch_size=2, quiet=True)
        for i, t in enumerate(bins):
            x = torch.tensor(stim[t - 4 - offset + 1 : t - offset + 1][None], dtype=torch.float32,
                             requires_grad=True)
            out = model(x)
            for j, c in enumerate([2, 0]):
                (g,) = torch.autograd.grad(out[0, c], x, retain_graph=True)
                np.testing.assert_allclose(irf[i, j], g[0].numpy(), atol=1e-6)


def test_no_bins_give_an_empty_irf_stack_and_a_clear_error_for_conditioning():
    model, rec = PlainTinyCNN(), movie_recording(40)
    assert instantaneous_rfs(model, rec, [], [0, 1], history=4, quiet=True).shape == (0, 2, 4, 8, 8)
    with pytest.raises(ValueError, match="no bins"):  # was: RuntimeError "generator raised StopIteration"
        mode_conditioned_rfs(model, rec, np.zeros((0, 2)), np.zeros(0, np.int64), history=4, quiet=True)
