"""Lazy frame access (recordings.frames): a closed file is a RecordingError naming the file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from retina_codec.errors import RecordingError
from retina_codec.recordings.frames import H5Frames


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
