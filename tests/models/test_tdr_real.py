"""torch-deep-retina checkpoints as its trainer really writes them.

A minimal re-implementation of torch-deep-retina's model modules (same ``nn.Sequential`` layouts, layer
types and parameter names, ``AbsBatchNorm`` with ``|scale|`` and running statistics stored as parameters)
lives in a fake module ``torchdeepretina.models``, installed in ``sys.modules`` only while a checkpoint is
written, so that the pickle references ``torchdeepretina.models.<class>`` (``model_class``) exactly like
real files. The checkpoint is written the trainer's way (optimiser state after a step, hyper-parameters
copied to the top level, numpy scalars and arrays, sets, a ``torch.device``); the fake module is removed
before the file is read, and an import hook fails the test if anything tries to import ``torchdeepretina``.
"""

import importlib.abc
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tdr_reference import Flatten, Reshape
from torch import nn

from retina_codec.errors import UntrustedCheckpointError
from retina_codec.models import BNCNN as OurBNCNN
from retina_codec.models import get_module, import_tdr_checkpoint, load_model, save_model
from retina_codec.models.safe_pickle import StandIn, StandInObject
from retina_codec.models.tdr_import import load_tdr_pickle

TDR = "torchdeepretina.models"
# the legacy format stores a module class's source; the fake classes have none to give
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't retrieve source code:UserWarning")

# --- torch-deep-retina's modules (re-implemented from their published definitions) ---------------------


def update_shape(shape, kernel):
    return [int(s - kernel + 1) for s in shape]


class GaussianNoise(nn.Module):
    def __init__(self, std=0.1, trainable=False, adapt=False, momentum=0.95):
        super().__init__()
        self.std = std
        self.sigma = nn.Parameter(torch.ones(1) * std, requires_grad=trainable)

    def forward(self, x):
        if not self.training or self.std == 0:
            return x
        return x + self.sigma * torch.randn_like(x)


class _AbsBatchNorm(nn.Module):
    """BatchNorm whose scale is used as |scale|; running statistics are parameters (saved in the state dict)."""

    dims = 2

    def __init__(self, n_units, bias=True, abs_bias=False, momentum=0.1, eps=1e-5):
        super().__init__()
        self.n_units, self.momentum, self.eps = n_units, momentum, eps
        self.running_mean = nn.Parameter(torch.zeros(n_units))
        self.running_var = nn.Parameter(torch.ones(n_units))
        self.scale = nn.Parameter(torch.ones(n_units).float())
        self.bias, self.abs_bias = bias, abs_bias
        self.shift = nn.Parameter(torch.zeros(n_units).float())

    def forward(self, x):
        assert x.dim() == self.dims
        shift = self.shift.abs() if self.abs_bias else self.shift
        return F.batch_norm(x, self.running_mean.data, self.running_var.data, weight=self.scale.abs(), bias=shift,
                            eps=self.eps, momentum=self.momentum, training=self.training)


class AbsBatchNorm1d(_AbsBatchNorm):
    dims = 2


class AbsBatchNorm2d(_AbsBatchNorm):
    dims = 4


