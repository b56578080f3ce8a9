"""Generic torch plumbing, below every other package: named hooks and module swaps (:mod:`.hooks`), FFT
convolutions (:mod:`.fft_conv`), BatchNorm folding (:mod:`.fold_bn`) and the device rule (:mod:`.devices`).

Nothing here knows about retinas, recordings or contributions; every other package may import it, it
imports only :mod:`retina_codec.errors`.
"""

from .devices import resolve_device
from .hooks import capture_outputs, prepared_model, replace_outputs, resolve_module, swap_modules

__all__ = ["resolve_device", "capture_outputs", "prepared_model", "replace_outputs", "resolve_module",
           "swap_modules"]
