"""ContributionSpec / RunOptions (what vs how), the one run loop and the convolution speed policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_codec.contributions import (
    ContributionEngine,
    ContributionSpec,
    RunOptions,
    contributions,
    read_contributions,
    write_contributions,
)
from retina_codec.errors import ContributionError, ContributionTypeError, RetinaCodecError, TargetError
from retina_codec.stores.contributions import read_store_info
from retina_codec.torch_utils.fft_conv import conv_speed_policy


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 7), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * 6 * 6, 4))


def test_spec_attrs_round_trip_through_the_store(tmp_path):
    model, x = _model(), torch.randn(11, 2, 12, 12)
    out = write_contributions(model, x, tmp_path / "c.h5", ["1"], target=[0, 2], steps=3, batch_size=4,
                              device="cpu", quiet=True)
    attrs = read_contributions(out)["attrs"]
    spec = ContributionSpec(layers=["1"], target=[0, 2], steps=3)
    assert {k: attrs[k] for k in ("method", "rule", "steps")} == {"method": "conductance", "rule": "trapezoid",
                                                                 "steps": 3}
    back = ContributionSpec.from_attrs(attrs)
    assert back.to_attrs() == spec.to_attrs()
    assert back.target.per_cell and back.target.n_targets == 2
    info = read_store_info(out)
    assert info.n_samples == 11 and info.layers == ["1"] and info.shapes == {"1": (2, 6)}


def test_memory_and_hdf5_sinks_get_the_same_numbers(tmp_path):
    model, x = _model(), torch.randn(9, 2, 12, 12)
    mem = contributions(model, x, ["0", "1"], steps=4, batch_size=4, device="cpu", quiet=True)
    got = read_contributions(write_contributions(model, x, tmp_path / "c.h5", ["0", "1"], steps=4, batch_size=4,
                                                 device="cpu", quiet=True))
    for n in ("0", "1"):
        np.testing.assert_array_equal(got["contributions"][n], mem[n])
    np.testing.assert_array_equal(got["bins"], mem.bins)


@pytest.mark.parametrize("bad, field", [
    (dict(layers=[]), "layers"), (dict(layers=["a", "a"]), "layers"), (dict(layers=["a"], steps=0), "steps"),
    (dict(layers=["a"], rule="mid"), "rule"), (dict(layers=["a"], method="saliency"), "method"),
    (dict(layers=["a"], reduction=["max"]), "reduce"), (dict(layers=["a"], baseline=float("nan")), "baseline"),
])
def test_spec_validation_names_the_field(bad, field):
    with pytest.raises(ContributionError, match=f"^{field}: expected|^{field}: names|^{field}: unknown"):
        ContributionSpec(**bad)


def test_bad_target_and_options_are_library_errors_with_their_builtin_bases():
    with pytest.raises(TargetError) as err:
        ContributionSpec(layers=["a"], target="nope")
    assert isinstance(err.value, ValueError) and isinstance(err.value, RetinaCodecError)
    with pytest.raises(ContributionError, match="^batched_backward: expected"):
        RunOptions(batched_backward="vmap")
    with pytest.raises(ContributionError, match="^batch_size: expected"):
        RunOptions(batch_size=0)
    with pytest.raises(ContributionTypeError, match="^colour: not a contributions setting") as err:
        ContributionEngine.from_settings(_model(), ["1"], colour="red")
    assert isinstance(err.value, TypeError)


def test_engine_takes_a_spec_and_options():
    model, x = _model(), torch.randn(3, 2, 12, 12)
    spec = ContributionSpec(layers=("1",), steps=2)
    with ContributionEngine(model, spec, RunOptions(device="cpu")) as eng:
        a = eng.compute(x)
    with ContributionEngine.from_settings(model, "1", steps=2, device="cpu") as eng:
        b = eng.compute(x)
    torch.testing.assert_close(a.contributions["1"], b.contributions["1"], rtol=0, atol=0)
    with pytest.raises(ContributionTypeError):
        ContributionEngine(model, ["1"])


def test_conv_speed_policy_is_the_one_rule():
    assert conv_speed_policy("cpu", "inference").fft and conv_speed_policy(None, "train").fft
    assert not conv_speed_policy("cuda", "inference").fft
    assert conv_speed_policy("cuda", "contributions", "fft").fft
    assert not conv_speed_policy("cpu", "contributions", "native").fft
    assert conv_speed_policy("cpu", "train").weight_grad_as_conv
    assert not conv_speed_policy("cpu", "inference").weight_grad_as_conv
    assert not conv_speed_policy("cuda", "train").weight_grad_as_conv