class LinearStackedConv2d(nn.Module):
    """A kernel of ``kernel_size`` built from a chain of ``stack_ksize`` convolutions (no nonlinearity)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, conv_bias=False, stack_ksize=3,
                 stack_chan=None, abs_bnorm=False, bnorm=False, drop_p=0):
        super().__init__()
        assert kernel_size % 2 == 1 and kernel_size > 1 and stack_ksize <= kernel_size
        chan = out_channels if stack_chan is None else stack_chan
        n_filters = (kernel_size - stack_ksize) / (stack_ksize - 1) + 1
        if n_filters - int(n_filters) > 0:
            effective = stack_ksize + int(n_filters - 1) * (stack_ksize - 1)
            last_ksize = kernel_size - effective + 1
            n_filters += 1
        else:
            last_ksize = stack_ksize
        n_filters = int(n_filters)
        if n_filters > 1:
            convs = [nn.Conv2d(in_channels, chan, stack_ksize, bias=conv_bias)]
            if abs_bnorm:
                convs.append(AbsBatchNorm2d(chan))
            if drop_p > 0:
                convs.append(nn.Dropout(drop_p))
            for i in range(n_filters - 1):
                if i < n_filters - 2:
                    convs.append(nn.Conv2d(chan, chan, stack_ksize, bias=conv_bias))
                    if abs_bnorm:
                        convs.append(AbsBatchNorm2d(chan))
                    elif bnorm:
                        convs.append(nn.BatchNorm2d(chan))
                    if drop_p > 0:
                        convs.append(nn.Dropout(drop_p))
                else:
                    convs.append(nn.Conv2d(chan, out_channels, last_ksize, bias=bias))
        else:
            convs = [nn.Conv2d(in_channels, out_channels, stack_ksize, bias=bias)]
        self.convs = nn.Sequential(*convs)

    def forward(self, x):
        return self.convs(x)


class OneToOneLinearStackedConv2d(nn.Module):
    """One 3x3 convolution to the output channels, then a separate 1->1-channel chain per channel."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, conv_bias=False):
        super().__init__()
        n_filters = int((kernel_size - 1) / 2)
        self.first_conv = nn.Conv2d(in_channels, out_channels, 3, bias=conv_bias)
        self.seqs = nn.ModuleList([
            nn.Sequential(*[nn.Conv2d(1, 1, 3, bias=bias if i == n_filters - 2 else conv_bias)
                            for i in range(n_filters - 1)])
            for _ in range(out_channels)])

    def forward(self, x):
        fx = self.first_conv(x)
        return torch.cat([seq(fx[:, c:c + 1]) for c, seq in enumerate(self.seqs)], dim=1)


class TDRModel(nn.Module):
    def __init__(self, n_units=5, noise=0.05, bias=True, linear_bias=None, chans=(8, 8), bn_moment=0.01,
                 softplus=True, inference_exp=False, img_shape=(40, 50, 50), ksizes=(15, 11), recurrent=False,
                 kinetic=False, convgc=False, centers=None, bnorm_d=1, **kwargs):
        super().__init__()
        self.n_units, self.chans, self.softplus, self.infr_exp = n_units, chans, softplus, inference_exp
        self.bias, self.img_shape, self.ksizes, self.linear_bias = bias, img_shape, ksizes, linear_bias
        self.noise, self.bn_moment, self.bnorm_d = noise, bn_moment, bnorm_d

    def forward(self, x):
        return self.sequential(x)


