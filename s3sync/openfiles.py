"""Which files of a folder some process holds open for writing, read from ``/proc``.

Close events (inotify) are the daemon's main sign that a writer is done. They say nothing of a
file that was already open when the daemon started, and a polling observer sees none at all.
There this module is the second opinion: before a settled file is uploaded, and before a file
is moved or deleted after its upload, the open descriptors of the processes this user may look
at are checked for one that writes to it. It is best effort by nature: another user's processes
are hidden unless the daemon runs as root; the README says so.

One snapshot (every descriptor open for writing on a regular file of the folder's file system:
a file written elsewhere and hard-linked in is the same inode) is reused for ``max_age``
seconds, so a catch-up of thousands of files costs a few snapshots, not one each; the look
right before a move or delete asks for a fresh one.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

__all__ = ["OpenWriters"]

_ACCMODE = 0o3  # O_ACCMODE: O_RDONLY 0, O_WRONLY 1, O_RDWR 2


class OpenWriters:
    """Answers "is this file open for writing by a process we can see?" for files under ``root``."""

    def __init__(self, root: Path, *, max_age: float = 1.0, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.max_age = max_age
        self.proc = proc
        self._lock = threading.Lock()
        self._taken = -1e18
        self._writers: set[tuple[int, int]] = set()

    def is_open_for_writing(self, dev: int, ino: int, *, since: float | None = None) -> bool:
        """True when a visible process holds the file (``st_dev``, ``st_ino``) open with write access.

        ``since`` (a ``time.monotonic()``): from a snapshot begun after that moment (a look right
        before a delete must see a writer that opened the file while it was being confirmed);
        otherwise one up to ``max_age`` old will do.
        """
        with self._lock:
            now = time.monotonic()
            if (since is not None and self._taken < since) or now - self._taken > self.max_age:
                self._taken = now  # the snapshot's moment is its start: a later open may be missed
                self._writers = self._snapshot()
            return (dev, ino) in self._writers

    def _snapshot(self) -> set[tuple[int, int]]:
        writers: set[tuple[int, int]] = set()
        try:
            device = os.stat(self.root).st_dev
        except OSError:
            return writers
        me = str(os.getpid())
        try:
            pids = [e.name for e in os.scandir(self.proc) if e.name.isdigit() and e.name != me]
        except OSError:
            return writers
        for pid in pids:
            fd_dir = self.proc / pid / "fd"
            try:
                entries = list(os.scandir(fd_dir))
            except OSError:
                continue  # gone, or another user's process
            for entry in entries:
                try:
                    target = os.readlink(entry.path)  # noqa: PTH115 - a str, compared as text
                except OSError:
                    continue
                if not target.startswith(os.sep):
                    continue  # a socket, pipe or anonymous inode
                try:
                    st = os.stat(entry.path)  # the open file itself, whatever its name is now
                    if st.st_dev != device or not stat.S_ISREG(st.st_mode):
                        continue
                    flags = _fd_flags(self.proc / pid / "fdinfo" / entry.name)
                except OSError:
                    continue
                if flags is not None and flags & _ACCMODE != os.O_RDONLY:
                    writers.add((st.st_dev, st.st_ino))
        return writers


def _fd_flags(fdinfo: Path) -> int | None:
    with open(fdinfo, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split(":", 1)[1].strip(), 8)
    return None
