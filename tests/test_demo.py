"""The README's first command: `retina-codec demo` runs the whole pipeline, resumably, and ends in a report."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from _demo_helpers import FAST, demo_folder, manifest

from retina_codec.cli.demo import STAGES, Demo, DemoSettings, classifier_argv
from retina_codec.cli.main import main
from retina_codec.recordings import read_nwb

STORES = ["simulated_retina_small_seed0.nwb", "fit.h5", "contributions.h5", "modes_conv1.h5", "modes_conv2.h5",
          "modes_conv1_summary.json", "modes_conv2_summary.json", "rf.h5", "rf_conditioned_conv1.h5",
          "rf_conditioned_conv2.h5", "report.html", "demo.json"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)


def test_demo_writes_every_store_and_the_report(demo):
    out, model = demo
    for name in STORES:
        assert (out / name).exists(), name
    with read_nwb(out / STORES[0], stimulus="whitenoise") as rec:
        assert rec.n_cells >= 16 and rec.ground_truth is not None
    doc = manifest(out)
    assert set(doc["timings_s"]) == set(STAGES)
    assert doc["model_path"] == str(model) and doc["settings"]["bins"] == 240
    assert "classifiers" in doc["notes"]  # --no-classifiers is recorded, and the report says so
    assert not list(out.glob("*.partial")) and not list(out.glob(".*tmp"))


def test_demo_contributions_use_the_surprisal_of_both_conv_layers_on_the_chosen_bins(demo):
    out, _ = demo
    with h5py.File(out / "contributions.h5", "r") as f:
        assert json.loads(f.attrs["target"])["name"] == "surprisal"
        assert json.loads(f.attrs["layers"]) == ["conv1", "conv2"]
        assert bool(f.attrs["complete"]) and f["bins"].shape == (240,)
        assert f["contributions/conv1"].shape == (240, 16)
        bins = f["bins"][...]
        mu = f["target/mu"][...]
    with h5py.File(out / "fit.h5", "r") as f:  # the first test bins; surprisal moments from the test predictions
        test_bins = f["naturalscene/bins"][...]
        pred = f["naturalscene/predicted"][...]
    np.testing.assert_array_equal(bins, test_bins[:240])
    np.testing.assert_allclose(mu, pred.mean(0), rtol=1e-5)


def test_demo_modes_summaries_and_conditioned_rfs_are_consistent(demo):
    out, _ = demo
    s = json.loads((out / "modes_conv2_summary.json").read_text())
    with h5py.File(out / "modes_conv2.h5", "r") as f:
        n_modes = f["atoms"].shape[0]
        loadings = f["loadings"][...]
    r = np.array(s["correlation"], dtype=float)
    assert r.shape == (n_modes, 20) and np.nanmax(np.abs(r)) <= 1.0
    assert s["active_bins"] == (loadings > 0).sum(0).tolist()
    with h5py.File(out / "rf_conditioned_conv2.h5", "r") as f:
        assert json.loads(f.attrs["cell_ids"]) == ["off00", "on00", "onoff00", "ln00"]  # one cell per type
        assert f["conditioned/mode_spatial"].shape[:2] == (3, 4)  # --rf-modes 3 modes x 4 cells
        assert f["sources/r2_irf"].shape == (4,)
        assert int(f["conditioned"].attrs["n_bins"]) == 64
    with h5py.File(out / "rf.h5", "r") as f:
        assert f["ln_truth/filters"].shape[0] == 4 and f["ln_truth/r_sta"].shape == (4,)


def test_demo_second_run_skips_every_stage(demo, capsys):
    out, model = demo
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "demo.json"}
    assert main(["demo", "--out", str(out), "--model", str(model), *FAST]) == 0
    text = capsys.readouterr().out
    assert "using the simulated recording already" in text
    assert text.count("exists: skipping") >= 5 and "rf_conditioned_*.h5 exist: skipping" in text
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "demo.json"}
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed <= {"report.html"}, changed


def test_demo_recomputes_a_missing_store_and_what_depends_on_it(demo, capsys):
    out, model = demo
    (out / "modes_conv2.h5").unlink()
    keep = {n: (out / n).stat().st_mtime_ns for n in ("modes_conv1.h5", "rf_conditioned_conv1.h5", "rf.h5")}
    old_cond = (out / "rf_conditioned_conv2.h5").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--model", str(model), *FAST]) == 0
    text = capsys.readouterr().out
    assert "made from older inputs: recomputing" in text  # the conv2 summary and conditioned RFs
    assert (out / "modes_conv2.h5").exists()
    assert (out / "rf_conditioned_conv2.h5").stat().st_mtime_ns != old_cond
    assert {n: (out / n).stat().st_mtime_ns for n in keep} == keep


def test_demo_says_so_and_fits_a_small_model_when_the_shipped_one_is_missing(tmp_path, capsys, monkeypatch):
    """With no model given and none shipped, the model stage fits a small BN-CNN into OUT/model."""
    import retina_codec.cli.demo as demo_mod

    monkeypatch.setattr(demo_mod, "default_model_path", lambda: tmp_path / "no-such-model")
    d = Demo(DemoSettings(out=str(tmp_path / "out"), preset="small", fit_epochs=1, fit_steps=2, quiet=True))
    d.paths.out.mkdir()
    d.stage_recording()
    d.stage_model()
    text = capsys.readouterr().out
    assert "not found: fitting a small BN-CNN" in text
    assert (tmp_path / "out" / "model" / "model.json").exists()
    assert d.model.input_spec.history == 20
    d.close()


def test_classifier_stage_runs_the_classify_stats_command():
    argv = classifier_argv(Path("x/classifiers"), 3)
    if argv is None:
        pytest.skip("the classifier comparison is not installed")
    from retina_codec.cli.main import build_parser

    args = build_parser().parse_args(argv)  # a valid classify-stats command line
    assert args.command == "classify-stats" and args.model == "digits-cnn" and args.max_per_class == 3


def test_readme_and_docs_links_point_to_existing_files():
    import re

    root = Path(__file__).resolve().parents[1]
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "figures" / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_demo_rejects_a_missing_model_before_simulating(tmp_path, capsys):
    assert main(["-q", "demo", "--out", str(tmp_path / "out"), "--model", str(tmp_path / "nope"),
                 "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "no fitted model there" in err and str(tmp_path / "nope") in err
    assert not (tmp_path / "out").exists()
