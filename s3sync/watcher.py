"""File events -> hints on a sink. The only module that imports watchdog; no network I/O.

Events are hints, not truth: inotify drops events on queue overflow, network filesystems
send none, and an exception in a handler kills watchdog's observer thread. So the handler
never raises, the service restarts a dead observer (``watcher.restarted``), and a periodic
rescan of the folder is the source of truth.

Hints passed to the sink: ``closed`` (close after write: complete), ``moved`` (renamed into
the folder: complete), ``created`` / ``modified`` (still being written, maybe), ``deleted``
and ``dir`` (a folder appeared: scan it).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.polling import PollingObserver

__all__ = ["Sink", "Watcher"]

Sink = Callable[[Path, str], None]
log = structlog.get_logger("s3sync.watcher")

# What an event-driven observer (inotify) is asked for: a file's creation, writes and close,
# moves, deletions and new folders. Not IN_ATTRIB (chmod, touch) nor the parent folder's
# "modified" events. Writes (IN_MODIFY) are wanted although a large file brings many: a file
# written to and not closed since is not complete, however long its writer pauses, and only
# these events say that a writer reopened a file that had been closed. A polling observer gets
# no filter: its "modified" events are the only sign of a file changed in place.
_EVENTS_WANTED: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


def _inotify_observer() -> Any:
    # Full events: a file renamed into the folder from outside arrives as a move ("moved"),
    # not as a create we could not tell from a file being written.
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver(generate_full_events=True)


def _polling_observer() -> Any:
    return PollingObserver(timeout=1.0)


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Sink, ignore: Callable[[Path], bool], on_event: Callable[[], None]) -> None:
        self._sink = sink
        self._ignore = ignore
        self._on_event = on_event

    def _emit(self, path: str | bytes, hint: str) -> None:
        if not path:
            return
        p = Path(path.decode() if isinstance(path, bytes) else path)
        if not self._ignore(p):
            self._sink(p, hint)

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._on_event()
            self._dispatch(event)
        except Exception:
            log.exception("watcher.handler_error", event_type=event.event_type)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self._emit(event.src_path, "closed")
        elif isinstance(event, FileMovedEvent):
            self._emit(event.src_path, "deleted")
            self._emit(event.dest_path, "moved")
        elif isinstance(event, DirMovedEvent):
            self._emit(event.dest_path, "dir")
        elif isinstance(event, DirCreatedEvent):
            self._emit(event.src_path, "dir")
        elif isinstance(event, FileCreatedEvent):
            self._emit(event.src_path, "created")
        elif isinstance(event, FileModifiedEvent):
            self._emit(event.src_path, "modified")
        elif isinstance(event, FileDeletedEvent):
            self._emit(event.src_path, "deleted")


class Watcher:
    """Watch ``root`` recursively and pass hints to ``sink``.

    ``mode`` is ``auto`` (inotify where available, else polling), ``inotify`` or ``polling``.
    ``observer_factory`` replaces the observer construction (tests, other platforms).
    """

    def __init__(
        self,
        root: Path,
        sink: Sink,
        *,
        mode: str = "auto",
        ignore: Callable[[Path], bool] = lambda p: False,
        observer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.root = root
        self.mode = mode
        self._sink = sink
        self._ignore = ignore
        self._factory = observer_factory or self._default_factory
        self._observer: Any = None
        self._lock = threading.Lock()
        self.last_event: float | None = None
        self.kind = ""
        #: (st_dev, st_ino) of the folder the observer was started on.
        self.identity: tuple[int, int] | None = None

    def _default_factory(self) -> Any:
        if self.mode == "polling":
            return _polling_observer()
        try:
            return _inotify_observer()
        except (ImportError, OSError):
            if self.mode == "inotify":
                raise
            return _polling_observer()

    def _touch(self) -> None:
        self.last_event = time.time()

    def start(self) -> None:
        """Start observing (raises OSError when the folder cannot be watched)."""
        with self._lock:
            # Noted before scheduling: a folder replaced in between is then seen as replaced.
            st = os.stat(self.root)
            self.identity = (st.st_dev, st.st_ino)
            observer = self._factory()
            wanted = None if isinstance(observer, PollingObserver) else _EVENTS_WANTED
            handler = _Handler(self._sink, self._ignore, self._touch)
            observer.schedule(handler, str(self.root), recursive=True, event_filter=wanted)
            observer.daemon = True
            observer.start()
            self._observer = observer
            self.kind = type(observer).__name__

    def stop(self) -> None:
        """Stop observing and join the observer thread."""
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)

    def is_alive(self) -> bool:
        """Whether the observer thread (and its emitters) still run."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        emitters = getattr(observer, "emitters", ())
        return all(e.is_alive() for e in emitters)

    def folder_state(self) -> str:
        """``same``, ``replaced`` (another folder now has the path) or ``missing``.

        An inotify watch follows the inode, not the path: after ``mv upload upload.old && mkdir
        upload`` the observer silently keeps watching ``upload.old``. The supervisor calls this
        every few seconds and restarts the watcher on the new folder.
        """
        try:
            info = os.stat(self.root)
        except OSError:
            return "missing"
        if not stat.S_ISDIR(info.st_mode):
            return "missing"
        return "same" if (info.st_dev, info.st_ino) == self.identity else "replaced"

    def restart(self) -> None:
        """Replace a dead observer with a new one."""
        self.stop()
        self.start()
