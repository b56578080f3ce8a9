"""Contribution engine: equal to captum (conductance, layer IG), completeness, per-cell batching, hooks
never leak, reductions, targets and input kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _contrib_models import TinyResNet, small_bncnn
from captum.attr import LayerConductance
from captum.attr import LayerIntegratedGradients as CaptumLIG
from torch.utils.data import DataLoader, TensorDataset

from retina_codec.contributions import (
    CellTarget,
    ContributionEngine,
    SurprisalTarget,
    contributions,
    make_target,
)
from retina_codec.errors import LayerNotFoundError
from retina_codec.models import BNCNN
from retina_codec.recordings import Recording
from retina_codec.torch_utils.hooks import has_hooks, resolve_module

F64 = torch.float64


TORCH_THREADS = 1  # see conftest.py: small convolutions are faster on one thread


def rel_err(ours, ref) -> float:
    ours, ref = torch.as_tensor(np.asarray(ours)), torch.as_tensor(ref).detach()
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def bncnn():
    return small_bncnn(n_cells=5).double()


@pytest.fixture(scope="module")
def x_retina():
    return torch.randn(3, 6, 14, 14, generator=torch.Generator().manual_seed(3), dtype=F64)


def _per_sample_fn(model, fn):
    """captum forward function: fn(outputs (R, ...), sample index per row)."""
    def forward(z, b):
        return fn(model(z), torch.arange(z.shape[0]) % b)
    return forward


def _retina_targets(model, x):
    ref_out = model(torch.randn(40, *x.shape[1:], generator=torch.Generator().manual_seed(5), dtype=F64))
    surprisal = SurprisalTarget().fit(ref_out)
    return {
        "cell": (2, lambda out, idx: out[:, 2]),
        "sum": ("sum", lambda out, idx: out.sum(1)),
        "surprisal": (surprisal, lambda out, idx: surprisal(out.unsqueeze(0), None)[0]),
    }


@pytest.mark.parametrize("target_name", ["cell", "sum", "surprisal"])
def test_conductance_left_equals_captum_layer_conductance_on_bncnn(bncnn, x_retina, target_name):
    target, fn = _retina_targets(bncnn, x_retina)[target_name]
    m = 8
    res = contributions(bncnn, x_retina, ["conv1", "conv2"], target=target, steps=m, rule="left",
                        reduce=None, dtype=F64, quiet=True)
    b = x_retina.shape[0]
    for layer in ("conv1", "conv2"):
        lc = LayerConductance(lambda z: fn(bncnn(z), None), resolve_module(bncnn, layer))
        ref = lc.attribute(x_retina, n_steps=m, method="riemann_trapezoid")
        assert res[layer].shape == (b, *ref.shape[1:])
        assert rel_err(res[layer], ref) < 1e-5, layer


def _class_targets(model, x):
    out = model(x)
    top2 = out.topk(2, dim=1).indices
    c1, c2 = top2[:, 0], top2[:, 1]
    b = x.shape[0]

    def rows(z):
        return torch.arange(z.shape[0]) % b

    def contrast(out, r):  # one forward per call: captum hooks the layer once
        return (out.gather(1, c1[r][:, None]) - out.gather(1, c2[r][:, None]))[:, 0]

    return {
        "top1_logit": lambda z: model(z).gather(1, c1[rows(z)][:, None])[:, 0],
        "softmax_prob": lambda z: torch.softmax(model(z), 1).gather(1, c1[rows(z)][:, None])[:, 0],
        "contrastive": lambda z: contrast(model(z), rows(z)),
    }


@pytest.mark.parametrize("target_name", ["top1_logit", "softmax_prob", "contrastive"])
def test_conductance_left_equals_captum_on_resnet_with_skips(target_name):
    model = TinyResNet().double()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    fwd = _class_targets(model, x)[target_name]
    m = 6
    layers = ["block1", "block2", "block1.conv2"]  # block1.conv2 lies inside a residual branch
    res = contributions(model, x, layers, target=target_name, steps=m, rule="left", reduce=None,
                        dtype=F64, quiet=True)
    for layer in layers:
        ref = LayerConductance(fwd, resolve_module(model, layer)).attribute(x, n_steps=m,
                                                                           method="riemann_trapezoid")
        assert rel_err(res[layer], ref) < 1e-5, layer


@pytest.mark.parametrize("rule", ["left", "trapezoid"])
def test_layer_ig_equals_captum_layer_integrated_gradients(bncnn, x_retina, rule):
    m = 7
    res = contributions(bncnn, x_retina, ["conv1", "conv2"], target=1, method="layer_ig", steps=m, rule=rule,
                        reduce=None, dtype=F64, quiet=True)
    for layer in ("conv1", "conv2"):
        lig = CaptumLIG(bncnn, resolve_module(bncnn, layer))
        if rule == "left":  # alphas k/m, k < m, weights 1/m
            ref = lig.attribute(x_retina, target=1, n_steps=m, method="riemann_left")
        else:  # captum's trapezoid over n = m+1 points: alphas k/m, weights 1/n (halved ends), sum (n-1)/n
            ref = lig.attribute(x_retina, target=1, n_steps=m + 1, method="riemann_trapezoid") * (m + 1) / m
        assert rel_err(res[layer], ref) < 1e-5, layer


def test_layer_ig_on_resnet_equals_captum():
    model = TinyResNet().double()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    res = contributions(model, x, ["block1", "block2"], target=3, method="layer_ig", steps=5, rule="left",
                        reduce=None, dtype=F64, quiet=True)
    for layer in ("block1", "block2"):
        ref = CaptumLIG(model, resolve_module(model, layer)).attribute(x, target=3, n_steps=5,
                                                                       method="riemann_left")
        assert rel_err(res[layer], ref) < 1e-5


def test_completeness_under_one_percent_with_20_trapezoid_steps_on_full_size_bncnn():
    torch.manual_seed(0)
    model = BNCNN(4).eval()
    for m in model.modules():  # trained-looking BatchNorm statistics: roughly unit-variance pre-activations
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.3)
    x = torch.randn(4, 40, 50, 50, generator=torch.Generator().manual_seed(0))
    res = contributions(model, x, ["conv1", "conv2"], target="sum", steps=20, reduce=None, quiet=True,
                        dtype=F64)
    with torch.no_grad():
        fx = model.double()(x.double()).sum(1).numpy()
        f0 = model(torch.zeros(1, 40, 50, 50, dtype=F64)).sum(1).numpy()
    model.float()
    np.testing.assert_allclose(res.f_x, fx, rtol=1e-10)
    np.testing.assert_allclose(res.f_baseline, np.broadcast_to(f0, fx.shape), rtol=1e-10)
    for layer in ("conv1", "conv2"):
        total = res[layer].reshape(len(x), -1).sum(1)
        # the reported error is exactly Σ C − (F(x) − F(0))
        np.testing.assert_allclose(res.completeness[layer], total - (fx - f0), atol=1e-9)
        # < 1 % of |F(x) − F(0)| over the bins (random weights: single bins may reach a few %)
        assert res.summary()[layer]["total_rel"] < 0.01, res.summary()
        assert res.summary()[layer]["max_rel"] < 0.05, res.summary()
    # the left rule is first-order: its error is larger (and reported as such)
    left = contributions(model, x, ["conv1"], target="sum", steps=20, rule="left", quiet=True, dtype=F64)
    assert left.summary()["conv1"]["total_rel"] > res.summary()["conv1"]["total_rel"]


def test_per_cell_batched_equals_one_cell_at_a_time(bncnn, x_retina):
    cells = [0, 2, 4]
    for method in ("conductance", "layer_ig", "act_normgrad"):
        batched = contributions(bncnn, x_retina, ["conv1", "conv2"], target=cells, method=method, steps=5,
                                dtype=F64, quiet=True)
        assert batched["conv1"].shape == (3, 3, 16)
        assert batched.f_x.shape == (3, 3)
        for j, c in enumerate(cells):
            single = contributions(bncnn, x_retina, ["conv1", "conv2"], target=c, method=method, steps=5,
                                   dtype=F64, quiet=True)
            for layer in ("conv1", "conv2"):
                np.testing.assert_allclose(batched[layer][:, j], single[layer], rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(batched.completeness["conv1"][:, j], single.completeness["conv1"],
                                       atol=1e-12)


def test_hooks_never_leak_after_an_exception_mid_run(x_retina):
    model = small_bncnn().double()
    model.train()
    conv, bn = model.conv1.conv, model.conv1.bn
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    before = model(x_retina).detach()
    model.train()
    calls = []

    def failing(out):
        calls.append(out.shape)
        raise RuntimeError("target failed mid-run")

    with pytest.raises(RuntimeError, match="mid-run"):
        contributions(model, x_retina, ["conv1", "conv2"], target=failing, steps=4, dtype=torch.float32,
                      quiet=True)
    assert calls, "the run must have reached the target"
    assert not has_hooks(model)
    assert model.conv1.conv is conv and model.conv1.bn is bn
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.dtype == F64 for p in model.parameters())  # dtype restored
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(model(x_retina), before, rtol=0, atol=0)


def test_hooks_removed_after_a_normal_run_and_no_parameter_gradients(bncnn, x_retina):
    contributions(bncnn, x_retina, ["conv1", "conv2"], target="sum", steps=3, quiet=True)
    assert not has_hooks(bncnn)
    assert all(p.grad is None and p.requires_grad for p in bncnn.parameters())


def test_ei_split_gives_negative_then_positive_parts_summed_over_space(bncnn, x_retina):
    full = contributions(bncnn, x_retina, ["conv1"], target=0, steps=4, reduce=None, dtype=F64, quiet=True)
    red = contributions(bncnn, x_retina, ["conv1"], target=0, steps=4, dtype=F64, quiet=True)
    c = full["conv1"]  # (B, 8, 10, 10)
    assert red["conv1"].shape == (3, 16)  # 8 channels → 16 numbers per bin
    np.testing.assert_allclose(red["conv1"][:, :8], np.minimum(c, 0).sum((2, 3)), rtol=1e-12)
    np.testing.assert_allclose(red["conv1"][:, 8:], np.maximum(c, 0).sum((2, 3)), rtol=1e-12)
    assert (red["conv1"][:, :8] <= 0).all() and (red["conv1"][:, 8:] >= 0).all()
    only_sum = contributions(bncnn, x_retina, ["conv1"], target=0, steps=4, reduce="spatial_sum", dtype=F64,
                             quiet=True)
    np.testing.assert_allclose(only_sum["conv1"], c.sum((2, 3)), rtol=1e-12)
    only_split = contributions(bncnn, x_retina, ["conv1"], target=0, steps=4, reduce="ei_split", dtype=F64,
                               quiet=True)
    assert only_split["conv1"].shape == (3, 16, 10, 10)


class TinyViT(torch.nn.Module):
    """Patch embedding + one token-mixing block; outputs (B, T, D) in the middle."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(4, 6)
        self.block = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.GELU())
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):  # x (B, T, 4)
        return self.head(self.block(self.embed(x)).mean(1))


