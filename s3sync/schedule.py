"""The upload schedule: which file of the upload folder is due, ready and not in flight.

Thread-free and without I/O of its own: the uploader holds its lock around every call and
passes in the clock and a ``probe`` (an ``lstat``). That keeps the hardest rules of the
daemon testable one call at a time:

* a path is never in flight twice; a hint that arrives while it is in flight is kept (as a
  shadow entry) and applied when the upload ends;
* where close events are seen (inotify), a file seen created or written and not closed since
  is not ready, whatever its age (a writer may only be pausing); elsewhere a file is ready once
  its size, mtime, ctime and inode stayed put for the settle time;
* a failed upload goes back with the delay the caller chose (backoff).

>>> s = UploadSchedule(settle_seconds=2.0, close_events=True)
>>> s.note("a.jpg", Path("/up/a.jpg"), Hint.MODIFIED, now=0.0)
>>> probe = lambda p: Probe("file", size=10, mtime_ns=0, ctime_ns=0, ino=1)
>>> s.take(now=100.0, probe=probe, wall=100.0) is None  # written, not closed: a writer may be pausing
True
>>> s.note("a.jpg", Path("/up/a.jpg"), Hint.CLOSED, now=101.0)
>>> s.take(now=101.0, probe=probe, wall=101.0).rel
'a.jpg'
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s3sync.plan import ready_to_upload

__all__ = ["COMPLETE", "Entry", "Hint", "Probe", "UploadSchedule"]

#: How often a file that is not ready yet is looked at again (seconds).
POLL_SECONDS = 0.25


class Hint(enum.StrEnum):
    """What the watcher or a scan says about a path."""

    SCAN = "scan"  # found by a scan: no event says anything about it
    CREATED = "created"  # created (a writer may hold it open)
    MODIFIED = "modified"  # written to (a writer holds it open)
    CLOSED = "closed"  # closed after writing: complete
    MOVED = "moved"  # renamed into the folder: complete
    DELETED = "deleted"
    DIR = "dir"  # a folder appeared: its files are scanned


#: Hints that mean "complete": the writer is done.
COMPLETE = frozenset({Hint.CLOSED, Hint.MOVED})


@dataclass(frozen=True, slots=True)
class Probe:
    """What one ``lstat`` of a queued path said. ``kind``: file, gone, symlink, special or error."""

    kind: str
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    nlink: int = 1  # informative: hard links are told apart by the absence of writes
    dev: int = 0

    @property
    def signature(self) -> tuple[int, int, int, int]:
        """Size, mtime, ctime and inode: any write, ``cp -p`` or replacement changes one of them."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.ino)


@dataclass
class Entry:
    """One queued (or in-flight) path."""

    rel: str
    path: Path
    hint: Hint
    due: float
    attempt: int = 0
    seen: tuple[int, int, int, int] | None = None
    stable_since: float = 0.0
    remote: object = None
    #: Seen created or written to, and not closed since.
    writing: bool = False
    #: Seen written to (not only created) since the last close.
    written: bool = False
    #: The last word of the events is "complete" (closed, or renamed in).
    closed_seen: bool = False
    #: Ready because unchanged for the grace time although never closed (see plan.WRITER_GRACE_SECONDS).
    unclosed: bool = False

    def apply(self, hint: Hint) -> None:
        """Let ``hint`` change what is known of the file."""
        if hint is Hint.SCAN:
            return
        self.hint = hint
        if hint in COMPLETE:
            self.writing = self.written = False
            self.closed_seen = True
        elif hint in {Hint.CREATED, Hint.MODIFIED}:
            self.writing = True
            self.written = self.written or hint is Hint.MODIFIED
            self.closed_seen = False


