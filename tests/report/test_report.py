"""`retina-codec report DIR`: one self-contained HTML file whose numbers come from the stores, and whose
figures load in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import h5py
import pytest
from _demo_helpers import demo_folder

from retina_codec.cli.main import main
from retina_codec.report import build_report
from retina_codec.report.builder import fmt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMG = re.compile(r"<img [^>]*src='([^']*)'")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def report_with_classifiers(demo, tmp_path_factory):
    """A copy of the demo folder with a (fast, statistics-only) classifier comparison, and its report."""
    folder = tmp_path_factory.mktemp("with_classifiers") / "demo"
    shutil.copytree(demo, folder)
    assert main(["-q", "classify-stats", "digits-cnn", "digits", "--max-per-class", "3", "--no-modes",
                 "--out", str(folder / "classifiers")]) == 0
    return folder, build_report(folder, quiet=True)


def test_report_is_one_self_contained_html_file(report_with_classifiers):
    _, path = report_with_classifiers
    text = path.read_text(encoding="utf-8")
    srcs = IMG.findall(text)
    # fit 2, contributions 2, modes 4, correlations 2, RFs 3, conditioned 2 layers x 4 cells, classifiers 1
    assert len(srcs) == 22
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", text)  # nothing fetched from elsewhere
    for anchor in ("overview", "fit", "contributions", "modes", "correlations", "rf", "conditioned", "sources",
                   "classifiers"):
        assert f"<section id='{anchor}'>" in text
    assert "This section could not be built" not in text and "could not be made" not in text
    assert "Contributions are sparser than activations" in text or "Hoyer (contrib.)" in text


def test_report_numbers_are_read_from_the_stores(demo, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(demo, folder, ignore=shutil.ignore_patterns("report*"))
    with h5py.File(folder / "fit.h5", "r+") as f:
        f["naturalscene"].attrs["mean_r_response"] = 0.123456
    with h5py.File(folder / "rf.h5", "r+") as f:
        f["ln_truth/r_sta"][0] = 0.654321
    with h5py.File(folder / "contributions.h5", "r") as f:
        import json

        rel = json.loads(f.attrs["completeness"])["conv2"]["total_rel"]
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    assert "<td>0.123</td>" in text
    assert "<td>0.654</td>" in text
    assert f"<td>{rel:.3g}</td>" in text or f"<td>{rel:.2e}</td>" in text


def test_report_says_which_stores_are_missing(demo, tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copy(demo / "fit.h5", folder / "fit.h5")
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    assert "mean r (true rate)" in text
    assert "<code>contributions.h5</code> is not in this folder" in text
    assert "<code>rf.h5</code> is not in this folder" in text
    assert "This section could not be built" not in text


def test_report_command_writes_the_file_and_rejects_a_missing_folder(demo, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["-q", "report", str(demo), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["-q", "report", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


CHECK = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-loaded', String(imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }).length));
  document.body.setAttribute('data-widths', imgs.map(function (i) { return i.naturalWidth; }).join(','));
});</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_report_figures_load_in_headless_chromium(report_with_classifiers, tmp_path):
    _, path = report_with_classifiers
    page = tmp_path / "check.html"
    page.write_text(path.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    n = re.search(r'data-images="(\d+)"', dom)
    loaded = re.search(r'data-loaded="(\d+)"', dom)
    assert n and loaded, dom[-2000:]
    assert int(n.group(1)) == len(IMG.findall(path.read_text(encoding="utf-8"))) == 22
    assert int(loaded.group(1)) == int(n.group(1)), re.search(r'data-widths="([^"]*)"', dom).group(1)


def test_a_broken_image_is_caught_by_the_browser_check(tmp_path):
    """The check itself: a page with one valid and one corrupt embedded PNG reports one loaded image."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs it)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.savefig(tmp_path / "ok.png")
    plt.close(fig)
    good = base64.b64encode((tmp_path / "ok.png").read_bytes()).decode()
    page = tmp_path / "p.html"
    page.write_text(f"<html><body><img src='data:image/png;base64,{good}'>"
                    f"<img src='data:image/png;base64,AAAA'>{CHECK}</body></html>")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="2"' in dom and 'data-loaded="1"' in dom


def test_report_numbers_print_counts_in_full():
    assert fmt(1571.0) == "1,571" and fmt(123456.7) == "123,457" and fmt(2400) == "2,400"
    assert fmt(0.30412) == "0.304" and fmt(6.92e-4) == "6.92e-04" and fmt(float("nan")) == "–"