def test_spatial_sum_sums_over_tokens_for_transformer_outputs():
    model = TinyViT().double()
    x = torch.randn(2, 5, 4, dtype=F64)
    full = contributions(model, x, ["block"], target=1, steps=4, reduce=None, quiet=True)
    red = contributions(model, x, ["block"], target=1, steps=4, quiet=True)
    c = full["block"]  # (B, T, D)
    assert red["block"].shape == (2, 12)
    np.testing.assert_allclose(red["block"], np.concatenate([np.minimum(c, 0).sum(1), np.maximum(c, 0).sum(1)], 1),
                               rtol=1e-12)


def test_act_grad_and_act_normgrad_formulas(bncnn, x_retina):
    a = bncnn.conv1(x_retina).detach().requires_grad_(True)
    out = bncnn.readout(bncnn.conv2(a))[:, 3].sum()
    (g,) = torch.autograd.grad(out, a)
    ag = contributions(bncnn, x_retina, ["conv1"], target=3, method="act_grad", reduce=None, quiet=True)
    np.testing.assert_allclose(ag["conv1"], (a * g).detach().numpy(), rtol=1e-10)
    ng = contributions(bncnn, x_retina, ["conv1"], target=3, method="act_normgrad", reduce=None, quiet=True)
    norm = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    np.testing.assert_allclose(ng["conv1"], (a * g / norm).detach().numpy(), rtol=1e-10)
    # F(x0) is computed for the completeness report even though the method takes no path
    with torch.no_grad():
        f0 = bncnn(torch.zeros(1, 6, 14, 14, dtype=F64))[0, 3].item()
    np.testing.assert_allclose(ag.f_baseline, f0, rtol=1e-12)


