"""The upload side of the daemon: hints -> ready check -> queue -> transfer -> state.

One dispatcher thread owns a schedule of pending files (a heap of due times). It checks
each due file for readiness (complete, or settled), hands ready files to a pool of
``S3_MAX_CONCURRENCY`` workers, and puts failed ones back with exponential backoff and
jitter: nothing is dropped while the daemon runs. A worker that finishes a file takes the
next ready one from the same schedule itself, so a long queue runs without a hand-off per
file. A path is never in flight twice; a hint arriving while it is in flight is remembered
and handled after.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import random
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from s3sync.errors import (
    ConfigurationError,
    IntegrityError,
    InvalidNameError,
    LocalFileError,
    S3SyncError,
    StateError,
)
from s3sync.localfs import hash_file
from s3sync.plan import LocalStat, UploadAction, backoff_delay, is_ignored_name, plan_upload, ready_to_upload
from s3sync.settings import Settings
from s3sync.state import State, UploadRecord
from s3sync.transport import UNKNOWN, RemoteObject, Transport, UploadResult

__all__ = ["Uploader", "UploaderStats"]

log = structlog.get_logger("s3sync")

_HIDDEN_PART = os.sep + "."  # a path part that starts with a dot
_POLL = 0.25  # how often a settling file is re-checked (seconds)
_ONE_SHOT_ATTEMPTS = 4


@dataclass
class UploaderStats:
    """Counters for status lines and the summary of ``s3sync sync``."""

    queued: int = 0
    uploaded: int = 0
    skipped: int = 0
    rejected: int = 0
    failed: int = 0
    failed_final: int = 0
    bytes: int = 0


@dataclass
class _Item:
    rel: str
    path: Path
    hint: str
    due: float
    attempt: int = 0
    seen: tuple[int, int] | None = None
    stable_since: float = 0.0
    remote: Any = field(default=UNKNOWN)


class Uploader:
    """Upload every validly named file of the upload folder, once, completely."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        state: State,
        *,
        one_shot: bool = False,
        dry_run: bool = False,
        on_result: Callable[[str, int, float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.state = state
        self.root = settings.upload_dir_path
        self.one_shot = one_shot
        self.dry_run = dry_run
        self.stats = UploaderStats()
        self.heartbeat = time.monotonic()
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._items: dict[str, _Item] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._inflight: set[str] = set()
        self._dirty: dict[str, str] = {}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="s3sync-upload")
        self._thread: threading.Thread | None = None
        # The daemon's own folders, when they sit inside the upload folder, are never uploaded.
        own = (settings.done_dir, settings.rejected_dir, settings.state_path.parent)
        self._excluded = [p for p in own if p is not None and self.root in p.parents]
        self._prefix = str(self.root).rstrip(os.sep) + os.sep

    # --- inputs ------------------------------------------------------------------------------
    def ignored(self, path: Path) -> bool:
        """True for paths the daemon never uploads: hidden, temporary, or its own folders."""
        return self._accepted(path) is None

    def _rel(self, path: Path) -> str | None:
        """``path`` relative to the upload folder (a str, ``""`` for the folder); None when outside it."""
        text = os.fspath(path)
        if text.startswith(self._prefix):
            return text[len(self._prefix) :]
        try:  # not spelled from the folder's own name (".." or a doubled slash): the slow, exact way
            rel = str(path.relative_to(self.root))
        except ValueError:
            return None
        return "" if rel == "." else rel

    def _accepted(self, path: Path) -> str | None:
        """The relative path of a file the daemon may upload; None when it is ignored."""
        rel = self._rel(path)
        if rel is None or rel.startswith(".") or _HIDDEN_PART in rel or is_ignored_name(rel.rpartition(os.sep)[2]):
            return None
        if self._excluded and any(path == ex or ex in path.parents for ex in self._excluded):
            return None
        return rel

    def notify(self, path: Path, hint: str, *, remote: RemoteObject | object | None = UNKNOWN) -> None:
        """A hint about ``path`` (from the watcher or a scan)."""
        rel = self._accepted(path)
        if rel is None:
            return
        if hint == "dir":
            for child in self._walk(path):
                self.notify(child, "scan")
            return
        self._note(path, rel, hint, remote)

    def _note(self, path: Path, rel: str, hint: str, remote: RemoteObject | object | None) -> None:
        with self._cond:
            if hint == "deleted":
                item = self._items.pop(rel, None)
                if item is not None:
                    self.stats.queued -= 1
                return
            if rel in self._inflight:
                self._dirty[rel] = hint
                return
            now = time.monotonic()
            item = self._items.get(rel)
            if item is None:
                item = _Item(rel, path, hint, now, stable_since=now, remote=remote)
                self._items[rel] = item
                self.stats.queued += 1
                if hint not in {"scan"}:
                    log.debug("upload.queued", path=rel, hint=hint)
            else:
                if hint in {"closed", "moved"} or item.hint not in {"closed", "moved"}:
                    item.hint = hint
                item.remote = UNKNOWN if remote is UNKNOWN else remote
                if item.attempt == 0:
                    item.due = now
            self._push(item)

    def _push(self, item: _Item) -> None:
        heapq.heappush(self._heap, (item.due, next(self._seq), item.rel))
        self._cond.notify()

    def _walk(self, top: Path) -> Iterator[Path]:
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        # The folder was accepted: only this entry's own name can make it ignored.
                        name = entry.name
                        if name.startswith(".") or is_ignored_name(name):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            p = Path(entry.path)
                            if not self.ignored(p):
                                stack.append(p)
                        elif entry.is_file(follow_symlinks=False):
                            yield Path(entry.path)
            except OSError:
                continue

    def candidates(self) -> list[Path]:
        """The files a catch-up or rescan queues: not queued or in flight, and not known to the state
        as uploaded with their current stat.

        The caller may look them up in the bucket (one listing) before it passes them to :meth:`queue`.
        """
        found: list[Path] = []
        batch: list[Path] = []
        for path in self._walk(self.root):
            batch.append(path)
            if len(batch) >= 500:
                found.extend(self._needing_upload(batch))
                batch = []
        return found + self._needing_upload(batch)

    def queue(self, paths: list[Path], *, remote_lookup: Callable[[str], RemoteObject | None] | None = None) -> int:
        """Queue ``paths`` (from :meth:`candidates`); return how many."""
        for path in paths:
            remote: RemoteObject | object | None = UNKNOWN
            if remote_lookup is not None:
                with contextlib.suppress(InvalidNameError):
                    remote = remote_lookup(self.transport.resource(path.name).key)
            rel = self._accepted(path)
            if rel is not None:
                self._note(path, rel, "scan", remote)
        return len(paths)

    def _needing_upload(self, paths: list[Path]) -> list[Path]:
        found: list[Path] = []
        rels = [self._rel(p) or "" for p in paths]
        records = self.state.get_uploads(rels)
        for path, rel in zip(paths, rels, strict=True):
            with self._cond:
                if rel in self._items or rel in self._inflight:
                    continue
            try:
                st = path.lstat()
            except OSError:
                continue
            rec = records.get(rel)
            action = plan_upload(LocalStat(st.st_size, st.st_mtime_ns), *_rec(rec))
            if action is UploadAction.IGNORE_REJECTED:
                continue
            if action is UploadAction.SKIP and self.settings.after_upload == "keep":
                continue
            found.append(path)
        return found

    # --- the dispatcher --------------------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher thread."""
        self._thread = threading.Thread(target=self._dispatch_loop, name="s3sync-dispatch", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the dispatcher thread runs and has ticked recently."""
        stall = self.settings.loop_stall_seconds
        return self._thread is not None and self._thread.is_alive() and time.monotonic() - self.heartbeat < stall

    def pending(self) -> int:
        """Files queued or in flight."""
        with self._cond:
            return len(self._items) + len(self._inflight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or in flight (True), or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._items or self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(timeout=0.2 if remaining is None else min(0.2, remaining))
        return True

    def stop(self, timeout: float) -> bool:
        """Stop dispatching; let in-flight uploads finish within ``timeout``, else abort them.

        Returns True when every in-flight upload finished.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            clean = not self._inflight
        if not clean:
            # Past the deadline: stop issuing parts (their multipart uploads are aborted) and do not
            # wait for a request stuck on the network; the next start resumes from the state DB.
            self.transport.close()
            grace = time.monotonic() + 5.0  # interrupted multipart uploads abort within a part's time
            with self._cond:
                while self._inflight and time.monotonic() < grace:
                    self._cond.wait(timeout=0.1)
                drained = not self._inflight
        else:
            drained = True
        self._pool.shutdown(wait=drained, cancel_futures=True)
        return clean

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self._dispatch_due()
            except Exception:
                log.exception("upload.dispatch_error")
                self._stop.wait(1.0)

    def _dispatch_due(self) -> None:
        with self._cond:
            now = time.monotonic()
            while len(self._inflight) < self.settings.max_concurrency:
                item = self._take(now)
                if item is None:
                    break
                self._pool.submit(self._run_item, item)
            wait = 0.5
            if self._heap and len(self._inflight) < self.settings.max_concurrency:
                wait = max(0.0, min(wait, self._heap[0][0] - now))
            # When every worker is busy, a finishing worker wakes us (no busy loop).
            self._cond.wait(timeout=wait)

    def _take(self, now: float) -> _Item | None:
        """Pop the next due file that is ready and mark it in flight (the lock is held)."""
        while self._heap:
            due, _, rel = self._heap[0]
            item = self._items.get(rel)
            if item is None or item.due != due:
                heapq.heappop(self._heap)  # stale entry
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            if self._ready(item, now):
                del self._items[rel]
                self.stats.queued -= 1
                self._inflight.add(rel)
                return item
            if rel in self._items:
                item.due = now + _POLL
                self._push(item)
        return None

    def _ready(self, item: _Item, now: float) -> bool:
        try:
            st = item.path.lstat()
        except FileNotFoundError:
            self._items.pop(item.rel, None)
            self.stats.queued -= 1
            return False
        except OSError:
            return True  # let the worker report it
        if not stat.S_ISREG(st.st_mode):
            self._items.pop(item.rel, None)
            self.stats.queued -= 1
            if stat.S_ISLNK(st.st_mode):
                log.info("upload.skipped", path=item.rel, reason="symlink (not followed)")
            return False
        if item.seen != (st.st_size, st.st_mtime_ns):
            if item.seen is not None and item.hint in {"closed", "moved"}:
                item.hint = "modified"  # it changed again after "complete": wait for it to settle
            item.seen = (st.st_size, st.st_mtime_ns)
            item.stable_since = now
        return ready_to_upload(
            hint=item.hint,
            age_seconds=time.time() - st.st_mtime_ns / 1e9,
            stable_seconds=now - item.stable_since,
            settle_seconds=self.settings.settle_seconds,
        )

    # --- the workers -------------------------------------------------------------------------
    def _run_item(self, first: _Item) -> None:
        # A worker that finishes a file takes the next due one itself: a busy queue (a catch-up, a
        # flood of new files) then costs no hand-off through the dispatcher per file. The dispatcher
        # is woken only when this worker finds nothing to do.
        item: _Item | None = first
        while item is not None:
            retry: float | None = None
            carry_on = False
            try:
                try:
                    self._process(item)
                except (ConfigurationError, S3SyncError, OSError) as exc:
                    retry = self._failed(item, exc)
                except Exception as exc:
                    log.exception("upload.failed", path=item.rel, error=f"{type(exc).__name__}: {exc}")
                    retry = self._failed(item, exc)
                carry_on = True
            finally:
                item = self._release(item, retry, take_next=carry_on)

    def _release(self, item: _Item, retry: float | None, *, take_next: bool) -> _Item | None:
        """A file is done: put it back when it is to be ``retry``-ed, and take the next due one.

        Returns the file taken (now in flight), or None after waking the dispatcher and anyone
        in :meth:`wait_idle`.
        """
        with self._cond:
            self._inflight.discard(item.rel)
            again = self._dirty.pop(item.rel, None)
            if retry is not None and not self._stop.is_set():
                item.due = time.monotonic() + retry
                item.hint = "scan" if item.hint not in {"closed", "moved"} else item.hint
                item.remote = UNKNOWN
                self._items[item.rel] = item
                self.stats.queued += 1
                self._push(item)
            following = self._take(time.monotonic()) if take_next and not self._stop.is_set() else None
            if following is None:
                self._cond.notify_all()
        if again is not None and not self._stop.is_set():
            self.notify(item.path, again)
        return following

    def _failed(self, item: _Item, exc: BaseException) -> float | None:
        item.attempt += 1
        self.stats.failed += 1
        error = str(exc) if isinstance(exc, S3SyncError) else f"{type(exc).__name__}: {exc}"
        final = self.one_shot and item.attempt >= _ONE_SHOT_ATTEMPTS
        if isinstance(exc, FileNotFoundError) or (isinstance(exc, LocalFileError) and not item.path.exists()):
            log.info("upload.skipped", path=item.rel, reason="vanished")
            return None
        delay = backoff_delay(item.attempt, base=self.settings.retry_base, cap=self.settings.retry_cap, rng=self._rng)
        if self.one_shot:
            delay = min(delay, 2.0)
        if self._on_result is not None:
            self._on_result("failed", 0, 0.0)
        if final:
            self.stats.failed_final += 1
            log.error("upload.failed", path=item.rel, error=error, attempt=item.attempt, retry_in=None, final=True)
            return None
        log.warning("upload.failed", path=item.rel, error=error, attempt=item.attempt, retry_in=round(delay, 2))
        return delay

    def _process(self, item: _Item) -> None:
        path, rel = item.path, item.rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        local = LocalStat(st.st_size, st.st_mtime_ns)
        rec = self.state.get_upload(rel)
        try:
            res = self.transport.resource(path.name)
        except InvalidNameError as exc:
            self._reject(path, rel, local, rec, exc.reason)
            return
        action = plan_upload(local, *_rec(rec))
        if rec is not None and rec.status == "uploaded" and rec.key == res.key:
            if action is UploadAction.SKIP:
                self._after_upload(path, rel, rec.key, local, rec.sha256 or "", rec.etag or "")
                return
            if action is UploadAction.VERIFY and hash_file(path, md5=False).sha256 == rec.sha256:
                self.state.record_uploaded(rel, local.size, local.mtime_ns, rec.sha256 or "", res.key, rec.etag or "")
                self._after_upload(path, rel, res.key, local, rec.sha256 or "", rec.etag or "")
                return
        if self.dry_run:
            log.info("upload.would_upload", path=rel, key=res.key, bytes=local.size)
            self.stats.uploaded += 1
            return
        log.info("upload.started", path=rel, key=res.key, bytes=local.size, attempt=item.attempt + 1)
        result = self.transport.upload(path, remote=item.remote)
        self._record(rel, result)
        self._after_upload(path, rel, result.key, LocalStat(result.size, result.mtime_ns), result.sha256, result.etag)

    def _record(self, rel: str, result: UploadResult) -> None:
        self.state.record_uploaded(rel, result.size, result.mtime_ns, result.sha256, result.key, result.etag)
        if result.skipped:
            self.stats.skipped += 1
            log.info("upload.skipped", path=rel, key=result.key, reason="same content already in the bucket")
            if self._on_result is not None:
                self._on_result("skipped", 0, 0.0)
        else:
            self.stats.uploaded += 1
            self.stats.bytes += result.bytes
            log.info(
                "upload.succeeded",
                path=rel,
                key=result.key,
                bytes=result.bytes,
                duration_ms=result.duration_ms,
                multipart=result.multipart,
            )
            if self._on_result is not None:
                self._on_result("succeeded", result.bytes, result.duration_ms / 1000)

    def _reject(self, path: Path, rel: str, local: LocalStat, rec: UploadRecord | None, reason: str) -> None:
        if rec is not None and rec.status == "rejected" and (rec.size, rec.mtime_ns) == (local.size, local.mtime_ns):
            return
        self.stats.rejected += 1
        if self._on_result is not None:
            self._on_result("rejected", 0, 0.0)
        if self.dry_run:
            log.info("upload.would_reject", path=rel, reason=reason)
            return
        moved_to = None
        if self.settings.rejected_dir is not None:
            moved_to = self._move(path, self.settings.rejected_dir / rel)
        log.warning("upload.rejected", path=rel, reason=reason, moved_to=str(moved_to) if moved_to else None)
        if moved_to is None:
            self.state.record_rejected(rel, local.size, local.mtime_ns, reason)

    def _after_upload(self, path: Path, rel: str, key: str, local: LocalStat, sha256: str, etag: str) -> None:
        policy = self.settings.after_upload
        if policy == "keep" or self.dry_run:
            return
        if not self.transport.confirm(key, local.size, sha256, etag):
            raise IntegrityError(f"s3://{self.transport.bucket}/{key} could not be confirmed; {rel} kept", key=key)
        try:
            now = path.lstat()
        except FileNotFoundError:
            return
        if (now.st_size, now.st_mtime_ns) != (local.size, local.mtime_ns):
            return  # changed since the upload: it will be uploaded again, then handled
        if policy == "move" and self.settings.done_dir is not None:
            moved = self._move(path, self.settings.done_dir / rel)
            log.info("upload.moved", path=rel, key=key, to=str(moved))
        elif policy == "delete":
            path.unlink()
            log.info("upload.deleted", path=rel, key=key)
        with contextlib.suppress(StateError):
            self.state.forget_upload(rel)

    @staticmethod
    def _move(path: Path, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)
        except OSError:
            shutil.move(str(path), str(dest))
        return dest


def _rec(rec: UploadRecord | None) -> tuple[str | None, LocalStat | None]:
    if rec is None:
        return None, None
    return rec.status, LocalStat(rec.size, rec.mtime_ns)
