"""Exclusive locks on output files, so that two runs never write the same output at once.

A run that writes ``NAME`` holds ``fcntl.flock`` on ``NAME.lock`` (beside it) for as long as it writes; the
lock file holds the holder's pid, host, start time and command line, so a second run on the same output is
refused with one line naming the running one (:class:`~retina_codec.errors.OutputLockedError`). The kernel
drops the lock when its process dies, so the lock file a killed run leaves behind is *stale* and is taken
over by the next run. The lock file is removed when the lock is released.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputLockedError

__all__ = ["OutputLock", "lock_output", "lock_path"]

log = logging.getLogger(__name__)


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``NAME.lock`` in the same folder."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


def _holder() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(sys.argv) or sys.executable}


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder written in an open lock file (``{}`` when empty or unreadable)."""
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode()) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "a process that wrote no details"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('started', '?')}: "
            f"{info.get('command', '?')}")


class OutputLock:
    """An exclusive, non-blocking lock on one output file (``with OutputLock(path): ...``)."""

    def __init__(self, output: str | os.PathLike) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> OutputLock:
        """Take the lock; raise :class:`OutputLockedError` naming the holder when another run has it."""
        if self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.output}: another run is writing this output ({_describe(info)}); wait for it to "
                    f"finish or choose another output (lock file {self.path})") from None
            except BaseException:
                os.close(fd)
                raise
            # the holder we waited on may have removed the file between our open and our flock: then we
            # hold a lock on a deleted inode, which protects nothing; try again on the new file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            log.info("%s: taking over the stale lock of a run that ended without releasing it (%s)",
                     self.output, _describe(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding the lock, so nobody locks the old inode meanwhile
        os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def lock_output(output: str | os.PathLike) -> Iterator[OutputLock]:
    """Hold the exclusive lock of ``output`` for the block (see :class:`OutputLock`)."""
    lock = OutputLock(output).acquire()
    try:
        yield lock
    finally:
        lock.release()
