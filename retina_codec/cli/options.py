"""Options several sub-commands share (their flags and help read the same everywhere), the ``type=``
validators every sub-command's numeric options use, and the output check.

A bad option value is refused by argparse before any work: one line on stderr naming the option, the
expected and the found value, exit code 2 (:func:`one_line_errors`). An existing result is never replaced
unless the user says so (``--overwrite``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..io_utils import check_new_output

__all__ = ["add_overwrite_argument", "add_responses_argument", "add_session_argument", "add_trust_argument",
           "check_output", "positive_int", "non_negative_int", "int_at_least", "finite_float", "positive_float",
           "non_negative_float", "fraction", "probability", "open_probability", "device_name", "positive_int_or_auto",
           "one_line_errors", "add_command"]


# ---- type= validators: argparse turns the ArgumentTypeError into "argument --x: MESSAGE" -----------------------
def _int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected finite number (not nan or inf), found {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """A ``type=`` validator: an integer ``>= low``."""

    def check(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected at least {low}, found {text!r}")
        return value

    check.__name__ = f"int_at_least_{low}"
    return check


positive_int = int_at_least(1)
positive_int.__doc__ = "A ``type=`` validator: an integer >= 1."
non_negative_int = int_at_least(0)
non_negative_int.__doc__ = "A ``type=`` validator: an integer >= 0."


def finite_float(text: str) -> float:
    """A ``type=`` validator: a finite number (no nan / inf)."""
    return _float(text)


def positive_float(text: str) -> float:
    """A ``type=`` validator: a finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A ``type=`` validator: a finite number >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value


def fraction(text: str) -> float:
    """A ``type=`` validator: a fraction in [0, 1) (a held-out share that leaves something to train on)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {text!r}")
    return value


def probability(text: str) -> float:
    """A ``type=`` validator: a number in [0, 1]."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], found {text!r}")
    return value


def open_probability(text: str) -> float:
    """A ``type=`` validator: a number in (0, 1] (a share that must keep something)."""
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], found {text!r}")
    return value


def positive_int_or_auto(text: str) -> str | int:
    """A ``type=`` validator: ``auto`` or an integer >= 1 (batch sizes chosen from the memory budget)."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', found {text!r}")
    return value


_DEVICE = re.compile(r"^(auto|cpu|mps|meta|(cuda|xpu)(:\d+)?)$")


def device_name(text: str) -> str:
    """A ``type=`` validator: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or ``mps``, ``xpu[:N]``).

    Only the name is checked here (without importing torch); whether CUDA is present is checked where the
    device is used (:func:`retina_codec.torch_utils.devices.resolve_device`)."""
    name = str(text).strip()
    if not _DEVICE.match(name):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu' or 'cuda[:N]', found {text!r}")
    return name


# ---- one-line usage errors ----------------------------------------------------------------------------------------
def one_line_errors(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make a sub-command's usage errors one line and exit code 2; returns ``p``.

    A value its ``type=`` validator (or ``choices``) refuses, or a missing required argument, prints
    ``retina-codec CMD: error: argument --epochs: expected at least 1, found '0' (see retina-codec CMD --help)``
    instead of the multi-line usage, before any work; ``main()`` returns 2 for it."""

    def error(message: str) -> NoReturn:
        sys.stderr.write(f"{p.prog}: error: {message} (see {p.prog} --help)\n")
        raise SystemExit(2)

    p.error = error  # type: ignore[method-assign]
    return p


def add_command(subparsers: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
                **kwargs: Any) -> argparse.ArgumentParser:
    """The sub-parser of the command ``name`` (``kwargs``: ``help``, ``description``, ... of
    ``add_parser``); the CLI calls ``run(args)`` for it."""
    p = subparsers.add_parser(name, **kwargs)
    p.set_defaults(func=run)
    return p


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "--out") -> None:
    """``--overwrite``: replace an existing ``what``."""
    p.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def add_responses_argument(p: argparse.ArgumentParser, when: str = "") -> None:
    """``--responses``: which response series of an NWB file (``when``: a prefix such as ``"with --nwb: "``)."""
    p.add_argument("--responses", default=None,
                   help=f"{when}'units' or the name of a rate series, when the NWB file has several "
                        "(default: automatic)")


def add_trust_argument(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """``--trust``: allow a torch-deep-retina pickle or openretina checkpoint that needs types (or Hydra targets)
    outside the safe set."""
    p.add_argument("--trust", action="store_true",
                   help=f"allow a torch-deep-retina pickle or openretina .ckpt as {what} that needs types or "
                        "Hydra targets outside the safe set (it can run code: only for a file from a source you "
                        "trust)")


def add_session_argument(p: argparse.ArgumentParser, what: str = "the model") -> None:
    """``--session NAME``: which recording session (readout) of a multi-session openretina checkpoint."""
    p.add_argument("--session", default=None, metavar="NAME",
                   help=f"the recording session (readout) of {what} when it is an openretina .ckpt with several "
                        "sessions ('retina-codec inspect MODEL.ckpt' lists them)")


check_output = check_new_output  # the one rule, in io_utils: library jobs check their outputs the same way
