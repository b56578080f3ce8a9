"""Corrupt or foreign model folders: one-line CheckpointError (and exit 2 on the command line); older folders
still load."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from retina_codec.errors import CheckpointError
from retina_codec.models import BNCNN, LinearStackedBNCNN, LNModel, load_model, save_model

SHIPPED = Path(__file__).resolve().parents[2] / "retina_codec" / "shipped" / "bncnn-sim-default"
JSON, WEIGHTS = "model.json", "model.safetensors"


Corruption = Callable[[Path], None]


def _doc(folder: Path) -> Any:
    return json.loads((folder / JSON).read_text())


def _write_doc(folder: Path, doc: Any) -> None:
    (folder / JSON).write_text(json.dumps(doc, indent=2))


def _edit(fn: Callable[[dict[str, Any]], Any]) -> Corruption:
    """A corruption that edits the parsed ``model.json`` in place (or replaces it with ``fn``'s result)."""
    def corrupt(folder: Path) -> None:
        doc = _doc(folder)
        out = fn(doc)
        _write_doc(folder, doc if out is None else out)
    return corrupt


def _walk(doc: dict[str, Any], field: str) -> tuple[dict[str, Any], str]:
    *parents, last = field.split(".")
    for p in parents:
        doc = doc[p]
    return doc, last


def _set(field: str, value: Any) -> Corruption:
    """Set a dotted field (``input_spec.history``) of ``model.json``."""
    def fn(doc: dict[str, Any]) -> None:
        parent, key = _walk(doc, field)
        parent[key] = value
    return _edit(fn)


def _drop(field: str) -> Corruption:
    """Remove a dotted field of ``model.json``."""
    def fn(doc: dict[str, Any]) -> None:
        parent, key = _walk(doc, field)
        del parent[key]
    return _edit(fn)


def _both(*corruptions: Corruption) -> Corruption:
    def corrupt(folder: Path) -> None:
        for c in corruptions:
            c(folder)
    return corrupt


def _weights(fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], hash_: str = "update") -> Corruption:
    """Rewrite the weights with ``fn(state)``; ``hash_``: ``"update"`` the recorded SHA-256 (so the checks
    behind the hash are reached), ``"keep"`` the old one, or ``"drop"`` it (an older folder)."""
    def corrupt(folder: Path) -> None:
        path = folder / WEIGHTS
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
        save_file(fn(load_file(str(path))), str(path), metadata=header)
        _rehash(folder, hash_)
    return corrupt


def _rehash(folder: Path, hash_: str) -> None:
    doc = _doc(folder)
    if hash_ == "update":
        doc["weights_sha256"] = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    elif hash_ == "drop":
        del doc["weights_sha256"]
    _write_doc(folder, doc)


def _truncate(hash_: str) -> Corruption:
    def corrupt(folder: Path) -> None:
        data = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(data[: len(data) - 4096])
        _rehash(folder, hash_)
    return corrupt


def _tensor(name: str, fn: Callable[[torch.Tensor], torch.Tensor], hash_: str = "update") -> Corruption:
    return _weights(lambda s: {**s, name: fn(s[name].clone())}, hash_)


