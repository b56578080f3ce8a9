"""Retina model architectures: named layers, shapes, training-only noise, the affine stem, the exact
collapse of the linear-stacked variant, and the LN baseline."""

import numpy as np
import pytest
import torch
from _model_helpers import randomize_batchnorm

from retina_codec.errors import LayerNotFoundError
from retina_codec.models import BNCNN, LinearStackedBNCNN, LNModel, get_module
from retina_codec.models.layers import GaussianNoise
from retina_codec.models.linear_stacked import LinearStackedConv2d, compose_kernels


@pytest.mark.parametrize("bn", ["channel", "unit"])
def test_default_bncnn_hooks_give_interneuron_maps_and_softplus_rates(bn):
    torch.manual_seed(0)
    model = BNCNN(5, bn=bn).eval()
    seen = {}
    handles = [get_module(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
               for n in ("conv1", "conv2", "readout")]
    try:
        out = model(torch.randn(3, 40, 50, 50))
    finally:
        for h in handles:
            h.remove()
    assert seen["conv1"].shape == (3, 8, 36, 36) and seen["conv2"].shape == (3, 8, 26, 26)
    assert (seen["conv1"] >= 0).all() and (seen["conv2"] >= 0).all()  # post-ReLU
    assert out.shape == (3, 5) and (out > 0).all() and torch.equal(seen["readout"], out)
    assert model.affine_stem == ("conv1.conv", "conv1.bn")
    assert model.hidden_layers == ("conv1", "conv2")
    for block in ("conv1", "conv2"):
        for part in ("conv", "bn", "noise", "relu"):
            get_module(model, f"{block}.{part}")
    for part in ("linear", "bn", "softplus"):
        get_module(model, f"readout.{part}")


def test_unit_batchnorm_has_one_statistic_per_channel_and_position():
    model = BNCNN(4, bn="unit")
    assert model.conv1.bn.running_mean.shape == (8 * 36 * 36,)
    assert model.conv2.bn.running_mean.shape == (8 * 26 * 26,)
    assert model.conv1.bn.eps == 1e-3 and model.conv1.bn.momentum == 0.01
    assert BNCNN(4).conv1.bn.running_mean.shape == (8,)


@pytest.mark.parametrize("cls", [BNCNN, LinearStackedBNCNN, LNModel])
def test_layer_names_are_modules_called_in_forward_order(cls):
    model = cls(3, history=6, frame_shape=(30, 30)).eval()
    order = []
    handles = [get_module(model, n).register_forward_hook(lambda m, i, o, n=n: order.append(n))
               for n in model.layer_names]
    try:
        model(torch.randn(2, 6, 30, 30))
    finally:
        for h in handles:
            h.remove()
    assert tuple(order) == model.layer_names
    assert model.affine_stem == model.layer_names[: len(model.affine_stem)]


def test_unknown_layer_name_raises_naming_model_and_available_layers():
    model = BNCNN(2, history=4, frame_shape=(30, 30))
    with pytest.raises(LayerNotFoundError) as err:
        get_module(model, "conv3")
    msg = str(err.value)
    assert "'conv3'" in msg and "BNCNN" in msg and "conv2.bn" in msg and "readout" in msg


def test_gaussian_noise_is_active_only_in_training_mode():
    noise = GaussianNoise(0.5)
    x = torch.zeros(1000)
    assert torch.equal(noise.eval()(x), x)
    y = noise.train()(x)
    assert 0.4 < y.std().item() < 0.6
    assert torch.equal(GaussianNoise(0.0).train()(x), x)
    torch.manual_seed(0)
    model = BNCNN(3, history=4, frame_shape=(30, 30), noise_std=0.5)
    x = torch.randn(8, 4, 30, 30)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # noise differs between the two passes


@pytest.mark.parametrize("bn", ["channel", "unit"])
def test_affine_stem_satisfies_the_path_identity_in_eval_mode(bn):
    torch.manual_seed(1)
    model = randomize_batchnorm(BNCNN(3, history=5, frame_shape=(24, 24), kernel_sizes=(7, 5), bn=bn)).double().eval()

    def stem(x):
        for name in model.affine_stem:
            x = get_module(model, name)(x)
        return x

    x = torch.randn(2, 5, 24, 24, dtype=torch.float64)
    s0, sx = stem(torch.zeros_like(x)), stem(x)
    for alpha in (0.0, 0.3, 1.0):
        torch.testing.assert_close(stem(alpha * x), alpha * (sx - s0) + s0, rtol=1e-12, atol=1e-12)


def test_composed_3x3_kernels_equal_the_chain():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64)
    chain = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, a), b)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, compose_kernels(a, b)), chain, rtol=0, atol=1e-12)


