"""Fitting and evaluation: learning on the small simulated retina, exact resume, early stopping, the CLI."""

import json

import numpy as np
import pytest
import torch

import retina_codec.models.fitting as fitting
from retina_codec.cli.main import main
from retina_codec.errors import CheckpointError
from retina_codec.models import BNCNN, LNModel, evaluate, fit, load_model, save_model
from retina_codec.models.card import write_model_card
from retina_codec.models.fitting import pearson_r
from retina_codec.recordings import Recording
from retina_codec.sim import simulate_retina

CROP = slice(9, 41)  # the small preset's ganglion cells sit at 16–34 px: keep their surroundings only


@pytest.fixture(scope="module")
def small_sim():
    natural, _ = simulate_retina(preset="small", seed=0)
    return natural


@pytest.fixture(scope="module")
def cropped(small_sim):
    """The small preset's natural-scene recording, cropped to 32x32 px (same cells, splits, truth)."""
    rec = small_sim
    return Recording(rec.stimulus[0:rec.n_frames][:, CROP, CROP], rec.frame_times, rec.frame_rate,
                     rec.responses, rec.cell_ids, rec.intervals, rec.response_unit, rec.stimulus_name,
                     provenance=rec.provenance, ground_truth=rec.ground_truth)


def tiny(rec):
    return dict(history=8, model_kwargs=dict(channels=(4, 4), kernel_sizes=(7, 5), bn_momentum=0.1,
                                             readout_bn_momentum=0.1),
                batch_size=32, steps_per_epoch=6, lr=2e-3, device="cpu", quiet=True)


def test_pearson_r_matches_numpy_per_column():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    b[:, 1] += 2 * a[:, 1]
    expected = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(3)]
    np.testing.assert_allclose(pearson_r(a, b), expected, rtol=1e-12)
    a[:, 2] = 1.0
    assert np.isnan(pearson_r(a, b)[2])


def test_reduced_bncnn_learns_the_small_simulated_retina(cropped):
    result = fit(cropped, history=15, epochs=1, batch_size=64, lr=2e-3, device="cpu", quiet=True, seed=0,
                 model_kwargs=dict(kernel_sizes=(9, 7), bn_momentum=0.1, readout_bn_momentum=0.1))
    test = result.test
    assert test is not None and test.n_bins > 800
    assert test.mean_r_true_rate >= 0.5, test.to_dict()
    assert test.mean_r_response > 0.3
    assert [h["epoch"] for h in result.history] == [1] and result.history[-1]["val_r"] > 0.3
    model = result.model
    assert not model.training and model.norm_stats == cropped.normalization()
    assert model.input_spec.frame_rate == 100.0 and model.input_spec.offset == 1
    assert model.cell_ids == list(cropped.cell_ids)
    assert model.metadata["metrics"]["test"]["mean_r_true_rate"] == pytest.approx(test.mean_r_true_rate)


def test_interrupted_fit_resumes_to_the_same_weights(cropped, tmp_path, monkeypatch):
    full = fit(cropped, epochs=3, seed=3, **tiny(cropped))
    calls = {"n": 0}
    real = fitting._validate

    def crash_in_epoch_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fitting, "_validate", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit(cropped, epochs=3, seed=3, checkpoint_dir=tmp_path, **tiny(cropped))
    monkeypatch.setattr(fitting, "_validate", real)
    assert torch.load(tmp_path / fitting.RESUME_FILE, weights_only=True)["epoch"] == 1
    resumed = fit(cropped, epochs=3, seed=3, checkpoint_dir=tmp_path, **tiny(cropped))
    assert resumed.best_epoch == full.best_epoch
    assert [h["val_r"] for h in resumed.history] == [h["val_r"] for h in full.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="lr"):
        fit(cropped, epochs=4, seed=3, checkpoint_dir=tmp_path, **{**tiny(cropped), "lr": 1e-2})


def test_early_stopping_keeps_the_best_epoch(cropped):
    frozen = {**tiny(cropped), "lr": 0.0}  # nothing changes: validation r never improves after epoch 1
    frozen["model_kwargs"] = {**frozen["model_kwargs"], "bn_momentum": 0.0, "readout_bn_momentum": 0.0}
    result = fit(cropped, epochs=6, seed=1, patience=1, **frozen)
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1
    val = evaluate(result.model, cropped, "validation", quiet=True)
    assert val.mean_r_response == pytest.approx(result.history[0]["val_r"], abs=1e-5)


