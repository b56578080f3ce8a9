"""The report page against the stores: numbers read back with h5py, a well-formed self-contained page with
user strings escaped, and partial, broken or foreign folders giving notes or a one-line error."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
from _demo_helpers import demo_folder
from _plot_helpers import capture_figures

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
def test_a_silent_cell_sta_is_blank_in_the_rf_grid_not_a_fake_one_pixel_rf(demo, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import retina_codec.plots.rf as prf
    from retina_codec.report import figures

    rf = tmp_path / "rf.h5"
    shutil.copy(demo[0] / "rf.h5", rf)
    with h5py.File(rf, "r+") as f:  # cell 0 fired no spike in white noise: its STA is NaN
        f["sta/sta"][0] = np.nan
        f["sta/n_spikes"][0] = 0
    figs = capture_figures(monkeypatch, prf)
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
