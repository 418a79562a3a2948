"""The upload side of the daemon: hints -> ready check -> queue -> transfer -> state.

One dispatcher thread hands due, ready files from the :class:`~s3sync.schedule.UploadSchedule`
(which holds the rules: never in flight twice, a writer that has not closed is waited for) to
a pool of ``S3_MAX_CONCURRENCY`` workers, and puts failed ones back with exponential backoff
and jitter: nothing is dropped while the daemon runs. A worker that finishes a file takes the
next ready one from the same schedule itself, so a long queue runs without a hand-off per file.

What a worker does with a file, in order: refuse what is not a regular file; judge its name
(rejected files go to ``S3_REJECTED_DIR`` under a name that never overwrites); skip it when the
state knows it is in the bucket; refuse a key that another path owns with other content (a
conflict: kept in place, one ``upload.conflict`` event); upload it from one descriptor (a change
while it is read discards the attempt); and only then, with ``move`` or ``delete``, confirm the
object with a HEAD and check that the file is unchanged and closed before it goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from s3sync.errors import (
    ConfigurationError,
    FileChangedError,
    IntegrityError,
    InvalidNameError,
    LocalFileError,
    NotRegularFileError,
    S3SyncError,
    StateError,
    WriteConflictError,
)
from s3sync.localfs import FileHashes, lstat_under, move_no_replace, open_dir_under, rename_no_replace
from s3sync.openfiles import OpenWriters
from s3sync.outcomes import ResultSink
from s3sync.plan import LocalStat, UploadAction, backoff_delay, is_ignored_name, plan_upload
from s3sync.schedule import Entry, Hint, Probe, UploadSchedule
from s3sync.settings import Settings
from s3sync.sourcefile import file_kind, identity, read_hashes
from s3sync.state import State, UploadRecord
from s3sync.transport import UNKNOWN, RemoteObject, Transport, UploadResult

__all__ = ["Uploader", "UploaderStats", "upload_rules"]

log = structlog.get_logger("s3sync")

_HIDDEN_PART = os.sep + "."  # a path part that starts with a dot
_ONE_SHOT_ATTEMPTS = 4
_KEY_BUSY_RETRY = 0.5  # another path's upload of the same key is in flight: look again after it
_CHANGED_RETRY = 0.5  # the file changed while read: look again (it must settle or close first)


def upload_rules(settings: Settings) -> str:
    """A fingerprint of the settings that decide a rejection or a conflict.

    A verdict recorded under other rules is looked at again: a category code added, a rejected
    folder set, the conflict policy changed.
    """
    rules = {
        "category_map": sorted(settings.category_map.items()),
        "extensions": sorted(settings.allowed_extensions),
        "key_template": settings.key_template,
        "rejected_dir": str(settings.rejected_dir or ""),
        "on_conflict": settings.upload_on_conflict,
    }
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class UploaderStats:
    """Counters for status lines and the summary of ``s3sync sync``."""

    uploaded: int = 0
    skipped: int = 0
    rejected: int = 0
    conflicts: int = 0
    failed: int = 0
    failed_final: int = 0
    bytes: int = 0


class _KeyBusyError(S3SyncError):
    """Another path's upload of the same key is in flight."""


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
        close_events: bool = False,
        on_result: ResultSink | None = None,
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
        self._rules = upload_rules(settings)
        self._cond = threading.Condition()
        self._sched = UploadSchedule(settle_seconds=settings.settle_seconds, close_events=close_events)
        self._writers = OpenWriters(self.root)
        self._keys: dict[str, str] = {}  # key -> the path whose upload of it is in flight
        self._progress: dict[str, float] = {}  # path in flight -> when it last made progress
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="s3sync-upload")
        self._thread: threading.Thread | None = None
        self.abandoned: list[str] = []
        # The daemon's own folders, when they sit inside the upload folder, are never uploaded.
        own = (settings.done_dir, settings.rejected_dir, settings.state_path.parent)
        self._excluded = [p for p in own if p is not None and self.root in p.parents]
        self._prefix = str(self.root).rstrip(os.sep) + os.sep

    def set_close_events(self, seen: bool) -> None:
        """Whether the watcher reports close-after-write (inotify): then an unclosed writer is waited for."""
        with self._cond:
            self._sched.close_events = seen

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
            try:
                kind = Hint(hint)
            except ValueError:
                kind = Hint.SCAN
            self._sched.note(rel, path, kind, time.monotonic(), remote)
            if kind in {Hint.CREATED, Hint.MODIFIED, Hint.CLOSED, Hint.MOVED}:
                log.debug("upload.queued", path=rel, hint=hint)
            self._cond.notify()

    def _walk(self, top: Path) -> Iterator[Path]:
        """The regular files below ``top``; every folder is opened from the upload folder down,
        following no symlink (a folder swapped for a symlink between two looks is not entered)."""
        top_rel = self._rel(top)
        if top_rel is None:
            return
        stack = [top_rel]
        while stack:
            rel = stack.pop()
            try:
                fd = open_dir_under(self.root, self._parts(rel) if rel else (), create=False)
            except LocalFileError:
                continue
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        # The folder was accepted: only this entry's own name can make it ignored.
                        name = entry.name
                        if name.startswith(".") or is_ignored_name(name):
                            continue
                        child = f"{rel}{os.sep}{name}" if rel else name
                        if entry.is_dir(follow_symlinks=False):
                            if not self.ignored(self.root / child):
                                stack.append(child)
                        elif entry.is_file(follow_symlinks=False):
                            yield self.root / child
            except OSError:
                continue
            finally:
                os.close(fd)

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
                if self._sched.is_queued(rel):
                    continue
            try:
                st = path.lstat()
            except OSError:
                continue
            action = self._plan(identity(st), records.get(rel))
            if action is UploadAction.IGNORE_REJECTED:
                continue
            if action is UploadAction.SKIP and self.settings.after_upload == "keep":
                continue
            found.append(path)
        return found

    def _plan(self, local: LocalStat, rec: UploadRecord | None) -> UploadAction:
        if rec is None:
            return plan_upload(local, None, None)
        return plan_upload(
            local,
            rec.status,
            LocalStat(rec.size, rec.mtime_ns, rec.ctime_ns, rec.ino),
            record_rules=rec.rules,
            rules=self._rules,
        )

    # --- the dispatcher --------------------------------------------------------------------
    def restore_aside(self) -> int:
        """Put back files a crash left between their last check and their deletion; return how many.

        They come back under their name (or ``name.1``) and are looked at again like any file.
        """
        restored = 0
        stack: list[tuple[str, ...]] = [()]
        while stack:
            parts = stack.pop()
            try:
                fd = open_dir_under(self.root, parts, create=False)
            except LocalFileError:
                continue
            try:
                with os.scandir(fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]
            except OSError:
                entries = []
            finally:
                os.close(fd)
            for name, is_dir, is_file in entries:
                if is_dir and not name.startswith("."):
                    stack.append((*parts, name))
                elif is_file and name.startswith(_ASIDE):
                    original = name[len(_ASIDE) :]
                    if original.startswith("~") or not original:
                        original = f"recovered-{original.lstrip('~')}"
                    src = (*parts, name)
                    with contextlib.suppress(LocalFileError):
                        back = (*parts, original)
                        move_no_replace(self.root.joinpath(*src), self.root, back, src_root=self.root, src_segments=src)
                        restored += 1
        if restored:
            log.info("upload.restored", count=restored, reason="a delete was interrupted; looked at again")
        return restored

    def start(self) -> None:
        """Start the dispatcher thread (after putting back files an interrupted delete left aside)."""
        if not self.dry_run:
            self.restore_aside()
        self._thread = threading.Thread(target=self._dispatch_loop, name="s3sync-dispatch", daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the dispatcher thread runs and has ticked recently."""
        stall = self.settings.loop_stall_seconds
        return self._thread is not None and self._thread.is_alive() and time.monotonic() - self.heartbeat < stall

    def pending(self) -> int:
        """Files queued or in flight."""
        with self._cond:
            return self._sched.queued + self._sched.in_flight

    def stalled_workers(self) -> list[str]:
        """Paths whose upload made no progress for ``S3_LOOP_STALL_SECONDS`` (a stuck worker)."""
        limit = time.monotonic() - self.settings.loop_stall_seconds
        with self._cond:
            return sorted(rel for rel, last in self._progress.items() if last < limit)

    def _tick(self, rel: str) -> None:
        self._progress[rel] = time.monotonic()  # a dict store: atomic, no lock needed

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or in flight (True), or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._sched.queued or self._sched.in_flight:
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
            while self._sched.in_flight and time.monotonic() < deadline:
                self._cond.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            clean = not self._sched.in_flight
        if not clean:
            # Past the deadline: stop issuing parts (their multipart uploads are aborted) and do not
            # wait for a request stuck on the network; the next start resumes from the state DB.
            self.transport.close()
            grace = time.monotonic() + 5.0  # interrupted multipart uploads abort within a part's time
            with self._cond:
                while self._sched.in_flight and time.monotonic() < grace:
                    self._cond.wait(timeout=0.1)
                drained = not self._sched.in_flight
        else:
            drained = True
        #: Workers still inside a file after the deadline and the grace (a read that never returns):
        #: the process must not wait for them at exit (see ``s3sync run``).
        self.abandoned = self._sched.in_flight_paths() if not drained else []
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
            while self._sched.in_flight < self.settings.max_concurrency:
                item = self._take(now)
                if item is None:
                    break
                self._pool.submit(self._run_item, item)
            wait = 0.5
            due = self._sched.next_due()
            if due is not None and self._sched.in_flight < self.settings.max_concurrency:
                wait = max(0.0, min(wait, due - now))
            # When every worker is busy, a finishing worker wakes us (no busy loop).
            self._cond.wait(timeout=wait)

    def _take(self, now: float) -> Entry | None:
        """The next due file that is ready, now in flight (the lock is held)."""
        item = self._sched.take(now, self._probe, wall=time.time(), on_drop=self._dropped, veto=self._open_writer)
        if item is not None:
            self._progress[item.rel] = now
        return item

    def _probe(self, path: Path) -> Probe:
        """``lstat`` for the schedule, below the upload folder without following symlinks."""
        rel = self._rel(path)
        try:
            st = lstat_under(self.root, self._parts(rel), strict=True) if rel else path.lstat()
        except (OSError, LocalFileError):
            return Probe("error")  # the worker tries, and reports it
        if st is None:
            return Probe("gone")
        kind = file_kind(st.st_mode)
        if kind != "file":
            return Probe("gone" if kind == "folder" else kind)
        return Probe("file", st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink, st.st_dev)

    def _dropped(self, item: Entry, kind: str) -> None:
        if kind == "symlink":
            log.info("upload.skipped", path=item.rel, reason="symlink (not followed)")
        elif kind:
            log.info("upload.skipped", path=item.rel, reason=f"a {kind}, not a regular file")

    def _open_writer(self, item: Entry, seen: Probe) -> bool:
        """Whether a process we can see still writes to the file (asked only when no close was seen)."""
        return self._writers.is_open_for_writing(seen.dev, seen.ino)

    # --- the workers -------------------------------------------------------------------------
    def _run_item(self, first: Entry) -> None:
        # A worker that finishes a file takes the next due one itself: a busy queue (a catch-up, a
        # flood of new files) then costs no hand-off through the dispatcher per file. The dispatcher
        # is woken only when this worker finds nothing to do.
        item: Entry | None = first
        while item is not None:
            retry: float | None = None
            carry_on = False
            try:
                try:
                    self._process(item)
                except _KeyBusyError:
                    retry = _KEY_BUSY_RETRY
                except FileChangedError as exc:
                    # Not a failure: the file is being changed. It goes back, and is taken again only
                    # once it is complete (closed, or settled) — with what it then holds.
                    log.info("upload.changed", path=item.rel, reason=str(exc))
                    item.hint, item.closed_seen = Hint.SCAN, False  # complete again only by a new close, or settled
                    retry = _CHANGED_RETRY
                except NotRegularFileError as exc:
                    reason = "symlink (not followed)" if exc.kind == "symlink" else f"a {exc.kind}, not a regular file"
                    log.info("upload.skipped", path=item.rel, reason=reason)
                except (ConfigurationError, S3SyncError, OSError) as exc:
                    retry = self._failed(item, exc)
                except Exception as exc:
                    log.exception("upload.failed", path=item.rel, error=f"{type(exc).__name__}: {exc}")
                    retry = self._failed(item, exc)
                carry_on = True
            finally:
                item = self._release(item, retry, take_next=carry_on)

    def _release(self, item: Entry, retry: float | None, *, take_next: bool) -> Entry | None:
        """A file is done: put it back when it is to be ``retry``-ed, and take the next due one.

        Returns the file taken (now in flight), or None after waking the dispatcher and anyone
        in :meth:`wait_idle`.
        """
        with self._cond:
            self._progress.pop(item.rel, None)
            now = time.monotonic()
            if retry is not None:
                item.remote = UNKNOWN
            self._sched.release(item, now, None if self._stop.is_set() else retry)
            following = self._take(now) if take_next and not self._stop.is_set() else None
            if following is None:
                self._cond.notify_all()
        return following

    def _failed(self, item: Entry, exc: BaseException) -> float | None:
        item.attempt += 1
        self.stats.failed += 1
        error = str(exc) if isinstance(exc, S3SyncError) else f"{type(exc).__name__}: {exc}"
        final = self.one_shot and item.attempt >= _ONE_SHOT_ATTEMPTS
        if isinstance(exc, FileNotFoundError) or (isinstance(exc, LocalFileError) and not _exists(item.path)):
            log.info("upload.skipped", path=item.rel, reason="vanished")
            return None
        delay = backoff_delay(item.attempt, base=self.settings.retry_base, cap=self.settings.retry_cap, rng=self._rng)
        if self.one_shot:
            delay = min(delay, 2.0)
        if self._on_result is not None:
            self._on_result("failed", 0, 0.0, path=item.path, reason=error)
        if final:
            self.stats.failed_final += 1
            log.error("upload.failed", path=item.rel, error=error, attempt=item.attempt, retry_in=None, final=True)
            return None
        log.warning("upload.failed", path=item.rel, error=error, attempt=item.attempt, retry_in=round(delay, 2))
        return delay

    def _parts(self, rel: str) -> tuple[str, ...]:
        return Path(rel).parts

    def _process(self, item: Entry) -> None:
        path, rel = item.path, item.rel
        # Every look at the file goes through the upload folder one folder at a time, following no
        # symlink: a subfolder swapped for a symlink leads nowhere (the path is then "gone").
        st = lstat_under(self.root, self._parts(rel), strict=True)
        if st is None:
            return
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            if kind != "folder":
                raise NotRegularFileError(f"{str(path)!r} is a {kind}", kind=kind, path=str(path))
            return
        local = identity(st)
        rec = self.state.get_upload(rel)
        try:
            res = self.transport.resource(path.name)
        except InvalidNameError as exc:
            self._reject(path, rel, local, rec, exc.reason)
            return
        action = self._plan(local, rec)
        if action is UploadAction.IGNORE_REJECTED:
            return  # the same verdict (rejected, or in conflict) under the same rules
        if rec is not None and rec.status == "uploaded" and rec.key == res.key:
            if action is UploadAction.SKIP:
                self._after_upload(item, rec.key, local, rec.sha256 or "", rec.etag or "")
                return
            if action is UploadAction.VERIFY:
                now, hashes = read_hashes(path, md5=False, root=self.root)
                if hashes.sha256 == rec.sha256:
                    self._record_stat(rel, now, rec.sha256 or "", res.key, rec.etag or "")
                    self._after_upload(item, res.key, now, rec.sha256 or "", rec.etag or "")
                    return
        self._claim(res.key, rel)
        try:
            if self._conflicts(item, res.key, local):
                return
            if self.dry_run:
                self._would_upload(item, rel, res.key, local)
                return
            log.info("upload.started", path=rel, key=res.key, bytes=local.size, attempt=item.attempt + 1)
            remote = item.remote if isinstance(item.remote, RemoteObject) or item.remote is None else UNKNOWN
            try:
                result = self.transport.upload(path, remote=remote, change_retries=1, progress=lambda: self._tick(rel))
            except WriteConflictError:
                # Another writer (another host) created or changed the key while this file was sent:
                # the same verdict as two paths of one folder mapping to one key. Nothing was overwritten.
                now, hashes = read_hashes(path, md5=False, root=self.root)
                self._conflict(item, res.key, now, hashes.sha256, "another writer (the key changed during the upload)")
                return
            self._record(rel, result)
        finally:
            with self._cond:
                self._keys.pop(res.key, None)
        source = result.source or LocalStat(result.size, result.mtime_ns)
        self._after_upload(item, result.key, source, result.sha256, result.etag)

    def _would_upload(self, item: Entry, rel: str, key: str, local: LocalStat) -> None:
        """Dry run: count an upload and its bytes, unless the bucket holds these bytes already (the real pass skips)."""
        remote = item.remote if isinstance(item.remote, RemoteObject) or item.remote is None else UNKNOWN
        listed_same_size = isinstance(remote, RemoteObject) and remote.size == local.size and not remote.sha256
        if remote is UNKNOWN or listed_same_size:
            remote = self.transport.head(key)  # read-only, as the real upload's own look
        if isinstance(remote, RemoteObject) and remote.size == local.size:
            _, hashes = read_hashes(item.path, md5=True, root=self.root)
            if remote.same_content(hashes.size, hashes.sha256, hashes.md5 or None):
                self.stats.skipped += 1
                log.info("upload.would_skip", path=rel, key=key, reason="same content already in the bucket")
                return
        log.info("upload.would_upload", path=rel, key=key, bytes=local.size)
        self.stats.uploaded += 1
        self.stats.bytes += local.size

    def _claim(self, key: str, rel: str) -> None:
        """Own ``key`` for this upload; :class:`_KeyBusyError` while another path's upload of it runs."""
        with self._cond:
            holder = self._keys.get(key)
            if holder is not None and holder != rel:
                raise _KeyBusyError(f"{key} is being uploaded from {holder}", key=key)
            self._keys[key] = rel

    def _conflicts(self, item: Entry, key: str, local: LocalStat) -> bool:
        """True (and one ``upload.conflict``) when another path owns ``key`` with other content."""
        if self.settings.upload_on_conflict == "overwrite":
            return False
        records = self.state.key_records(key, other_than=item.rel)
        if not records:
            return False
        read: list[tuple[LocalStat, FileHashes]] = []

        def content() -> tuple[LocalStat, FileHashes]:
            """The file's identity and SHA-256, read once whoever asks first."""
            if not read:
                read.append(read_hashes(item.path, md5=False, root=self.root))
            return read[0]

        held = [r for r in records if r.status == "conflict"]
        if held and self._held_back(item, key, local, held, content):
            return True
        owners = [r for r in records if r.status != "conflict"]
        if not owners:
            return False
        remote = self.transport.head(key)
        if remote is None:
            return False  # the object is gone from the bucket (removed on purpose): the key is free again
        now, hashes = content()
        same = [o for o in owners if o.sha256 == hashes.sha256]
        if same and remote.sha256 not in (None, hashes.sha256):
            same = []  # the bucket holds other bytes than the owner's (changed outside s3sync): not ours to take
        if same:
            # The same bytes under another name: nothing to send, and nothing is overwritten.
            owner = same[0]
            self._record_stat(item.rel, now, hashes.sha256, key, owner.etag or "")
            self.stats.skipped += 1
            log.info("upload.skipped", path=item.rel, key=key, reason=f"same content as {owner.path}")
            self._after_upload(item, key, now, hashes.sha256, owner.etag or "")
            return True
        other = owners[0].path
        self._conflict(item, key, now, hashes.sha256, other)
        return True

    def _held_back(
        self,
        item: Entry,
        key: str,
        local: LocalStat,
        held: list[UploadRecord],
        content: Callable[[], tuple[LocalStat, FileHashes]],
    ) -> bool:
        """True when this file is one held back as a conflict elsewhere, moved here (same inode or bytes).

        Moving the conflicting file onto the owner's path (its record says the owner's file is
        gone) must not turn the verdict into an update of the owner's object.
        """
        # The same inode, size and mtime: moved here (an inode number alone is reused once freed).
        moved = (local.ino, local.size, local.mtime_ns)
        match = next((r for r in held if r.ino and (r.ino, r.size, r.mtime_ns) == moved), None)
        now, sha256 = local, None
        if match is None:
            now, hashes = content()
            sha256 = hashes.sha256
            match = next((r for r in held if r.sha256 and r.sha256 == sha256), None)
        if match is None:
            return False
        self._conflict(item, key, now, sha256 or match.sha256, match.path)
        return True

    def _conflict(self, item: Entry, key: str, now: LocalStat, sha256: str | None, other: str) -> None:
        self.state.record_conflict(
            item.rel,
            now.size,
            now.mtime_ns,
            key,
            f"same key as {other}",
            ctime_ns=now.ctime_ns,
            ino=now.ino,
            rules=self._rules,
            sha256=sha256,
        )
        self.stats.conflicts += 1
        log.warning(
            "upload.conflict",
            path=item.rel,
            other=other,
            key=key,
            reason=f"{item.rel} and {other} map to the same key with different content; {item.rel} kept, not uploaded",
        )
        if self._on_result is not None:
            self._on_result("conflict", 0, 0.0, key=key, path=item.path, reason=f"same key as {other}")

    def _record_stat(self, rel: str, local: LocalStat, sha256: str, key: str, etag: str) -> None:
        self.state.record_uploaded(
            rel, local.size, local.mtime_ns, sha256, key, etag, ctime_ns=local.ctime_ns, ino=local.ino
        )

    def _record(self, rel: str, result: UploadResult) -> None:
        source = result.source or LocalStat(result.size, result.mtime_ns)
        self._record_stat(rel, source, result.sha256, result.key, result.etag)
        if result.skipped:
            self.stats.skipped += 1
            log.info("upload.skipped", path=rel, key=result.key, reason="same content already in the bucket")
            if self._on_result is not None:
                self._on_result("skipped", 0, 0.0, key=result.key, path=result.path)
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
                self._on_result("succeeded", result.bytes, result.duration_ms / 1000, key=result.key, path=result.path)

    def _reject(self, path: Path, rel: str, local: LocalStat, rec: UploadRecord | None, reason: str) -> None:
        if self._plan(local, rec) is UploadAction.IGNORE_REJECTED:
            return  # rejected before, unchanged, under the same rules: said once is enough
        self.stats.rejected += 1
        if self._on_result is not None:
            self._on_result("rejected", 0, 0.0, path=path, reason=reason)
        if self.dry_run:
            log.info("upload.would_reject", path=rel, reason=reason)
            return
        moved_to = None
        if self.settings.rejected_dir is not None:
            # Never over an earlier rejected file of the same name (camera names repeat).
            parts = self._parts(rel)
            moved_to = move_no_replace(path, self.settings.rejected_dir, parts, src_root=self.root, src_segments=parts)
        log.warning("upload.rejected", path=rel, reason=reason, moved_to=str(moved_to) if moved_to else None)
        if moved_to is None:
            self.state.record_rejected(
                rel, local.size, local.mtime_ns, reason, ctime_ns=local.ctime_ns, ino=local.ino, rules=self._rules
            )

    def _after_upload(self, item: Entry, key: str, source: LocalStat, sha256: str, etag: str) -> None:
        """``move`` or ``delete`` the file whose bytes ``source`` describes, once that is safe."""
        policy = self.settings.after_upload
        if policy == "keep" or self.dry_run:
            return
        path, rel = item.path, item.rel
        confirming = time.monotonic()
        if not self.transport.confirm(key, source.size, sha256, etag):
            # The bucket does not hold these bytes (lost, truncated, overwritten): upload again.
            with contextlib.suppress(StateError):
                self.state.forget_upload(rel)
            raise IntegrityError(f"s3://{self.transport.bucket}/{key} could not be confirmed; {rel} kept", key=key)
        parts = self._parts(rel)
        st = lstat_under(self.root, parts, strict=True)
        if st is None:
            return
        if not stat.S_ISREG(st.st_mode) or not identity(st).same_file(source):
            return  # changed or replaced since it was read: it is uploaded again, then handled
        # Written to and not closed since (or created empty and not closed: a writer that has not
        # written yet): a writer may come back. A file seen only created with data in it is a hard
        # link or came with a folder moved in: the open descriptors decide for it.
        holding = item.writing and (item.written or source.size == 0)
        if holding or self._writers.is_open_for_writing(st.st_dev, st.st_ino, since=confirming):
            log.info("upload.kept", path=rel, key=key, reason="still open for writing; handled after it is closed")
            return
        if policy == "move" and self.settings.done_dir is not None:
            moved = move_no_replace(path, self.settings.done_dir, parts, src_root=self.root, src_segments=parts)
            log.info("upload.moved", path=rel, key=key, to=str(moved))
        elif policy == "delete":
            if not _unlink_if_same(self.root, parts, source):
                log.info("upload.kept", path=rel, key=key, reason="replaced just before the delete")
                return
            log.info("upload.deleted", path=rel, key=key)
        with contextlib.suppress(StateError):
            self.state.record_gone(rel)


def _unlink_if_same(root: Path, parts: tuple[str, ...], source: LocalStat) -> bool:
    """Delete ``root/parts`` only if it is still the file ``source`` describes; False (nothing lost) otherwise.

    The file is first renamed to a hidden name beside it (atomic, and ignored by the watcher), so
    what is checked is what is deleted: a file renamed over it a moment before is put back. The
    folder is reached without following symlinks.
    """
    try:
        dir_fd = open_dir_under(root, parts[:-1], create=False)
    except LocalFileError:
        return False
    name = parts[-1]
    aside = _aside_name(name)
    try:
        try:
            os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileNotFoundError:
            return True  # gone already
        try:
            st = os.stat(aside, dir_fd=dir_fd, follow_symlinks=False)
            # The rename itself moved the ctime: the inode, size and mtime say it is the same file
            # (its ctime was compared by the caller's lstat just before).
            same = (st.st_ino, st.st_size, st.st_mtime_ns) == (source.ino or st.st_ino, source.size, source.mtime_ns)
            if stat.S_ISREG(st.st_mode) and same:
                os.unlink(aside, dir_fd=dir_fd)
                return True
        except OSError:
            pass
        # Not ours to delete: back under its name (or name.1 if that was taken meanwhile).
        with contextlib.suppress(OSError, LocalFileError):
            rename_no_replace(dir_fd, aside, dir_fd, name)
        return False
    finally:
        os.close(dir_fd)


_ASIDE = ".s3sync-delete-"


def _aside_name(name: str) -> str:
    """The hidden name a file has between its last check and its deletion (it keeps the real name,
    so a crash in between is undone at the next start: :meth:`Uploader.restore_aside`)."""
    aside = _ASIDE + name
    if len(os.fsencode(aside)) <= 255:
        return aside
    return _ASIDE + "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _exists(path: Path) -> bool:
    return os.path.lexists(path)
