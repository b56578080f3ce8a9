"""RF store round trip, figures written from small inputs, and the `retina-codec rf` command end to end."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from _rf_helpers import write_rf_cli_inputs

from retina_codec.cli.main import main
from retina_codec.plots.rf import plot_conditioned_gallery, plot_rank1, plot_rf_grid
from retina_codec.recordings import Recording
from retina_codec.rf.conditioned import ConditionedRFAccumulator, active_combinations
from retina_codec.rf.gaussian_fit import fit_gaussians, gaussian_2d
from retina_codec.rf.sta import spike_triggered_average
from retina_codec.stores.codec import decode_attrs
from retina_codec.stores.rf import read_rf, write_rf


def _recording(t=300, hw=10, n=3, seed=0):
    rng = np.random.default_rng(seed)
    stim = rng.choice(np.array([-1.0, 1.0], np.float32), (t, hw, hw))
    counts = rng.poisson(0.5, (t, n)).astype(np.float32)
    return Recording(stim, np.arange(t) / 100.0, 100.0, counts, cell_ids=[f"c{i}" for i in range(n)],
                     intervals={"train": [[0, 2.4]], "validation": [[2.4, 2.7]], "test": [[2.7, 3.0]]})


def _conditioned(n_modes=2, cells=2, h=4, hw=(6, 6), t=40):
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (t, n_modes)) * (rng.uniform(0, 1, (t, n_modes)) < 0.5)
    combos, code = active_combinations(a)
    acc = ConditionedRFAccumulator(n_modes, combos, cells, h, hw)
    acc.update(torch.randn(t, cells, h, *hw), torch.as_tensor(a), torch.as_tensor(code))
    return acc.result(list(range(cells)))


def test_store_round_trips_results_and_combinations(tmp_path):
    sta = spike_triggered_average(_recording(), history=4, quiet=True)
    cond = _conditioned()
    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"model_hash": "abc", "history": 4}, sta=sta, conditioned=cond,
             rank1={"spatial": np.ones((3, 10, 10))})
    back = read_rf(path)
    assert back["attrs"]["model_hash"] == "abc" and back["attrs"]["content"] == "retina-codec receptive fields"
    np.testing.assert_allclose(back["sta"]["sta"], sta.sta, atol=1e-6)
    assert back["sta"]["cell_ids"] == ["c0", "c1", "c2"] and back["sta"]["history"] == 4
    assert back["conditioned"]["combos"] == cond.combos
    np.testing.assert_allclose(back["conditioned"]["mode_rf"], cond.mode_rf, atol=1e-6)
    with h5py.File(path) as f:
        assert "description" in f["sta/sta"].attrs
    assert not list(tmp_path.glob(".rf.h5*"))  # no temporary left behind


def test_figures_are_written(tmp_path):
    maps = np.stack([gaussian_2d((12, 12), 4 + i, 6, 2, 1.5, amplitude=(-1) ** i) for i in range(4)])
    plot_rf_grid(maps, tmp_path / "grid.png", titles=list("abcd"), fits=fit_gaussians(maps))
    plot_rank1(maps, np.random.default_rng(0).standard_normal((4, 8)), tmp_path / "rank1.png",
               lags_s=np.arange(-8, 0) / 100.0)
    cond = _conditioned()
    plot_conditioned_gallery(cond, 1, tmp_path / "gallery.png", mode_names=["ON", "OFF"])
    plot_conditioned_gallery(read_rf_like(cond, tmp_path), 0, tmp_path / "gallery_from_file.png")
    for name in ("grid.png", "rank1.png", "gallery.png", "gallery_from_file.png"):
        p = tmp_path / name
        assert p.exists() and p.stat().st_size > 5000
        assert p.read_bytes()[:4] == b"\x89PNG"


def read_rf_like(cond, tmp_path):
    write_rf(tmp_path / "c.h5", conditioned=cond)
    return read_rf(tmp_path / "c.h5")["conditioned"]


@pytest.fixture()
def cli_inputs(tmp_path):
    from retina_codec.models import save_model
    from retina_codec.models.ln import LNModel
    from retina_codec.recordings.nwb import write_nwb

    rec = _recording()
    nwb = write_nwb(rec, tmp_path / "rec.nwb")
    model = LNModel(3, history=4, frame_shape=(10, 10), init_std=0.05)
    model_path = save_model(model, tmp_path / "model")
    bins = rec.window_bins("test", 4)
    rng = np.random.default_rng(0)
    from retina_codec.modes import ModeDecomposer
    from retina_codec.modes.store import write_modes

    x = rng.normal(size=(len(bins), 4)).astype(np.float32)
    sae = ModeDecomposer(kind="relu", n_modes=3, max_epochs=2, quiet=True).fit(x)
    loadings = rng.uniform(0, 1, (len(bins), 3)) * (rng.uniform(0, 1, (len(bins), 3)) < 0.5)
    write_modes(tmp_path / "modes.h5", sae, loadings=loadings[:, : len(sae.atoms_)], bins=bins)
    return tmp_path, model_path, nwb


def test_rf_command_writes_results_and_figures(cli_inputs):
    tmp, model_path, nwb = cli_inputs
    out = tmp / "rf.h5"
    code = main(["-q", "rf", str(model_path), str(nwb), "--modes", str(tmp / "modes.h5"), "--out", str(out),
                 "--model-sta-samples", "32", "--cells", "c0", "2"])
    assert code == 0
    back = read_rf(out)
    assert {"sta", "model_sta", "rank1", "gaussian", "conditioned", "sources"} <= set(back)
    assert back["model_sta"]["gradient"].shape == (2, 4, 10, 10)
    assert back["conditioned"]["mode_rf"].shape == (3, 2, 4, 10, 10)
    assert len(back["attrs"]["model_hash"]) == 64
    figs = sorted(p.name for p in (tmp / "rf_figures").glob("*.png"))
    assert figs == ["conditioned_c0.png", "conditioned_c2.png", "rf_grid.png", "rf_rank1.png", "sta_grid.png"]


def test_rf_command_reports_a_bad_modes_file_in_one_line(cli_inputs, capsys):
    tmp, model_path, nwb = cli_inputs
    with h5py.File(tmp / "bad.h5", "w") as f:
        f["something"] = np.zeros(3)
    code = main(["-q", "rf", str(model_path), str(nwb), "--modes", str(tmp / "bad.h5"), "--out",
                 str(tmp / "x.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "loadings" in err[0]
    assert not (tmp / "x.h5").exists()


def test_gallery_cell_is_an_id_first_then_an_index(tmp_path):
    # lab / ROI ids are often digits: "--cell 1" meant index 1 (an IndexError with one stored cell), so a cell
    # called "1" could not be chosen by its id
    from retina_codec.report.figures import conditioned_gallery

    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"history": 4, "cell_ids": ["1", "0"], "frame_rate": 100.0}, conditioned=_conditioned())
    drawn = []
    import retina_codec.plots.rf as prf

    orig = prf.plot_conditioned_gallery
    try:
        prf.plot_conditioned_gallery = lambda cond, j, out, **kw: drawn.append((j, kw["cell_name"]))
        for cell in ("0", "1", 1, "-1"):
            conditioned_gallery(path, cell, tmp_path / "g.png")
    finally:
        prf.plot_conditioned_gallery = orig
    assert drawn == [(1, "0 ( modes)"), (0, "1 ( modes)"), (1, "0 ( modes)"), (1, "0 ( modes)")]
    with pytest.raises(ValueError, match="'7': not among the stored cells"):
        conditioned_gallery(path, "7", tmp_path / "g.png")


@pytest.fixture()
def rf_cli_inputs(tmp_path):
    model, nwb = write_rf_cli_inputs(tmp_path)
    return tmp_path, [model, nwb, "--out", str(tmp_path / "rf.h5"), "--model-sta-samples", "0", "--no-figures"]


@pytest.mark.parametrize("extra,named", [
    (["--cells", "zz"], "neither a cell id nor an index"),  # was a ValueError traceback
    (["--cells", "7"], "neither a cell id nor an index"),  # was an IndexError traceback
    (["--split", "tset"], "available"),  # was: silently every bin
])
def test_rf_command_rejects_unknown_cells_and_splits_in_one_line(rf_cli_inputs, capsys, extra, named):
    from retina_codec.cli.main import main

    tmp, args = rf_cli_inputs
    assert main(["-q", "rf", *args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and extra[1] in err[0]
    assert not (tmp / "rf.h5").exists()
    assert main(["-q", "rf", *args, "--cells", "c2", "0", "--split", "test"]) == 0


def test_write_rf_list_attrs_read_back_as_lists_not_python_reprs(tmp_path):
    # user guide §5: attrs such as cell_ids / mode_names are what figures/conditioned_rfs.py reads back
    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"cell_ids": ["on00", "onoff00"], "mode_names": ("mode0",), "history": 40,
                          "settings": {"threshold": 0.0}})
    a = decode_attrs(read_rf(path)["attrs"])
    assert a["cell_ids"] == ["on00", "onoff00"]
    assert a["mode_names"] == ["mode0"]
    assert a["settings"] == {"threshold": 0.0}
    assert a["history"] == 40


def test_write_rf_array_attrs_are_json_lists(tmp_path):
    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"cells": np.array([6, 12]), "mixed": [np.int64(3), 1.5]})
    a = decode_attrs(read_rf(path)["attrs"])
    assert a["cells"] == [6, 12] and a["mixed"] == [3, 1.5]


def test_the_reader_reads_only_the_groups_asked_for(tmp_path):
    sta = spike_triggered_average(_recording(), history=4, quiet=True)
    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"cell_ids": ["c0", "c1", "c2"]}, sta=sta, rank1={"spatial": np.ones((3, 10, 10))})
    back = read_rf(path, groups=["sta", "not-there"])
    assert set(back) == {"attrs", "sta"} and back["sta"]["cell_ids"] == ["c0", "c1", "c2"]
    assert decode_attrs(back["attrs"])["cell_ids"] == ["c0", "c1", "c2"]
