"""The one rule for progress output: the call's ``quiet`` wins, then the innermost ``quiet_scope``, then the
``RETINA_CODEC_QUIET`` environment variable; the CLI's ``-q`` is a scope, not a change to the environment."""

import os

from retina_codec.cli.main import main
from retina_codec.progress import is_quiet, progress, quiet_scope


def test_call_wins_over_scope_which_wins_over_the_environment(monkeypatch):
    monkeypatch.delenv("RETINA_CODEC_QUIET", raising=False)
    assert not is_quiet()
    monkeypatch.setenv("RETINA_CODEC_QUIET", "1")
    assert is_quiet()
    with quiet_scope(False):
        assert not is_quiet()
        assert is_quiet(True)
        with quiet_scope(True):
            assert is_quiet() and not is_quiet(False)
        assert not is_quiet()
        with quiet_scope(None):  # None changes nothing
            assert not is_quiet()
    assert is_quiet()


def test_a_bar_made_inside_a_quiet_scope_is_disabled(monkeypatch):
    monkeypatch.delenv("RETINA_CODEC_QUIET", raising=False)
    with quiet_scope():
        bar = progress(range(3), desc="x")
    assert bar.disable
    bar.close()
    bar = progress(range(3), desc="x")
    assert not bar.disable
    bar.close()


def test_cli_quiet_flag_silences_the_command_without_touching_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RETINA_CODEC_QUIET", raising=False)
    seen = []
    import retina_codec.cli.simulate as simulate_cli

    def fake(out, preset, seed, overwrite=False):
        seen.append(is_quiet())
        raise SystemExit(0)

    monkeypatch.setattr(simulate_cli, "simulate_to_nwb", fake)
    try:
        main(["-q", "simulate", "--out", str(tmp_path / "x.nwb"), "--preset", "small"])
    except SystemExit:
        pass
    assert seen == [True]
    assert "RETINA_CODEC_QUIET" not in os.environ
    assert not is_quiet()
