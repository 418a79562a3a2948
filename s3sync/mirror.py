"""One mirror pass: listing -> plan -> download -> state, then (optionally) safe deletes.

The listing is streamed page by page and compared with the state database, so an
unchanged bucket costs only LIST requests, and memory stays flat for any bucket size.
Downloads run on a bounded pool. Deletion happens only after a complete, non-empty
listing, only for files the mirror itself wrote and nobody touched since, and never more
than ``S3_MIRROR_MAX_DELETE`` in one pass (beyond that the pass refuses to delete at all).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from s3sync.errors import LocalFileError, S3SyncError, UnsafeKeyError
from s3sync.localfs import CommitGroup, lstat_under, remove_under
from s3sync.paths import PathClaims, key_to_relpath
from s3sync.plan import LocalStat, MirrorAction, plan_mirror
from s3sync.settings import Settings
from s3sync.state import MirrorRecord, State
from s3sync.transport import RemoteObject, Transport

__all__ = ["Mirror", "MirrorReport"]

log = structlog.get_logger("s3sync")


@dataclass
class MirrorReport:
    """What one pass did."""

    listed: int = 0
    downloaded: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    unsafe: int = 0
    conflicts: int = 0
    bytes: int = 0
    duration_ms: int = 0
    complete: bool = False
    errors: list[str] = field(default_factory=list)
    #: Why the listing stopped before its end (the pass is then incomplete), or None.
    listing_error: str | None = None

    @property
    def ok(self) -> bool:
        """A complete listing and no failed item."""
        return self.complete and self.failed == 0


class Mirror:
    """Mirror the bucket (or ``S3_MIRROR_PREFIX``) into ``S3_LOCAL_PATH``."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        state: State,
        *,
        dry_run: bool = False,
        on_result: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.state = state
        self.root = settings.local_path
        self._root_str = str(self.root)
        self.dry_run = dry_run
        self.heartbeat = time.monotonic()
        self._on_result = on_result
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def run_pass(self, stop: threading.Event | None = None) -> MirrorReport:
        """List, download what is new or changed, then delete what is safe to delete."""
        stop = stop or threading.Event()
        report = MirrorReport()
        started = time.monotonic()
        prefix = self.settings.mirror_prefix
        pass_no = self.state.next_pass() if not self.dry_run else 0
        log.debug("mirror.started", prefix=prefix, pass_no=pass_no)
        if not self.dry_run:
            self.root.mkdir(parents=True, exist_ok=True)
        workers = self.settings.max_concurrency
        inflight: list[Future[None]] = []
        claims = PathClaims()
        group = CommitGroup()
        with group, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3sync-mirror") as pool:
            try:
                for page in self.transport.list_pages(prefix):
                    self.heartbeat = time.monotonic()
                    if stop.is_set():
                        break
                    seen: list[str] = []
                    records = self.state.get_mirrors([o.key for o in page])
                    for obj in page:
                        report.listed += 1
                        local_there = self._plan_one(obj, records.get(obj.key), report, seen, claims)
                        if local_there is not None:
                            inflight.append(pool.submit(self._download, obj, pass_no, report, group, local_there))
                        if len(inflight) >= workers * 4:
                            inflight = self._drain(inflight, keep=workers * 2)
                    if self.settings.mirror_delete and not self.dry_run:
                        self.state.mark_seen(seen, pass_no)
                else:
                    report.complete = True
            except S3SyncError as exc:
                report.errors.append(str(exc))
                report.listing_error = str(exc)
                log.error("mirror.failed", error=str(exc), listed=report.listed)
            self._drain(inflight, keep=0)
        if report.complete and not stop.is_set() and self.settings.mirror_delete:
            self._delete_gone(pass_no, report)
        report.duration_ms = int((time.monotonic() - started) * 1000)
        if report.complete and report.failed == 0 and not self.dry_run:
            self.state.set_meta("last_mirror_ok", str(time.time()))
        log.info(
            "mirror.completed",
            listed=report.listed,
            downloaded=report.downloaded,
            deleted=report.deleted,
            failed=report.failed,
            unsafe=report.unsafe,
            conflicts=report.conflicts,
            bytes=report.bytes,
            duration_ms=report.duration_ms,
            complete=report.complete,
        )
        return report

    def _beat(self, _nbytes: int = 0) -> None:
        """Bytes moved: the pass is alive, however long one download takes."""
        self.heartbeat = time.monotonic()

    def _drain(self, futures: list[Future[None]], *, keep: int) -> list[Future[None]]:
        while len(futures) > keep:
            futures.pop(0).result()
            self.heartbeat = time.monotonic()
        return futures

    def _plan_one(
        self,
        obj: RemoteObject,
        record: MirrorRecord | None,
        report: MirrorReport,
        seen: list[str],
        claims: PathClaims,
    ) -> bool | None:
        """Decide for one object: None when there is nothing to fetch, else whether a local file is there."""
        local = None
        try:
            segments = key_to_relpath(obj.key)
        except UnsafeKeyError:
            pass  # plan_mirror says why
        else:
            conflict = claims.claim(segments)
            if conflict is not None:
                report.conflicts += 1
                self._report_once(obj.key, "mirror.key_conflict", reason=conflict)
                return None
            try:
                st = os.lstat(os.path.join(self._root_str, *segments))  # noqa: PTH118 - a str: no Path per object
                local = LocalStat(st.st_size, st.st_mtime_ns)
            except OSError:
                pass
        decision = plan_mirror(
            obj.key,
            obj.size,
            obj.etag,
            (record.size, record.etag, record.local_size, record.local_mtime_ns) if record else None,
            local,
        )
        if record is not None:
            seen.append(obj.key)
        if decision.action is MirrorAction.UNSAFE:
            report.unsafe += 1
            self._report_once(obj.key, "mirror.unsafe_key", reason=decision.reason)
            return None
        if decision.action is MirrorAction.DOWNLOAD:
            if self.dry_run:
                log.info("mirror.would_download", key=obj.key, bytes=obj.size)
                report.downloaded += 1
                return None
            return local is not None
        report.skipped += 1
        return None

    def _report_once(self, key: str, event: str, **fields: object) -> None:
        with self._lock:
            if key in self._reported:
                return
            if len(self._reported) < 100_000:
                self._reported.add(key)
        log.warning(event, key=key, **fields)

    def _download(
        self, obj: RemoteObject, pass_no: int, report: MirrorReport, group: CommitGroup, local_there: bool
    ) -> None:
        """Fetch one object; the commit group finishes it (or it was already identical: skipped)."""
        started = time.monotonic()

        def durable(path: Path | None, error: LocalFileError | None) -> None:
            if error is not None or path is None:
                self._failed(obj.key, report, str(error))
                return
            nbytes = self._record(obj, path, pass_no, report)
            if nbytes is None:
                return
            seconds = time.monotonic() - started
            with self._lock:
                report.downloaded += 1
                report.bytes += nbytes
            if self._on_result is not None:
                self._on_result("downloaded", nbytes, seconds)
            log.info("mirror.downloaded", key=obj.key, bytes=nbytes, duration_ms=int(seconds * 1000))

        try:
            result = self.transport.download_key(
                obj.key,
                remote=obj,
                progress=self._beat,
                group=group,
                on_durable=durable,
                known_absent=not local_there,
            )
        except (S3SyncError, OSError) as exc:
            self._failed(obj.key, report, _describe(exc))
            return
        if result.skipped:
            if self._record(obj, result.path, pass_no, report) is None:
                return
            with self._lock:
                report.skipped += 1
            if self._on_result is not None:
                self._on_result("skipped", 0, result.duration_ms / 1000)

    def _record(self, obj: RemoteObject, path: Path, pass_no: int, report: MirrorReport) -> int | None:
        """Note in the state that ``path`` holds ``obj``; its size, or None (and a failure) when that fails."""
        try:
            st = os.lstat(path)
            self.state.record_mirrored(obj.key, obj.size, obj.etag, st.st_size, st.st_mtime_ns, pass_no)
        except (S3SyncError, OSError) as exc:
            self._failed(obj.key, report, _describe(exc))
            return None
        return st.st_size

    def _failed(self, key: str, report: MirrorReport, error: str) -> None:
        with self._lock:
            report.failed += 1
            report.errors.append(error)
        if self._on_result is not None:
            self._on_result("failed", 0, 0.0)
        log.error("mirror.failed", key=key, error=error)

    def _delete_gone(self, pass_no: int, report: MirrorReport) -> None:
        if report.listed == 0:
            log.warning("mirror.delete_refused", reason="the listing came back empty")
            return
        cap = self.settings.mirror_max_delete
        candidates = self.state.unseen_mirrored(pass_no, self.settings.mirror_prefix, cap + 1)
        if len(candidates) > cap:
            log.warning(
                "mirror.delete_refused",
                reason=f"more than S3_MIRROR_MAX_DELETE={cap} files would be deleted",
                candidates=len(candidates),
            )
            return
        for rec in candidates:
            segments = key_to_relpath(rec.key)
            st = lstat_under(self.root, segments)
            if st is None:
                self.state.forget_mirrored(rec.key)
                continue
            if (st.st_size, st.st_mtime_ns) != (rec.local_size, rec.local_mtime_ns):
                log.warning("mirror.delete_skipped", key=rec.key, reason="changed locally since the mirror wrote it")
                self.state.forget_mirrored(rec.key)
                continue
            if remove_under(self.root, segments):
                report.deleted += 1
                log.info("mirror.deleted", key=rec.key)
                if self._on_result is not None:
                    self._on_result("deleted", 0, 0.0)
            self.state.forget_mirrored(rec.key)


def _describe(exc: BaseException) -> str:
    """One line for a failed item: our own message, or the OS error without a traceback."""
    if isinstance(exc, S3SyncError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
