"""Review checks of the modes package: CODEC SAE layout, clear errors for bad settings, store self-description,
interventions and selectivity against hand-written references, NWB time axis of the window bins."""

import ast
import re

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from retina_codec.cli.main import main
from retina_codec.errors import ModesError
from retina_codec.modes import CodecSAE, ModeDecomposer, explained_variance, make_sae, planted_dictionary
from retina_codec.modes.interventions import ablate_mode, intervention_sweep, preserve_mode
from retina_codec.modes.store import write_modes
from retina_codec.modes.trainer import resolve_device

TORCH_THREADS = 1


@pytest.fixture(scope="module")
def planted():
    return planted_dictionary(n_samples=600, n_features=8, n_atoms=6, n_active=2, seed=1)


# ------------------------------------------------------------------------------- CODEC SAE (§6)
def test_codec_encoder_is_linear_dropout_relu_layernorm_twice_then_biasless_linear_and_xavier_dictionary():
    torch.manual_seed(0)
    sae = CodecSAE(16, 160, hidden_size=48)
    kinds = [type(m) for m in sae.encoder]
    block = [nn.Linear, nn.Dropout, nn.ReLU, nn.LayerNorm]
    assert kinds == block + block + [nn.Linear]
    assert [m.p for m in sae.encoder if isinstance(m, nn.Dropout)] == [0.05, 0.05]
    assert [(m.in_features, m.out_features) for m in sae.encoder if isinstance(m, nn.Linear)] == \
        [(16, 48), (48, 48), (48, 160)]
    assert sae.encoder[-1].bias is None
    assert sae.dictionary.shape == (160, 16) and torch.equal(sae.bias(), torch.zeros(16))
    bound = np.sqrt(6.0 / (16 + 160))  # xavier_uniform_: U(-b, b)
    assert float(sae.dictionary.detach().abs().max()) <= bound
    assert float(sae.dictionary.detach().std()) == pytest.approx(bound / np.sqrt(3), rel=0.05)


def test_faithful_codec_options_named_in_the_decomposer_docstring_are_accepted():
    doc = ModeDecomposer.__doc__
    m = re.search(r"sae_options : .*?``(\{.*?\})``", doc, re.S)
    assert m, "the docstring gives an example of sae_options"
    opts = ast.literal_eval(m.group(1))
    CodecSAE(8, 16, **opts)  # raised TypeError for the former example {"gate": "detached"}


# ------------------------------------------------------------------------------ settings errors
@pytest.mark.parametrize(("kind", "kw", "match"), [
    ("topk", {"k": 8}, r"topk SAE settings .*n_latents=4.*k must lie in \[1, n_latents=4\]; got 8"),
    ("codec", {"threshold": 1.5}, r"codec SAE settings .*threshold must lie in \(0, 1\); got 1.5"),
    ("relu", {"bogus": 1}, r"relu SAE settings .*bogus"),
])
def test_invalid_sae_settings_raise_one_modes_error(kind, kw, match):
    with pytest.raises(ModesError, match=match):
        make_sae(kind, 8, 4, **kw)


@pytest.mark.parametrize("extra", [["--kind", "topk", "--k", "8", "--n-modes", "4"], ["--threshold", "1.5"],
                                   ["--device", "gpu"], ["--batch-size", "0"], ["--learning-rate", "0"]])
def test_cli_reports_invalid_sae_settings_as_one_line_and_exit_2(tmp_path, planted, capsys, extra):
    from test_modes_store import write_store

    src = write_store(tmp_path / "contrib.h5", planted.X)
    rc = main(["-q", "modes", str(src), "--layer", "conv2", "--out", str(tmp_path / "m.h5"),
               "--max-epochs", "1", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "m.h5").exists()


def test_cuda_requested_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModesError, match=r"device: 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ModesError, match=r"device: expected 'auto', 'cpu' or 'cuda\[:N\]'; found 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_validation_fraction_that_leaves_no_training_rows_is_named(planted):
    # round(0.95 · 10) = 10 rows held out: formerly a NaN mean and "loadings: expected finite values"
    with pytest.raises(ModesError, match=r"validation_fraction: 0.95 of 10 samples .* no training samples"):
        ModeDecomposer(kind="topk", k=2, n_modes=8, validation_fraction=0.95, quiet=True).fit(planted.X[:10])


@pytest.mark.parametrize(("param", "value"), [("batch_size", 0), ("learning_rate", -1e-3), ("max_epochs", -1)])
def test_optimisation_settings_are_validated_in_fit(planted, param, value):
    with pytest.raises(ModesError, match=param):
        ModeDecomposer(kind="topk", k=2, quiet=True, **{param: value}).fit(planted.X)


def test_explained_variance_names_the_shapes_of_a_mismatched_reconstruction():
    x = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"x_hat: expected shape \(5, 4\) .* found \(5, 3\)"):
        explained_variance(x, np.zeros((5, 3)))