def test_surprisal_uses_reference_moments_and_regularises_a_singular_covariance():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 6))  # 3 samples of 6 cells: Σ has rank 2
    t = SurprisalTarget(ridge=1e-2).fit(y)
    assert t.ridge_used > 0 and np.all(np.isfinite(t.precision))
    mu = y.mean(0)
    cov = np.cov(y.T)
    prec = np.linalg.inv(cov + t.ridge_used * np.eye(6))
    z = rng.normal(size=(4, 6))
    want = 0.5 * np.einsum("bi,ij,bj->b", z - mu, prec, z - mu)
    got = t(torch.as_tensor(z)[None], None)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    well = SurprisalTarget().fit(rng.normal(size=(200, 6)))
    assert well.ridge_used == 0.0


def test_surprisal_target_fits_on_the_inputs_by_default(bncnn, x_retina):
    xs = torch.randn(12, 6, 14, 14, generator=torch.Generator().manual_seed(9), dtype=F64)
    res = contributions(bncnn, xs, ["conv2"], target="surprisal", steps=20, dtype=F64, quiet=True)
    with torch.no_grad():
        out = bncnn(xs)
    t = SurprisalTarget().fit(out)
    np.testing.assert_allclose(res.f_x, t(out[None], None)[0].numpy(), rtol=1e-8)
    assert res.summary()["conv2"]["total_rel"] < 0.01


