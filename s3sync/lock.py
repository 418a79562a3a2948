"""One process per state database: an exclusive ``flock`` on ``<state>.lock``.

``s3sync run`` and ``s3sync sync`` hold it for their whole life, so two daemons (or a daemon
and a one-shot sync) never work from one state database, where each would upload what the
other has not recorded yet. ``s3sync status`` reads without it.

Why ``flock`` on a separate file: the kernel releases it when the holder dies, even by
SIGKILL, so a crash never leaves a stale lock behind (no PID-file guessing); and it is not
SQLite's own file locking, which only serialises transactions. The file holds the holder's
PID, for the error message only; it is never unlinked (unlinking a lock file races with a
process that has just opened it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from s3sync.errors import StateError, StateLockedError

__all__ = ["StateLock", "lock_path"]

_PID_READ_TRIES = 20  # the holder writes its PID right after flock(): wait a moment for it
_PID_READ_PAUSE = 0.01


def lock_path(state_path: Path) -> Path:
    """The lock file beside the state database: ``state.db`` -> ``state.db.lock``."""
    return state_path.with_name(state_path.name + ".lock")


class StateLock:
    """The exclusive lock of the state database at ``state_path`` (a context manager)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.path = lock_path(state_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StateLockedError` naming the holder's PID at once (no waiting)."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(
                f"S3_STATE_PATH: cannot create the lock file {str(self.path)!r}: {exc.strerror}",
                path=str(self.path),
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise StateLockedError(
                f"another s3sync ({who}) is using {self.state_path}", path=str(self.state_path), pid=pid
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays; its PID is cleared so it never names a dead process)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _holder_pid(fd: int) -> int | None:
    """The PID the holder wrote into the lock file; None if it has not (yet) or wrote garbage."""
    for _ in range(_PID_READ_TRIES):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        time.sleep(_PID_READ_PAUSE)
    return None
