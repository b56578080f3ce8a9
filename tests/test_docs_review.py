"""Defects found by running the documentation's snippets (README.md, docs/*.md)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from retina_codec.errors import RecordingError
from retina_codec.recordings.frames import H5Frames
from retina_codec.report.stores import decode_attrs
from retina_codec.rf.store import read_rf, write_rf


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


def test_frames_of_a_closed_file_raise_a_recording_error_naming_the_file(tmp_path):
    # user guide §2 used `rec` after its `with read_nwb(...)` block: h5py raised a bare RuntimeError
    path = tmp_path / "frames.h5"
    with h5py.File(path, "w") as f:
        f["stim"] = np.zeros((5, 3, 4), np.uint8)
    f = h5py.File(path, "r")
    frames = H5Frames(f["stim"], transpose=True)
    assert frames[0:2].shape == (2, 4, 3)
    f.close()
    with pytest.raises(RecordingError, match=r"frames\.h5.*closed"):
        frames[0:2]
    with pytest.raises(RecordingError, match="closed"):
        frames.raw(slice(0, 2))


def test_write_rf_array_attrs_are_json_lists(tmp_path):
    path = tmp_path / "rf.h5"
    write_rf(path, attrs={"cells": np.array([6, 12]), "mixed": [np.int64(3), 1.5]})
    a = decode_attrs(read_rf(path)["attrs"])
    assert a["cells"] == [6, 12] and a["mixed"] == [3, 1.5]
