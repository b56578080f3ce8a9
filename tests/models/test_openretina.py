"""openretina checkpoints as toolkit models: safe loading, the session choice, the time convention against a
whole-movie pass, contributions equal to captum, completeness, IRFs equal to autograd, the stem search, and
the CLI (contributions, inspect) on a Lightning ``.ckpt`` made by openretina's own classes."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("openretina", reason="openretina is an optional extra: pip install 'retina-codec[openretina]'")

from captum.attr import LayerConductance  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from retina_codec.contributions import ContributionEngine, contributions  # noqa: E402
from retina_codec.errors import CheckpointError, UntrustedCheckpointError  # noqa: E402
from retina_codec.models import load_model, predict  # noqa: E402
from retina_codec.models.openretina import describe_openretina, load_openretina  # noqa: E402
from retina_codec.rf.irf import input_jacobian  # noqa: E402
from retina_codec.torch_utils.hooks import resolve_module  # noqa: E402

TORCH_THREADS = 1
F64 = torch.float64
H, W, C = 18, 16, 2
SESSIONS = {"s1": 3, "s2": 4}


def build_openretina(hidden_padding: object = True, temporal=(5, 3), spatial=(5, 3), hidden=(4, 6), channels=C,
                     readout_target: str = "openretina.modules.readout.multi_readout.MultiGaussianMaskReadout",
                     extra_readout: dict | None = None, seed: int = 0, data_info: dict | None = None):
    """A small UnifiedCoreReadout (Hoefling-2024 style: SimpleCoreWrapper + Gaussian-mask readout) with random
    weights large enough that every layer matters."""
    from openretina.models.core_readout import UnifiedCoreReadout

    torch.manual_seed(seed)
    core = OmegaConf.create({
        "_target_": "openretina.modules.core.base_core.SimpleCoreWrapper", "_convert_": "object",
        "gamma_input": 0.0, "gamma_hidden": 0.0, "gamma_in_sparse": 0.0, "gamma_temporal": 40.0,
        "input_padding": False, "hidden_padding": hidden_padding, "convolution_type": "custom_separable",
        "temporal_kernel_sizes": list(temporal), "spatial_kernel_sizes": list(spatial), "cut_first_n_frames": 0,
        "dropout_rate": 0.0, "maxpool_every_n_layers": None, "downsample_input_kernel_size": None,
        "color_squashing_weights": None, "channels": "???"})
    readout = OmegaConf.create({"_target_": readout_target, "_convert_": "object", "scale": True, "bias": True,
                                "gaussian_mean_scale": 6.0, "gaussian_var_scale": 4.0, "positive": True,
                                "readout_reg_avg": False, **(extra_readout or {})})
    info = {"n_neurons_dict": dict(SESSIONS), "input_shape": (channels, H, W), "stim_mean": 0.5, "stim_std": 0.25,
            "mean_activity_dict": {s: torch.rand(n) for s, n in SESSIONS.items()},
            "sessions_kwargs": {"s1": {"roi_ids": np.array([11, 12, 17])}, "s2": {"eye": "left"}},
            **(data_info or {})}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = UnifiedCoreReadout(in_shape=(channels, 20, H, W), n_neurons_dict=dict(SESSIONS), core=core,
                                   readout=readout, hidden_channels=hidden, data_info=info)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.core.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.4 if "weight_spatial" in name else 0.6))
        for name, b in model.core.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
        for r in model.readout.values():
            r.mask_mean.copy_(torch.randn(r.mask_mean.shape, generator=gen) * 0.05)
            r.features.copy_(torch.rand(r.features.shape, generator=gen) + 0.2)
    return model.eval()


def save_ckpt(model, path) -> None:
    """What ``trainer.save_checkpoint`` writes (Lightning's own checkpoint connector, no fit run)."""
    import lightning

    trainer = lightning.pytorch.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, accelerator="cpu",
                                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(str(path))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("openretina") / "model.ckpt"
    net = build_openretina()
    save_ckpt(net, path)
    return path, net


@pytest.fixture(scope="module")
def model64(ckpt):
    return load_openretina(ckpt[0], session="s1").double()


def _net_input(model, x):
    """The openretina input (B, C, h, H, W) of greyscale windows x, colour-weighted per channel."""
    return x.unsqueeze(1) * model.colour.to(x).view(1, -1, 1, 1, 1)


def _oracle(model):
    """The openretina network's session output at the window's step, as a function of the greyscale window."""
    net, session, index = model.net, model.forward_kwargs["data_key"], model.metadata["output_index"]
    return lambda z: net(_net_input(model, z), data_key=session)[:, index]


def rel_err(ours, ref) -> float:
    ours, ref = torch.as_tensor(np.asarray(ours)), torch.as_tensor(ref).detach()
    return float((ours - ref).abs().max() / ref.abs().max())


# ---- loading -------------------------------------------------------------------------------------------
def test_checkpoint_is_a_lightning_file_and_loads_strictly_as_one_session(ckpt):
    path, net = ckpt
    raw = torch.load(path, weights_only=False)
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version", "optimizer_states", "loops"} <= set(raw)
    model = load_openretina(path, session="s1")
    assert model.input_spec.channels == C and (model.input_spec.height, model.input_spec.width) == (H, W)
    assert model.norm_stats == (0.5, 0.25)
    assert model.cell_ids == ["11", "12", "17"]  # data_info sessions_kwargs roi_ids
    assert model.hidden_layers == ("core.layer0", "core.layer1")
    assert {"core.layer0", "core.layer1", "readout"} <= set(model.layer_names)
    assert model.layer_aliases["readout"] == "net.readout.s1"
    # receptive field: 5 (valid) + 3 - 1 ("same" hidden padding) frames; the hidden layer sees 1 frame ahead
    assert model.input_spec.history == 7 and model.metadata["lookahead_frames"] == 1
    assert model.metadata["output_steps_per_window"] == 3 and model.metadata["output_index"] == -2
    s2 = load_openretina(path, session="s2")
    assert s2.cell_ids == ["s2/0", "s2/1", "s2/2", "s2/3"] and s2.n_cells == 4
    for k, v in net.state_dict().items():  # the weights, exactly
        assert torch.equal(model.net.state_dict()[k], v), k
    assert not model.net.training


def test_session_is_required_when_there_are_several_and_must_exist(ckpt):
    with pytest.raises(CheckpointError, match=r"2 sessions \(s1, s2\).*--session"):
        load_openretina(ckpt[0])
    with pytest.raises(CheckpointError, match=r"session 'nope' not in the checkpoint; its sessions are s1, s2"):
        load_openretina(ckpt[0], session="nope")
    with pytest.raises(CheckpointError, match="2 sessions"):
        load_model(ckpt[0])
    assert load_model(ckpt[0], session="s2").n_cells == 4


def test_a_causal_core_has_one_output_step_per_window(tmp_path):
    path = tmp_path / "causal.ckpt"
    save_ckpt(build_openretina(hidden_padding=[0, 1, 1]), path)  # no temporal padding in the hidden layer
    model = load_openretina(path, session="s1")
    assert model.input_spec.history == 7 and model.metadata["lookahead_frames"] == 0
    assert model.metadata["output_index"] == -1 and model.metadata["openretina_offset"] == 0


def test_legacy_example_core_readout_with_cut_frames_needs_trust_and_picks_its_only_session(tmp_path):
    """ExampleCoreReadout pickles its core and readout modules (refused unless trusted); a core that cuts its
    first output frames needs a window one frame longer than its receptive field here (8 = 5 + 3 - 1 + 1)."""
    import warnings

    from openretina.models.core_readout import ExampleCoreReadout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = ExampleCoreReadout(in_shape=(2, 20, H, W), hidden_channels=(4, 4), temporal_kernel_sizes=(5, 3),
                                 spatial_kernel_sizes=(5, 3), n_neurons_dict={"a": 3}, cut_first_n_frames_in_core=2,
                                 data_info={"input_shape": (2, H, W)})
    path = tmp_path / "legacy.ckpt"
    save_ckpt(net.eval(), path)
    with pytest.raises(UntrustedCheckpointError, match="openretina.modules.core.base_core.SimpleCoreWrapper"):
        load_openretina(path)
    model = load_openretina(path, trust=True)
    assert model.cell_ids == ["a/0", "a/1", "a/2"] and model.input_spec.history == 8
    assert model.metadata["cut_frames"] == 6 and model.metadata["output_index"] == -2


@pytest.mark.parametrize("padding", [True, [0, 1, 1]])
def test_per_bin_rates_equal_one_whole_movie_pass_at_the_right_bins(tmp_path, padding):
    """Bin t's rate (frames t-h-offset+1 … t-offset) is the long pass's output step whose receptive field those
    frames are: step j ↔ bin j + h - 1 + offset - (steps + index) (window start j - (steps + index))."""
    from retina_codec.recordings import Recording

    path = tmp_path / "m.ckpt"
    save_ckpt(build_openretina(hidden_padding=padding), path)
    model = load_openretina(path, session="s1")
    rng = np.random.default_rng(0)
    t_len = 60
    frames = rng.random((t_len, H, W)).astype(np.float32)
    rec = Recording(stimulus=frames, frame_times=np.arange(t_len) / 30.0, frame_rate=30.0,
                    responses=rng.poisson(1.0, (t_len, 3)).astype(np.float32), cell_ids=model.cell_ids)
    bins, rates = predict(model, rec, split=None, quiet=True)
    z = (torch.from_numpy(frames) - 0.5) / 0.25
    with torch.no_grad():
        long = model.net(_net_input(model, z[None]), data_key="s1")[0].numpy()  # (T', N)
    h, k = model.input_spec.history, model.metadata["output_steps_per_window"] + model.metadata["output_index"]
    long_bins = np.arange(long.shape[0]) - k + h - 1 + model.input_spec.offset
    # by default the model keeps openretina's own training alignment: output step j ↔ response frame j + cut
    assert model.input_spec.offset == model.metadata["openretina_offset"] == -model.metadata["lookahead_frames"]
    np.testing.assert_array_equal(long_bins, np.arange(long.shape[0]) + model.metadata["cut_frames"])
    common, i_ours, i_long = np.intersect1d(bins, long_bins, return_indices=True)
    assert len(common) >= t_len - h - 3
    np.testing.assert_allclose(rates[i_ours], long[i_long], rtol=1e-5, atol=1e-6)


# ---- security -----------------------------------------------------------------------------------------
class Payload:
    """A pickled object whose unpickling would run code (never reached: the loader refuses its global)."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused_naming_the_globals_unless_trusted(ckpt, tmp_path, capsys):
    raw = torch.load(ckpt[0], weights_only=False)
    raw["hyper_parameters"]["data_info"]["evil"] = Payload()
    bad = tmp_path / "evil.ckpt"
    torch.save(raw, bad)
    with pytest.raises(UntrustedCheckpointError, match=r"builtins.print.*trust=True \(CLI: --trust\)"):
        load_openretina(bad, session="s1")
    assert "pwned" not in capsys.readouterr().out
    assert load_openretina(bad, session="s1", trust=True).n_cells == 3  # the user's choice
    assert "pwned" in capsys.readouterr().out


def test_hydra_targets_outside_openretina_and_torch_nn_are_refused_before_instantiation(ckpt, tmp_path):
    raw = torch.load(ckpt[0], weights_only=False)
    raw["hyper_parameters"]["readout"]["nonlinearity_function"] = {"_target_": "os.system", "_args_": ["echo hi"]}
    raw["hyper_parameters"]["core"]["_target_"] = "subprocess.Popen"
    raw["hyper_parameters"]["data_info"]["mean_activity_dict"]["s1"] = {"_target_": "builtins.exec", "_args_": ["1"]}
    bad = tmp_path / "targets.ckpt"
    torch.save(raw, bad)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_openretina(bad, session="s1")
    msg = str(err.value)
    assert "subprocess.Popen (at hyper_parameters.core)" in msg and "os.system" in msg and "--trust" in msg
    assert "builtins.exec (at hyper_parameters.data_info.mean_activity_dict.s1)" in msg


def test_not_a_checkpoint_is_one_clear_error(tmp_path):
    p = tmp_path / "junk.ckpt"
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_openretina(p)
    with pytest.raises(CheckpointError, match="no such openretina checkpoint"):
        load_openretina(tmp_path / "missing.ckpt")


def test_missing_openretina_says_how_to_install(ckpt, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openretina.models.core_readout", None)
    with pytest.raises(CheckpointError, match=r'pip install "retina-codec\[openretina\]"'):
        load_model(ckpt[0], session="s1")


# ---- contributions and IRFs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def x64(model64):
    return torch.randn(3, model64.input_spec.history, H, W, generator=torch.Generator().manual_seed(3), dtype=F64)


def test_conductance_equals_captum_for_every_core_layer_and_cell(model64, x64):
    m, cells = 6, [0, 1, 2]
    res = contributions(model64, x64, list(model64.hidden_layers), target=cells, steps=m, rule="left",
                        reduce=None, dtype=F64, quiet=True)
    fwd = _oracle(model64)
    worst = 0.0
    for layer in model64.hidden_layers:
        for i, c in enumerate(cells):
            lc = LayerConductance(lambda z, c=c: fwd(z)[:, c], resolve_module(model64, layer))
            ref = lc.attribute(x64, n_steps=m, method="riemann_trapezoid")
            assert res[layer].shape[:2] == (3, len(cells)) and res[layer].shape[2:] == ref.shape[1:]
            worst = max(worst, rel_err(res[layer][:, i], ref))
    assert worst < 1e-6, worst


def test_completeness_within_one_percent_with_20_trapezoid_steps(model64, x64):
    res = contributions(model64, x64, list(model64.hidden_layers), target=[0, 1, 2], steps=20, rule="trapezoid",
                        dtype=F64, quiet=True)
    for layer in model64.hidden_layers:
        assert float(np.max(res.relative_error(layer))) < 0.01, layer


def test_automatic_stem_gives_the_numbers_of_no_stem(model64, x64):
    layers = list(model64.hidden_layers)
    out = {}
    for stem in ("auto", None):
        eng = ContributionEngine.from_settings(model64, layers, [0, 2], steps=5, reduce=None, dtype=F64, stem=stem)
        with eng:
            out[stem] = eng.compute(x64)
            settings = eng.describe()
        if stem == "auto":
            auto_stem = settings.get("affine_stem")
    for layer in layers:
        assert rel_err(out["auto"].contributions[layer], out[None].contributions[layer]) < 1e-10
    print(f"openretina core: affine stem found = {auto_stem!r}")  # report (pytest -s)


def test_irfs_equal_autograd_input_gradients_mapped_to_greyscale(model64, x64):
    cells = [0, 2]
    ours = input_jacobian(model64.eval(), x64, cells)  # (B, cells, h, H, W)
    x5 = _net_input(model64, x64).detach().requires_grad_(True)
    out = model64.net(x5, data_key="s1")[:, model64.metadata["output_index"]]
    for i, c in enumerate(cells):
        (g,) = torch.autograd.grad(out[:, c].sum(), x5, retain_graph=True)
        grey = (g * model64.colour.view(1, -1, 1, 1, 1)).sum(1)
        assert rel_err(ours[:, i], grey) < 1e-10


def test_colour_weights_drive_the_channels(ckpt):
    model = load_openretina(ckpt[0], session="s1", colour=[1.0, 0.0]).double()
    x = torch.randn(2, model.input_spec.history, H, W, dtype=F64)
    x5 = torch.stack([x, torch.zeros_like(x)], 1)
    with torch.no_grad():
        ref = model.net(x5, data_key="s1")[:, model.metadata["output_index"]]
        assert torch.allclose(model(x), ref)


# ---- describe and CLI --------------------------------------------------------------------------------
def test_describe_names_sessions_shapes_history_and_layers(ckpt):
    d = describe_openretina(ckpt[0])
    assert d["sessions"] == SESSIONS and d["channels"] == C and d["input_shape"] == [C, H, W]
    assert d["history"] == 7 and d["hidden_layers"] == ["core.layer0", "core.layer1"]
    assert "readout" in d["layers"] and "stim_mean" in d["data_info_keys"]
    json.dumps(d)


@pytest.fixture(scope="module")
def cli_files(ckpt, tmp_path_factory):
    from _nwbio_helpers import natural_recording

    from retina_codec.recordings.nwb import write_nwb

    d = tmp_path_factory.mktemp("openretina_cli")
    write_nwb(natural_recording(t=120, n=3, h=H, w=W, ground_truth=False), d / "rec.nwb")
    return d


def test_cli_contributions_end_to_end_on_a_session(ckpt, cli_files, capsys):
    import h5py

    from retina_codec.cli.main import main

    out = cli_files / "contrib.h5"
    rc = main(["-q", "contributions", str(ckpt[0]), str(cli_files / "rec.nwb"), "--session", "s1", "--layers",
               "core.layer0", "core.layer1", "--target", "cells", "--cells", "0", "2", "--split", "test",
               "--steps", "4", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as f:
        assert f["bins"].shape[0] > 0
        assert {"core.layer0", "core.layer1"} <= set(json.loads(f.attrs["completeness"]))
    rc = main(["-q", "contributions", str(ckpt[0]), str(cli_files / "rec.nwb"), "--device", "cpu", "--out",
               str(cli_files / "x.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "2 sessions (s1, s2)" in err and "--session" in err and len(err.strip().splitlines()) == 1


def test_cli_inspect_prints_sessions_shapes_history_and_layers(ckpt, capsys):
    from retina_codec.cli.main import main

    assert main(["inspect", str(ckpt[0])]) == 0
    text = capsys.readouterr().out
    for part in ("s1 (3 cells)", "s2 (4 cells)", "2 channels", "18x16", "history", "7 frames", "core.layer0",
                 "core.layer1", "readout"):
        assert part in text, part
    assert main(["inspect", str(ckpt[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["history"] == 7