def test_affine_stem_shortcut_gives_the_same_numbers_as_running_the_stem_per_step(bncnn, x_retina):
    layers = ["conv1.bn", "conv1", "conv2"]
    with ContributionEngine.from_settings(bncnn, layers, [0, 1], steps=6, reduce=None, dtype=F64) as eng:
        assert eng.stem is not None
        fast = eng.compute(x_retina)
    with ContributionEngine.from_settings(bncnn, layers, [0, 1], steps=6, reduce=None, dtype=F64, stem=()) as eng:
        assert eng.stem is None
        slow = eng.compute(x_retina)
    for layer in layers:
        torch.testing.assert_close(fast.contributions[layer], slow.contributions[layer], rtol=1e-10, atol=1e-13)


def test_a_wrong_affine_stem_is_detected(bncnn, x_retina):
    # conv1.relu is not affine: replaying stem(x) reproduces F(x) but not F(αx)
    wrong = ("conv1.conv", "conv1.bn", "conv1.relu")
    with pytest.raises(ValueError, match="affine_stem"):
        with ContributionEngine.from_settings(bncnn, ["conv2"], 0, steps=2, stem=wrong) as eng:
            eng.compute(x_retina)
    assert not has_hooks(bncnn)
    assert isinstance(bncnn.conv1.relu, torch.nn.ReLU)


