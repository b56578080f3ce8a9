"""Review of the report, its figures and the demo folder: the numbers on the page are the stores' numbers
(read back with h5py and recomputed where the store keeps the raw data), the page is well-formed and
self-contained with user strings escaped, figures follow the stated colour, sign and time conventions, and
partial, broken or foreign folders give a page with notes or a one-line error."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
from _demo_helpers import FAST, demo_folder

from retina_codec.cli.main import main
from retina_codec.report import build_report
from retina_codec.report.builder import fmt

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(HTMLParser):
    """Strict enough for a generated page: every non-void element closed in order; tables collected per
    section as ``{section id: [(header, rows), ...]}`` with cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []
        self.section = ""
        self.tables: dict[str, list[tuple[list[str], list[list[str]]]]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._head = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self.section = dict(attrs).get("id", "")
        elif tag == "table":
            self.tables.setdefault(self.section, []).append(([], []))
        elif tag == "thead":
            self._head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-3:]}")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            header, rows = self.tables[self.section][-1]
            (header.extend if self._head else rows.append)(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def num(cell: str) -> float:
    """A table cell back to a number ('–' is NaN, thousands separators dropped)."""
    return float("nan") if cell == "–" else float(cell.replace(",", ""))


def close(cell: str, value: float) -> bool:
    """The printed cell equals ``value`` to the 3 significant digits the report prints."""
    v = num(cell)
    return bool(np.isnan(v) and np.isnan(value)) or abs(v - value) <= 5e-3 * abs(value) + 1e-12


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def page(demo, tmp_path_factory):
    """The demo folder's report, rebuilt from a copy, and its parsed page."""
    folder = tmp_path_factory.mktemp("review") / "demo"
    shutil.copytree(demo[0], folder, ignore=shutil.ignore_patterns("report*"))
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    return folder, text, parse(text)


def _table(p: _Page, section: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    for header, rows in p.tables[section]:
        if header and header[0] == first_header:
            return header, rows
    raise AssertionError(f"no table starting with {first_header!r} in section {section!r}")


def test_report_page_is_well_formed_and_self_contained(page):
    _, text, p = page
    assert p.errors == [] and p.stack == []
    assert not {"script", "link", "iframe", "object", "embed", "base"} & p.tags
    for name, value in p.attrs:
        if name in ("src", "href"):
            assert value.startswith(("data:image/png;base64,", "#")), (name, value[:60])
    assert not re.search(r"url\(|@import|https?://", text.split("<body>", 1)[0])  # nothing fetched by the CSS
    for _, tables in p.tables.items():
        for header, _ in tables:
            assert len(set(header)) == len(header), header  # no two columns with the same name


def test_report_fit_numbers_equal_the_fit_store(page):
    folder, _, p = page
    with h5py.File(folder / "fit.h5", "r") as f:
        ids = [c.decode() for c in f["cell_ids"][...]]
        stores = {s: {k: f[s][k][...] for k in ("bins", "r_response", "r_true_rate")} for s in f if s != "cell_ids"
                  and isinstance(f[s], h5py.Group)}
    _, rows = _table(p, "fit", "stimulus")
    assert [r[0] for r in rows] == list(stores)
    for r in rows:
        g = stores[r[0]]
        assert num(r[1]) == len(g["bins"])
        assert close(r[2], float(np.nanmean(g["r_response"]))) and close(r[3], float(np.nanmean(g["r_true_rate"])))
    header, rows = _table(p, "fit", "cell")
    assert [r[0] for r in rows] == ids
    for s in stores:
        col = header.index(f"{s}: r responses")
        assert all(close(r[col], float(stores[s]["r_response"][i])) for i, r in enumerate(rows))
        assert all(close(r[col + 1], float(stores[s]["r_true_rate"][i])) for i, r in enumerate(rows))


def test_report_completeness_equals_the_error_recomputed_from_the_contributions(page):
    """total = Σ|ΣC − ΔF| / Σ|ΔF| and the median per-bin relative error, from the stored arrays."""
    folder, text, p = page
    _, rows = _table(p, "contributions", "layer")
    with h5py.File(folder / "contributions.h5", "r") as f:
        delta = f["f_x"][...].astype(np.float64) - f["f_baseline"][...]
        n = len(f["bins"])
        for r in rows:
            err = np.abs(f["contributions"][r[0]][...].astype(np.float64).sum(1) - delta)
            assert r[1] == "×".join(str(s) for s in f["contributions"][r[0]].shape[1:])
            assert close(r[2], float(err.sum() / np.abs(delta).sum()))
            assert close(r[3], float(np.median(err / np.abs(delta))))
    assert f"for {n} bins ({fmt(n / 100.0)} s)" in text  # 240 bins at 100 Hz: 2.4 s, not "2 s"


def test_report_modes_and_clusters_equal_the_modes_stores(page):
    folder, _, p = page
    _, rows = _table(p, "modes", "layer")
    for r in rows:
        with h5py.File(folder / f"modes_{r[0]}.h5", "r") as f:
            n, k = f["loadings"].shape
            metrics = json.loads(f.attrs["metrics"])
        assert (num(r[3]), num(r[7])) == (k, n)
        assert close(r[4], metrics["explained_variance"]) and close(r[5], metrics["l0"])
    tables = [t for t in p.tables["correlations"] if t[0] and t[0][0] == "cluster"]
    layers = [r[0] for r in rows]
    assert len(tables) == len(layers)
    for layer, (_, crows) in zip(layers, tables):
        s = json.loads((folder / f"modes_{layer}_summary.json").read_text())
        labels = np.asarray(s["clusters"]["labels"])
        for r in crows:
            c = int(r[0].split()[-1])
            assert r[1].split(", ") == [s["cell_ids"][i] for i in np.flatnonzero(labels == c)]
            assert num(r[3]) == int((labels == c).sum())


def test_report_rf_and_sources_numbers_equal_the_rf_stores(page):
    folder, _, p = page
    _, rows = _table(p, "rf", "LN cell")
    with h5py.File(folder / "rf.h5", "r") as f:
        ln = {k: f["ln_truth"][k][...] for k in ("cell_ids", "r_sta", "r_model_sta")}
    assert [r[0] for r in rows] == [c.decode() for c in ln["cell_ids"]]
    for i, r in enumerate(rows):
        assert close(r[1], float(ln["r_sta"][i])) and close(r[2], float(ln["r_model_sta"][i]))
    summaries = [t for t in p.tables["sources"] if t[0] and t[0][1] == "modes with the largest unique R²"]
    details = [t for t in p.tables["sources"] if t[0] and t[0][1] == "mode"]
    layers = sorted(Path(x).stem[len("rf_conditioned_"):] for x in folder.glob("rf_conditioned_*.h5"))
    assert len(summaries) == len(details) == len(layers)
    for layer, (_, srows), (_, drows) in zip(layers, summaries, details):
        with h5py.File(folder / f"rf_conditioned_{layer}.h5", "r") as f:
            ids, names = json.loads(f.attrs["cell_ids"]), json.loads(f.attrs["mode_names"])
            r2, uni = f["sources/r2_irf"][...], f["sources/unique_r2"][...]
            count = f["sources/active_count"][...]
        assert [r[0] for r in srows] == ids
        for j, r in enumerate(srows):
            assert close(r[2], float(r2[j])) and close(r[3], float(np.nanmax(uni[:, j])))
            assert r[1].split(", ")[0] == names[int(np.nanargmax(uni[:, j]))]
        for r in drows:
            i, j = names.index(r[1]), ids.index(r[0])
            assert num(r[2]) == int(count[i]) and close(r[3], float(uni[i, j]))


def test_report_numbers_print_counts_in_full():
    assert fmt(1571.0) == "1,571" and fmt(123456.7) == "123,457" and fmt(2400) == "2,400"
    assert fmt(0.30412) == "0.304" and fmt(6.92e-4) == "6.92e-04" and fmt(float("nan")) == "–"


def _escaped_copy(src: Path, dst: Path, bad: str) -> None:
    """A copy of the demo folder whose cell ids contain ``bad`` in every store that names cells."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report*", "*.nwb"))

    def sub(c: str) -> str:
        return c.replace("00", bad)

    with h5py.File(dst / "fit.h5", "r+") as f:
        ids = [sub(c.decode()) for c in f["cell_ids"][...]]
        del f["cell_ids"]
        f.create_dataset("cell_ids", data=np.array(ids, dtype=h5py.string_dtype()))
    for path in dst.glob("modes_*_summary.json"):
        s = json.loads(path.read_text())
        s["cell_ids"] = [sub(c) for c in s["cell_ids"]]
        path.write_text(json.dumps(s))
    with h5py.File(dst / "rf.h5", "r+") as f:
        f.attrs["cell_ids"] = json.dumps([sub(c) for c in json.loads(f.attrs["cell_ids"])])
        ids = [sub(c.decode()) for c in f["ln_truth/cell_ids"][...]]
        del f["ln_truth/cell_ids"]
        f["ln_truth"].create_dataset("cell_ids", data=np.array(ids, dtype=h5py.string_dtype()))
    for path in dst.glob("rf_conditioned_*.h5"):
        with h5py.File(path, "r+") as f:
            f.attrs["cell_ids"] = json.dumps([sub(c) for c in json.loads(f.attrs["cell_ids"])])


def test_cell_ids_with_markup_and_slashes_are_escaped_and_kept_out_of_figure_paths(demo, tmp_path):
    bad = "<b>&amp;/../../x'\""
    folder = tmp_path / "a<&b" / "demo"
    _escaped_copy(demo[0], folder, bad)
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    p = parse(text)
    assert p.errors == [] and p.stack == []
    assert "&lt;b&gt;&amp;amp;/../../x&#x27;&quot;" in text and "a&lt;&amp;b" in text
    _, rows = _table(p, "fit", "cell")
    assert rows[0][0] == "off" + bad  # the parser reads back exactly the stored id
    assert "could not be made" not in text and "could not be built" not in text
    figs = folder / "report_figures"
    assert all(q.parent == figs and q.is_file() for q in figs.rglob("*")), sorted(map(str, figs.rglob("*")))
    assert not list(folder.parent.glob("*.png")) and not list(folder.glob("*.png"))


def test_conditioned_rfs_are_reported_without_their_modes_store(demo, tmp_path):
    folder = tmp_path / "cond"
    folder.mkdir()
    shutil.copy(demo[0] / "rf_conditioned_conv2.h5", folder)
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    assert "No mode-conditioned RFs" not in text and "No dynamic-RF sources" not in text
    assert "conditioned_conv2_off00.png" in text and "could not be made" not in text
    assert "<code>modes_&lt;layer&gt;.h5</code>" in text  # the modes section still says its store is missing


def test_a_broken_store_is_named_in_its_section(demo, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "fit.h5").write_bytes((demo[0] / "fit.h5").read_bytes()[:20000])  # truncated
    shutil.copy(demo[0] / "modes_conv1.h5", folder)
    (folder / "modes_conv1_summary.json").write_text('{"layer": ')
    assert main(["-q", "report", str(folder)]) == 0
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert "could not be built: StoreReadError: fit.h5: OSError" in text
    assert "could not be built: StoreReadError: modes_conv1_summary.json: JSONDecodeError" in text
    assert "modes_atoms_conv1.png" in text  # the intact modes store still gives its figures


def test_report_command_on_partial_and_missing_folders(demo, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["-q", "report", str(empty)]) == 0
    text = (empty / "report.html").read_text(encoding="utf-8")
    for store in ("fit.h5", "contributions.h5", "rf.h5"):
        assert f"<code>{store}</code> is not in this folder" in text
    assert "No demo.json in this folder" in text and "could not be built" not in text
    capsys.readouterr()
    assert main(["-q", "report", str(empty / "report.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ figure conventions
def _capture(monkeypatch, module):
    """Make ``module``'s save step keep the figure (returned list) instead of closing it."""
    figs = []

    def keep(fig, path, *a, **k):
        figs.append(fig)
        return str(path)

    monkeypatch.setattr(module, "save_figure" if hasattr(module, "save_figure") else "_save", keep)
    return figs


def _on_off_rf(h=10, size=15, sign=1.0):
    """A separable RF ``(h, size, size)``: Gaussian centre of ``sign`` × a biphasic time course that peaks
    positive at the second-to-last frame (oldest frame first)."""
    yy, xx = np.mgrid[:size, :size]
    space = np.exp(-((yy - 7) ** 2 + (xx - 5) ** 2) / 4.0)
    t = np.zeros(h)
    t[-2], t[-5] = 1.0, -0.4
    return sign * t[:, None, None] * space[None]


def test_rf_maps_use_a_symmetric_red_on_blue_off_scale_with_the_decompose_sign(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    import retina_codec.plots.rf_truth as ptruth
    from retina_codec.rf.decompose import space_time_svd

    on, off = _on_off_rf(sign=1.0), _on_off_rf(sign=-1.0)
    figs = _capture(monkeypatch, ptruth)
    lags_ms = (np.arange(10) - 10) * 10.0
    ptruth.plot_sta_model_truth({"STA": np.stack([on, off])}, "unused.png", ["on", "off"], lags_ms=lags_ms)
    fig = figs[0]
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    for im, rf in zip(ims, (on, off)):
        lo, hi = im.get_clim()
        assert lo == -hi and im.get_cmap().name == "RdBu_r"
        shown = np.asarray(im.get_array())
        np.testing.assert_allclose(shown, space_time_svd(rf).spatial[0], atol=1e-12)  # rf.decompose's sign
        centre = im.get_cmap()(im.norm(shown[7, 5]))
        assert (centre[0] > centre[2]) == (rf is on)  # ON centre red, OFF centre blue
    lines = [ax.get_lines()[0] for ax in fig.axes if not ax.images and ax.get_lines()]
    for line in lines:  # the time course: oldest frame left, lags in ms, positive at the peak frame
        np.testing.assert_array_equal(line.get_xdata(), lags_ms)
        assert np.argmax(line.get_ydata()) == 8 and line.get_ydata()[8] > 0
    plt.close("all")

    figs = _capture(monkeypatch, prf)
    sp = np.stack([space_time_svd(on).spatial[0], space_time_svd(off).spatial[0]])
    prf.plot_rf_grid(sp, "unused.png", titles=["on", "off"])
    for ax, sign in zip(figs[0].axes, (1, -1)):
        im = ax.images[0]
        assert im.get_clim()[0] == -im.get_clim()[1]
        rgba = im.get_cmap()(im.norm(np.asarray(im.get_array())[7, 5]))
        assert (rgba[0] > rgba[2]) == (sign > 0)
    plt.close("all")


def test_conditioned_gallery_time_axes_are_in_ms_oldest_first(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    from retina_codec.rf.decompose import space_time_svd

    rf = _on_off_rf()
    c = space_time_svd(rf)
    s, t = c.spatial[0], c.temporal[0]
    cond = {"mean_spatial": s[None], "mean_temporal": t[None], "mode_spatial": np.stack([s[None]] * 2),
            "mode_temporal": np.stack([t[None]] * 2), "combo_spatial": s[None, None], "combo_temporal": t[None, None],
            "combos": [(0, 1)], "combo_frequency": np.array([0.5]), "mode_count": np.array([3, 4])}
    figs = _capture(monkeypatch, prf)
    lags_s = (np.arange(10) - 10) / 100.0
    prf.plot_conditioned_gallery(cond, 0, "unused.png", lags_s=lags_s)
    time_axes = [ax for ax in figs[0].axes if ax.get_lines() and ax.get_visible() and ax.axison]
    assert len(time_axes) == 4
    for ax in time_axes:
        np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), lags_s * 1e3)  # -100 ... -10 ms, left to right
        assert ax.get_xlabel() == "ms"
    plt.close("all")


def test_fit_panel_keeps_negative_true_rate_bars_in_view(monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.fit as pfit

    figs = _capture(monkeypatch, pfit)
    pfit.plot_fit_per_cell({"whitenoise": (np.array([0.5, 0.1]), np.array([0.4, -0.6]))}, ["a", "b"], "unused.png",
                           cell_types=["ON", "OFF"])
    ax = figs[0].axes[0]
    assert ax.get_ylim()[0] < -0.6
    labels = ax.get_xticklabels()
    assert [lab.get_color() for lab in labels] == ["#c0392b", "#1f5fa8"]  # ON red, OFF blue
    plt.close("all")


# --------------------------------------------------------------------------------------------- demo folder
def test_demo_refuses_a_file_or_a_foreign_folder_as_out(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    assert main(["-q", "demo", "--out", str(afile), "--preset", "small"]) == 2
    assert "is a file" in capsys.readouterr().err
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.tex").write_text("mine")
    (user / "report.html").write_text("my own report")
    assert main(["-q", "demo", "--out", str(user), "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "not a demo folder" in err and "thesis.tex" in err and err.count("\n") == 1
    assert (user / "report.html").read_text() == "my own report" and sorted(p.name for p in user.iterdir()) == [
        "report.html", "thesis.tex"]


def test_demo_out_check_accepts_demo_folders_and_interrupted_ones(demo, tmp_path):
    from retina_codec.cli.demo import check_out_folder

    check_out_folder(demo[0])  # a finished demo folder (with its own files added later too)
    check_out_folder(tmp_path / "new")  # not there yet
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in (".simulated_retina_small_seed0.nwb.abc123.nwb", "simulated_retina_small_seed0.nwb", "fit.h5",
                 "contributions.h5.partial", "contributions.h5.shard0-of-2.partial", "modes_conv1.h5",
                 "modes_conv1_summary.json", "rf_conditioned_conv1.h5"):
        (killed / name).write_bytes(b"")
    (killed / "model").mkdir()
    check_out_folder(killed)  # a demo killed before demo.json was written


@pytest.mark.slow
def test_demo_killed_mid_stage_leaves_no_store_and_resumes(demo, tmp_path):
    """SIGKILL during the fit stage: no fit.h5 under its name (only a hidden temporary file); the next run
    makes a complete fit.h5."""
    src, model = demo
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(src / "simulated_retina_small_seed0.nwb", out)
    cmd = [sys.executable, "-m", "retina_codec.cli.main", "demo", "--out", str(out), "--model", str(model), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("[3/9]"):
                break
        deadline = time.time() + 60
        while not list(out.glob(".fit.h5.*")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the fit stage ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (out / "fit.h5").exists()
    from retina_codec.cli.demo import Demo, DemoSettings

    d = Demo(DemoSettings(out=str(out), preset="small", model=str(model), quiet=True))
    try:
        d.stage_recording()
        d.stage_fit()
    finally:
        d.close()
    with h5py.File(out / "fit.h5", "r") as f:
        assert f["naturalscene/r_response"].shape == (20,) and f["whitenoise/predicted"].shape[1] == 20


def test_demo_rejects_unknown_rf_cells_before_the_long_stages(demo, tmp_path, capsys):
    src, model = demo
    out = tmp_path / "cells"
    out.mkdir()
    shutil.copy(src / "simulated_retina_small_seed0.nwb", out)
    for bad in ("nope", "99"):
        assert main(["-q", "demo", "--out", str(out), "--model", str(model), *FAST, "--rf-cells", "on00", bad]) == 2
        err = capsys.readouterr().err
        assert f"--rf-cells {bad}: not a cell id or index (0-19)" in err and "off00" in err
    assert sorted(p.name for p in out.iterdir()) == ["simulated_retina_small_seed0.nwb"]  # nothing computed


def test_a_silent_cell_sta_is_blank_in_the_rf_grid_not_a_fake_one_pixel_rf(demo, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    from retina_codec.report import figures

    rf = tmp_path / "rf.h5"
    shutil.copy(demo[0] / "rf.h5", rf)
    with h5py.File(rf, "r+") as f:  # cell 0 fired no spike in white noise: its STA is NaN
        f["sta/sta"][0] = np.nan
        f["sta/n_spikes"][0] = 0
    figs = _capture(monkeypatch, prf)
    figures.rf_grid(rf, tmp_path / "grid.png", source="sta")
    shown = [np.ma.filled(np.ma.asarray(ax.images[0].get_array(), dtype=float), np.nan) for ax in figs[0].axes
             if ax.images]
    assert np.isnan(shown[0]).all()  # blank, where a zero STA's SVD gave a full-scale corner pixel
    assert np.isfinite(shown[1]).all() and np.abs(shown[1]).max() > 0
    plt.close("all")


def test_a_report_written_elsewhere_puts_its_figures_beside_it_not_in_the_demo_folder(demo, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(demo[0], folder, ignore=shutil.ignore_patterns("report*"))
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    out = build_report(folder, tmp_path / "elsewhere" / "mine.html", quiet=True)
    assert out.exists() and sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert len(list((tmp_path / "elsewhere" / "mine_figures").glob("*.png"))) > 5


def test_the_run_overview_of_a_wrapped_model_says_its_architecture_and_history(demo, tmp_path):
    # a demo run with --model my_model.py:build stores the wrapped module's description, whose config is None
    folder = tmp_path / "wrapped"
    shutil.copytree(demo[0], folder, ignore=shutil.ignore_patterns("report*", "*.nwb"))
    with h5py.File(folder / "fit.h5", "r+") as f:
        m = json.loads(f.attrs["model"])
        f.attrs["model"] = json.dumps({**m, "architecture": "wrapped:MyCNN", "config": None})
    text = build_report(folder, quiet=True).read_text(encoding="utf-8")
    assert "could not be built" not in text
    _, rows = _table(parse(text), "overview", "item")
    assert ["architecture", "wrapped:MyCNN"] in rows and ["history (frames)", str(m["input_spec"]["history"])] in rows
