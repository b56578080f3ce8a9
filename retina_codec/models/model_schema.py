"""The schema of a checkpoint's ``model.json``, written as code.

:func:`validate_model_document` checks a parsed document before anything is built from it: required
fields, their types and ranges, and the fields that must agree with each other (``config`` with
``input_spec``, ``n_cells`` and ``cell_ids``). Every failure is one :class:`~retina_codec.errors.CheckpointError`
line naming the file, the field, what was expected and what was found. Fields this schema does not know
are allowed (later versions may add some); the checks against the weights themselves (tensor names,
shapes, finite values, the SHA-256) are in :mod:`retina_codec.models.checkpoint`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError
from .registry import ARCHITECTURES

__all__ = ["validate_model_document", "show", "field_error", "Described"]

_MISSING = object()
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Described(str):
    """A found value already put in words (``"19 ids"``): :func:`show` prints it as it is."""


def show(value: Any, limit: int = 60) -> str:
    """A short one-line ``repr`` of ``value`` with its JSON type (long values are cut)."""
    if value is _MISSING:
        return "nothing (the field is missing)"
    if isinstance(value, Described):
        return str(value)
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    kind = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


def field_error(source: object, field: str, expected: str, found: Any) -> CheckpointError:
    """``SOURCE: field 'FIELD': expected EXPECTED, found FOUND`` as a :class:`CheckpointError`."""
    return CheckpointError(f"{source}: field {field!r}: expected {expected}, found {show(found)}")


# --- value predicates -------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _is_pos_int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(s) and s >= 1 for s in v)


@dataclass(frozen=True)
class Field:
    """One field: what it must be (in words, for the message), a predicate, and whether it is required."""

    expected: str
    ok: Callable[[Any], bool]
    required: bool = False


def _required(f: Field) -> Field:
    return Field(f.expected, f.ok, True)


_POS_INT = Field("an integer >= 1", lambda v: _is_int(v) and v >= 1)
_INT = Field("an integer", _is_int)
_STR = Field("a string", lambda v: isinstance(v, str))
_BOOL = Field("true or false", lambda v: isinstance(v, bool))
_OBJECT = Field("a JSON object", lambda v: isinstance(v, dict))
_STR_LIST = Field("a list of strings", _is_str_list)
_FINITE = Field("a finite number", _is_number)
_NON_NEG = Field("a finite number >= 0", lambda v: _is_number(v) and v >= 0)
_POSITIVE = Field("a finite number > 0", lambda v: _is_number(v) and v > 0)
_FRACTION = Field("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
_POS_INT_LIST = Field("a non-empty list of integers >= 1", _is_pos_int_list)

TOP_FIELDS: dict[str, Field] = {
    "architecture": _required(Field(f"one of {', '.join(sorted(ARCHITECTURES))}",
                                    lambda v: isinstance(v, str) and v in ARCHITECTURES)),
    "config": _required(_OBJECT),
    "input_spec": _required(_OBJECT),
    "norm_stats": Field("null or an object {mean, std}", lambda v: v is None or isinstance(v, dict)),
    "cell_ids": Field("null or a list of strings", lambda v: v is None or _is_str_list(v)),
    "n_cells": _POS_INT,
    "layer_names": _STR_LIST,
    "affine_stem": _STR_LIST,
    "metadata": _OBJECT,
    "package_version": _STR,
    "dtype": _STR,
    "weights_file": _STR,
    "weights_sha256": Field("64 lower-case hex digits", lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v))),
}

INPUT_SPEC_FIELDS: dict[str, Field] = {
    "history": _required(_POS_INT),
    "height": _required(_POS_INT),
    "width": _required(_POS_INT),
    "frame_rate": Field("null or a finite number > 0 (Hz)", lambda v: v is None or (_is_number(v) and v > 0)),
    "offset": _INT,
    "channels": Field("null or an integer >= 1", lambda v: v is None or (_is_int(v) and v >= 1)),
}

NORM_STATS_FIELDS: dict[str, Field] = {
    "mean": _required(_FINITE),
    "std": _required(_POSITIVE),
}

_COMMON_CONFIG: dict[str, Field] = {
    "n_cells": _POS_INT,
    "history": _POS_INT,
    "frame_shape": Field("a list [height, width] of integers >= 1",
                         lambda v: _is_pos_int_list(v) and len(v) == 2),
}

_BNCNN_CONFIG: dict[str, Field] = {
    **_COMMON_CONFIG,
    "channels": _POS_INT_LIST,
    "kernel_sizes": _POS_INT_LIST,
    "noise_std": _NON_NEG,
    "bn": Field("'channel' or 'unit'", lambda v: v in ("channel", "unit")),
    "bn_eps": _POSITIVE,
    "bn_momentum": _FRACTION,
    "conv_bias": _BOOL,
    "readout_bias": _BOOL,
    "readout_bn_eps": _POSITIVE,
    "readout_bn_momentum": _FRACTION,
}

#: Per-architecture ``config`` fields; an architecture registered elsewhere gets the common ones.
CONFIG_FIELDS: dict[str, dict[str, Field]] = {
    "BNCNN": _BNCNN_CONFIG,
    "LinearStackedBNCNN": _BNCNN_CONFIG,
    "LNModel": {**_COMMON_CONFIG, "init_std": _NON_NEG},
}


def _check_fields(doc: Mapping[str, Any], fields: Mapping[str, Field], source: object, prefix: str = "") -> None:
    """Each known field of ``doc``: present when required, and of its expected type and range."""
    for name, spec in fields.items():
        value = doc.get(name, _MISSING)
        if value is _MISSING:
            if spec.required:
                raise field_error(source, prefix + name, spec.expected, value)
            continue
        if not spec.ok(value):
            raise field_error(source, prefix + name, spec.expected, value)


def _constructor_parameters(architecture: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments of the architecture's constructor (what ``config`` may hold)."""
    params = inspect.signature(ARCHITECTURES[architecture]).parameters
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_config(doc: Mapping[str, Any], source: object) -> dict[str, Any]:
    """``config`` against its architecture; returns it with the constructor's defaults filled in."""
    arch, config = doc["architecture"], doc["config"]
    params = _constructor_parameters(arch)
    for key in config:
        if key not in params:
            raise field_error(source, f"config.{key}", f"an argument of {arch} ({', '.join(params)})", key)
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in config:
            raise field_error(source, f"config.{name}", f"a value (required by {arch})", _MISSING)
    _check_fields(config, CONFIG_FIELDS.get(arch, _COMMON_CONFIG), source, "config.")
    full = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    full.update(config)
    if "channels" in config or "kernel_sizes" in config:
        nc, nk = len(full.get("channels", ())), len(full.get("kernel_sizes", ()))
        if nc != nk:
            raise field_error(source, "config.kernel_sizes", f"{nc} sizes (one per entry of config.channels)",
                              full.get("kernel_sizes"))
    return full


