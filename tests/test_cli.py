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


def test_rf_trust_flag_loads_a_torch_deep_retina_pickle_that_needs_it(tmp_path, capsys):
    import fractions

    import h5py
    import numpy as np
    import torch
    from test_tdr_import import TDRBNCNN, make_reference, tdr_checkpoint

    from retina_codec.cli.main import main
    from retina_codec.recordings import Recording
    from retina_codec.recordings.nwb import write_nwb

    ref = make_reference(TDRBNCNN, img_shape=(6, 14, 14), ksizes=(5, 3))
    ckpt = tdr_checkpoint(ref, "BNCNN", {"img_shape": [6, 14, 14], "ksizes": [5, 3]}, lr=fractions.Fraction(1, 1000))
    torch.save(ckpt, tmp_path / "frac.pt")
    rng = np.random.default_rng(0)
    t = 60
    rec = Recording(stimulus=rng.random((t, 14, 14)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 4)).astype(np.float32),
                    intervals={"test": np.array([[0.0, 0.6]])}, stimulus_name="noise")
    write_nwb(rec, tmp_path / "rec.nwb")
    args = ["-q", "rf", str(tmp_path / "frac.pt"), str(tmp_path / "rec.nwb"), "--no-figures",
            "--model-sta-samples", "16", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "no.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust" in err[0]
    assert not (tmp_path / "no.h5").exists()
    assert main([*args, "--out", str(tmp_path / "yes.h5"), "--trust"]) == 0
    with h5py.File(tmp_path / "yes.h5", "r") as f:
        assert len(f.keys()) > 0