class BNCNN(TDRModel):
    """The TDRModel-generation BN-CNN (``bnorm_d`` 1: per-unit BatchNorm1d with Reshape; 2: BatchNorm2d)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        m, shape = [], self.img_shape[1:]
        in_ch = self.img_shape[0]
        for i in range(2):
            m.append(nn.Conv2d(in_ch, self.chans[i], kernel_size=self.ksizes[i], bias=self.bias))
            shape = update_shape(shape, self.ksizes[i])
            if self.bnorm_d == 1:
                m += [Flatten(), nn.BatchNorm1d(self.chans[i] * shape[0] * shape[1], eps=1e-3, momentum=self.bn_moment),
                      Reshape((-1, self.chans[i], *shape))]
            else:
                m.append(nn.BatchNorm2d(self.chans[i], eps=1e-3, momentum=self.bn_moment))
            m += [GaussianNoise(std=self.noise), nn.ReLU()]
            in_ch = self.chans[i]
        m += [Flatten(), nn.Linear(in_ch * shape[0] * shape[1], self.n_units, bias=self.linear_bias),
              nn.BatchNorm1d(self.n_units, eps=1e-3, momentum=self.bn_moment), nn.Softplus()]
        self.sequential = nn.Sequential(*m)


class BNCNN2D(nn.Module):
    """The earlier BatchNorm2d BN-CNN (hard-coded 40x50x50 input, 15 and 11 pixel kernels)."""

    def __init__(self, n_units=5, noise=0.05, bias=True, linear_bias=None, adapt_gauss=False, chans=(8, 8),
                 bnorm_momentum=0.1):
        super().__init__()
        linear_bias = bias if linear_bias is None else linear_bias
        self.sequential = nn.Sequential(
            nn.Conv2d(40, chans[0], kernel_size=15, bias=bias),
            nn.BatchNorm2d(chans[0], eps=1e-3, momentum=bnorm_momentum), GaussianNoise(std=noise), nn.ReLU(),
            nn.Conv2d(chans[0], chans[1], kernel_size=11, bias=bias),
            nn.BatchNorm2d(chans[1], eps=1e-3, momentum=bnorm_momentum), GaussianNoise(std=noise), nn.ReLU(),
            Flatten(), nn.Linear(chans[1] * 26 * 26, n_units, bias=linear_bias),
            nn.BatchNorm1d(n_units, momentum=bnorm_momentum), nn.Softplus())

    def forward(self, x):
        return self.sequential(x)


class LinearStackedBNCNN(TDRModel):
    """The latest LinearStackedBNCNN: stacked convolutions without inner batchnorm, AbsBatchNorm per unit
    (``bnorm_d=1``, with Reshape) or per channel (``bnorm_d=2``), optionally one-to-one stacks."""

    def __init__(self, drop_p=0, one2one=False, stack_ksizes=3, stack_chans=None, paddings=None, **kwargs):
        super().__init__(**kwargs)
        stack_ksizes = [stack_ksizes] * 2 if isinstance(stack_ksizes, int) else stack_ksizes
        stack_chans = [stack_chans] * 2 if stack_chans is None or isinstance(stack_chans, int) else stack_chans
        m, shape, in_ch = [], self.img_shape[1:], self.img_shape[0]
        for i in range(2):
            if one2one:
                m.append(OneToOneLinearStackedConv2d(in_ch, self.chans[i], kernel_size=self.ksizes[i], bias=self.bias))
            else:
                m.append(LinearStackedConv2d(in_ch, self.chans[i], kernel_size=self.ksizes[i], abs_bnorm=False,
                                             bias=self.bias, stack_chan=stack_chans[i], stack_ksize=stack_ksizes[i],
                                             drop_p=drop_p))
            shape = update_shape(shape, self.ksizes[i])
            if self.bnorm_d == 1:
                m += [Flatten(), AbsBatchNorm1d(self.chans[i] * shape[0] * shape[1], eps=1e-3, momentum=self.bn_moment),
                      Reshape((-1, self.chans[i], shape[0], shape[1]))]
            else:
                m.append(AbsBatchNorm2d(self.chans[i], eps=1e-3, momentum=self.bn_moment))
            m += [GaussianNoise(std=self.noise), nn.ReLU()]
            in_ch = self.chans[i]
        m += [Flatten(), nn.Linear(in_ch * shape[0] * shape[1], self.n_units, bias=self.linear_bias),
              AbsBatchNorm1d(self.n_units, eps=1e-3, momentum=self.bn_moment), nn.Softplus()]
        self.sequential = nn.Sequential(*m)


class LinearStackedBNCNNv1(TDRModel):
    """The first LinearStackedBNCNN (``bnorm=True``: AbsBatchNorm2d between the stacked convolutions;
    Reshape after the ReLU, no Flatten before the readout)."""

    def __init__(self, bnorm=True, drop_p=0, **kwargs):
        super().__init__(**kwargs)
        c, k = self.chans, self.ksizes
        s1 = update_shape(self.img_shape[1:], k[0])
        s2 = update_shape(s1, k[1])
        self.sequential = nn.Sequential(
            LinearStackedConv2d(self.img_shape[0], c[0], kernel_size=k[0], abs_bnorm=bnorm, bias=self.bias,
                                drop_p=drop_p),
            Flatten(), AbsBatchNorm1d(c[0] * s1[0] * s1[1], eps=1e-3, momentum=self.bn_moment),
            GaussianNoise(std=self.noise), nn.ReLU(), Reshape((-1, c[0], s1[0], s1[1])),
            LinearStackedConv2d(c[0], c[1], kernel_size=k[1], abs_bnorm=bnorm, bias=self.bias, drop_p=drop_p),
            Flatten(), AbsBatchNorm1d(c[1] * s2[0] * s2[1], eps=1e-3, momentum=self.bn_moment),
            GaussianNoise(std=self.noise), nn.ReLU(),
            nn.Linear(c[1] * s2[0] * s2[1], self.n_units, bias=self.linear_bias),
            AbsBatchNorm1d(self.n_units, eps=1e-3, momentum=self.bn_moment), nn.Softplus())


# --- objects of torchdeepretina's modules that a file may hold -------------------------------------------

EXECUTED = []  # what torchdeepretina code ran (must stay empty)


class Callback:
    """An object kept in the hyper-parameters whose ``__setstate__`` would write a file and set a global."""

    def __setstate__(self, state):
        EXECUTED.append("Callback.__setstate__")
        with open(state["marker"], "w") as f:
            f.write("ran")


def touch(marker):
    EXECUTED.append("touch")
    with open(marker, "w") as f:
        f.write("ran")
    return marker


def make_weight(*shape):
    EXECUTED.append("make_weight")
    return torch.zeros(shape)


class Payload:
    """Pickled as a call of ``torchdeepretina.models.touch`` (its __reduce__)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (touch, (self.marker,))


