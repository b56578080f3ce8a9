"""Top level: :func:`simulate_retina` builds the natural-scene and white-noise recordings with ground truth."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .._version import __version__
from ..recordings import ArrayFrames, GroundTruth, Recording
from ..stores.codec import to_json
from .circuit import Calibration, Circuit, CircuitOutput
from .kernels import to_window_order
from .layout import Layout, make_layout
from .presets import SimParams, resolve_params
from .stimuli import PHOTO_NAMES, natural_movie, white_noise

__all__ = ["simulate_retina", "SIMULATOR"]

SIMULATOR = "retina_codec.sim"
# independent random streams, spawned from the seed in this order (append only: keeps old seeds valid)
_STREAMS = ("layout", "naturalscene", "whitenoise", "naturalscene_calibration", "whitenoise_calibration",
            "naturalscene_spikes", "whitenoise_spikes")
SPLIT_FRACTIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}


def _movie(kind: str, n_frames: int, rng: np.random.Generator, p: SimParams) -> tuple[np.ndarray, dict]:
    """uint8 frames of one stimulus kind and a JSON-able description of how they were made."""
    if kind == "whitenoise":
        frames = white_noise(n_frames, rng, p.frame_size, p.checker_size)
        return frames, {"kind": "binary white-noise checkerboard", "checker_px": p.checker_size}
    movie = natural_movie(
        n_frames, rng, size=p.frame_size, frame_rate=p.frame_rate, downsample=p.photo_downsample,
        saccade_interval_s=p.saccade_interval_s, min_saccade_interval_s=p.min_saccade_interval_s,
        min_saccade_px=p.min_saccade_px, photo_switch_prob=p.photo_switch_prob,
        jitter_step_prob=p.jitter_step_prob, jitter_max_px=p.jitter_max_px,
    )
    info = {"kind": "natural-scene movie (jitter + saccades)", "photos": list(PHOTO_NAMES),
            "saccade_frames": movie.saccade_frames.tolist()}
    return movie.frames, info


def _intervals(t0: float, n_frames: int, rate: float) -> dict[str, np.ndarray]:
    """Contiguous train/validation/test intervals (80/10/10 %) on frame boundaries, in seconds."""
    out = {}
    for name, (lo, hi) in SPLIT_FRACTIONS.items():
        a, b = round(lo * n_frames), round(hi * n_frames)
        out[name] = np.array([[t0 + a / rate, t0 + b / rate]])
    return out


def _ground_truth(layout: Layout, circuit: Circuit, p: SimParams, out: CircuitOutput, rates: np.ndarray,
                  calib: Calibration, stim_info: dict, seed: int) -> GroundTruth:
    lay = layout
    temporal = to_window_order(circuit.kernel_ln, p.ln_history)
    ln_filters = temporal[None, :, None, None] * lay.ln_spatial[:, None, :, :]
    params = {
        "simulator": SIMULATOR, "version": __version__, "seed": int(seed), "settings": p.to_dict(),
        "contrast": "c = 2 * frame_uint8 / 255 - 1 (frame value s = frame_uint8 / 255)",
        "kernels_by_lag": {
            "bipolar_on": circuit.kernel_on.tolist(), "bipolar_off": circuit.kernel_off.tolist(),
            "amacrine": circuit.kernel_amacrine.tolist(), "ln": circuit.kernel_ln.tolist(),
        },
        "cell_ids": list(lay.cell_ids),
        "target_rates_hz": lay.target_rates.tolist(),
        "calibration": calib.to_dict(),
        "stimulus": stim_info,
    }
    return GroundTruth(
        true_rates=rates,
        cell_types=lay.cell_types.copy(),
        cell_centers=lay.cell_centers.astype(np.float32),
        pooling_weights=lay.pooling_weights.astype(np.float32),
        subunit_positions=lay.subunit_positions.astype(np.float32),
        subunit_polarity=lay.subunit_polarity.astype(np.int8),
        amacrine_positions=lay.amacrine_positions.astype(np.float32),
        amacrine_weights=lay.amacrine_weights.astype(np.float32),
        ln_cells=lay.ln_cells.astype(np.int64),
        ln_filters=ln_filters.astype(np.float32),
        bipolar_traces=out.bipolar,
        amacrine_traces=out.amacrine,
        params=params,
        amacrine_pooling=lay.amacrine_pooling.astype(np.float32),
    )


def simulate_retina(preset: str = "default", seed: int = 0, quiet: bool | None = None,
                    **overrides: Any) -> list[Recording]:
    """Simulate the retina on a natural-scene movie, then on white noise, and record its spikes.

    Parameters
    ----------
    preset : ``"default"`` (15 min natural scenes + 7.5 min white noise) or ``"small"`` (90 s + 150 s,
        for tests); see :data:`~retina_codec.sim.presets.PRESETS`.
    seed : everything (anatomy, movies, spikes) is a deterministic function of the seed.
    quiet : silence the progress bars (default: the ``RETINA_CODEC_QUIET`` environment variable).
    overrides : any :class:`~retina_codec.sim.presets.SimParams` field, e.g. ``amacrine_strength=0``.

    Returns
    -------
    ``[naturalscene, whitenoise]``: two :class:`Recording` on one clock (natural scenes from t = 0 s,
    white noise straight after), with the same cells, spike counts per 10 ms bin, train / validation /
    test intervals (contiguous 80 / 10 / 10 % of each), provenance and a :class:`GroundTruth`. The retina
    sees each movie as one continuous presentation, so each recording is one movie segment
    (``segment_starts == [0]``): its history windows may span the splits.
    """
    p = resolve_params(preset, **overrides)
    streams = dict(zip(_STREAMS, np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))))
    rng = {k: np.random.default_rng(v) for k, v in streams.items()}
    layout = make_layout(p, rng["layout"])
    circuit = Circuit(layout, p)
    n_cal = max(int(round(p.calibration_duration_s * p.frame_rate)), 1)
    recordings = []
    t0 = 0.0
    for kind, duration in (("naturalscene", p.natural_duration_s), ("whitenoise", p.whitenoise_duration_s)):
        n_frames = int(round(duration * p.frame_rate))
        cal_frames, _ = _movie(kind, n_cal, rng[f"{kind}_calibration"], p)
        scale = circuit.drive_scale(cal_frames)
        del cal_frames
        frames, info = _movie(kind, n_frames, rng[kind], p)
        out = circuit.run(frames, scale, desc=f"simulating {kind}", quiet=quiet)
        calib = circuit.fit_output(out.generator, scale)
        rates = calib.rates(out.generator)
        counts = rng[f"{kind}_spikes"].poisson(rates.astype(np.float64) / p.frame_rate).astype(np.float32)
        gt = _ground_truth(layout, circuit, p, out, rates, calib, info, seed)
        recordings.append(Recording(
            stimulus=ArrayFrames(frames, scale=1.0 / 255.0),
            frame_times=t0 + np.arange(n_frames) / p.frame_rate,
            frame_rate=p.frame_rate,
            responses=counts,
            cell_ids=list(layout.cell_ids),
            intervals=_intervals(t0, n_frames, p.frame_rate),
            response_unit="count",
            stimulus_name=kind,
            provenance={"simulator": SIMULATOR, "preset": preset, "seed": int(seed),
                        "version": __version__, "overrides": json.loads(to_json(dict(overrides), sort_keys=False))},
            ground_truth=gt,
        ))
        t0 += n_frames / p.frame_rate
    return recordings


