"""Models in the wild: any nn.Module through ``models.wrap`` and the model contract, at every stage; the affine
stem found automatically (and refused when it does not hold); speed options on modules we did not write."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerConductance
from torch import nn

from retina_codec.contributions import ContributionEngine, contributions, write_contributions
from retina_codec.contributions.store import read_contributions
from retina_codec.errors import CheckpointError, LayerNotFoundError, ModelContractError
from retina_codec.models import check_retina_model, evaluate, predict, save_model, wrap
from retina_codec.recordings import Recording
from retina_codec.rf.conditioned import mode_conditioned_rfs
from retina_codec.rf.irf import instantaneous_rfs
from retina_codec.rf.model_sta import model_sta_gradient

F64 = torch.float64


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


class PlainCNN(nn.Module):
    """A user's BN-CNN: plain torch, no retina-codec base class, no declared stem."""

    def __init__(self, history=10, side=20, n=4):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(history, 4, 7), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(4, 4, 5), nn.BatchNorm2d(4), nn.ReLU()
        s = side - 7 - 5 + 2
        self.linear, self.softplus = nn.Linear(4 * s * s, n), nn.Softplus()

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.softplus(self.linear(x.flatten(1)))


class TimeCNN(nn.Module):
    """An openretina-like core-readout: ``(B, C, T, H, W)`` → ``(B, T', N)`` with 3-D convolutions."""

    def __init__(self, channels=2, side=12, n=3):
        super().__init__()
        self.conv0, self.bn0, self.act0 = nn.Conv3d(channels, 3, (4, 5, 5)), nn.BatchNorm3d(3), nn.ELU()
        self.conv1, self.bn1, self.act1 = nn.Conv3d(3, 3, (3, 3, 3)), nn.BatchNorm3d(3), nn.ELU()
        s = side - 4 - 2
        self.readout, self.out = nn.Linear(3 * s * s, n), nn.Softplus()

    def forward(self, x):
        x = self.act0(self.bn0(self.conv0(x)))
        x = self.act1(self.bn1(self.conv1(x)))
        return self.out(self.readout(x.permute(0, 2, 1, 3, 4).flatten(2)))  # (B, T', N)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), torch.as_tensor(b).detach().double().numpy()
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def recording(t=120, side=12, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return Recording(stimulus=rng.standard_normal((t, side, side)).astype(np.float32),
                     frame_times=np.arange(t) / 100.0, frame_rate=100.0,
                     responses=rng.poisson(1.0, (t, n)).astype(np.float32),
                     intervals={"train": np.array([[0.0, 0.6]]), "test": np.array([[0.6, t / 100.0]])},
                     stimulus_name="noise")


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    return randomize_bn(PlainCNN()).double()


@pytest.fixture(scope="module")
def timecnn():
    torch.manual_seed(1)
    return randomize_bn(TimeCNN())


# ---- wrap and the contract ----------------------------------------------------------------------------------

def test_plain_module_contributions_equal_captum_and_the_stem_is_found(plain):
    x = torch.randn(3, 10, 20, 20, generator=torch.Generator().manual_seed(2), dtype=F64)
    layers = ["relu1", "relu2"]
    res = contributions(plain, x, layers, target="sum", steps=8, rule="left", reduce=None, dtype=F64, quiet=True)
    assert res.settings["affine_stem"] == ["conv1", "bn1"]  # found: the module declares none
    for layer in layers:
        lc = LayerConductance(lambda z: plain(z).sum(1), getattr(plain, layer))
        assert rel_err(res[layer], lc.attribute(x, n_steps=8, method="riemann_trapezoid")) < 1e-6, layer
    plain_path = contributions(plain, x, layers, target="sum", steps=8, rule="left", reduce=None, dtype=F64,
                               quiet=True, stem=None)
    assert plain_path.settings["affine_stem"] == []
    for layer in layers:
        assert rel_err(res[layer], plain_path[layer]) < 1e-10
    wrapped = wrap(plain, history=10, frame_shape=(20, 20), layers=layers)
    got = contributions(wrapped, x, layers, target="sum", steps=8, rule="left", reduce=None, dtype=F64, quiet=True)
    assert got.settings["affine_stem"] == ["conv1", "bn1"]  # reported by the module's own names
    assert rel_err(got["relu2"], res["relu2"]) < 1e-12


def test_wrap_describes_the_module_and_refuses_what_does_not_fit(plain, tmp_path):
    m = wrap(plain, history=10, frame_shape=(20, 20), layers=["relu1", "relu2"], frame_rate=100.0,
             cell_ids=["a", "b", "c", "d"], norm_stats=(0.5, 0.2))
    assert (m.n_cells, m.cell_ids, m.hidden_layers) == (4, ["a", "b", "c", "d"], ("relu1", "relu2"))
    assert m.input_spec.shape == (10, 20, 20) and m.input_spec.frame_rate == 100.0 and m.norm_stats == (0.5, 0.2)
    assert check_retina_model(m) is m
    assert m.net is plain and next(m.parameters()) is next(plain.parameters())  # shared, not copied
    with pytest.raises(ModelContractError, match="4 outputs"):
        wrap(plain, history=10, frame_shape=(20, 20), cell_ids=["a"])
    with pytest.raises(ModelContractError, match="relu9"):
        wrap(plain, history=10, frame_shape=(20, 20), layers=["relu9"])
    with pytest.raises(ModelContractError, match="fails on one window"):
        wrap(plain, history=12, frame_shape=(20, 20))  # the module's own shape error, named
    with pytest.raises(ModelContractError, match=r"\(B, N\)"):
        wrap(nn.Conv2d(10, 2, 3), history=10, frame_shape=(20, 20))  # a 4-D output is not rates
    with pytest.raises(CheckpointError, match="cannot be saved"):
        save_model(m, tmp_path / "unused")
    with pytest.raises(LayerNotFoundError, match="relu1"):  # the error lists the module's own names
        contributions(m, torch.zeros(1, 10, 20, 20, dtype=F64), ["relu7"], quiet=True)


def test_a_module_without_an_input_spec_is_refused_with_the_way_out(plain):
    rec = recording(side=20, n=4)
    with pytest.raises(ModelContractError, match="wrap"):
        predict(plain, rec)
    with pytest.raises(ModelContractError, match="input_spec"):
        contributions(plain, rec, ["relu1"], quiet=True)
    with pytest.raises(ModelContractError, match="input_spec"):
        instantaneous_rfs(plain, rec, [20], [0])


def test_time_resolved_colour_module_at_every_stage(timecnn):
    """(B, C, T, H, W) → (B, T', N): the rate of bin t is the last output step of the window before t; a
    greyscale recording drives both channels with the colour weights."""
    colour = (1.0, 0.5)
    m = wrap(timecnn, history=6, frame_shape=(12, 12), channels=2, colour=colour, layers=["act0", "act1"],
             frame_rate=100.0, cell_ids=["x", "y", "z"])
    rec = recording()
    bins, rates = predict(m, rec, "test", quiet=True)
    mean, std = rec.normalization()
    movie = (torch.from_numpy(np.asarray(rec.stimulus[0:len(rec.frame_times)])) - mean) / std
    w = torch.tensor(colour).view(1, 2, 1, 1, 1)
    with torch.no_grad():  # the whole movie in one pass: output step j is the window of frames j … j+5
        whole = timecnn(movie[None, None] * w)[0]  # (T − 5, N)
    np.testing.assert_allclose(rates, whole[bins - 6].numpy(), rtol=1e-5, atol=1e-6)
    assert evaluate(m, rec, "test", quiet=True).n_bins == len(bins)

    # contributions: per cell, equal to captum on the wrapped model; complete to < 1 % with 20 steps
    m64 = wrap(TimeCNN().double(), history=6, frame_shape=(12, 12), channels=2, colour=colour)
    m64.net.load_state_dict({k: v.double() for k, v in timecnn.state_dict().items()})
    m64.eval()
    x = torch.randn(2, 6, 12, 12, generator=torch.Generator().manual_seed(3), dtype=F64)
    res = contributions(m64, x, ["act0", "act1"], target=[0, 2], steps=6, rule="left", reduce=None, dtype=F64,
                        quiet=True)
    assert res.settings["affine_stem"] == ["conv0", "bn0"]  # found through the colour map
    for layer in ("act0", "act1"):
        for k, cell in enumerate((0, 2)):
            lc = LayerConductance(m64, getattr(m64.net, layer))
            ref = lc.attribute(x, target=cell, n_steps=6, method="riemann_trapezoid")
            assert rel_err(res[layer][:, k], ref) < 1e-6, (layer, cell)
    full = contributions(m, rec, ["act0", "act1"], target="sum", steps=20, quiet=True)
    assert max(full.summary()[n]["total_rel"] for n in ("act0", "act1")) < 0.01

    # IRFs are the input gradients of the module's last output step, mapped back through the colour weights
    irf = instantaneous_rfs(m, rec, [30, 50], [1])
    for i, t in enumerate((30, 50)):
        win = movie[t - 6:t].clone()[None, None].expand(1, 2, 6, 12, 12).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(timecnn(win * w)[0, -1, 1], win)  # g[c] = w_c ∂out/∂(channel c)
        np.testing.assert_allclose(irf[i, 0], g[0].sum(0).numpy(), rtol=1e-4, atol=1e-6)

    assert model_sta_gradient(m, [0, 2], 32, quiet=True).shape == (2, 6, 12, 12)
    test_bins = rec.window_bins("test", 6, 1)
    loadings = np.random.default_rng(0).random((len(test_bins), 2))
    crf, _ = mode_conditioned_rfs(m, rec, loadings, split="test", quiet=True)
    assert crf is not None


def test_wrapped_module_streams_to_a_store(timecnn, tmp_path):
    m = wrap(timecnn, history=6, frame_shape=(12, 12), channels=2, layers=["act0", "act1"])
    rec = recording()
    out = write_contributions(m, rec, tmp_path / "c.h5", ["act0", "act1"], target="sum", steps=4, quiet=True)
    store = read_contributions(out)
    mem = contributions(m, rec, ["act0", "act1"], target="sum", steps=4, quiet=True)
    np.testing.assert_allclose(store["contributions"]["act1"], mem["act1"], rtol=1e-5, atol=1e-7)


# ---- the stem search ----------------------------------------------------------------------------------------

class ScaledStem(PlainCNN):
    """A functional op between conv1 and bn1: the chain stops at conv1 (bn1 is not fed conv1's output)."""

    def forward(self, x):
        x = self.relu1(self.bn1(2.0 * self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.softplus(self.linear(x.flatten(1)))


class SkipStem(PlainCNN):
    """conv1's output also feeds a skip connection: replaying the stem would be wrong, so there is none."""

    def forward(self, x):
        c = self.conv1(x)
        x = self.relu1(self.bn1(c)) + 0.3 * c
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.softplus(self.linear(x.flatten(1)))


class CustomConv(nn.Module):
    """A user's own convolution (parameters, F.conv2d): affine, so a stem module once tested."""

    def __init__(self, cin, cout, k, squash=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) * 0.1)
        self.squash = squash

    def forward(self, x):
        y = F.conv2d(x, self.weight)
        return torch.tanh(y) if self.squash else y


class CustomStem(PlainCNN):
    def __init__(self, squash=False):
        super().__init__()
        self.conv1 = CustomConv(10, 4, 7, squash)


@pytest.mark.parametrize("cls, kwargs, stem", [
    (ScaledStem, {}, ["conv1"]),
    (SkipStem, {}, []),
    (CustomStem, {}, ["conv1", "bn1"]),
    (CustomStem, {"squash": True}, []),
])
def test_stem_search_takes_only_what_holds_and_numbers_never_change(cls, kwargs, stem):
    torch.manual_seed(0)
    model = randomize_bn(cls(**kwargs)).double()
    x = torch.randn(2, 10, 20, 20, generator=torch.Generator().manual_seed(4), dtype=F64)
    auto = contributions(model, x, ["relu1", "relu2"], target=[0, 1], steps=5, dtype=F64, quiet=True)
    none = contributions(model, x, ["relu1", "relu2"], target=[0, 1], steps=5, dtype=F64, quiet=True, stem=None)
    assert auto.settings["affine_stem"] == stem
    for layer in ("relu1", "relu2"):
        assert rel_err(auto[layer], none[layer]) < 1e-10, layer


def test_stem_search_leaves_hooked_stem_modules_their_outputs(plain):
    x = torch.randn(2, 10, 20, 20, generator=torch.Generator().manual_seed(5), dtype=F64)
    auto = contributions(plain, x, ["conv1", "relu2"], target="sum", steps=5, dtype=F64, quiet=True)
    none = contributions(plain, x, ["conv1", "relu2"], target="sum", steps=5, dtype=F64, quiet=True, stem=None)
    assert auto.settings["affine_stem"] == ["conv1"]  # cut after the hooked module
    assert rel_err(auto["conv1"], none["conv1"]) < 1e-10


# ---- speed options on modules we did not write ----------------------------------------------------------------

def test_speed_options_on_a_3d_module_work_or_say_why_not(timecnn):
    m = wrap(timecnn, history=6, frame_shape=(12, 12), channels=2)
    x = torch.randn(3, 6, 12, 12, generator=torch.Generator().manual_seed(6))
    ref = contributions(m, x, ["act0", "act1"], target=[0, 1], steps=4, quiet=True)
    with pytest.warns(RuntimeWarning, match="fast_conv='fft'"):
        fft = contributions(m, x, ["act0", "act1"], target=[0, 1], steps=4, quiet=True, fast_conv="fft")
    with pytest.warns(RuntimeWarning, match="fold_batchnorm"):
        contributions(m, x, ["act0"], target=[0, 1], steps=4, quiet=True, fold_batchnorm=True)
    cl = contributions(m, x, ["act0", "act1"], target=[0, 1], steps=4, quiet=True, channels_last=True)
    for got in (fft, cl):
        assert rel_err(got["act1"], ref["act1"]) < 1e-5
    assert next(timecnn.parameters()).is_contiguous()  # the layout is restored after the block


class _OldStyleSoftplus(torch.autograd.Function):
    """An autograd.Function written the pre-functorch way (no setup_context): torch.func cannot run it."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return F.softplus(y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * torch.sigmoid(y)


class OldStyleReadout(PlainCNN):
    def forward(self, x):
        with torch.no_grad():  # a parameter clamped in place, as openretina's Gaussian readouts do with mu
            self.linear.weight.clamp_(-10, 10)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return _OldStyleSoftplus.apply(self.linear(x.flatten(1)))


def test_torch_func_backward_falls_back_with_a_warning():
    torch.manual_seed(0)
    model = randomize_bn(OldStyleReadout()).double()
    x = torch.randn(2, 10, 20, 20, generator=torch.Generator().manual_seed(7), dtype=F64)
    ref = contributions(model, x, ["relu2"], target=[0, 1, 2], steps=4, dtype=F64, quiet=True)
    with pytest.warns(RuntimeWarning, match="batched_backward='func' failed"):
        got = contributions(model, x, ["relu2"], target=[0, 1, 2], steps=4, dtype=F64, quiet=True,
                            batched_backward="func")
    assert rel_err(got["relu2"], ref["relu2"]) < 1e-10


def test_engine_reports_the_stem_before_the_first_chunk(plain):
    with ContributionEngine.from_settings(plain, ["relu2"], "sum", steps=4, dtype=F64) as eng:
        eng.output_shapes((10, 20, 20))
        assert eng.describe()["affine_stem"] == ["conv1", "bn1"]  # what a store records up front


@pytest.mark.parametrize("rule", ["trapezoid", "left"])
def test_a_path_too_large_for_memory_is_walked_in_parts_with_the_same_numbers(timecnn, monkeypatch, rule):
    """One sample's path points that exceed the memory budget (a 3-D convolution's column buffer counted)
    are computed in passes of consecutive points: the same contributions as one pass."""
    m = wrap(timecnn, history=6, frame_shape=(12, 12), channels=2)
    x = torch.randn(3, 6, 12, 12, generator=torch.Generator().manual_seed(8))
    whole = contributions(m, x, ["act0", "act1"], target=[0, 2], steps=9, rule=rule, quiet=True, batch_size=3)
    monkeypatch.setenv("RETINA_CODEC_MEMORY_BUDGET", "40000")  # bytes: a few path points of one sample
    with ContributionEngine.from_settings(m, ["act0", "act1"], [0, 2], steps=9) as eng:
        assert eng.auto_batch_size((6, 12, 12)) == 1
        assert 2 <= eng.points_per_pass < 10
    parts = contributions(m, x, ["act0", "act1"], target=[0, 2], steps=9, rule=rule, quiet=True)
    for layer in ("act0", "act1"):
        assert rel_err(parts[layer], whole[layer]) < 1e-5, layer
        np.testing.assert_allclose(parts.completeness[layer], whole.completeness[layer], atol=1e-6)
    np.testing.assert_allclose(parts.f_x, whole.f_x, rtol=1e-6)
    np.testing.assert_allclose(parts.f_baseline, whole.f_baseline, rtol=1e-6)


def test_a_raw_time_resolved_module_is_refused_with_the_way_out(timecnn):
    from retina_codec.rf.irf import input_jacobian

    x5 = torch.randn(2, 2, 6, 12, 12)
    with pytest.raises(ModelContractError, match=r"\(B, T', N\).*wrap"):
        contributions(timecnn, x5, ["act1"], target=[0, 1], steps=2, quiet=True)
    with pytest.raises(ModelContractError, match="wrap"):
        input_jacobian(timecnn, x5, [0])


def test_the_column_buffer_of_cpu_3d_convolutions_is_counted_only_where_torch_unfolds(timecnn):
    """float64 3-D convolutions on a CPU unfold their input (C_in·kT·kH·kW per output position); oneDNN's
    float32 ones do not, and counting it there made chunks needlessly small (openretina: 2x slower)."""
    m = wrap(timecnn, history=6, frame_shape=(12, 12), channels=2)
    rows = {}
    for dt in (torch.float32, torch.float64):
        with ContributionEngine.from_settings(m, ["act0"], "sum", steps=4, dtype=dt) as eng:
            rows[dt] = eng.probe((6, 12, 12))[1]
    col = (2 * 4 * 5 * 5 * 3 * 8 * 8 + 3 * 3 * 3 * 3 * 1 * 6 * 6) * 8  # conv0 and conv1, float64, one row
    expect_mkldnn = torch.backends.mkldnn.is_available()
    assert rows[torch.float64] == 2 * rows[torch.float32] + col if expect_mkldnn else rows[torch.float64] > col


def test_a_float32_surprisal_of_rates_that_barely_vary_warns_and_float64_is_exact():
    """Seen on an untrained openretina model in the demo: rates varying by 1e-8 around 0.69 made the float32
    surprisal mostly rounding (completeness error 82 %); float64 gives 0 %. The user is told."""
    from retina_codec.contributions.targets import SurprisalTarget

    net = PlainCNN().eval()
    with torch.no_grad():
        net.linear.weight.mul_(1e-6)  # rates ≈ softplus(bias), barely moved by the stimulus
    x = torch.randn(6, 10, 20, 20, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = net(x)
    with pytest.warns(RuntimeWarning, match="mostly rounding"):
        contributions(net, x, ["relu2"], target=SurprisalTarget().fit(ref), steps=4, quiet=True)
    net64 = net.double()
    res = contributions(net64, x.double(), ["relu2"], target=SurprisalTarget().fit(ref.double()), steps=20,
                        dtype=F64, quiet=True)
    assert res.summary()["relu2"]["total_rel"] < 0.01
    import warnings as w

    varied = randomize_bn(PlainCNN())  # float32, rates that do vary: no warning
    with w.catch_warnings():
        w.simplefilter("error", RuntimeWarning)
        with torch.no_grad():
            ref_varied = varied(x)
        contributions(varied, x, ["relu2"], target=SurprisalTarget().fit(ref_varied), steps=4, quiet=True)
