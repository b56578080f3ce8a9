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

