"""Settings of the simulated retina: one frozen :class:`SimParams` and the named presets.

Units: pixels for positions and widths (``sigma``), frames (10 ms at 100 Hz) for temporal constants,
seconds for durations, Hz for rates. Every field can be overridden by name in
:func:`~retina_codec.sim.simulate_retina`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import SimulationError

__all__ = ["SimParams", "PRESETS", "resolve_params"]


@dataclass(frozen=True)
class SimParams:
    """Every setting of the simulator (see docs/simulated_retina.md for the equations)."""

    # movie
    frame_size: int = 50                      # frames are frame_size x frame_size pixels
    frame_rate: float = 100.0                 # Hz
    natural_duration_s: float = 900.0         # natural-scene movie length
    whitenoise_duration_s: float = 450.0      # white-noise movie length (played after the natural one)
    calibration_duration_s: float = 60.0      # separate clip of each stimulus used to set gains
    checker_size: int = 1                     # white-noise checker edge in pixels
    photo_downsample: int = 3                 # block-average factor applied to the 427x640 photographs
    saccade_interval_s: float = 1.0           # mean time between saccades (gamma distributed, shape 4)
    min_saccade_interval_s: float = 0.3
    min_saccade_px: int = 12                  # a saccade moves the crop at least this far (or switches photo)
    photo_switch_prob: float = 0.25           # chance that a saccade lands on the other photograph
    jitter_step_prob: float = 0.3             # chance per frame and axis of a one-pixel fixational step
    jitter_max_px: int = 4                    # fixational jitter stays within this of the fixation point
    # bipolar subunits (one ON and one OFF subunit at every grid position)
    subunit_spacing: float = 4.0
    subunit_extent: tuple[float, float] = (7.0, 43.0)   # first and last grid coordinate (pixels)
    subunit_jitter: float = 0.3               # s.d. of the random displacement of grid positions
    bipolar_center_sigma: float = 1.0
    bipolar_surround_sigma: float = 3.0
    bipolar_surround_weight: float = 0.6      # surround volume relative to the centre's
    bipolar_order: int = 3                    # temporal kernel: difference of two gamma-shaped lobes
    bipolar_tau_fast: float = 1.6             # frames; positive lobe peaks near delay + order * tau
    bipolar_tau_slow: float = 3.2             # frames; negative lobe
    bipolar_biphasic: float = 0.8             # area of the negative lobe relative to the positive one
    bipolar_lags: int = 26                    # kernel length in frames (lags 1..lags-1; lag 0 is zero)
    off_speedup: float = 0.85                 # OFF kernels' time constants are this fraction of ON's
    bipolar_threshold: float = 0.0            # rectification threshold in units of the drive's s.d.
    # amacrine cells (wide-field, pool ON and OFF terminals, inhibit terminals after a delay)
    amacrine_spacing: float = 12.0
    amacrine_pool_sigma: float = 5.0
    amacrine_inhibit_sigma: float = 6.0
    amacrine_strength: float = 1.2            # 0 switches inhibition off
    amacrine_delay: int = 2                   # frames before the amacrine kernel starts
    amacrine_tau: float = 2.5                 # frames; exponential decay of the amacrine kernel
    amacrine_lags: int = 11                   # kernel length in frames
    # ganglion cells
    n_off: int = 6
    n_on: int = 6
    n_onoff: int = 4
    n_ln: int = 4
    ganglion_extent: tuple[float, float] = (16.0, 34.0)  # RF centres tile this square (pixels)
    ganglion_jitter: float = 1.0
    pool_sigma_off: float = 2.2
    pool_sigma_on: float = 2.6
    pool_sigma_onoff: float = 2.4
    ln_center_sigma: float = 1.2
    ln_surround_sigma: float = 2.6
    ln_surround_weight: float = 0.5
    ln_history: int = 40                      # frames of the stored LN filters (window order)
    output_beta: float = 3.0                  # softplus sharpness of the output nonlinearity
    threshold_range: tuple[float, float] = (0.3, 1.0)   # output thresholds (generator s.d. units)
    ln_threshold: float = 0.0
    target_rate_range: tuple[float, float] = (6.0, 20.0)  # Hz, mean rate each cell is calibrated to
    ln_target_rate: float = 25.0              # Hz

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


PRESETS: dict[str, dict[str, Any]] = {
    # 15 min natural scenes + 7.5 min white noise, 20 cells, 200 subunits, 16 amacrines
    "default": {},
    # for tests: 90 s natural scenes + 240 s white noise (long enough for the LN cells' STA)
    "small": {"natural_duration_s": 90.0, "whitenoise_duration_s": 240.0, "calibration_duration_s": 30.0},
}


def resolve_params(preset: str = "default", **overrides: Any) -> SimParams:
    """The preset's settings with ``overrides`` applied; unknown names raise ``ValueError``."""
    if preset not in PRESETS:
        raise SimulationError(f"preset: expected one of {sorted(PRESETS)}, found {preset!r}")
    names = {f.name for f in fields(SimParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SimulationError(f"simulate_retina: unknown setting(s) {unknown}; known settings: {sorted(names)}")
    kw = {**PRESETS[preset], **overrides}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    p = replace(SimParams(), **kw)
    if p.ln_history < p.bipolar_lags - 1:  # the LN filter (lags 1 .. bipolar_lags - 1) must fit its window
        raise SimulationError(f"ln_history: expected at least bipolar_lags - 1 = {p.bipolar_lags - 1} frames, "
                         f"found {p.ln_history}")
    return p