class ComputedWeight:
    """Pickled as a call of ``torchdeepretina.models.make_weight``: the weights need that code."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def __reduce__(self):
        return (make_weight, self.shape)


FAKE_CLASSES = {"BNCNN": BNCNN, "BNCNN2D": BNCNN2D, "LinearStackedBNCNN": LinearStackedBNCNN,
                "LinearStackedBNCNNv1": LinearStackedBNCNNv1}


class _NoTorchDeepRetina(importlib.abc.MetaPathFinder):
    """Records (and blocks) any attempt to import torchdeepretina while a file is read."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchdeepretina":
            self.attempts.append(name)
            raise ImportError(f"test: importing {name} is not allowed")
        return None


@pytest.fixture
def no_tdr_import():
    finder = _NoTorchDeepRetina()
    sys.meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
    assert "torchdeepretina" not in sys.modules


def fake_torchdeepretina(model_class_name, cls):
    """Install ``torchdeepretina.models`` with the model classes (``cls`` under ``model_class_name``)."""
    pkg = types.ModuleType("torchdeepretina")
    mod = types.ModuleType(TDR)
    pkg.models = mod
    for name, obj in [*FAKE_CLASSES.items(), (model_class_name, cls), ("Callback", Callback), ("touch", touch),
                      ("make_weight", make_weight)]:
        setattr(mod, name, obj)
    for obj in (*FAKE_CLASSES.values(), Callback, touch, make_weight):
        obj.__module__ = TDR
    cls.__qualname__ = cls.__name__ = model_class_name
    sys.modules["torchdeepretina"], sys.modules[TDR] = pkg, mod


def remove_fake():
    sys.modules.pop(TDR, None)
    sys.modules.pop("torchdeepretina", None)
    LinearStackedBNCNNv1.__qualname__ = LinearStackedBNCNNv1.__name__ = "LinearStackedBNCNNv1"


# --- building and saving ----------------------------------------------------------------------------------