def _check_agreement(doc: Mapping[str, Any], config: Mapping[str, Any], source: object) -> None:
    """The fields that repeat the config (``input_spec``, ``n_cells``) and ``cell_ids`` agree with it."""
    spec = doc["input_spec"]
    if "history" in config and spec["history"] != config["history"]:
        raise field_error(source, "input_spec.history", f"{config['history']} (config.history, the frames "
                          "per window the weights were built for)", spec["history"])
    shape = config.get("frame_shape")
    if shape is not None:
        for i, key in enumerate(("height", "width")):
            if spec[key] != shape[i]:
                raise field_error(source, f"input_spec.{key}", f"{shape[i]} (config.frame_shape[{i}])", spec[key])
    n_cells = config.get("n_cells", doc.get("n_cells"))
    if "n_cells" in doc and n_cells is not None and doc["n_cells"] != n_cells:
        raise field_error(source, "n_cells", f"{n_cells} (config.n_cells)", doc["n_cells"])
    ids = doc.get("cell_ids")
    if ids is not None:
        if n_cells is not None and len(ids) != n_cells:
            raise field_error(source, "cell_ids", f"{n_cells} ids (one per cell, config.n_cells)",
                              Described(f"{len(ids)} ids"))
        seen: set[str] = set()
        for i, c in enumerate(ids):
            if c in seen:
                raise field_error(source, f"cell_ids[{i}]", "distinct ids (cells are selected by id)",
                                  Described(f"{c!r} again (first at cell_ids[{ids.index(c)}])"))
            seen.add(c)


def validate_model_document(doc: Any, source: object, fmt: str, version: int) -> dict[str, Any]:
    """Check a parsed ``model.json`` (or the JSON embedded in a weights header) against the schema.

    ``source`` names the file in messages; ``fmt`` and ``version`` are the format name and the newest
    ``format_version`` this retina-codec reads. Returns ``doc`` unchanged; raises
    :class:`~retina_codec.errors.CheckpointError` (one line: file, field, expected, found) otherwise.
    """
    if not isinstance(doc, dict):
        raise CheckpointError(f"{source}: expected a JSON object (format, architecture, config, input_spec, "
                              f"...), found {show(doc)}")
    if doc.get("format", _MISSING) != fmt:
        raise field_error(source, "format", repr(fmt), doc.get("format", _MISSING))
    fv = doc.get("format_version", _MISSING)
    if not (_is_int(fv) and fv >= 1):
        raise field_error(source, "format_version", "1" if version == 1 else f"an integer from 1 to {version}", fv)
    if fv > version:
        raise CheckpointError(f"{source}: field 'format_version': {fv} is newer than this retina-codec supports "
                              f"({version}); upgrade retina-codec to read this model")
    _check_fields(doc, TOP_FIELDS, source)
    _check_fields(doc["input_spec"], INPUT_SPEC_FIELDS, source, "input_spec.")
    if doc.get("norm_stats") is not None:
        _check_fields(doc["norm_stats"], NORM_STATS_FIELDS, source, "norm_stats.")
    config = _check_config(doc, source)
    _check_agreement(doc, config, source)
    return doc
