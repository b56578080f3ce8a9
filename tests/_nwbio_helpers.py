"""Small recordings and hand-built files for the NWB / lab-h5 I/O tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject
from pynwb.image import OpticalSeries
from pynwb.misc import Units

from retina_codec.recordings import ArrayFrames, GroundTruth, Recording


def small_ground_truth(t: int, n: int, h: int, w: int, seed: int = 0) -> GroundTruth:
    """A GroundTruth with every field filled (S=4 subunits, A=2 amacrines, one LN cell)."""
    rng = np.random.default_rng(seed)
    s, a = 4, 2
    return GroundTruth(
        true_rates=rng.random((t, n)).astype(np.float32) * 20,
        cell_types=np.array(["ON", "OFF", "ON-OFF", "LN"][:n]),
        cell_centers=rng.random((n, 2)).astype(np.float32) * h,
        pooling_weights=rng.random((n, s)).astype(np.float32),
        subunit_positions=rng.random((s, 2)).astype(np.float32) * w,
        subunit_polarity=np.array([1, -1, 1, -1], np.int8),
        amacrine_positions=rng.random((a, 2)).astype(np.float32),
        amacrine_weights=rng.random((s, a)).astype(np.float32),
        ln_cells=np.array([n - 1]),
        ln_filters=rng.standard_normal((1, 4, h, w)).astype(np.float32),
        bipolar_traces=rng.random((t, s)).astype(np.float32),
        amacrine_traces=rng.random((t, a)).astype(np.float32),
        params={"seed": seed, "sizes": {"subunits": s, "amacrines": a}, "types": ["ON", "OFF"],
                "stages": [{"name": "bipolar", "tau": 0.02}, {"name": "amacrine", "tau": 0.05}]},
    )


def natural_recording(t: int = 240, n: int = 4, h: int = 5, w: int = 7, start: float = 0.0, seed: int = 0,
                      name: str = "natural", ground_truth: bool = True) -> Recording:
    """uint8 frames with scale 1/255, Poisson counts, explicit splits, normalisation and ground truth."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w), dtype=np.uint8)
    times = start + np.arange(t) / 100.0
    resp = rng.poisson(0.7, (t, n)).astype(np.float32)
    a, b = int(0.8 * t), int(0.9 * t)
    return Recording(
        stimulus=ArrayFrames(frames, scale=1 / 255), frame_times=times, frame_rate=100.0, responses=resp,
        cell_ids=[f"cell{i}" for i in range(n)],
        intervals={"train": [[times[0], times[a]]], "validation": [[times[a], times[b]]],
                   "test": [[times[b], times[-1] + 0.01]]},
        stimulus_name=name, norm_mean=0.5, norm_std=0.29,
        provenance={"simulator": "test", "seed": seed, "nested": {"a": [1, 2], "b": "x"}},
        ground_truth=small_ground_truth(t, n, h, w, seed) if ground_truth else None,
    )


def whitenoise_recording(t: int = 160, n: int = 4, h: int = 5, w: int = 7, start: float = 10.0,
                         seed: int = 1) -> Recording:
    """float32 frames (stored as float32), counts, no explicit intervals (splits by fraction)."""
    rng = np.random.default_rng(seed)
    return Recording(
        stimulus=rng.choice([-1.0, 1.0], (t, h, w)).astype(np.float32), frame_times=start + np.arange(t) / 100.0,
        frame_rate=100.0, responses=rng.poisson(1.2, (t, n)).astype(np.float32),
        cell_ids=[f"cell{i}" for i in range(n)], stimulus_name="whitenoise",
    )


def new_nwbfile() -> NWBFile:
    """An empty NWBFile with a subject (built by hand, as another lab's exporter would)."""
    return NWBFile(session_description="hand-built test file", identifier="test-file",
                   session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
                   subject=Subject(subject_id="s1", species="Ambystoma tigrinum", sex="U", age="P1Y"))


def optical_series(name: str, data_txy: np.ndarray, **timing) -> OpticalSeries:
    """An OpticalSeries from data already in NWB order ``(frame, x, y)``."""
    if "timestamps" not in timing and "rate" not in timing:
        timing = {"starting_time": 0.0, "rate": 100.0}
    return OpticalSeries(name=name, data=data_txy, unit="a.u.", distance=0.1, field_of_view=[0.01, 0.01],
                         orientation="lower left", **timing)


def write_nwbfile(nwbfile: NWBFile, path: Path) -> Path:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def write_lab_h5(path: Path, n_train: int = 200, n_test: int = 60, n: int = 3, h: int = 6, w: int = 8,
                 dtype: str = "uint8", seed: int = 0, test_starts_at_zero: bool = True) -> dict:
    """A Baccus-lab style h5 file; returns the arrays written (stimulus (T,H,W), responses (N,T), times)."""
    rng = np.random.default_rng(seed)
    out = {}
    with h5py.File(path, "w") as f:
        for part, t in (("train", n_train), ("test", n_test)):
            g = f.create_group(part)
            if dtype == "uint8":
                stim = rng.integers(0, 256, (t, h, w), dtype=np.uint8)
            else:
                stim = rng.standard_normal((t, h, w)).astype(dtype)
            start = 0.0 if (part == "train" or test_starts_at_zero) else n_train / 100.0 + 5.0
            time = start + np.arange(t) / 100.0
            binned = rng.poisson(0.5, (n, t)).astype(np.float32)
            rate = binned * 100.0 + 0.5
            g.create_dataset("time", data=time)
            g.create_dataset("stimulus", data=stim, chunks=(min(t, 32), h, w))
            g.create_dataset("response/binned", data=binned)
            g.create_dataset("response/firing_rate_10ms", data=rate)
            out[part] = {"stimulus": stim, "time": time, "binned": binned, "firing_rate_10ms": rate}
    return out


def huge_stimulus_nwb(tmp: Path, frames: int = 100_000_000) -> Path:
    """An NWB file whose stimulus data declares ``frames`` float frames but stores only its first chunk."""
    f = new_nwbfile()
    f.add_stimulus(optical_series("movie", np.zeros((50, 3, 2), np.float32)))
    f.units = Units(name="units", description="test units")
    f.units.add_unit(spike_times=[0.1, 0.2])
    path = write_nwbfile(f, tmp / "huge.nwb")
    with h5py.File(path, "r+") as h:
        old = h["stimulus/presentation/movie/data"]
        attrs = dict(old.attrs)
        del h["stimulus/presentation/movie/data"]
        new = h.create_dataset("stimulus/presentation/movie/data", shape=(frames, 3, 2), dtype=np.float32,
                               chunks=(1024, 3, 2))
        new[:1024] = 0.0
        for k, v in attrs.items():
            new.attrs[k] = v
    return path
