"""figures/*.py: each script rebuilds its figure from stored results, with the store paths as arguments."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _demo_helpers import demo_folder
from PIL import Image

from retina_codec.cli.main import main

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"figure_{name}", FIGURES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)[0]


def _cases(d):
    return {
        "model_fit": [str(d / "fit.h5")],
        "rate_traces": [str(d / "fit.h5"), "--stimulus", "whitenoise", "--seconds", "2"],
        "contributions_heatmap": [str(d / "contributions.h5"), "--layer", "conv1", "--seconds", "0"],
        "mode_atoms": [str(d / "modes_conv2.h5"), "--top", "5"],
        "mode_loadings": [str(d / "modes_conv1.h5")],
        "cell_mode_correlations": [str(d / "modes_conv2_summary.json")],
        "sta_vs_truth": [str(d / "rf.h5")],
        "rf_grid": [str(d / "rf.h5"), "--source", "sta"],
        "conditioned_rfs": [str(d / "rf_conditioned_conv2.h5"), "--cell", "onoff00"],
    }


def test_every_figure_script_is_tested():
    scripts = {p.stem for p in FIGURES.glob("*.py")}
    assert scripts == set(_cases(Path("x"))) | {"classifier_stats"}


@pytest.mark.parametrize("name", sorted(_cases(Path("x"))))
def test_figure_script_writes_a_png_from_the_stores(demo, tmp_path, name, capsys):
    out = tmp_path / f"{name}.png"
    assert _script(name).main([*_cases(demo)[name], "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank canvas


def test_figure_scripts_run_from_the_command_line(demo, tmp_path):
    out = tmp_path / "grid.png"
    res = subprocess.run([sys.executable, str(FIGURES / "rf_grid.py"), str(demo / "rf.h5"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.exists()
    res = subprocess.run([sys.executable, str(FIGURES / "rf_grid.py")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "usage" in res.stderr


def test_classifier_figure_script(tmp_path):
    stats = tmp_path / "cls"
    assert main(["-q", "classify-stats", "digits-cnn", "digits", "--max-per-class", "3", "--no-modes",
                 "--out", str(stats)]) == 0
    out = tmp_path / "stats.png"
    assert _script("classifier_stats").main([str(stats / "stats.h5"), "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_figure_rebuilt_from_a_copied_store_matches_the_report_figure(demo, tmp_path):
    """The report embeds exactly what the script makes (same function, same store)."""
    copy = tmp_path / "fit.h5"
    shutil.copy(demo / "fit.h5", copy)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _script("model_fit").main([str(copy), "--out", str(a)])
    from retina_codec.report import figures

    figures.fit_per_cell(demo / "fit.h5", b)
    with Image.open(a) as ia, Image.open(b) as ib:
        assert ia.size == ib.size and np.array_equal(np.asarray(ia), np.asarray(ib))
