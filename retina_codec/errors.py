"""Exceptions raised by retina-codec.

Every error names the file (when there is one), the field and what was expected, so that the CLI can
print it as one line. All derive from :class:`RetinaCodecError`; the CLI turns any of them into a single
line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "RetinaCodecError",
    "RecordingError",
    "FileFormatError",
    "MissingStimulusError",
    "AmbiguousSeriesError",
    "TimestampError",
    "NonFiniteFramesError",
    "EmptyUnitsError",
    "NoOverlapError",
    "ShapeMismatchError",
    "UnknownIntervalError",
    "CheckpointError",
    "UntrustedCheckpointError",
    "ModelContractError",
    "LayerNotFoundError",
    "ModesError",
    "OutputExistsError",
    "NonFiniteResponsesError",
    "DeviceError",
    "StoreReadError",
    "UnknownCellError",
    "OutputLockedError",
    "OutputPathError",
    "DiskFullError",
    "OutputWriteError",
]


class RetinaCodecError(Exception):
    """Base class of every error retina-codec raises on purpose."""


class RecordingError(RetinaCodecError, ValueError):
    """A recording (file or in-memory) does not hold what the toolkit needs."""


class FileFormatError(RecordingError):
    """The file is missing, truncated, or not of the expected format (e.g. not HDF5)."""


class MissingStimulusError(RecordingError):
    """No stimulus series was found where one was expected."""


class AmbiguousSeriesError(RecordingError):
    """Several candidate series exist and no name was given to choose one."""


class TimestampError(RecordingError):
    """Timestamps are not strictly increasing, or a rate is not positive."""


class NonFiniteFramesError(RecordingError):
    """The stimulus contains NaN or infinite values."""


class EmptyUnitsError(RecordingError):
    """The Units table has no units, or no spikes at all."""


class NoOverlapError(RecordingError):
    """Responses do not overlap the stimulus in time."""


class ShapeMismatchError(RecordingError):
    """Arrays that must agree in shape do not."""


class UnknownIntervalError(RecordingError, KeyError):
    """An interval (split) name was asked for that the recording does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(RetinaCodecError, ValueError):
    """A model checkpoint is malformed or incompatible."""


class UntrustedCheckpointError(CheckpointError):
    """A pickle checkpoint needs types beyond the safe set; pass ``trust=True`` only for files you trust."""


class ModelContractError(RetinaCodecError, ValueError):
    """A model does not meet the toolkit's model contract (input spec, ``(B, N)`` rates, cell ids, layer names);
    :func:`retina_codec.models.wrap` makes a plain ``nn.Module`` meet it."""


class LayerNotFoundError(RetinaCodecError, KeyError):
    """A layer name was asked for that the model does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModesError(RetinaCodecError, ValueError):
    """Input to a mode decomposition (SAE) or a modes store is malformed or inconsistent."""


class OutputExistsError(RetinaCodecError, FileExistsError):
    """The output file exists already and overwriting was not asked for."""


class NonFiniteResponsesError(RecordingError):
    """The responses (spike counts or rates) contain NaN or infinite values."""


class DeviceError(RetinaCodecError, ValueError):
    """A device name torch does not know, or CUDA asked for on a machine without it."""


class StoreReadError(RetinaCodecError, OSError):
    """A result store (HDF5 or JSON) could not be read: missing, truncated or malformed; names the file."""


class UnknownCellError(RetinaCodecError, ValueError):
    """A cell asked for by id or index that the recording does not have."""


class OutputLockedError(RetinaCodecError, RuntimeError):
    """Another run holds the lock of the same output file (names the output and the running process)."""


class OutputPathError(RetinaCodecError, OSError):
    """An output path cannot be written: it is a directory, or its folder is missing or not writable."""


class DiskFullError(RetinaCodecError, OSError):
    """No space left on the device while writing an output; names the file and the free space."""


class OutputWriteError(RetinaCodecError, OSError):
    """An operating-system error (I/O error, permission, ...) while writing an output; names the file."""



class ContributionError(RetinaCodecError, ValueError):
    """Settings or inputs of a contributions run are malformed (layers, method, steps, rule, reduction,
    baseline, batch size, speed options, the input samples)."""


class TargetError(ContributionError):
    """A contribution target is malformed or does not fit the model's outputs (unknown name, cell out of
    range, wrong value shape)."""


class ContributionTypeError(RetinaCodecError, TypeError):
    """An input or model output of a contributions run has the wrong type."""


class ContributionStateError(RetinaCodecError, RuntimeError):
    """A contributions object used out of order (an engine outside its ``with`` block, an unfitted
    surprisal target)."""


__all__ += ["ContributionError", "TargetError", "ContributionTypeError", "ContributionStateError"]


class ReceptiveFieldError(RetinaCodecError, ValueError):
    """Settings or inputs of a receptive-field estimate (STA / STC, model STA, rank-1 split, Gaussian fit,
    window correlator) are malformed."""


class StatisticsError(RetinaCodecError, ValueError):
    """Inputs of the layer statistics (Hoyer sparsity, class-mean dimensionality, E/I correlation) are
    malformed."""


class ClassifierError(RetinaCodecError, ValueError):
    """Settings or inputs of the classifier comparison (layers, mode layer, sources, adapters) are malformed."""


class ModelConfigError(RetinaCodecError, ValueError):
    """A model's architecture settings (cells, kernel sizes, batchnorm kind, ...) are invalid."""


class FitError(RetinaCodecError, ValueError):
    """Model fitting cannot run with these settings or data (too few usable bins, epochs, ...)."""


class SimulationError(RetinaCodecError, ValueError):
    """Settings of the simulated retina (preset, overrides, kernels, stimuli) are invalid."""


class MetadataTypeError(RetinaCodecError, TypeError):
    """A value to be stored as JSON metadata (e.g. in a model checkpoint) has a type JSON cannot hold."""


class LayerOutputError(RetinaCodecError, TypeError):
    """A hooked layer's forward returned something other than one tensor."""


__all__ += ["ReceptiveFieldError", "StatisticsError", "ClassifierError", "ModelConfigError", "FitError",
            "SimulationError", "MetadataTypeError", "LayerOutputError"]
