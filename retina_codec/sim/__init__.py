"""The simulated retina: a known bipolar → amacrine → ganglion circuit that serves as ground truth.

:func:`simulate_retina` returns a natural-scene and a white-noise :class:`~retina_codec.recordings.Recording`
with a :class:`~retina_codec.recordings.GroundTruth` each; docs/simulated_retina.md has the equations.
"""

from .circuit import Calibration, Circuit, CircuitOutput
from .layout import CELL_TYPES, Layout, make_layout
from .presets import PRESETS, SimParams, resolve_params
from .simulate import SIMULATOR, simulate_retina
from .stimuli import NaturalMovie, natural_movie, sample_photos, white_noise

__all__ = [
    "simulate_retina", "SIMULATOR", "SimParams", "PRESETS", "resolve_params",
    "Layout", "make_layout", "CELL_TYPES", "Circuit", "CircuitOutput", "Calibration",
    "white_noise", "natural_movie", "NaturalMovie", "sample_photos",
]
