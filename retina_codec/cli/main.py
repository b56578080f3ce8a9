"""Entry point of the ``retina-codec`` command.

Each sub-command lives in its own module of this package and exposes ``add_parser(subparsers)`` (which
registers the sub-command and sets ``func``). One error boundary: library errors (:class:`RetinaCodecError`)
and operating-system errors (permission, is a directory, no space, I/O error, also as HDF5 reports them)
become one line on stderr and exit code 2, without a traceback; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence

from .._version import __version__
from ..errors import RetinaCodecError
from ..progress import quiet_scope
from .options import one_line_errors

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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
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
        one_line_errors(command)  # a bad option value is one line + exit 2 in every command
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars or info messages")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input or usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # usage errors (already printed as one line), --help, --version
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)  # no source path and code line for a CLI user
    debug = bool(getattr(args, "debug", False))
    try:
        with quiet_scope(True if args.quiet else None):  # -q: every progress bar of the command is off
            code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"retina-codec {args.command}: interrupted", file=sys.stderr)
        code = 130
    except (RetinaCodecError, OSError) as err:
        if debug:
            _end_if_hdf5_abandoned(None)
            raise
        print(f"retina-codec {args.command}: error: {error_line(err, _inputs(args))}", file=sys.stderr)
        code = 2
    except RuntimeError as err:  # h5py reports some I/O failures (disk full on close) as RuntimeError
        if debug or _errno_in(str(err)) is None:
            _end_if_hdf5_abandoned(None)
            raise
        print(f"retina-codec {args.command}: error: {error_line(err, _inputs(args))}", file=sys.stderr)
        code = 2
    finally:
        warnings.formatwarning = formatwarning
    _end_if_hdf5_abandoned(code)
    return code


_ERRNO_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")
_FILE_TEXT = re.compile(r"filename\s*=\s*'([^']*)'|file name\s*=\s*'([^']*)'")


def _errno_in(text: str) -> int | None:
    m = _ERRNO_TEXT.search(text)
    return int(m.group(1) or m.group(2)) if m else None


def _inputs(args: argparse.Namespace) -> list[str]:
    """The existing files among the command's arguments other than ``--out`` (to name in an OS error that
    names no file, such as HDF5's "filter returned failure during read")."""
    found = []
    for key, value in vars(args).items():
        if key in ("out", "func", "command") or not isinstance(value, str):
            continue
        if os.path.isfile(value):
            found.append(value)
    return found


def error_line(err: BaseException, inputs: Sequence[str] = ()) -> str:
    """One line for an error: a library error's message; for an OS error the file and the reason (when the
    error names no file: ``while reading`` one of ``inputs``, the command's input files)."""
    if isinstance(err, RetinaCodecError):
        return " ".join(str(err).split("\n"))
    code = err.errno if isinstance(err, OSError) and err.errno is not None else _errno_in(str(err))
    name = getattr(err, "filename", None)
    if name is None:
        m = _FILE_TEXT.search(str(err))
        name = (m.group(1) or m.group(2)) if m else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        from ..io_utils import free_space

        where = f"{name}: " if name else ""
        return f"{where}no space left on the device ({free_space(name) if name else 'free space unknown'})"
    reasons = {errno.ENOENT: "no such file", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EISDIR: "is a directory (expected a file)", errno.ENOTDIR: "a parent is not a folder",
               errno.EROFS: "read-only file system", errno.EIO: "input/output error (damaged file or device)"}
    if code in reasons:
        reason = reasons[code]
    else:  # first line of the message, without HDF5's "(file read failed: time = …)" details
        reason = str(getattr(err, "strerror", None) or err).split("\n")[0].split(" (")[0].strip() or type(err).__name__
    if name:
        return f"{name}: {reason}"
    if inputs:
        return f"{reason} (while reading {' or '.join(inputs)})"
    return reason


def _end_if_hdf5_abandoned(code: int | None) -> None:
    """End the process at once when an HDF5 file had to be abandoned after a failed flush: HDF5's exit handler
    would crash (segfault) closing it. Only then; otherwise the normal exit path runs."""
    from ..io_utils import hdf5_abandoned

    if hdf5_abandoned():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2 if code is None else code)


def _one_line_warning(command: str) -> Callable[..., str]:
    """A :func:`warnings.formatwarning` printing ``retina-codec COMMAND: warning: MESSAGE (Category)``."""

    def format_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
        return f"retina-codec {command}: warning: {message} ({category.__name__})\n"

    return format_warning


if __name__ == "__main__":
    raise SystemExit(main())
