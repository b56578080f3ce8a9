"""Small file-system helpers shared by every writer: output checks, atomic locked writes, HDF5 write errors.

HDF5 (2.0) can crash the process (segfault) when it closes a file after a failed write: a dataset closed
with dirty chunks in its raw-data chunk cache, or a file flushed after a failed flush, leaves the library
in a broken state that the next close (or the exit handler) dereferences. Writers therefore open HDF5
files through :func:`h5_create` (no raw-data chunk cache: a failed write fails in the write call and
leaves nothing to flush later) and turn every OS error into one line with :func:`output_error`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import (
    DiskFullError,
    FileFormatError,
    OutputExistsError,
    OutputPathError,
    OutputWriteError,
    RetinaCodecError,
)
from .locking import OutputLock

__all__ = ["format_bytes", "check_new_output", "atomic_path", "check_output_path", "free_space", "output_error", "h5_create", "is_disk_full",
           "ensure_free_space", "abandon_hdf5", "hdf5_abandoned", "HDF5_SIGNATURE", "one_line", "check_hdf5_file",
           "open_hdf5", "available_memory_bytes"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_ABANDONED: list[Any] = []  # HDF5 files whose flush failed: never closed (closing them crashes HDF5)


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_path(path: str | os.PathLike, *, also: tuple[str | os.PathLike, ...] = ()) -> None:
    """Check, before any work, that ``path`` can be written as a file; raise :class:`OutputPathError` if not.

    Refused: ``path`` (or one of ``also``, e.g. a ``.partial`` file) is a directory; a parent of ``path``
    is a file; the folder that would hold it (or the nearest existing parent, for folders still to be
    made) is not writable. An existing *file* at ``path`` is not checked here (``--overwrite`` decides).
    """
    path = Path(path)
    for p in (path, *map(Path, also)):
        if p.is_dir():
            raise OutputPathError(f"{p}: is a directory; expected an output file path (or no file there)")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(f"{path}: cannot be created: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot be written: folder {base} is not writable (read-only or no "
                              "permission)")


def free_space(path: str | os.PathLike) -> str:
    """Free space of the file system holding ``path``, e.g. ``"1.2 MiB free"`` (``"free space unknown"``)."""
    try:
        free = shutil.disk_usage(_nearest_existing(Path(path).parent)).free
    except OSError:
        return "free space unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"
        free /= 1024
    return "free space unknown"  # pragma: no cover


def ensure_free_space(path: str | os.PathLike, need: int, what: str = "") -> None:
    """Raise :class:`DiskFullError` before writing when fewer than ``need`` bytes are free beside ``path``."""
    try:
        free = shutil.disk_usage(_nearest_existing(Path(path).parent)).free
    except OSError:
        return
    if free < need:
        raise DiskFullError(f"{path}: no space left on the device ({free_space(path)}, {need / 2**20:.1f} MiB "
                            f"needed{' for ' + what if what else ''})")


_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")


def _errno_of(err: BaseException) -> int | None:
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno
    m = _ERRNO_IN_TEXT.search(str(err))
    return int(m.group(1) or m.group(2)) if m else None


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a "no space left on device" error, also when HDF5 wraps it."""
    seen = 0
    while err is not None and seen < 8:
        if _errno_of(err) in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def output_error(err: BaseException, path: str | os.PathLike) -> RetinaCodecError:
    """A one-line :class:`RetinaCodecError` for an OS / HDF5 error raised while writing ``path``.

    No space: :class:`DiskFullError` with the free space; otherwise :class:`OutputWriteError` with the
    reason (permission, is a directory, I/O error, ...). A library error is returned unchanged.
    """
    if isinstance(err, RetinaCodecError):
        return err
    if is_disk_full(err):
        return DiskFullError(f"{path}: no space left on the device while writing it ({free_space(path)}); "
                             "free some space and run again")
    code = _errno_of(err)
    reason = os.strerror(code) if code else str(err).split("\n")[0].split(" (")[0]
    return OutputWriteError(f"{path}: cannot write it: {reason}")


