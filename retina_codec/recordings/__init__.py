"""Recordings: stimulus movies and responses on one frame grid (NWB, Baccus-lab h5, simulated)."""

from .binning import bin_spikes, frame_edges, resample_rates
from .cells import CELL_RULE, cell_index, resolve_cells
from .frames import ArrayFrames, ConcatFrames, FrameSource, H5Frames, IndexedFrames
from .ground_truth import GroundTruth
from .inspect import describe, format_description
from .labh5 import read_lab_h5
from .nwb import read_nwb, write_nwb
from .recording import SPLITS, Recording, WindowBatch
from .windows import first_valid_bin, history_windows, window_start

__all__ = [
    "Recording", "WindowBatch", "SPLITS", "GroundTruth",
    "FrameSource", "ArrayFrames", "H5Frames", "IndexedFrames", "ConcatFrames",
    "bin_spikes", "frame_edges", "resample_rates",
    "history_windows", "window_start", "first_valid_bin",
    "read_nwb", "write_nwb", "read_lab_h5", "describe", "format_description",
    "cell_index", "resolve_cells", "CELL_RULE",
]
