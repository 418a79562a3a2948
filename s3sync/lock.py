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
import stat
import time
from pathlib import Path
from types import TracebackType

from s3sync.errors import StateCorruptError, StateError, StateLockedError

__all__ = ["StateLock", "lock_path"]

_PID_READ_TRIES = 20  # the holder writes its PID right after flock(): wait a moment for it
_PID_READ_PAUSE = 0.01


def lock_path(state_path: Path) -> Path:
    """The lock file beside the state database: ``state.db`` -> ``state.db.lock``.

    Named after the real path: a symlink to the same database must not get a lock of its own.
    """
    real = Path(os.path.realpath(state_path))
    return real.with_name(real.name + ".lock")


class StateLock:
    """The exclusive lock of the state database at ``state_path`` (a context manager)."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.path = lock_path(state_path)
        self._fd: int | None = None
        self._db_fd: int | None = None

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
        try:
            db_fd = self._lock_database()
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._db_fd = db_fd

    def _lock_database(self) -> int | None:
        """Also lock the database file itself: a lock file deleted while held (a tidy-up, tmpfiles)
        lets the next process create and lock a new one, but never the same database.

        Non-blocking and regular files only: a FIFO at the path is refused, never waited on.
        """
        real = os.path.realpath(self.state_path)
        try:
            fd = os.open(real, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"S3_STATE_PATH: cannot open {real!r}: {exc.strerror}", path=real) from None
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            regular = False
        if not regular:
            os.close(fd)
            raise StateCorruptError(f"S3_STATE_PATH: {real!r} is not a regular file", path=real)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLockedError(
                f"another s3sync (pid unknown: its lock file was removed) is using {self.state_path}",
                path=str(self.state_path),
                pid=None,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ensure(self) -> bool:
        """Check, while held, that the lock file is still ours; recreate it if someone deleted it.

        A lock file removed while held (a tidy-up, tmpfiles) would let the next instance create
        a new one and lock it. Returns False when another process got a lock file in meanwhile.
        """
        if self._fd is None:
            return True
        try:
            mine = os.fstat(self._fd).st_ino
            there = os.stat(self.path).st_ino
        except FileNotFoundError:
            there = None
        except OSError:
            return True
        if there == mine:
            return True
        if there is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return False  # someone else's, made in between
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        old, self._fd = self._fd, fd  # the database itself stayed locked all along
        os.close(old)
        return True

    def release(self) -> None:
        """Release the lock (the file stays; its PID is cleared so it never names a dead process)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        db_fd, self._db_fd = self._db_fd, None
        if db_fd is not None:
            os.close(db_fd)
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