def h5_create(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Any:
    """``h5py.File(path, mode)`` for writing, without a raw-data chunk cache (see the module docstring)."""
    import h5py

    kwargs.setdefault("rdcc_nbytes", 0)
    return h5py.File(path, mode, **kwargs)


def abandon_hdf5(file: Any) -> None:
    """Keep ``file`` (an h5py File whose flush failed) open and referenced for the rest of the process.

    HDF5 2.0 crashes when such a file is closed, also from its exit handler; the CLI therefore ends a
    process that abandoned a file with ``os._exit`` (see :func:`hdf5_abandoned`).
    """
    _ABANDONED.append(file)


def hdf5_abandoned() -> bool:
    """Whether this process abandoned an HDF5 file (:func:`abandon_hdf5`)."""
    return bool(_ABANDONED)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The output is checked first (:func:`check_output_path`) and locked for the block
    (:class:`~retina_codec.locking.OutputLock`: a second writer of the same ``path`` is refused). On any
    exception the temporary file is removed and ``path`` is left untouched, so a failed or interrupted write
    never leaves a partial output under the final name; OS and HDF5 errors are re-raised as one-line
    :func:`output_error` errors naming ``path``.
    """
    final = Path(path)
    check_output_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(final):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or ".tmp", dir=final.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        tmp_path.unlink()  # writers (h5py, pynwb) create the file themselves
        try:
            yield tmp_path
            os.replace(tmp_path, final)
        except BaseException as err:
            with contextlib.suppress(OSError):
                if tmp_path.is_dir() and not tmp_path.is_symlink():
                    shutil.rmtree(tmp_path)
                else:
                    tmp_path.unlink()
            if _is_write_error(err, (tmp_path, final)):
                raise output_error(err, final) from err
            raise


def _is_write_error(err: BaseException, paths: tuple[Path, ...]) -> bool:
    """An OS / HDF5 error about writing one of ``paths`` (not, say, a missing input read inside the block)."""
    if isinstance(err, RetinaCodecError) or not isinstance(err, (OSError, RuntimeError)):
        return False
    if is_disk_full(err):
        return True
    if isinstance(err, OSError):
        name = err.filename
        return name is None or any(Path(str(name)) == p for p in paths)
    return _errno_of(err) is not None


def available_memory_bytes() -> int | None:
    """The host's available memory in bytes (``MemAvailable`` of ``/proc/meminfo``); ``None`` where that
    is not readable (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------ reading HDF5
def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An error message squeezed onto one line (and cut at ``limit`` characters)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_hdf5_file(path: str | os.PathLike) -> Path:
    """Raise :class:`~retina_codec.errors.FileFormatError` unless ``path`` is an existing file with the HDF5
    signature (empty file, no such file, not HDF5: each its own message); returns ``Path(path)``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    # HDF5 allows a user block, so the signature may sit at 512, 1024, ...; files we meet start with it.
    if head != HDF5_SIGNATURE:
        if path.stat().st_size == 0:
            raise FileFormatError(f"{path}: file is empty (expected an HDF5 file)")
        if not h5py.is_hdf5(path):
            raise FileFormatError(f"{path}: not an HDF5 file (no HDF5 signature)")
    return path


def open_hdf5(path: str | os.PathLike) -> Any:
    """Open an HDF5 file read-only (an ``h5py.File``), turning h5py's errors (truncated, corrupt) and
    :func:`check_hdf5_file`'s into :class:`~retina_codec.errors.FileFormatError`."""
    import h5py

    path = check_hdf5_file(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FileFormatError(f"{path}: cannot read HDF5 file (truncated or corrupt?): {one_line(err)}") from err


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"1.5 GB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"


def check_new_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` (one line, exit 2 on the CLI) when ``path`` exists and may not be
    replaced, and :class:`OutputPathError` when it (or its ``.partial`` file) cannot be written.

    Called before any work, so a finished store (hours of contributions) is never recomputed by a repeated
    command by accident; an interrupted run resumes from its ``.partial`` file, which is not ``path``.
    """
    check_output_path(path, also=(Path(f"{path}.partial"),))
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists already (pass --overwrite to replace it)")