def randomize(model, seed):
    """Non-trivial weights and batchnorm statistics, signed AbsBatchNorm scales (the model uses |scale|)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(1.0 + 0.3 * torch.rand(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if hasattr(m, "running_mean"):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.5)
            if isinstance(m, _AbsBatchNorm):
                m.scale.copy_(torch.randn(m.scale.shape, generator=g) + 0.3)
                m.shift.copy_(torch.randn(m.shift.shape, generator=g) * 0.3)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return model


def build(cls, seed=0, **hyps):
    """A torch-deep-retina network after one training step, with its Adam optimiser."""
    torch.manual_seed(seed)
    model = cls(**hyps)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = hyps.get("img_shape", (40, 50, 50))
    model.train()
    x = torch.randn(8, *shape)
    loss = nn.PoissonNLLLoss(log_input=False)(model(x), torch.rand(8, hyps.get("n_units", 5)))
    loss.backward()
    optim.step()
    optim.zero_grad()
    return randomize(model, seed).eval(), optim


def trainer_save(path, model, optim, model_type, hyps, class_name=None, style="hyps", legacy=False, **extra):
    """Write ``model`` the way torch-deep-retina's trainer does (the fake module is installed meanwhile)."""
    cls = type(model)
    hyps = dict(hyps, model_type=model_type, exp_name="test", batch_size=512, lr=1e-3, l2=0.0, n_epochs=40,
                shuffle=True, log_poisson=False, dataset="15-10-07", stim_type="naturalscene",
                cells=list(range(hyps.get("n_units", 5))), centers=[[18, 20]] * hyps.get("n_units", 5),
                device=torch.device("cpu"), seed=np.int64(1234))
    fake_torchdeepretina(class_name or model_type, cls)
    try:
        hyps["model_class"] = cls
        save = {"model_type": model_type, "model_state_dict": model.state_dict(),
                "optim_state_dict": optim.state_dict(), "loss": 0.41, "epoch": 7, "val_loss": 0.43,
                "val_acc": np.float64(0.52), "exp_val_acc": None, "test_pearson": np.float32(0.61),
                "norm_stats": {"mean": np.float32(0.4821), "std": np.float32(0.2513)},
                "zero_dict": {"sequential.0": set(), "sequential.6": {1, 3}},
                "y_stats": {"mean": np.linspace(0, 1, 5, dtype=np.float32), "std": np.ones(5)}}
        if style == "hyps":
            save["hyps"] = hyps
        else:  # the earlier trainer: the constructor's arguments as model_hyps, all hyps at the top level
            save["model_hyps"] = {k: v for k, v in hyps.items() if k in ("n_units", "noise", "bias", "chans",
                                                                       "img_shape", "ksizes", "bn_moment")}
        for k, v in hyps.items():
            save.setdefault(k, v)
        save.update(extra)
        torch.save(save, path, _use_new_zipfile_serialization=not legacy)
    finally:
        remove_fake()
    return path


def agreement(ours, ref):
    """``(max |ours - ref|, max |ours - ref| / |ref|)``."""
    diff = (ours.double() - ref.double()).abs()
    return float(diff.max()), float((diff / ref.double().abs().clamp_min(1e-12)).max())


def check_same(model, ref, shape, seed=0, rtol=1e-5, atol=1e-6):
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol)
    return agreement(ours, theirs)


SMALL = dict(n_units=5, img_shape=(12, 30, 30), chans=(6, 5), ksizes=(9, 7), noise=0.1, bn_moment=0.01)


# --- tests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bnorm_d", [1, 2])
def test_latest_linear_stacked_bncnn_folds_exactly(tmp_path, no_tdr_import, bnorm_d):
    ref, optim = build(LinearStackedBNCNN, seed=bnorm_d, bnorm_d=bnorm_d, **SMALL)
    path = trainer_save(tmp_path / "test_epoch_7.pt", ref, optim, "LinearStackedBNCNN", dict(SMALL, bnorm_d=bnorm_d))
    model = import_tdr_checkpoint(path)
    assert no_tdr_import.attempts == [] and EXECUTED == []
    assert isinstance(model, OurBNCNN) and model.bn == ("unit" if bnorm_d == 1 else "channel")
    assert model.kernel_sizes == (9, 7) and model.channels == (6, 5) and model.input_spec.shape == (12, 30, 30)
    assert model.readout_bn_eps == 1e-3 and model.noise_std == 0.1 and not model.training
    abs_err, rel_err = check_same(model, ref, SMALL["img_shape"])
    print(f"LinearStackedBNCNN bnorm_d={bnorm_d}: max abs {abs_err:.2e}, max rel {rel_err:.2e}")
    x = torch.randn(3, *SMALL["img_shape"])
    with torch.no_grad():  # the hidden layers (post-ReLU) are the original's too
        cut = 6 if bnorm_d == 1 else 4
        torch.testing.assert_close(get_module(model, "conv1")(x), ref.sequential[:cut](x), rtol=1e-5, atol=1e-6)
    meta = model.metadata
    assert meta["model_type"] == "LinearStackedBNCNN" and meta["model_class"] == f"{TDR}.LinearStackedBNCNN"
    assert f"{TDR}.LinearStackedBNCNN" in meta["not_imported"] and meta["trusted_load"] is False
    assert meta["folded_stacks"][0]["stacked_kernels"] == [3, 3, 3, 3] and meta["hyperparameters"]["bnorm_d"] == bnorm_d
    assert model.norm_stats == pytest.approx((0.4821, 0.2513)) and model.cell_ids == ["0", "1", "2", "3", "4"]