def test_linear_stacked_conv_is_a_chain_of_3x3_convs_without_nonlinearity():
    conv = LinearStackedConv2d(40, 8, 15)
    assert len(conv.stack) == 7
    assert all(isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3) for c in conv.stack)
    assert [c.bias is not None for c in conv.stack] == [False] * 6 + [True]
    assert conv.weight.shape == (8, 40, 15, 15) and conv.bias.shape == (8,)
    with pytest.raises(ValueError, match="odd"):
        LinearStackedConv2d(3, 3, 4)


@pytest.mark.parametrize("bn", ["channel", "unit"])
def test_linear_stacked_model_collapses_exactly_to_a_plain_bncnn(bn):
    torch.manual_seed(2)
    stacked = LinearStackedBNCNN(4, history=6, frame_shape=(28, 28), kernel_sizes=(9, 7), bn=bn)
    randomize_batchnorm(stacked).double().eval()
    with torch.no_grad():
        for p in stacked.parameters():
            p.mul_(3.0)  # larger weights than the default init, so differences would show
    stacked.norm_stats, stacked.cell_ids = (0.5, 2.0), ["a", "b", "c", "d"]
    plain = stacked.collapse()
    assert type(plain) is BNCNN and plain.conv1.conv.kernel_size == (9, 9) and not plain.training
    assert plain.config() == stacked.config()
    assert plain.norm_stats == (0.5, 2.0) and plain.cell_ids == ["a", "b", "c", "d"]
    x = torch.randn(5, 6, 28, 28, dtype=torch.float64)
    ref = stacked(x)
    assert ref.std() > 1e-3
    torch.testing.assert_close(plain(x), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.conv2(plain.conv1(x)), stacked.conv2(stacked.conv1(x)), rtol=1e-9, atol=1e-9)


def test_ln_model_is_softplus_of_one_space_time_filter_per_cell():
    torch.manual_seed(3)
    model = LNModel(3, history=5, frame_shape=(8, 9)).eval()
    x = torch.randn(4, 5, 8, 9)
    gen = torch.einsum("bthw,nthw->bn", x, model.filters) + model.filter.bias
    torch.testing.assert_close(model(x), torch.nn.functional.softplus(gen), rtol=1e-5, atol=1e-6)
    assert model.filters.shape == (3, 5, 8, 9)
    assert model.affine_stem == ("filter",)


def test_wrong_input_shape_is_rejected_with_the_expected_shape():
    model = BNCNN(2, history=4, frame_shape=(30, 30))
    with pytest.raises(ValueError, match=r"\(B, 4, 30, 30\)"):
        model(torch.randn(2, 5, 30, 30))
    with pytest.raises(ValueError, match="does not fit"):
        BNCNN(2, history=4, frame_shape=(20, 20))


def test_model_describes_itself_for_checkpoints():
    model = BNCNN(2, history=4, frame_shape=(30, 30), channels=(4, 3), kernel_sizes=(5, 3))
    d = model.describe()
    assert d["architecture"] == "BNCNN" and d["input_spec"]["history"] == 4
    assert d["config"]["channels"] == [4, 3] and np.isclose(d["config"]["noise_std"], 0.05)
    assert BNCNN(**d["config"]).config() == d["config"]


def test_fast_cpu_conv_gives_the_gradients_of_a_plain_conv():
    from retina_codec.models.layers import FastCPUConv2d

    torch.manual_seed(4)
    fast = FastCPUConv2d(6, 3, 7).double().train()
    plain = torch.nn.Conv2d(6, 3, 7).double()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(5, 6, 20, 20, dtype=torch.float64, requires_grad=True)
    g_fast = torch.autograd.grad(fast(x).sin().sum(), [x, fast.weight, fast.bias])
    g_plain = torch.autograd.grad(plain(x).sin().sum(), [x, plain.weight, plain.bias])
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.equal(fast.eval()(x), plain(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bncnn_on_gpu_matches_cpu():
    torch.manual_seed(5)
    model = randomize_batchnorm(BNCNN(4, bn="unit")).eval()
    x = torch.randn(6, 40, 50, 50)
    ref = model(x)
    out = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
