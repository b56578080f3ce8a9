"""Entry point of the ``retina-codec`` command.

Each sub-command lives in its own module of this package and exposes ``add_parser(subparsers)`` (which
registers the sub-command and sets ``func``). Library errors (:class:`RetinaCodecError`) become one line
on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from .._version import __version__
from ..errors import RetinaCodecError

# sub-command modules, in the order `--help` lists them; a module missing here is skipped.
COMMANDS = ("demo", "simulate", "inspect", "convert", "fit", "contributions", "modes", "rf", "report",
            "classify-stats")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="retina-codec",
        description="CODEC contributions, contribution modes and dynamic receptive fields of retina models.",
    )
    parser.add_argument("--version", action="version", version=f"retina-codec {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".{name.replace('-', '_')}", __package__)
        except ModuleNotFoundError as err:
            if err.name and err.name.endswith(f"cli.{name}"):
                continue
            raise
        mod.add_parser(sub)
    for command in sub.choices.values():  # `retina-codec demo -q` works as well as `retina-codec -q demo`
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info messages")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input or usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        import os

        os.environ["RETINA_CODEC_QUIET"] = "1"
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)  # no source path and code line for a CLI user
    try:
        return int(args.func(args) or 0)
    except RetinaCodecError as err:
        print(f"retina-codec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"retina-codec {args.command}: error: {err.filename or err}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"retina-codec {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


def _one_line_warning(command: str) -> Callable[..., str]:
    """A :func:`warnings.formatwarning` printing ``retina-codec COMMAND: warning: MESSAGE (Category)``."""

    def format_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
        return f"retina-codec {command}: warning: {message} ({category.__name__})\n"

    return format_warning


if __name__ == "__main__":
    raise SystemExit(main())