def test_full_size_first_generation_linear_stacked_bncnn_with_inner_abs_batchnorm(tmp_path, no_tdr_import):
    hyps = dict(n_units=5, chans=[8, 8], ksizes=[15, 11], img_shape=[40, 50, 50], bn_moment=0.01, noise=0.05)
    ref, optim = build(LinearStackedBNCNNv1, seed=3, bnorm=True, drop_p=0.1, **hyps)
    path = trainer_save(tmp_path / "v1.pt", ref, optim, "LinearStackedBNCNN", dict(hyps, bnorm=True, drop_p=0.1),
                        class_name="LinearStackedBNCNN", style="model_hyps")
    model = import_tdr_checkpoint(path)
    assert no_tdr_import.attempts == [] and EXECUTED == []
    assert model.kernel_sizes == (15, 11) and model.bn == "unit" and model.input_spec.shape == (40, 50, 50)
    folded = model.metadata["folded_stacks"]
    assert folded[0]["stacked_kernels"] == [3] * 7 and folded[0]["inner_batchnorms"] == 6
    assert folded[1]["stacked_kernels"] == [3] * 5 and folded[1]["inner_batchnorms"] == 4
    abs_err, rel_err = check_same(model, ref, (40, 50, 50))
    print(f"LinearStackedBNCNN (first generation, 40x50x50): max abs {abs_err:.2e}, max rel {rel_err:.2e}")


def test_uneven_stacks_narrow_stack_channels_and_one_to_one_stacks_fold(tmp_path, no_tdr_import):
    for n, kw in enumerate([dict(stack_ksizes=[3, 5], stack_chans=[3, None]), dict(one2one=True)]):
        ref, optim = build(LinearStackedBNCNN, seed=10 + n, **SMALL, **kw)
        path = trainer_save(tmp_path / f"s{n}.pt", ref, optim, "LinearStackedBNCNN", dict(SMALL, **kw))
        model = import_tdr_checkpoint(path)
        abs_err, rel_err = check_same(model, ref, SMALL["img_shape"], seed=n)
        print(f"LinearStackedBNCNN {kw}: max abs {abs_err:.2e}, max rel {rel_err:.2e}")
    assert model.metadata["folded_stacks"][0]["one_to_one"] is True and EXECUTED == []


@pytest.mark.parametrize("bnorm_d", [1, 2])
def test_latest_bncnn_layouts_copy_exactly(tmp_path, no_tdr_import, bnorm_d):
    ref, optim = build(BNCNN, seed=20 + bnorm_d, bnorm_d=bnorm_d, linear_bias=True, **SMALL)
    path = trainer_save(tmp_path / "b.pt", ref, optim, "BNCNN", dict(SMALL, bnorm_d=bnorm_d, linear_bias=True),
                        legacy=bnorm_d == 2)
    model = import_tdr_checkpoint(path)
    assert model.bn == ("unit" if bnorm_d == 1 else "channel") and model.readout_bias and model.readout_bn_eps == 1e-3
    abs_err, rel_err = check_same(model, ref, SMALL["img_shape"], rtol=1e-6, atol=1e-7)
    print(f"BNCNN bnorm_d={bnorm_d}: max abs {abs_err:.2e}, max rel {rel_err:.2e}")
    assert no_tdr_import.attempts == [] and EXECUTED == []