# ----------------------------------------------------------------------------- fitting contract
def test_fit_is_reproducible_whatever_the_global_rng_state_and_leaves_it_untouched(planted):
    fits = []
    for global_seed in (1, 99):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        dec = ModeDecomposer(kind="batchtopk", k=2, n_modes=24, max_epochs=2, quiet=True, random_state=5)
        fits.append(dec.fit(planted.X))
        assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(fits[0].atoms_, fits[1].atoms_)
    np.testing.assert_array_equal(fits[0].transform(planted.X), fits[1].transform(planted.X))


def test_every_dataset_of_a_modes_file_carries_a_description(tmp_path, planted):
    dec = ModeDecomposer(kind="codec", n_modes=16, max_epochs=1, quiet=True).fit(planted.X)
    path = write_modes(tmp_path / "m.h5", dec, X=planted.X)
    missing = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: missing.append(name)
                     if isinstance(obj, h5py.Dataset) and "description" not in obj.attrs else None)
    assert missing == []


# -------------------------------------------------------------------------------- interventions
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(self.act(self.c1(x)).flatten(1))


def _zeroed_reference(model, x, channels):
    h = model.c1(x).clone()
    h[:, list(channels)] = 0.0  # every position of those channels
    return model.fc(model.act(h).flatten(1))


@torch.no_grad()
def test_ablate_and_preserve_equal_zeroing_the_ranked_channels_by_hand():
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(6, 1, 5, 5)
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
    model, x = _Net().eval(), torch.randn(12, 1, 5, 5)
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


# ----------------------------------------------------------------------------------------- NWB
def test_nwb_loadings_of_the_test_window_bins_sit_at_those_bins_frame_start_times(tmp_path):
    from _nwbio_helpers import natural_recording
    from pynwb import NWBHDF5IO

    from retina_codec.modes.nwb_export import export_modes_nwb
    from retina_codec.recordings.nwb import read_nwb, write_nwb

    write_nwb(natural_recording(t=240), tmp_path / "rec.nwb")
    rec = read_nwb(tmp_path / "rec.nwb")
    bins = rec.window_bins("test", history=40, offset=1)
    assert bins.size > 5
    loadings = np.random.default_rng(0).random((bins.size, 2)).astype(np.float32)
    out = export_modes_nwb(tmp_path / "rec.nwb", tmp_path / "o.nwb", loadings, rec.frame_times[bins])
    edges = np.append(rec.frame_times, rec.frame_times[-1] + 1.0 / rec.frame_rate)
    with NWBHDF5IO(str(out), "r") as io:
        ts = io.read().processing["codec"]["mode_loadings"].get_timestamps()
    # each loading row starts its response bin [edges[t], edges[t + 1])
    np.testing.assert_allclose(ts, edges[bins], atol=1e-9)
    assert np.all(ts < edges[bins + 1])


def test_an_atom_for_another_channel_count_is_refused_instead_of_zeroing_wrong_channels():
    model, x = _Net().eval(), torch.randn(2, 1, 5, 5)
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


# ---------------------------------------------------------------------------- classifier modes
def test_class_top_modes_need_alive_modes_and_classes_no_mode_tracks_are_not_swept():
    from retina_codec.classifiers.selectivity import class_mode_sweeps, top_class_modes

    labels = np.arange(12) % 3
    with pytest.raises(ModesError, match="no alive modes"):
        top_class_modes(np.zeros((12, 0)), labels)
    loadings = np.zeros((12, 2))
    loadings[labels == 1, 0] = 1.0  # mode 0 tracks class 1
    classes, best, r = top_class_modes(loadings, labels)
    assert best[1] == 0 and r[1] == pytest.approx(1.0)

    class Dec:  # the attribute class_mode_sweeps reads
        atoms_ = np.abs(np.random.default_rng(0).standard_normal((2, 16)))

    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(12, 1, 5, 5)
    with torch.no_grad():
        y = model(x).argmax(1).numpy()  # the intact model is right on every image: ratios are defined
    args = (model, "c1", x, y, Dec(), np.ones((12, 2)), labels, "contributions")
    # constant loadings: no mode tracks any class (r = -inf), so there is no top mode to sweep
    assert class_mode_sweeps(*args, kinds=("ablate",), fractions=(0.0, 0.5, 1.0)) == []


