"""Interventions against hand-written references: ablate/preserve equal zeroing channels by hand, sweep
selectivity from the effect curves, atoms of the wrong width refused."""

import numpy as np
import pytest
import torch
from _interventions_helpers import InterventionNet

from retina_codec.errors import ModesError
from retina_codec.modes.interventions import ablate_mode, intervention_sweep, preserve_mode

TORCH_THREADS = 1


# -------------------------------------------------------------------------------- interventions
def _zeroed_reference(model, x, channels):
    h = model.c1(x).clone()
    h[:, list(channels)] = 0.0  # every position of those channels
    return model.fc(model.act(h).flatten(1))


@torch.no_grad()
def test_ablate_and_preserve_equal_zeroing_the_ranked_channels_by_hand():
    torch.manual_seed(0)
    model, x = InterventionNet().eval(), torch.randn(6, 1, 5, 5)
    atom = np.random.default_rng(0).standard_normal(16)  # [negative parts of 8 channels, positive parts]
    order = np.argsort(-(np.abs(atom[:8]) + np.abs(atom[8:])), kind="stable")
    for p in (0.0, 0.3, 0.5, 1.0):
        top = order[: int(np.floor(p * 8 + 0.5))]
        with ablate_mode(model, "c1", atom, p) as zeroed:
            got = model(x)
        assert sorted(zeroed) == sorted(top)
        torch.testing.assert_close(got, _zeroed_reference(model, x, top))
        with preserve_mode(model, "c1", atom, p) as kept:
            got = model(x)
        assert sorted(kept) == sorted(top)
        torch.testing.assert_close(got, _zeroed_reference(model, x, [c for c in range(8) if c not in top]))
    assert not model.c1._forward_hooks


def test_sweep_selectivity_is_auc_target_minus_auc_off_over_auc_off_of_the_effect_curves():
    torch.manual_seed(1)
    model, x = InterventionNet().eval(), torch.randn(12, 1, 5, 5)
    atom = np.random.default_rng(1).standard_normal(16)
    ps = np.array([0.0, 0.25, 0.5, 0.75, 1.0])

    def target(out):
        return float(out[:, 0].exp().mean())

    def off(out):
        return float(out[:, 1].exp().mean())

    for kind, ctx in (("ablate", ablate_mode), ("preserve", preserve_mode)):
        sw = intervention_sweep(model, "c1", atom, x, target, off, kind=kind, fractions=ps)
        with torch.no_grad():
            base = model(x)
            ratios = []
            for p in ps:
                with ctx(model, "c1", atom, p):
                    out = model(x)
                ratios.append((target(out) / target(base), off(out) / off(base)))
        r = np.array(ratios)
        effect = 1.0 - r if kind == "ablate" else r
        auc_t, auc_o = np.trapezoid(effect[:, 0], ps), np.trapezoid(effect[:, 1], ps)
        assert sw.auc_target == pytest.approx(auc_t, rel=1e-12) and sw.auc_off == pytest.approx(auc_o, rel=1e-12)
        assert sw.selectivity == pytest.approx((auc_t - auc_o) / auc_o, rel=1e-10)


def test_an_atom_for_another_channel_count_is_refused_instead_of_zeroing_wrong_channels():
    model, x = InterventionNet().eval(), torch.randn(2, 1, 5, 5)
    activation_atom = np.arange(8.0)  # C = 8 net values: read as E/I split it would mean 4 channels
    with pytest.raises(ModesError, match=r"layer 'c1': expected 4 channels along dim 1 .* found output shape "
                                         r"\(2, 8, 5, 5\)"):
        with ablate_mode(model, "c1", activation_atom, 0.5):
            model(x)
    with pytest.raises(ModesError, match="expected 20 channels"):
        with preserve_mode(model, "c1", np.arange(40.0), 0.5):
            model(x)
    assert not model.c1._forward_hooks
    with ablate_mode(model, "c1", activation_atom, 0.5, ei_split=False) as zeroed:  # read right, it runs
        model(x)
    np.testing.assert_array_equal(zeroed, [7, 6, 5, 4])
