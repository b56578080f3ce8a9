"""Review checks of fitting: best weights restored, clear errors on unusable splits, card == evaluate."""

import numpy as np
import pytest
import torch

import retina_codec.models.fitting as fitting
from retina_codec.models import evaluate, fit
from retina_codec.models.card import write_model_card
from retina_codec.recordings import Recording


def noise_recording(n_cells: int = 3, val: tuple[float, float] | None = (8.0, 10.0), seed: int = 0) -> Recording:
    """12 s of 12x12 px noise at 100 Hz; Poisson counts driven by the centre 2 frames back."""
    rng = np.random.default_rng(seed)
    stim = rng.normal(size=(1200, 12, 12)).astype(np.float32)
    drive = np.roll(stim[:, 4:8, 4:8].mean((1, 2)), 2)
    rate = np.log1p(np.exp(np.stack([drive * (i + 1) for i in range(n_cells)], 1)))
    iv = {"train": np.array([[0.0, 8.0]]), "test": np.array([[10.0, 12.0]])}
    if val is not None:
        iv["validation"] = np.array([list(val)])
    return Recording(stim, np.arange(1200) / 100.0, 100.0, rng.poisson(rate).astype(np.float32),
                     [f"c{i}" for i in range(n_cells)], iv, "count", "noise")


KW = dict(history=5, model_kwargs=dict(channels=(2, 2), kernel_sizes=(5, 3)), batch_size=32, steps_per_epoch=4,
          device="cpu", quiet=True, lr=1e-2)


def test_early_stopping_restores_the_weights_of_the_best_epoch_not_the_last(monkeypatch):
    rec = noise_recording()
    scripted = iter([0.1, 0.5, 0.2, 0.3, 0.9])  # best at epoch 2; patience 2 stops after epoch 4
    snapshots = []
    real = fitting._validate

    def validate(model, *a, **k):
        snapshots.append({n: v.detach().clone() for n, v in model.state_dict().items()})
        loss, _ = real(model, *a, **k)
        return loss, next(scripted)

    monkeypatch.setattr(fitting, "_validate", validate)
    result = fit(rec, epochs=5, patience=2, seed=0, test_split=None, **KW)
    assert result.best_epoch == 2 and result.stopped_early and len(result.history) == 4
    assert result.best_val_r == 0.5
    final = result.model.state_dict()
    assert not torch.equal(snapshots[1]["conv1.conv.weight"], snapshots[3]["conv1.conv.weight"])
    for name, value in snapshots[1].items():
        assert torch.equal(final[name], value), name


def test_a_validation_split_without_usable_bins_is_refused_by_name():
    rec = noise_recording(val=(8.0, 8.0))
    with pytest.raises(ValueError, match="validation"):
        fit(rec, epochs=1, **KW)


def test_model_card_numbers_are_what_evaluate_returns(tmp_path):
    rec = noise_recording()
    result = fit(rec, epochs=1, seed=2, **KW)
    again = evaluate(result.model, rec, "test", quiet=True)
    card = write_model_card(tmp_path / "MODEL_CARD.md", result.model, title="t", command="c", data={},
                            machine="m").read_text()
    assert f"recorded responses: {again.mean_r_response:.3f}" in card
    for cid, r in zip(rec.cell_ids, again.r_response):
        assert f"| {cid} | {r:.3f} | — |" in card
    assert f"- bins: {again.n_bins}" in card


def test_evaluate_poisson_loss_is_torch_poisson_nll_on_counts_per_bin():
    rec = noise_recording()
    result = fit(rec, epochs=1, seed=1, **KW)
    bins, pred = fitting.predict(result.model, rec, "test", quiet=True)
    ref = torch.nn.PoissonNLLLoss(log_input=False, full=False, eps=1e-8)(
        torch.from_numpy(pred).double(), torch.from_numpy(rec.responses[bins]).double())
    assert result.test.poisson_loss == pytest.approx(float(ref), rel=1e-12)
    assert result.model.metadata["output_unit"] == "count per bin"


def test_zero_epochs_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        fit(noise_recording(), epochs=0, **KW)


def test_a_recording_at_another_frame_rate_than_the_models_is_warned_about_in_every_stage():
    # a model fitted at 100 Hz ran silently on 30 Hz frames: its 40-frame history then spans 1.3 s, not 0.4 s
    import dataclasses
    import warnings

    from retina_codec.contributions import contributions
    from retina_codec.models import BNCNN
    from retina_codec.models.fitting import predict
    from retina_codec.recordings import Recording
    from retina_codec.rf.irf import instantaneous_rfs

    def rec(rate):
        t = 30
        rng = np.random.default_rng(0)
        return Recording(stimulus=rng.random((t, 6, 6)).astype(np.float32), frame_times=np.arange(t) / rate,
                         frame_rate=rate, responses=rng.poisson(1.0, (t, 2)).astype(np.float32))

    torch.manual_seed(0)
    model = BNCNN(n_cells=2, history=4, frame_shape=(6, 6), channels=(2, 2), kernel_sizes=(3, 3)).eval()
    model.input_spec = dataclasses.replace(model.input_spec, frame_rate=100.0)
    model.norm_stats = (0.5, 0.3)
    slow = rec(30.0)
    stages = {"predict": lambda r: predict(model, r, split=None, device="cpu", quiet=True),
              "contributions": lambda r: contributions(model, r, ["conv1"], split=None, steps=2, quiet=True),
              "irfs": lambda r: instantaneous_rfs(model, r, np.array([10, 11]), [0])}
    for run in stages.values():
        with pytest.warns(RuntimeWarning, match="30 Hz frames, but the model was trained at 100 Hz"):
            run(slow)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            run(rec(100.0))  # the model's own rate: silent