def test_unknown_layer_raises_layer_not_found(bncnn, x_retina):
    with pytest.raises(LayerNotFoundError, match="conv9"):
        contributions(bncnn, x_retina, ["conv9"], quiet=True)


def test_recording_input_uses_split_windows_zscored_with_the_model_stats():
    model = small_bncnn(n_cells=3)
    model.norm_stats = (0.5, 0.25)
    rng = np.random.default_rng(0)
    t = 60
    stim = rng.random((t, 14, 14)).astype(np.float32)
    rec = Recording(stimulus=stim, frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                    responses=rng.poisson(1.0, (t, 3)).astype(np.float32),
                    intervals={"test": np.array([[0.2, 0.6]])})
    res = contributions(model, rec, ["conv1", "conv2"], target="sum", steps=4, split="test", batch_size=7,
                        quiet=True)
    bins = rec.window_bins("test", 6, 1)
    np.testing.assert_array_equal(res.bins, bins)
    x = np.stack([stim[b - 6:b] for b in bins])
    x = torch.from_numpy((x - 0.5) / 0.25)
    ref = contributions(model, x, ["conv1", "conv2"], target="sum", steps=4, batch_size=7, quiet=True)
    for layer in ("conv1", "conv2"):
        np.testing.assert_allclose(res[layer], ref[layer], rtol=1e-5, atol=1e-6)


def test_dataloader_input_equals_tensor_input(bncnn, x_retina):
    xs = torch.randn(10, 6, 14, 14, generator=torch.Generator().manual_seed(4), dtype=F64)
    loader = DataLoader(TensorDataset(xs, torch.zeros(10)), batch_size=3)
    a = contributions(bncnn, loader, ["conv2"], target=1, steps=3, batch_size=4, quiet=True)
    b = contributions(bncnn, xs, ["conv2"], target=1, steps=3, batch_size=4, quiet=True)
    np.testing.assert_array_equal(a.bins, np.arange(10))
    np.testing.assert_allclose(a["conv2"], b["conv2"], rtol=1e-12)


def test_auto_batch_size_and_chunking_do_not_change_results(bncnn):
    xs = torch.randn(9, 6, 14, 14, generator=torch.Generator().manual_seed(6), dtype=F64)
    a = contributions(bncnn, xs, ["conv1"], target=0, steps=3, batch_size="auto", quiet=True)
    b = contributions(bncnn, xs, ["conv1"], target=0, steps=3, batch_size=2, quiet=True)
    np.testing.assert_allclose(a["conv1"], b["conv1"], rtol=1e-10, atol=1e-14)


def test_make_target_parses_names_cells_and_callables():
    assert make_target(3).describe() == {"name": "cell", "cell": 3}
    assert make_target([1, 2]).n_targets == 2
    assert make_target("surprisal").needs_reference
    with pytest.raises(ValueError, match="unknown name"):
        make_target("bogus")


def test_trapezoid_rule_matches_the_formula_step_by_step(bncnn, x_retina):
    m = 5
    res = contributions(bncnn, x_retina, ["conv1"], target=4, steps=m, reduce=None, dtype=F64, quiet=True)
    acts, grads = [], []
    for k in range(m + 1):
        a = bncnn.conv1(x_retina * (k / m)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(bncnn.readout(bncnn.conv2(a))[:, 4].sum(), a)
        acts.append(a.detach())
        grads.append(g)
    want = sum(0.5 * (grads[k - 1] + grads[k]) * (acts[k] - acts[k - 1]) for k in range(1, m + 1))
    np.testing.assert_allclose(res["conv1"], want.numpy(), rtol=1e-10, atol=1e-15)


def test_a_zero_dimensional_index_is_one_cell_not_a_list():
    for spec in (torch.tensor(2), np.array(2)):
        t = make_target(spec)
        assert isinstance(t, CellTarget) and t.index == 2 and not t.per_cell
