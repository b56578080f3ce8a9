"""Interventions: ablating / preserving a mode's top channels at a named layer, sweeps and selectivity."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from retina_codec.errors import LayerNotFoundError, ModesError
from retina_codec.modes.interventions import (
    ablate_mode,
    accuracy_on,
    channel_weights,
    intervention_sweep,
    mean_rate,
    preserve_mode,
    top_channels,
    zero_channels,
)

MODELS = Path(__file__).resolve().parents[2] / "retina_codec" / "shipped"


class TwoPathways(nn.Module):
    """Four hidden channels; cell 0 reads channels 0 and 1, cell 1 reads channels 2 and 3 (known answer)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Conv2d(1, 4, 1)
        self.act = nn.ReLU()
        self.readout = nn.Linear(4, 2)
        with torch.no_grad():
            self.hidden.weight.fill_(1.0)
            self.hidden.bias.zero_()
            self.readout.weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]]))
            self.readout.bias.fill_(0.5)

    def forward(self, x):
        return self.readout(self.act(self.hidden(x)).mean(dim=(2, 3)))


# mode A loads on channels 0 (most) and 1; layout [negative parts of 4 channels, positive parts]
ATOM_A = np.array([0.0, -0.1, 0.0, 0.0, 1.0, 0.7, 0.05, 0.0])


@pytest.fixture
def model_and_inputs():
    torch.manual_seed(0)
    return TwoPathways().eval(), torch.rand(20, 1, 5, 5) + 0.5


def test_channels_are_ranked_by_negative_plus_positive_atom_weight():
    np.testing.assert_allclose(channel_weights(ATOM_A, 4), [1.0, 0.8, 0.05, 0.0])
    np.testing.assert_array_equal(top_channels(ATOM_A, 4, 0.5), [0, 1])
    np.testing.assert_array_equal(top_channels(ATOM_A, 4, 0.25), [0])
    np.testing.assert_array_equal(top_channels(ATOM_A[4:], 4, 0.75, ei_split=False), [0, 1, 2])
    with pytest.raises(ModesError, match=r"atom: expected shape \(8,\) for 4 channels with the E/I split"):
        channel_weights(ATOM_A[:5], 4)


def test_ablating_a_mode_zeroes_its_top_channels_and_leaves_the_other_pathway(model_and_inputs):
    model, x = model_and_inputs
    with torch.no_grad():
        base = model(x)
        with ablate_mode(model, "hidden", ATOM_A, 0.5) as chans:
            ablated = model(x)
    np.testing.assert_array_equal(chans, [0, 1])
    torch.testing.assert_close(ablated[:, 0], torch.full((20,), 0.5))  # only the readout bias is left
    torch.testing.assert_close(ablated[:, 1], base[:, 1])


def test_preserving_a_mode_keeps_only_its_top_channels(model_and_inputs):
    model, x = model_and_inputs
    with torch.no_grad():
        base = model(x)
        with preserve_mode(model, "hidden", ATOM_A, 0.5) as kept:
            kept_out = model(x)
    np.testing.assert_array_equal(kept, [0, 1])
    torch.testing.assert_close(kept_out[:, 0], base[:, 0])
    torch.testing.assert_close(kept_out[:, 1], torch.full((20,), 0.5))


def test_hooks_exist_only_inside_the_with_block_even_on_error(model_and_inputs):
    model, x = model_and_inputs
    with pytest.raises(RuntimeError, match="boom"), zero_channels(model, "hidden", [0, 1, 2, 3]):
        assert len(model.hidden._forward_hooks) == 1
        raise RuntimeError("boom")
    assert len(model.hidden._forward_hooks) == 0
    with pytest.raises(LayerNotFoundError, match="layer 'conv9' not found"):
        with ablate_mode(model, "conv9", ATOM_A, 0.5):
            pass


