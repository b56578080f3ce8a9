"""Contribution engine: per-sample baselines across chunks, hooked layers inside the affine stem, target checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _contrib_models import small_bncnn

from retina_codec.contributions import SumTarget, contributions
from retina_codec.models.linear_stacked import LinearStackedBNCNN

TORCH_THREADS = 1


F64 = torch.float64


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


def test_out_of_range_cells_and_too_few_classes_are_value_errors_naming_the_cell(bncnn):
    x = _x(2, 4)
    for target in (7, [1, 7], -5, SumTarget([0, 4])):
        with pytest.raises(ValueError, match="cell index (7|-5|4) out of range; the model has 4 cells"):
            contributions(bncnn, x, ["conv2"], target=target, steps=2, quiet=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        contributions(small_bncnn(n_cells=1), x.float(), ["conv2"], target="contrastive", steps=2, quiet=True)


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
