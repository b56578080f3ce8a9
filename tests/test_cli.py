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