def test_bncnn2d_with_its_class_in_the_file(tmp_path, no_tdr_import):
    ref, optim = build(BNCNN2D, seed=30, n_units=5, bnorm_momentum=0.1)
    path = trainer_save(tmp_path / "b2d.pt", ref, optim, "BNCNN2D", {"n_units": 5, "bnorm_momentum": 0.1, "chans": [8, 8]})
    model = import_tdr_checkpoint(path)
    assert model.bn == "channel" and model.readout_bn_eps == 1e-5 and model.input_spec.shape == (40, 50, 50)
    abs_err, rel_err = check_same(model, ref, (40, 50, 50), rtol=1e-6, atol=1e-7)
    print(f"BNCNN2D: max abs {abs_err:.2e}, max rel {rel_err:.2e}")


def test_the_raw_dict_has_stand_ins_for_the_class_and_real_values_elsewhere(tmp_path, no_tdr_import):
    ref, optim = build(LinearStackedBNCNN, **SMALL)
    path = trainer_save(tmp_path / "raw.pt", ref, optim, "LinearStackedBNCNN", SMALL, legacy=True)
    data = load_tdr_pickle(path)
    cls = data["model_class"]
    assert isinstance(cls, StandIn) and (cls.module, cls.name) == (TDR, "LinearStackedBNCNN")
    assert data["hyps"]["model_class"] is cls and not callable(cls)
    assert data["device"] == torch.device("cpu") and data["zero_dict"]["sequential.6"] == {1, 3}
    assert isinstance(data["val_acc"], np.float64) and data["y_stats"]["mean"].dtype == np.float32
    assert data["optim_state_dict"]["state"][0]["exp_avg"].shape == ref.sequential[0].convs[0].weight.shape
    for k, v in ref.state_dict().items():
        assert torch.equal(data["model_state_dict"][k], v), k


def test_objects_of_torchdeepretina_classes_load_inert_and_never_run(tmp_path, no_tdr_import):
    marker = tmp_path / "ran.txt"
    cb = Callback()
    cb.__dict__["marker"] = str(marker)
    ref, optim = build(LinearStackedBNCNN, **SMALL)
    path = trainer_save(tmp_path / "cb.pt", ref, optim, "LinearStackedBNCNN", dict(SMALL, callback=cb))
    data = load_tdr_pickle(path)
    obj = data["callback"]
    assert isinstance(obj, StandInObject) and obj.qualname == f"{TDR}.Callback" and obj.how == "new"
    assert obj.state == [{"marker": str(marker)}]
    model = import_tdr_checkpoint(path)
    check_same(model, ref, SMALL["img_shape"])
    assert not marker.exists() and EXECUTED == [] and no_tdr_import.attempts == []


def test_a_call_of_torchdeepretina_code_is_refused_naming_only_it(tmp_path, no_tdr_import):
    marker = tmp_path / "ran.txt"
    ref, optim = build(LinearStackedBNCNN, **SMALL)
    path = trainer_save(tmp_path / "payload.pt", ref, optim, "LinearStackedBNCNN", SMALL, payload=Payload(marker))
    with pytest.raises(UntrustedCheckpointError) as err:
        import_tdr_checkpoint(path)
    msg = str(err.value).replace(str(tmp_path), "")
    assert f"{TDR}.touch (in payload)" in msg and "trust=True" in msg and "\n" not in msg
    assert "LinearStackedBNCNN" not in msg and "numpy" not in msg and msg.count("torchdeepretina") == 1
    assert not marker.exists() and EXECUTED == [] and no_tdr_import.attempts == []
    # with trust the file is fully unpickled; torchdeepretina is not installed, so its function stays a stand-in
    model = import_tdr_checkpoint(path, trust=True)
    assert model.metadata["trusted_load"] is True and not marker.exists() and EXECUTED == []
    check_same(model, ref, SMALL["img_shape"])