# ------------------------------------------------------------------------------------- CLI NWB
@pytest.fixture
def cli_inputs(tmp_path):
    from _nwbio_helpers import natural_recording
    from test_modes_store import write_store

    from retina_codec.recordings.nwb import write_nwb

    write_nwb(natural_recording(t=240), tmp_path / "rec.nwb")
    x = planted_dictionary(n_samples=100, n_features=8, n_atoms=6, seed=1).X
    src = write_store(tmp_path / "contrib.h5", x)  # bins 100 … 199 of the 240 frames
    return tmp_path, ["-q", "modes", str(src), "--layer", "conv2", "--kind", "topk", "--k", "2", "--n-modes", "8",
                      "--max-epochs", "2", "--nwb", str(tmp_path / "rec.nwb")]


def test_cli_rerun_with_an_existing_nwb_copy_fails_up_front_in_one_line_or_replaces_it(cli_inputs, capsys,
                                                                                       monkeypatch):
    tmp_path, args = cli_inputs
    args = [*args, "--out", str(tmp_path / "m.h5")]
    assert main(args) == 0
    capsys.readouterr()
    before = (tmp_path / "m.h5").read_bytes()

    def no_training(self, *a, **k):
        raise AssertionError("trained before checking the outputs")

    with monkeypatch.context() as mp:
        mp.setattr(ModeDecomposer, "fit", no_training)
        rc = main(args)  # was: a FileExistsError traceback after training, with m.h5 already replaced
    err = capsys.readouterr().err
    assert rc == 2 and "m.nwb: exists already (pass --overwrite" in err and err.count("\n") == 1
    assert (tmp_path / "m.h5").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_cli_refuses_an_nwb_copy_path_equal_to_the_recording(cli_inputs, capsys):
    tmp_path, args = cli_inputs
    before = (tmp_path / "rec.nwb").read_bytes()
    rc = main([*args, "--out", str(tmp_path / "rec.h5"), "--overwrite"])  # default copy path: rec.nwb
    err = capsys.readouterr().err
    assert rc == 2 and "is the recording itself" in err and err.count("\n") == 1
    assert (tmp_path / "rec.nwb").read_bytes() == before and not (tmp_path / "rec.h5").exists()


def test_cli_checks_a_missing_recording_before_training(cli_inputs, capsys, monkeypatch):
    tmp_path, args = cli_inputs

    def no_training(self, *a, **k):
        raise AssertionError("trained before reading the recording")

    monkeypatch.setattr(ModeDecomposer, "fit", no_training)
    rc = main([*args[:-1], str(tmp_path / "nope.nwb"), "--out", str(tmp_path / "m.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.nwb" in err and not (tmp_path / "m.h5").exists()


def test_class_sweeps_skip_classes_the_intact_model_never_gets_right_with_a_warning():
    # an untrained network (README's classify-stats with random weights) scored 0 on some class and the whole
    # analysis failed at its end ("the unmodified model scores 0.0"); such classes have no ratio: skipped
    from retina_codec.classifiers.selectivity import class_mode_sweeps

    class Dec:
        atoms_ = np.abs(np.random.default_rng(0).standard_normal((3, 16)))

    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(12, 1, 5, 5)
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    y = pred.copy()
    y[:4] = (pred[:4] + 1) % 3  # the model is wrong on these images
    loadings = np.eye(3)[y] + 0.01 * np.random.default_rng(1).random((12, 3))  # mode k tracks class k
    wrong = [c for c in range(3) if np.any(y == c) and not np.any((y == c) & (pred == c))]
    right = [c for c in range(3) if np.any((y == c) & (pred == c))]
    assert wrong and right, "the construction needs a class the model never gets right and one it does"
    with pytest.warns(RuntimeWarning, match="skipped classes"):
        sweeps = class_mode_sweeps(model, "c1", x, y, Dec(), loadings, y, "contributions", kinds=("ablate",),
                                   fractions=(0.0, 1.0))
    assert sorted(s.cls for s in sweeps) == right
