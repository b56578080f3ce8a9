"""The command line's shared options."""

from __future__ import annotations

import pytest

from retina_codec.cli.main import build_parser


@pytest.mark.parametrize("argv, quiet", [
    (["demo", "--out", "d"], False),
    (["-q", "demo", "--out", "d"], True),
    (["demo", "-q", "--out", "d"], True),
    (["demo", "--out", "d", "--quiet"], True),
])
def test_quiet_is_accepted_before_and_after_the_command(argv, quiet):
    args = build_parser().parse_args(argv)
    assert args.quiet is quiet


def test_every_command_accepts_quiet():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) >= 9
    for name, command in sub.choices.items():
        assert any("--quiet" in a.option_strings for a in command._actions), name


@pytest.fixture
def tdr_files(tmp_path):
    """A torch-deep-retina pickle that needs ``--trust`` and a 14×14 NWB recording."""
    from _model_helpers import tdr_pickle_and_recording

    return tdr_pickle_and_recording(tmp_path)


def test_rf_trust_flag_loads_a_torch_deep_retina_pickle_that_needs_it(tdr_files, tmp_path, capsys):
    import h5py

    from retina_codec.cli.main import main

    model, rec = tdr_files
    args = ["-q", "rf", str(model), str(rec), "--no-figures", "--model-sta-samples", "16", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "no.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust" in err[0]
    assert not (tmp_path / "no.h5").exists()
    assert main([*args, "--out", str(tmp_path / "yes.h5"), "--trust"]) == 0
    with h5py.File(tmp_path / "yes.h5", "r") as f:
        assert len(f.keys()) > 0


@pytest.mark.parametrize("device, match", [("cuda", "CUDA is not available"), ("gpu", "expected 'auto'")])
def test_every_stage_refuses_an_unusable_device_with_one_error(monkeypatch, device, match):
    import torch

    from retina_codec.contributions import ContributionEngine
    from retina_codec.errors import DeviceError
    from retina_codec.models.fitting import resolve_device as fit_device
    from retina_codec.rf.correlate import resolve_device as rf_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for resolve in (fit_device, rf_device):
        with pytest.raises(DeviceError, match=match):
            resolve(device)
    with pytest.raises(DeviceError, match=match):
        ContributionEngine.from_settings(torch.nn.Sequential(torch.nn.Linear(2, 2)), "0", device=device)


@pytest.mark.parametrize("command", ["contributions", "rf"])
def test_cli_with_cuda_on_a_cpu_machine_prints_one_line_naming_the_device(monkeypatch, tdr_files, tmp_path,
                                                                          capsys, command):
    import torch

    from retina_codec.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, rec = tdr_files
    code = main(["-q", command, str(model), str(rec), "--trust", "--device", "cuda", "--out", str(tmp_path / "o.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CUDA is not available" in err[0]
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("command", ["contributions", "rf", "modes"])
def test_an_existing_result_is_not_replaced_without_overwrite(tmp_path, capsys, command):
    from retina_codec.cli.main import main

    out = tmp_path / "done.h5"
    out.write_bytes(b"a finished store")
    inputs = {"contributions": ["m", "r.nwb"], "rf": ["m", "r.nwb"], "modes": ["c.h5", "--layer", "conv2"]}[command]
    if command == "modes":  # the modes command reads its contribution store before the output check
        from _modes_helpers import write_store

        from retina_codec.modes.synthetic import planted_dictionary

        write_store(tmp_path / "c.h5", planted_dictionary(n_samples=40, n_features=8, n_atoms=4, seed=0).X)
        inputs[0] = str(tmp_path / "c.h5")
    assert main(["-q", command, *inputs, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists already (pass --overwrite" in err[0]
    assert out.read_bytes() == b"a finished store"


def test_rf_sta_uses_every_bin_unless_a_split_is_named(tmp_path):
    # the STA of recorded spikes used the test split only (a tenth of a white-noise recording) by default
    import h5py
    import numpy as np
    import torch

    from retina_codec.cli.main import main
    from retina_codec.models import BNCNN, save_model
    from retina_codec.recordings import Recording
    from retina_codec.recordings.nwb import read_nwb, write_nwb
    from retina_codec.rf.sta import spike_triggered_average

    rng = np.random.default_rng(0)
    t = 200
    rec = Recording(stimulus=rng.random((t, 6, 6)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 2)).astype(np.float32),
                    intervals={"train": np.array([[0.0, 1.6]]), "test": np.array([[1.6, 2.0]])})
    write_nwb(rec, tmp_path / "rec.nwb")
    torch.manual_seed(0)
    save_model(BNCNN(n_cells=2, history=4, frame_shape=(6, 6), channels=(2, 2), kernel_sizes=(3, 3)), tmp_path / "m")
    base = ["-q", "rf", str(tmp_path / "m"), str(tmp_path / "rec.nwb"), "--model-sta-samples", "0", "--no-figures"]
    assert main([*base, "--out", str(tmp_path / "all.h5")]) == 0
    assert main([*base, "--split", "test", "--out", str(tmp_path / "test.h5")]) == 0
    with read_nwb(tmp_path / "rec.nwb") as r:
        want_all = spike_triggered_average(r, None, history=4, quiet=True).sta
        want_test = spike_triggered_average(r, "test", history=4, quiet=True).sta
    for name, want, split in (("all", want_all, "all"), ("test", want_test, "test")):
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            np.testing.assert_allclose(f["sta/sta"][...], want, rtol=1e-5, atol=1e-6)
            assert f.attrs["sta_split"] == split
