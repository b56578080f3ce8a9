"""retina-codec: CODEC contributions, contribution modes and dynamic receptive fields for retina models.

Pipeline (one sub-package per stage): ``recordings`` → ``models`` → ``contributions`` → ``modes`` →
``rf`` → ``plots`` / ``report``; ``sim`` is the simulated retina used as ground truth.
"""

from ._version import __version__
from .recordings import Recording

__all__ = ["__version__", "Recording"]