def test_weights_that_need_a_call_are_refused_with_only_that_global(tmp_path, no_tdr_import):
    ref, optim = build(BNCNN, **SMALL)
    fake_torchdeepretina("BNCNN", BNCNN)
    try:
        state = ref.state_dict()
        state["sequential.0.weight"] = ComputedWeight(state["sequential.0.weight"].shape)
        save = {"model_type": "BNCNN", "model_class": BNCNN, "model_state_dict": state, "hyps": dict(SMALL)}
        torch.save(save, tmp_path / "computed.pt")
    finally:
        remove_fake()
    with pytest.raises(UntrustedCheckpointError) as err:
        load_model(tmp_path / "computed.pt")
    msg = str(err.value).replace(str(tmp_path), "")
    assert f"{TDR}.make_weight (in model_state_dict['sequential.0.weight']; needed for the weights)" in msg
    assert "BNCNN" not in msg and msg.count("torchdeepretina") == 1 and EXECUTED == [] and no_tdr_import.attempts == []


def test_load_model_and_our_checkpoint_round_trip(tmp_path, no_tdr_import):
    ref, optim = build(LinearStackedBNCNN, seed=5, **SMALL)
    path = trainer_save(tmp_path / "test_epoch_7.pt", ref, optim, "LinearStackedBNCNN", SMALL)
    model = load_model(path)
    check_same(model, ref, SMALL["img_shape"])
    save_model(model, tmp_path / "ours", metadata=model.metadata)
    again = load_model(tmp_path / "ours")
    x = torch.randn(4, *SMALL["img_shape"])
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert type(again) is OurBNCNN and again.config() == model.config() and again.input_spec == model.input_spec
    assert again.norm_stats == model.norm_stats and again.cell_ids == model.cell_ids
    assert again.metadata["folded_stacks"] == model.metadata["folded_stacks"]
    assert no_tdr_import.attempts == [] and EXECUTED == []


class _Reduces:
    """Pickled as whatever ``__reduce__`` tuple it is given."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def test_hostile_pickles_are_refused_or_unreadable_and_never_run(tmp_path, no_tdr_import):
    import collections

    from retina_codec.errors import CheckpointError

    small = torch.zeros(4).untyped_storage()
    rebuild = torch._utils._rebuild_tensor_v2
    cases = {  # field value -> (error type, text in the message)
        "eval": (_Reduces(eval, (f"open({str(tmp_path / 'x')!r}, 'w')",)), UntrustedCheckpointError,
                 "builtins.eval (in x)"),
        "storage call": (_Reduces(torch.FloatStorage, (10,)), UntrustedCheckpointError, "a call of"),
        "tensor state": (_Reduces(rebuild, (torch.storage.TypedStorage(wrap_storage=small, dtype=torch.float32,
                                                                        _internal=True), 0, (4,), (1,), False,
                                           collections.OrderedDict()), {"x": 1}),
                         UntrustedCheckpointError, "setting the state of Tensor"),
        "view beyond storage": (_Reduces(rebuild, (torch.storage.TypedStorage(wrap_storage=small, dtype=torch.float32,
                                                                               _internal=True), 0, (100,), (1,),
                                                  False, collections.OrderedDict())),
                                CheckpointError, "tensor view within its storage"),
    }
    for name, (value, error, text) in cases.items():
        torch.save({"model_type": "BNCNN", "x": value}, tmp_path / "h.pt")
        with pytest.raises(error) as err:
            import_tdr_checkpoint(tmp_path / "h.pt")
        assert text in str(err.value), (name, str(err.value))
        assert error is UntrustedCheckpointError or not isinstance(err.value, UntrustedCheckpointError), name
    assert not (tmp_path / "x").exists() and no_tdr_import.attempts == []
