"""The wheel ships the fitted models: a ``pip install .`` (not only an editable clone) finds them.

Builds a wheel from a copy of the source (so the checkout gets no ``build/`` folder), checks it holds the
shipped models' files, unpacks it as an installed layout and asks the resolver for them from another
directory, in a fresh interpreter that imports ``retina_codec`` from that layout only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retina_codec.models import SHIPPED_MODELS, resolve_model_path, shipped_model_path

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = ("model.json", "model.safetensors", "MODEL_CARD.md")

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copy2(ROOT / "pyproject.toml", src)
    shutil.copy2(ROOT / "README.md", src)
    shutil.copytree(ROOT / "retina_codec", src / "retina_codec",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".fit_state"))
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
           "-q", "-w", str(out)]
    run = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    if run.returncode != 0 and "No module named pip" in run.stderr:
        pytest.skip("pip is not installed in this interpreter")
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = out.glob("retina_codec-*.whl")
    return whl


def test_shipped_models_are_in_the_source_package():
    for name in SHIPPED_MODELS:
        folder = shipped_model_path(name)
        assert folder.parent.name == "shipped" and folder.parent.parent.name == "retina_codec"
        for f in MODEL_FILES:
            assert (folder / f).is_file(), folder / f


def test_names_and_old_paths_resolve_to_the_shipped_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in SHIPPED_MODELS:
        assert resolve_model_path(name) == shipped_model_path(name)
        assert resolve_model_path(f"models/{name}") == shipped_model_path(name)
    # a folder of that name in the working directory wins
    (tmp_path / "models" / "bncnn-sim-default").mkdir(parents=True)
    assert resolve_model_path("models/bncnn-sim-default") == Path("models/bncnn-sim-default")
    # anything else is returned unchanged (the caller reports it missing)
    assert resolve_model_path("elsewhere/bncnn-sim-default") == Path("elsewhere/bncnn-sim-default")


def test_wheel_contains_the_shipped_models(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in SHIPPED_MODELS:
            for f in MODEL_FILES:
                member = f"retina_codec/shipped/{name}/{f}"
                assert member in names, f"{wheel.name} lacks {member}"
                assert z.getinfo(member).file_size == (shipped_model_path(name) / f).stat().st_size
        assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "retina-codec = retina_codec.cli.main:main" in z.read(entry_points).decode()


PROBE = """
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv[1])
import retina_codec
from retina_codec.models import load_model, resolve_model_path
from retina_codec.classifiers import load_classifier
from retina_codec.classifiers.adapters import default_digits_path
model = load_model("bncnn-sim-default")
print(json.dumps({"package": retina_codec.__file__,
                  "bncnn": str(resolve_model_path("bncnn-sim-default")),
                  "old_path": str(resolve_model_path("models/bncnn-sim-default")),
                  "digits": str(default_digits_path()),
                  "cells": len(model.cell_ids),
                  "classifier": type(load_classifier("digits-cnn")).__name__}))
"""


def test_installed_layout_finds_the_shipped_models(wheel, tmp_path):
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", PROBE, str(site)], cwd=elsewhere, capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site), found
    for key in ("bncnn", "old_path", "digits"):
        assert Path(found[key]).is_relative_to(site / "retina_codec" / "shipped"), (key, found)
    assert found["classifier"] == "DigitsCNN"
    assert found["cells"] == len(json.loads((shipped_model_path("bncnn-sim-default") / "model.json")
                                            .read_text())["cell_ids"])