def _nan(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[7] = float("nan")
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = float("inf")
    return t


def _other_architecture(make: Callable[[], torch.nn.Module]) -> Corruption:
    def fn(_: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        return {k: v.contiguous() for k, v in make().state_dict().items()}
    return _weights(fn)


def _raw_json(text: str) -> Corruption:
    def corrupt(folder: Path) -> None:
        (folder / JSON).write_text(text)
    return corrupt


def _std_in_json(literal: str) -> Corruption:
    """Write the norm std as a raw JSON literal (``NaN`` / ``Infinity`` are what Python's json emits)."""
    def corrupt(folder: Path) -> None:
        doc = _doc(folder)
        doc["norm_stats"]["std"] = "@STD@"
        (folder / JSON).write_text(json.dumps(doc).replace('"@STD@"', literal))
    return corrupt


def _lone_weights(field: str, value: Any) -> Corruption:
    """No ``model.json``: the weights header's embedded JSON (with one field changed) is all there is."""
    def corrupt(folder: Path) -> None:
        path = folder / WEIGHTS
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata())
        doc = json.loads(header["retina_codec"])
        parent, key = _walk(doc, field)
        parent[key] = value
        header["retina_codec"] = json.dumps(doc)
        save_file(load_file(str(path)), str(path), metadata=header)
        (folder / JSON).unlink()
    return corrupt


def _empty_weights(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"")
    _rehash(folder, "drop")


def _ids(n: int, dup: bool = False) -> list[str]:
    ids = [f"c{i}" for i in range(n)]
    if dup:
        ids[5] = ids[2]
    return ids


def _flip(t: torch.Tensor) -> torch.Tensor:
    return -t


# name -> (corruption, the file the message must name, words it must contain)
CASES: dict[str, tuple[Corruption, str, tuple[str, ...]]] = {
    # the recorded hash
    "flipped-weights-old-hash": (_tensor("conv1.conv.weight", _flip, "keep"), WEIGHTS,
                                 ("weights_sha256", JSON, "expected", "found")),
    "bad-hash-field": (_set("weights_sha256", "abc"), JSON, ("'weights_sha256'", "hex")),
    # required fields missing
    **{f"missing-{f}": (_drop(f), JSON, (f"'{f}'", "missing")) for f in (
        "format", "format_version", "architecture", "config", "input_spec", "input_spec.history",
        "input_spec.height", "input_spec.width", "norm_stats.mean", "norm_stats.std", "config.n_cells")},
    # wrong types and ranges
    "top-level-list": (_edit(lambda doc: [doc]), JSON, ("JSON object", "list")),
    "top-level-string": (_raw_json('"model"'), JSON, ("JSON object", "string")),
    "not-json": (_raw_json('{"format": "retina-codec-model", '), JSON, ("not valid JSON",)),
    "format-other": (_set("format", "other"), JSON, ("'format'", "retina-codec-model", "'other'")),
    "format-version-abc": (_set("format_version", "abc"), JSON, ("'format_version'", "expected 1", "'abc'")),
    "format-version-float": (_set("format_version", 1.5), JSON, ("'format_version'", "1.5")),
    "format-version-newer": (_set("format_version", 99), JSON, ("'format_version'", "99", "newer")),
    "architecture-number": (_set("architecture", 42), JSON, ("'architecture'", "BNCNN", "42")),
    "architecture-unknown": (_set("architecture", "ResNet"), JSON, ("'architecture'", "'ResNet'")),
    "config-list": (_set("config", [1, 2]), JSON, ("'config'", "JSON object", "list")),
    "input-spec-string": (_set("input_spec", "40x50x50"), JSON, ("'input_spec'", "JSON object")),
    "history-string": (_set("input_spec.history", "40"), JSON, ("'input_spec.history'", "integer", "'40'")),
    "history-zero": (_set("input_spec.history", 0), JSON, ("'input_spec.history'", ">= 1", "0")),
    "height-zero": (_set("input_spec.height", 0), JSON, ("'input_spec.height'", ">= 1")),
    "width-negative": (_set("input_spec.width", -50), JSON, ("'input_spec.width'", ">= 1", "-50")),
    "frame-rate-zero": (_set("input_spec.frame_rate", 0), JSON, ("'input_spec.frame_rate'", "> 0")),
    "frame-rate-string": (_set("input_spec.frame_rate", "100 Hz"), JSON, ("'input_spec.frame_rate'", "'100 Hz'")),
    "offset-float": (_set("input_spec.offset", 0.5), JSON, ("'input_spec.offset'", "integer")),
    "norm-stats-list": (_set("norm_stats", [0.4, 0.3]), JSON, ("'norm_stats'", "object")),
    "norm-std-zero": (_set("norm_stats.std", 0.0), JSON, ("'norm_stats.std'", "> 0", "0.0")),
    "norm-std-negative": (_set("norm_stats.std", -0.3), JSON, ("'norm_stats.std'", "> 0")),
    "norm-std-nan": (_std_in_json("NaN"), JSON, ("'norm_stats.std'", "nan")),
    "norm-std-inf": (_std_in_json("Infinity"), JSON, ("'norm_stats.std'", "inf")),
    "norm-mean-string": (_set("norm_stats.mean", "0.44"), JSON, ("'norm_stats.mean'", "finite number")),
    "n-cells-string": (_set("n_cells", "20"), JSON, ("'n_cells'", "integer", "'20'")),
    "n-cells-1e10": (_both(_set("n_cells", 1e10), _set("config.n_cells", 1e10)), JSON,
                     ("'n_cells'", "integer", "10000000000.0")),
    "config-n-cells-1e10": (_both(_drop("n_cells"), _set("config.n_cells", 1e10)), JSON,
                            ("'config.n_cells'", "integer", "10000000000.0")),
    "n-cells-disagree": (_set("n_cells", 21), JSON, ("'n_cells'", "20", "21")),
    "config-bn-unknown": (_set("config.bn", "batch"), JSON, ("'config.bn'", "'channel' or 'unit'")),
    "config-channels-string": (_set("config.channels", "8,8"), JSON, ("'config.channels'", "list")),
    "config-kernel-count": (_set("config.kernel_sizes", [15]), JSON, ("'config.kernel_sizes'", "2 sizes")),
    "config-unknown-key": (_set("config.dropout", 0.5), JSON, ("'config.dropout'", "argument of BNCNN")),
    "config-kernel-too-big": (_both(_set("config.kernel_sizes", [45, 11])), JSON,
                              ("'config'", "does not fit")),
    "metadata-list": (_set("metadata", ["a"]), JSON, ("'metadata'", "JSON object")),
    "layer-names-numbers": (_set("layer_names", [1, 2]), JSON, ("'layer_names'", "strings")),
    # cell ids
    "cell-ids-short": (_set("cell_ids", _ids(19)), JSON, ("'cell_ids'", "20 ids", "19 ids")),
    "cell-ids-long": (_set("cell_ids", _ids(21)), JSON, ("'cell_ids'", "20 ids", "21 ids")),
    "cell-ids-duplicate": (_set("cell_ids", _ids(20, dup=True)), JSON, ("'cell_ids[5]'", "distinct", "'c2'")),
    "cell-ids-numbers": (_set("cell_ids", list(range(20))), JSON, ("'cell_ids'", "strings")),
    # the config against the weights
    "history-disagrees": (_set("input_spec.history", 20), JSON, ("'input_spec.history'", "40", "20")),
    "height-disagrees": (_set("input_spec.height", 60), JSON, ("'input_spec.height'", "50", "60")),
    "history-disagrees-with-weights": (_both(_set("input_spec.history", 20), _set("config.history", 20)), WEIGHTS,
                                       ("'conv1.conv.weight'", "[8, 20, 15, 15]", "[8, 40, 15, 15]", JSON)),
    "n-cells-huge-int": (_both(_set("n_cells", 10**10), _set("config.n_cells", 10**10), _set("cell_ids", None)),
                         WEIGHTS, ("'readout.linear.weight'", "10000000000", "[20, 5408]")),
    "n-cells-fewer-than-weights": (_both(_set("n_cells", 19), _set("config.n_cells", 19), _set("cell_ids", None)),
                                   WEIGHTS, ("'readout", "[19", "[20")),
    "other-architecture-ln": (_other_architecture(lambda: LNModel(20)), WEIGHTS,
                              ("missing", "conv1.bn.bias", "unexpected", "filter.bias", "BNCNN")),
    "other-architecture-unit-bn": (_other_architecture(lambda: BNCNN(20, bn="unit")), WEIGHTS,
                                   ("'conv1.bn.", "[8]", "[10368]")),
    "integer-weights": (_tensor("conv1.conv.bias", lambda t: t.to(torch.int32)), WEIGHTS,
                        ("'conv1.conv.bias'", "floating-point", "I32")),
    # the weights' values
    "nan-weights": (_tensor("conv2.conv.weight", _nan), WEIGHTS, ("'conv2.conv.weight'", "finite", "NaN")),
    "inf-weights": (_tensor("readout.linear.bias", _inf), WEIGHTS, ("'readout.linear.bias'", "finite", "inf")),
    "nan-running-var": (_tensor("conv1.bn.running_var", _nan), WEIGHTS, ("'conv1.bn.running_var'", "finite")),
    "negative-running-var": (_tensor("readout.bn.running_var", lambda t: t - 1e3), WEIGHTS,
                             ("'readout.bn.running_var'", ">= 0")),
    # broken files
    "truncated-weights-old-hash": (_truncate("keep"), WEIGHTS, ("weights_sha256", JSON)),
    "truncated-weights-no-hash": (_truncate("drop"), WEIGHTS, ("safetensors",)),
    "empty-weights-no-hash": (_empty_weights, WEIGHTS, ("safetensors",)),
    # no model.json: the JSON embedded in the weights header is checked the same way
    "header-only-std-zero": (_lone_weights("norm_stats.std", 0), WEIGHTS, ("'norm_stats.std'", "header")),
    "header-only-history-missing": (_lone_weights("input_spec", {"height": 50, "width": 50}), WEIGHTS,
                                    ("'input_spec.history'", "missing")),
}


def _corrupted(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)
    CASES[case][0](folder)
    return folder


def _check_message(message: str, folder: Path, case: str) -> None:
    _, file, words = CASES[case]
    assert "\n" not in message.strip(), message
    assert str(folder / file) in message, message
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_model_folder_is_a_one_line_checkpoint_error(tmp_path, case):
    folder = _corrupted(tmp_path, case)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    assert time.perf_counter() - t0 < 30  # nothing is allocated for n_cells = 1e10
    _check_message(str(info.value), folder, case)


@pytest.fixture(scope="module")
def tiny_nwb(tmp_path_factory) -> Path:
    """A small NWB recording shaped for the shipped model (50x50 frames, 20 cells)."""
    from retina_codec.recordings import Recording
    from retina_codec.recordings.nwb import write_nwb

    rng = np.random.default_rng(0)
    t = 120
    rec = Recording(stimulus=rng.random((t, 50, 50)).astype(np.float32), frame_times=np.arange(t) / 100.0,
                    frame_rate=100.0, responses=rng.poisson(1.0, (t, 20)).astype(np.float32),
                    cell_ids=[f"c{i}" for i in range(20)])
    path = tmp_path_factory.mktemp("rec") / "rec.nwb"
    write_nwb(rec, path)
    return path


CLI_CASES = ["flipped-weights-old-hash", "missing-input_spec", "top-level-list", "format-version-abc",
             "history-disagrees-with-weights", "n-cells-1e10", "n-cells-huge-int", "cell-ids-short",
             "cell-ids-duplicate", "nan-weights", "norm-std-zero", "truncated-weights-no-hash",
             "other-architecture-ln"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_reports_a_corrupt_model_in_one_line_with_exit_2(tmp_path, tiny_nwb, case, capsys):
    from retina_codec.cli.main import main

    folder = _corrupted(tmp_path, case)
    code = main(["-q", "contributions", str(folder), str(tiny_nwb), "--out", str(tmp_path / "c.h5")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("retina-codec contributions: error: "), err
    _check_message(lines[0], folder, case)
    assert not (tmp_path / "c.h5").exists()


def test_folder_without_a_hash_from_an_older_version_still_loads(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED, folder)
    _rehash(folder, "drop")
    x = torch.randn(2, 40, 50, 50)
    assert torch.equal(load_model(folder)(x), load_model(SHIPPED)(x))


def test_saved_models_pass_the_validation(tmp_path):
    from retina_codec.models.base import InputSpec

    for i, model in enumerate([BNCNN(3, history=5, frame_shape=(20, 24), channels=(2,), kernel_sizes=(5,)),
                               LinearStackedBNCNN(2, history=4, frame_shape=(12, 12), kernel_sizes=(5, 3)),
                               LNModel(4, history=3, frame_shape=(6, 7))]):
        model.input_spec = InputSpec(model.input_spec.history, model.input_spec.height, model.input_spec.width,
                                     frame_rate=None if i else 30.0, offset=0)
        model.norm_stats = None if i == 1 else (0.5, 0.25)
        model.cell_ids = None if i == 2 else [f"u{j}" for j in range(model.n_cells)]
        save_model(model, tmp_path / str(i))
        loaded = load_model(tmp_path / str(i))
        assert loaded.input_spec == model.input_spec and loaded.cell_ids == model.cell_ids
        assert loaded.norm_stats == model.norm_stats
        with torch.no_grad():
            assert math.isfinite(float(loaded(torch.randn(1, *model.input_spec.shape)).sum()))
