"""The datasets/ recipe writes a Baccus-lab h5 file that reads back and converts to NWB."""

import runpy
import sys
from pathlib import Path

import numpy as np

from retina_codec.cli.main import main
from retina_codec.recordings import read_lab_h5, read_nwb

RECIPE = Path(__file__).resolve().parents[2] / "datasets" / "make_lab_h5.py"


def test_lab_h5_recipe_reads_back_and_converts(tmp_path, monkeypatch):
    out = tmp_path / "naturalscene.h5"
    monkeypatch.setattr(sys, "argv", [str(RECIPE), str(out), "--preset", "small"])
    try:
        runpy.run_path(str(RECIPE), run_name="__main__")
    except SystemExit as stop:
        assert stop.code == 0
    with read_lab_h5(out) as rec:
        assert rec.frame_shape == (50, 50) and rec.n_cells == 20
        assert {"train", "validation", "test"} <= set(rec.intervals)
        assert len(rec.split_bins("test")) == 900
        counts = rec.responses.sum()
    assert main(["-q", "convert", str(out), str(tmp_path / "out.nwb")]) == 0
    with read_nwb(tmp_path / "out.nwb") as back:
        assert np.isclose(back.responses.sum(), counts)