def test_evaluate_reports_true_rate_correlation_only_with_ground_truth(cropped):
    torch.manual_seed(0)
    model = LNModel(cropped.n_cells, history=8, frame_shape=(32, 32))
    with_truth = evaluate(model, cropped, "test", quiet=True)
    assert with_truth.r_true_rate.shape == (cropped.n_cells,) and with_truth.n_bins == 900
    plain = Recording(cropped.stimulus, cropped.frame_times, 100.0, cropped.responses, intervals=cropped.intervals)
    without = evaluate(model, plain, "test", quiet=True)
    assert without.r_true_rate is None and without.mean_r_true_rate is None
    np.testing.assert_allclose(without.r_response, with_truth.r_response)
    with pytest.raises(ValueError, match="32x32"):
        evaluate(BNCNN(cropped.n_cells, history=8, frame_shape=(40, 40)), cropped, quiet=True)


def test_fitted_model_round_trips_with_its_metrics(cropped, tmp_path):
    result = fit(cropped, epochs=1, **tiny(cropped))
    save_model(result.model, tmp_path, metadata=result.model.metadata)
    loaded = load_model(tmp_path)
    assert loaded.norm_stats == result.model.norm_stats
    again = evaluate(loaded, cropped, "test", quiet=True)
    np.testing.assert_array_equal(again.r_response, result.test.r_response)
    assert loaded.metadata["training"]["best_epoch"] == 1


def test_fit_command_writes_model_json_and_card(small_sim, tmp_path):
    from retina_codec.recordings.nwb import write_nwb

    short = small_sim
    nwb = write_nwb(short, tmp_path / "rec.nwb")
    out = tmp_path / "model"
    args = [str(nwb), "--stimulus", "naturalscene", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "16", "--small", "--history", "6", "--device", "cpu"]
    assert main(["-q", "fit", *args]) == 0
    doc = json.loads((out / "model.json").read_text())
    assert doc["input_spec"]["history"] == 6 and doc["metadata"]["training"]["epochs_run"] == 1
    assert doc["metadata"]["metrics"]["test"]["mean_r_true_rate"] is not None
    card = (out / "MODEL_CARD.md").read_text()
    assert "retina-codec fit" in card and "--steps-per-epoch 2" in card and "true rate" in card
    assert not (out / ".fit_state").exists()
    assert main(["-q", "fit", *args]) == 2  # refuses to overwrite
    assert load_model(out).n_cells == small_sim.n_cells


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_uses_the_gpu_and_returns_a_model_that_evaluates_anywhere(cropped):
    result = fit(cropped, epochs=1, **{**tiny(cropped), "device": "auto"})
    assert result.model.metadata["training"]["device"].startswith("cuda")
    cpu = evaluate(result.model.cpu(), cropped, "test", quiet=True)
    np.testing.assert_allclose(cpu.r_response, result.test.r_response, atol=1e-3)


def test_predict_runs_fft_convolutions_and_equals_the_plain_model(cropped):
    from retina_codec.models import predict

    torch.manual_seed(0)
    model = BNCNN(cropped.n_cells, history=8, frame_shape=(32, 32), channels=(4, 4), kernel_sizes=(9, 7))
    model.train()
    convs = [model.conv1.conv, model.conv2.conv]
    bins = np.arange(100, 164)
    got_bins, got = predict(model, cropped, bins=bins, batch_size=20, device="cpu", quiet=True)
    # the state is restored: training mode, trainable weights, the original conv modules
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert [model.conv1.conv, model.conv2.conv] == convs
    mean, std = cropped.normalization()
    starts = [b - 8 - model.input_spec.offset + 1 for b in bins]  # window of bin b: frames up to b - offset
    x = torch.from_numpy(np.stack([cropped.stimulus[s:s + 8] for s in starts]).astype(np.float32))
    with torch.no_grad():
        ref = model.eval()((x - mean) / std).numpy()
    np.testing.assert_array_equal(got_bins, bins)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))


def test_training_through_fft_convolutions_gives_the_plain_gradients_and_restores_the_modules():
    from retina_codec.torch_utils.fft_conv import FFTConv2d, fft_convolutions

    torch.manual_seed(0)
    model = BNCNN(3, history=6, frame_shape=(20, 20), channels=(4, 4), kernel_sizes=(9, 7)).double().train()
    x = torch.randn(5, 6, 20, 20, dtype=torch.float64)
    convs = [model.conv1.conv, model.conv2.conv]

    def backward():
        torch.manual_seed(1)  # the same training noise in both passes
        model.zero_grad()
        model(x).sum().backward()

    backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    with fft_convolutions(model):
        assert all(isinstance(m, FFTConv2d) for m in (model.conv1.conv, model.conv2.conv))
        backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}  # the same parameter objects
    assert [model.conv1.conv, model.conv2.conv] == convs
    assert set(model.state_dict()) >= {"conv1.conv.weight", "conv2.conv.weight"}
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-9, atol=1e-11)


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
