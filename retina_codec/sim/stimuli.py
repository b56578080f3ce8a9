"""Stimulus movies of the simulated retina, as uint8 luminance (0 = black, 255 = white).

- :func:`white_noise`: binary checkerboard, every checker black or white with probability 1/2, new
  every frame.
- :func:`natural_movie`: a ``size x size`` crop of one of scikit-learn's two bundled photographs
  (grey-scaled, block-averaged), moved by fixational jitter (a bounded one-pixel random walk) and by
  saccades to a new random position (sometimes on the other photograph) about once a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import SimulationError

__all__ = ["white_noise", "natural_movie", "NaturalMovie", "sample_photos", "PHOTO_NAMES"]

PHOTO_NAMES = ("china.jpg", "flower.jpg")


def white_noise(n_frames: int, rng: np.random.Generator, size: int = 50, checker: int = 1) -> np.ndarray:
    """``(n_frames, size, size)`` uint8 binary checkerboard (0 or 255), checkers ``checker`` px wide."""
    n = -(-size // checker)
    bits = rng.integers(0, 2, size=(n_frames, n, n), dtype=np.uint8) * np.uint8(255)
    if checker > 1:
        bits = np.repeat(np.repeat(bits, checker, axis=1), checker, axis=2)[:, :size, :size]
    return np.ascontiguousarray(bits)


@lru_cache(maxsize=4)
def sample_photos(downsample: int = 3) -> tuple[np.ndarray, ...]:
    """scikit-learn's bundled photographs, grey (ITU-R 601 luma), block-averaged by ``downsample``.

    Returns a tuple of uint8 ``(rows, cols)`` images (427x640 before downsampling), in
    :data:`PHOTO_NAMES` order. Nothing is downloaded: the images ship with scikit-learn.
    """
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    by_name = {name.replace("\\", "/").rsplit("/", 1)[-1]: img for name, img in zip(data.filenames, data.images)}
    out = []
    for name in PHOTO_NAMES:
        rgb = by_name[name].astype(np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        d = int(downsample)
        h, w = (grey.shape[0] // d) * d, (grey.shape[1] // d) * d
        grey = grey[:h, :w].reshape(h // d, d, w // d, d).mean(axis=(1, 3))
        img = np.clip(np.round(grey), 0, 255).astype(np.uint8)
        img.setflags(write=False)
        out.append(img)
    return tuple(out)


@dataclass
class NaturalMovie:
    """A natural-scene movie and how it was made.

    Attributes
    ----------
    frames : (T, size, size) uint8 luminance.
    positions : (T, 2) int32, top-left ``(row, col)`` of the crop in the (downsampled) photograph.
    photo : (T,) int8, index into :data:`PHOTO_NAMES` of the photograph shown.
    saccade_frames : (K,) int64, frames at which a saccade landed (the crop jumped).
    """

    frames: np.ndarray
    positions: np.ndarray
    photo: np.ndarray
    saccade_frames: np.ndarray


def _saccade_onsets(n_frames: int, rng: np.random.Generator, frame_rate: float, mean_s: float,
                    min_s: float) -> np.ndarray:
    """Frames at which saccades land: gamma-distributed (shape 4) intervals of mean ``mean_s``."""
    onsets, t = [], 0
    while True:
        gap = max(rng.gamma(4.0, mean_s / 4.0), min_s)
        t += max(int(round(gap * frame_rate)), 1)
        if t >= n_frames:
            return np.asarray(onsets, dtype=np.int64)
        onsets.append(t)


def natural_movie(
    n_frames: int,
    rng: np.random.Generator,
    size: int = 50,
    frame_rate: float = 100.0,
    downsample: int = 3,
    saccade_interval_s: float = 1.0,
    min_saccade_interval_s: float = 0.3,
    min_saccade_px: int = 12,
    photo_switch_prob: float = 0.25,
    jitter_step_prob: float = 0.3,
    jitter_max_px: int = 4,
) -> NaturalMovie:
    """A jittered, saccading ``size x size`` crop of the bundled photographs (see module docstring).

    Between saccades the crop follows fixation point + offset, where the offset takes a one-pixel step
    per axis with probability ``jitter_step_prob`` per frame (up or down equally) and is clipped to
    ``±jitter_max_px``. A saccade picks a new fixation point uniformly (at least ``min_saccade_px`` away
    unless the photograph changes, which happens with probability ``photo_switch_prob``) and resets the
    offset to zero.
    """
    photos = sample_photos(downsample)
    limits = [(p.shape[0] - size, p.shape[1] - size) for p in photos]
    if min(min(lim) for lim in limits) < 2 * jitter_max_px:
        raise SimulationError(f"photographs downsampled by {downsample} are too small for {size}-pixel crops")
    onsets = _saccade_onsets(n_frames, rng, frame_rate, saccade_interval_s, min_saccade_interval_s)

    # fixation segments: (photo, fixation point) per segment
    n_seg = len(onsets) + 1
    seg_photo = np.empty(n_seg, np.int8)
    seg_fix = np.empty((n_seg, 2), np.int64)
    photo = int(rng.integers(len(photos)))
    fix = None
    for s in range(n_seg):
        if s > 0 and rng.random() < photo_switch_prob:
            photo, fix = 1 - photo, None
        lim = limits[photo]
        lo, hi = jitter_max_px, (lim[0] - jitter_max_px, lim[1] - jitter_max_px)
        while True:
            new = np.array([rng.integers(lo, hi[0] + 1), rng.integers(lo, hi[1] + 1)])
            if fix is None or np.abs(new - fix).max() >= min_saccade_px:
                break
        fix = new
        seg_photo[s], seg_fix[s] = photo, fix

    # fixational jitter: bounded random walk, reset at each saccade
    steps = rng.choice(np.array([-1, 0, 1], np.int64), size=(n_frames, 2),
                       p=[jitter_step_prob / 2, 1 - jitter_step_prob, jitter_step_prob / 2])
    offsets = []
    bounds = np.concatenate([[0], onsets, [n_frames]])
    m = int(jitter_max_px)
    starts = set(bounds[:-1].tolist())
    oy = ox = 0
    for t, (dy, dx) in enumerate(steps.tolist()):  # clipping makes the walk sequential
        if t in starts:
            oy = ox = 0
        else:
            oy, ox = min(max(oy + dy, -m), m), min(max(ox + dx, -m), m)
        offsets.append((oy, ox))
    offsets = np.asarray(offsets, np.int64).reshape(n_frames, 2)
    seg_index = np.repeat(np.arange(n_seg), np.diff(bounds))
    positions = (seg_fix[seg_index] + offsets).astype(np.int32)
    photo_idx = seg_photo[seg_index]

    frames = np.empty((n_frames, size, size), np.uint8)
    for p, img in enumerate(photos):
        sel = np.flatnonzero(photo_idx == p)
        if sel.size:
            views = np.lib.stride_tricks.sliding_window_view(img, (size, size))
            frames[sel] = views[positions[sel, 0], positions[sel, 1]]
    return NaturalMovie(frames, positions, photo_idx, onsets)