def test_ablation_sweep_is_selective_for_the_target_pathway(model_and_inputs):
    model, x = model_and_inputs
    res = intervention_sweep(model, "hidden", ATOM_A, x, mean_rate([0]), mean_rate([1]),
                             fractions=[0.0, 0.25, 0.5, 0.75, 1.0])
    # by hand: s = mean hidden activation (all channels equal); cell 0 = 3s + 0.5, cell 1 = 4s + 0.5
    s = float(x.mean())
    c0, c1 = 3 * s + 0.5, 4 * s + 0.5
    np.testing.assert_allclose(res.target, [1, (2 * s + 0.5) / c0, 0.5 / c0, 0.5 / c0, 0.5 / c0], rtol=1e-5)
    np.testing.assert_allclose(res.off_target, [1, 1, 1, (s + 0.5) / c1, 0.5 / c1], rtol=1e-5)
    drop_t, drop_o = 1 - res.target, 1 - res.off_target
    auc = lambda y: float(np.sum(0.25 * (y[1:] + y[:-1]) / 2))  # noqa: E731
    assert res.auc_target == pytest.approx(auc(drop_t)) and res.auc_off == pytest.approx(auc(drop_o))
    assert res.selectivity == pytest.approx((auc(drop_t) - auc(drop_o)) / auc(drop_o))
    assert res.selectivity > 1.0
    # the other pathway's mode is selective the other way
    atom_b = np.array([0, 0, 0, 0, 0.0, 0.0, 1.0, 0.9])
    res_b = intervention_sweep(model, "hidden", atom_b, x, mean_rate([0]), mean_rate([1]))
    assert res_b.selectivity < 0


def test_preserve_sweep_retains_the_target_more_than_the_off_target(model_and_inputs):
    model, x = model_and_inputs
    res = intervention_sweep(model, "hidden", ATOM_A, x, mean_rate([0]), mean_rate([1]), kind="preserve")
    assert res.target[-1] == pytest.approx(1.0) and res.off_target[-1] == pytest.approx(1.0)
    assert res.selectivity > 0.5


def test_accuracy_measure_for_classifiers():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy_on(labels, [1])(logits) == pytest.approx(2 / 3)
    assert accuracy_on(labels, [0])(logits) == 1.0
    with pytest.raises(ModesError, match="none of"):
        accuracy_on(labels, [5])


def _sim_spec(command: str) -> tuple[str, int]:
    """``(preset, seed)`` from the model's recorded fit command (``retina-codec fit sim:PRESET[:SEED] ...``)."""
    for token in command.split():
        if token.startswith("sim:"):
            parts = token.split(":")
            return parts[1] or "default", int(parts[2]) if len(parts) > 2 else 0
    return "default", 0


def _shipped_sim_model():
    found = sorted(MODELS.glob("*sim*/model.safetensors")) if MODELS.is_dir() else []
    return found[0].parent if found else None


@pytest.mark.slow
def test_ablating_on_pathway_modes_lowers_on_cells_more_than_off_cells_on_the_fitted_retina_model():
    path = _shipped_sim_model()
    if path is None:
        pytest.skip(f"needs a fitted simulated-retina model under {MODELS}/<name with 'sim'>/model.safetensors "
                    "(make it with `retina-codec fit sim:default --out retina_codec/shipped/bncnn-sim-default`)")
    from retina_codec.contributions import contributions
    from retina_codec.contributions.sources import as_source
    from retina_codec.models import load_model
    from retina_codec.modes import ModeDecomposer
    from retina_codec.modes.summaries import loading_correlations
    from retina_codec.sim import simulate_retina

    torch.manual_seed(0)
    model = load_model(path).eval()
    _, seed = _sim_spec(str(model.metadata.get("command", "")))
    # the small preset has the same retina (layout, cells) as the default one for a seed, and a 9 s test split
    rec = simulate_retina("small", seed=seed, quiet=True)[0]
    types = np.asarray(rec.ground_truth.cell_types)
    on, off = np.flatnonzero(types == "ON"), np.flatnonzero(types == "OFF")
    layer = model.hidden_layers[-1]
    res = contributions(model, rec, [layer], target="surprisal", split="test", quiet=True)
    source = as_source(rec, model, split="test")
    x = torch.cat([chunk for _, chunk in source.iter_chunks(512)])
    with torch.no_grad():
        rates = model(x).numpy()
    dec = ModeDecomposer(kind="codec", random_state=0, quiet=True).fit(res[layer])
    r = loading_correlations(dec.transform(res[layer]), rates)  # (modes, cells)
    pathway = np.nan_to_num(r[:, on].mean(1) - r[:, off].mean(1))
    on_mode, off_mode = dec.atoms_[np.argmax(pathway)], dec.atoms_[np.argmin(pathway)]
    xs = x[::3]  # every third bin keeps the 2 x 10 full-model sweeps quick on a CPU
    on_sweep = intervention_sweep(model, layer, on_mode, xs, mean_rate(on), mean_rate(off))
    off_sweep = intervention_sweep(model, layer, off_mode, xs, mean_rate(off), mean_rate(on))
    assert on_sweep.selectivity > 0, on_sweep
    assert off_sweep.selectivity > 0, off_sweep
