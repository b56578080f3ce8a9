"""Generic torch plumbing, below every other package: named hooks and module swaps (:mod:`.hooks`), FFT
convolutions and the one convolution-speed policy (:mod:`.fft_conv`), BatchNorm folding (:mod:`.fold_bn`),
the device rule and free memory (:mod:`.devices`), and thread limits (:mod:`.threads`).

Nothing here knows about retinas, recordings or contributions; every other package may import it, it
imports only the base modules (:mod:`retina_codec.errors`, :mod:`retina_codec.io_utils`).
"""

from .devices import resolve_device
from .hooks import capture_outputs, prepared_model, replace_outputs, resolve_module, swap_modules

__all__ = ["resolve_device", "capture_outputs", "prepared_model", "replace_outputs", "resolve_module",
           "swap_modules"]