class UploadSchedule:
    """Pending files as a heap of due times, plus the set of paths in flight."""

    def __init__(self, *, settle_seconds: float, close_events: bool = False) -> None:
        self.settle_seconds = settle_seconds
        #: Whether close events are seen (inotify): then an unclosed writer is waited for.
        self.close_events = close_events
        self._items: dict[str, Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._inflight: dict[str, Entry] = {}
        self._shadows: dict[str, Entry] = {}

    # --- counts ------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Files waiting (not in flight)."""
        return len(self._items)

    @property
    def in_flight(self) -> int:
        """Files being uploaded."""
        return len(self._inflight)

    def is_queued(self, rel: str) -> bool:
        """Whether ``rel`` is queued or in flight."""
        return rel in self._items or rel in self._inflight

    def in_flight_paths(self) -> list[str]:
        """The relative paths in flight."""
        return list(self._inflight)

    def next_due(self) -> float | None:
        """The earliest due time on the heap (possibly of a stale entry), or None."""
        return self._heap[0][0] if self._heap else None

    # --- inputs ------------------------------------------------------------------------------
    def note(self, rel: str, path: Path, hint: Hint, now: float, remote: object = None) -> None:
        """A hint about ``rel``: queue it (or update it); remembered for later if it is in flight."""
        if rel in self._inflight:
            shadow = self._shadows.get(rel)
            if shadow is None:
                shadow = Entry(rel, path, Hint.SCAN, now, remote=remote)
                self._shadows[rel] = shadow
            shadow.apply(hint)
            if hint is Hint.DELETED:
                shadow.hint = Hint.DELETED
            shadow.remote = remote
            return
        if hint is Hint.DELETED:
            self._items.pop(rel, None)
            return
        item = self._items.get(rel)
        if item is None:
            item = Entry(rel, path, hint, now, stable_since=now, remote=remote)
            item.apply(hint)
            self._items[rel] = item
        else:
            item.apply(hint)
            item.path = path
            item.remote = remote
            if item.attempt == 0:
                item.due = now
        self._push(item)

    def _push(self, item: Entry) -> None:
        heapq.heappush(self._heap, (item.due, next(self._seq), item.rel))

    # --- taking and releasing ------------------------------------------------------------------
    def take(
        self,
        now: float,
        probe: Callable[[Path], Probe],
        *,
        wall: float,
        on_drop: Callable[[Entry, str], None] | None = None,
        veto: Callable[[Entry, Probe], bool] | None = None,
    ) -> Entry | None:
        """Pop the next due file that is ready and mark it in flight; None when none is.

        ``wall`` is the time of day (for the age of an mtime); ``on_drop(entry, reason)`` hears of
        queued paths that are no longer regular files (reason "" when simply gone). ``veto(entry,
        probe)`` is asked about a file that would be ready: True keeps it waiting (a process still
        writes to it; a close or a rename into the folder says one writer is done, not every one).
        """
        while self._heap:
            due, _, rel = self._heap[0]
            item = self._items.get(rel)
            if item is None or item.due != due:
                heapq.heappop(self._heap)  # stale entry
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            try:
                ready = self._ready(item, probe(item.path), now, wall, on_drop, veto)
            except BaseException:
                # A probe or veto that fails must not lose the file: it stays queued, looked at again.
                if item.rel in self._items:
                    item.due = now + POLL_SECONDS
                    self._push(item)
                raise
            if ready:
                del self._items[rel]
                self._inflight[rel] = item
                return item
            if rel in self._items:
                item.due = now + POLL_SECONDS
                self._push(item)
        return None

    def _ready(
        self,
        item: Entry,
        seen: Probe,
        now: float,
        wall: float,
        on_drop: Callable[[Entry, str], None] | None,
        veto: Callable[[Entry, Probe], bool] | None,
    ) -> bool:
        if seen.kind == "error":
            return True  # the worker reports it
        if seen.kind != "file":
            del self._items[item.rel]
            if on_drop is not None:
                on_drop(item, "" if seen.kind == "gone" else seen.kind)
            return False
        if item.seen != seen.signature:
            if item.seen is not None and item.hint in COMPLETE:
                item.hint = Hint.SCAN  # changed after "complete": wait again
                item.closed_seen = False
            item.seen = seen.signature
            item.stable_since = now
        # Only a write seen since the last close holds a file back whatever its age. A file seen
        # created and never written to is a hard link, a file that came with a folder moved in
        # (watchdog reports those as created), or a writer's still empty file: the settle time
        # and the caller's veto (a visible process holding it open for writing) decide for it.
        writing = item.writing and item.written
        ready = ready_to_upload(
            hint=item.hint,
            age_seconds=wall - seen.mtime_ns / 1e9,
            stable_seconds=now - item.stable_since,
            settle_seconds=self.settle_seconds,
            writing=writing,
            close_events=self.close_events,
        )
        if ready and veto is not None and veto(item, seen):
            return False
        item.unclosed = ready and writing
        return ready

    def release(self, item: Entry, now: float, retry: float | None) -> None:
        """``item`` is done; ``retry`` (seconds) puts it back. Hints noted meanwhile are applied.

        The caller resets ``item.remote`` before a retry when what it knew of the bucket is stale.
        """
        self._inflight.pop(item.rel, None)
        shadow = self._shadows.pop(item.rel, None)
        if retry is not None:
            item.due = now + retry
            if item.hint not in COMPLETE:
                item.hint = Hint.SCAN
            item.seen = None
            self._items[item.rel] = item
            if shadow is not None:
                self._merge(item, shadow, now)
            self._push(item)
            return
        if shadow is None or shadow.hint is Hint.DELETED:
            return
        fresh = Entry(item.rel, shadow.path, shadow.hint, now, stable_since=now, remote=shadow.remote)
        self._merge(fresh, shadow, now)
        self._items[item.rel] = fresh
        self._push(fresh)

    @staticmethod
    def _merge(item: Entry, shadow: Entry, now: float) -> None:
        if shadow.hint is Hint.SCAN and not shadow.writing and not shadow.closed_seen:
            return  # only scans: nothing new
        item.hint = shadow.hint
        item.writing, item.written, item.closed_seen = shadow.writing, shadow.written, shadow.closed_seen
        item.remote = shadow.remote
        if item.attempt == 0:
            item.due = min(item.due, now)
