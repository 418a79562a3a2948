"""One mirror pass: listing -> plan -> download -> state, then (optionally) safe deletes.

The listing is streamed page by page and compared with the state database, so an
unchanged bucket costs only LIST requests, and memory stays flat for any bucket size.
Downloads run on a bounded pool. Deletion happens only after a complete, non-empty
listing, only for files the mirror itself wrote and nobody touched since, and never more
than ``S3_MIRROR_MAX_DELETE`` in one pass (beyond that the pass refuses to delete at all).

The mirror owns only what it wrote. The state records, for each path, the stat (size,
mtime, inode, ctime) and SHA-256 of what the mirror wrote; a file that is not that (a
person changed or created it) is never replaced or deleted: it is kept and the key skipped
(``S3_MIRROR_ON_LOCAL_CHANGE=keep``, one ``mirror.local_changed`` warning), moved aside to a
``.local-<time>`` sibling first (``keep-both``), or overwritten only when so configured. A
file that already holds the object's bytes is adopted without a download. A key that cannot
be placed (conflict, unsafe, a local folder in the way, a failed download) still counts as
listed: only keys absent from a complete listing are deletion candidates.
"""

from __future__ import annotations

import collections
import contextlib
import os
import stat
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

from s3sync.errors import LocalChangedError, LocalFileError, NotFoundError, S3SyncError, UnsafeKeyError
from s3sync.localfs import ABSENT, CommitGroup, Expected, hash_file, lstat_under, open_dir_under, remove_under
from s3sync.outcomes import ResultSink
from s3sync.paths import PathClaims, key_to_relpath
from s3sync.plan import (
    LocalContent,
    LocalStat,
    MirrorAction,
    MirrorWritten,
    RemoteVersion,
    aside_name,
    holds_object,
    is_md5_etag,
    plan_checked,
    plan_mirror,
)
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
    #: Keys skipped because a person changed or created the local file (kept, or moved aside).
    local_changed: int = 0
    #: Local files that already held their object's bytes, noted as the mirror's without a download.
    adopted: int = 0
    bytes: int = 0
    duration_ms: int = 0
    complete: bool = False
    errors: list[str] = field(default_factory=list)
    #: Why the listing stopped before its end (the pass is then incomplete), or None.
    listing_error: str | None = None
    #: Listed keys whose GET found no object: the listing does not name keys as they are, so it
    #: cannot tell which ones are gone either (no deletions in that pass).
    not_found: int = 0

    @property
    def ok(self) -> bool:
        """A complete listing and no failed item (``sync`` exits 1 otherwise).

        Conflicts, unsafe keys and locally changed files are warnings: they never fail a pass.
        """
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
        on_result: ResultSink | None = None,
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
        #: Why the last pass refused to delete (logged when it first appears or changes, not every pass).
        self._refused: str | None = None
        #: When recent event deletions were allowed (see :meth:`_may_delete_now`).
        self._event_deletes: collections.deque[float] = collections.deque()

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
                    records = self.state.get_mirrors([o.key for o in page])
                    for obj in page:
                        report.listed += 1
                        record = records.get(obj.key)
                        action = self._plan_one(obj, record, report, claims)
                        if action is not None:
                            job = (obj, action, record, pass_no, report, group)
                            inflight.append(pool.submit(self._fetch, *job))
                        if len(inflight) >= workers * 4:
                            inflight = self._drain(inflight, keep=workers * 2)
                    if self.settings.mirror_delete and not self.dry_run and records:
                        # Every listed key is seen, whatever became of it (conflict, unsafe, failed, kept):
                        # a key that cannot be placed is never "gone".
                        self.state.mark_seen(list(records), pass_no)
                else:
                    report.complete = True
            except S3SyncError as exc:
                report.errors.append(str(exc))
                report.listing_error = str(exc)
                log.error("mirror.failed", error=str(exc), listed=report.listed)
            self._drain(inflight, keep=0)
        if report.complete and not stop.is_set() and self.settings.mirror_delete and not self.dry_run:
            self._delete_gone(pass_no, report)
        report.duration_ms = int((time.monotonic() - started) * 1000)
        if report.complete and not self.dry_run:
            self.state.set_meta("last_mirror_ok", str(time.time()))
        log.info(
            "mirror.completed",
            listed=report.listed,
            downloaded=report.downloaded,
            deleted=report.deleted,
            failed=report.failed,
            unsafe=report.unsafe,
            conflicts=report.conflicts,
            local_changed=report.local_changed,
            adopted=report.adopted,
            bytes=report.bytes,
            duration_ms=report.duration_ms,
            complete=report.complete,
        )
        return report

    def apply_keys(self, keys: Sequence[str]) -> dict[str, MirrorReport]:
        """Bring the local files of ``keys`` in step with the bucket as it is now: one report per key.

        The event mirror's path (:mod:`s3sync.eventqueue`): each key is looked at with a HEAD, then
        handled by the rules of a pass. An object is planned and downloaded as a listed one would
        be (verified, atomic, a person's file kept); a key with no object has its file deleted
        only with ``S3_MIRROR_DELETE``, only if the mirror wrote it and nobody touched it since.
        At most ``S3_MIRROR_MAX_DELETE`` files are deleted so per ``S3_MIRROR_INTERVAL``.
        Keys outside ``S3_MIRROR_PREFIX`` are left alone. When this returns, every file written is
        durable (renamed and fsynced) and noted in the state; a key whose report has ``failed``
        items is not done.
        """
        reports = {key: MirrorReport(complete=True) for key in keys}
        mine = [key for key in reports if key.startswith(self.settings.mirror_prefix)]
        if not mine:
            return reports
        self.root.mkdir(parents=True, exist_ok=True)
        self.heartbeat = time.monotonic()
        pass_no = int(self.state.get_meta("mirror_pass") or 0)
        claims = PathClaims()
        workers = max(1, min(self.settings.max_concurrency, len(mine)))
        with CommitGroup() as group, ThreadPoolExecutor(workers, thread_name_prefix="s3sync-apply") as pool:
            heads = list(zip(mine, pool.map(self._head_for_apply, mine), strict=True))
            records = self.state.get_mirrors(mine)
            fetches: list[Future[None]] = []
            for key, remote in heads:
                report = reports[key]
                self.heartbeat = time.monotonic()
                if isinstance(remote, S3SyncError):
                    self._failed(key, report, str(remote))
                    continue
                record = records.get(key)
                if remote is None:
                    if self.settings.mirror_delete and record is not None and self._may_delete_now():
                        fetches.append(pool.submit(self._delete_one, record, report, confirmed_gone=True))
                    continue
                report.listed = 1
                action = self._plan_one(remote, record, report, claims)
                if action is not None:
                    fetches.append(pool.submit(self._fetch, remote, action, record, pass_no, report, group))
            for future in fetches:
                future.result()
                self.heartbeat = time.monotonic()
        return reports

    def _may_delete_now(self) -> bool:
        """Event deletions: at most ``S3_MIRROR_MAX_DELETE`` per ``S3_MIRROR_INTERVAL``, as a pass allows.

        A bucket emptied by mistake sends a burst of removals; past the budget they are left to the
        next full listing, whose own limit then refuses them all (one ``mirror.delete_refused``).
        """
        now = time.monotonic()
        recent = self._event_deletes
        while recent and now - recent[0] > self.settings.mirror_interval:
            recent.popleft()
        cap = self.settings.mirror_max_delete
        if len(recent) >= cap:
            self._refuse(
                f"more than S3_MIRROR_MAX_DELETE={cap} removal events within S3_MIRROR_INTERVAL; "
                "left to the next full listing"
            )
            return False
        recent.append(now)
        return True

    def _head_for_apply(self, key: str) -> RemoteObject | S3SyncError | None:
        try:
            return self.transport.head(key)
        except S3SyncError as exc:
            return exc

    def _beat(self, _nbytes: int = 0) -> None:
        """Bytes moved: the pass is alive, however long one download takes."""
        self.heartbeat = time.monotonic()

    def _drain(self, futures: list[Future[None]], *, keep: int) -> list[Future[None]]:
        while len(futures) > keep:
            futures.pop(0).result()
            self.heartbeat = time.monotonic()
        return futures

    def _local(self, segments: tuple[str, ...]) -> tuple[LocalStat | None, str | None]:
        """The stat of the regular file at a key's path (None: nothing there), or why the key cannot go there."""
        try:
            st = os.lstat(os.path.join(self._root_str, *segments))  # noqa: PTH118 - a str: no Path per object
        except FileNotFoundError:
            return None, None
        except NotADirectoryError:
            return None, "a local file is in the way of its folder"
        except OSError as exc:
            return None, f"the local path cannot be looked at ({exc.strerror})"
        if stat.S_ISREG(st.st_mode):
            return LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino), None
        if stat.S_ISDIR(st.st_mode):
            return None, "a local folder is in the way"
        return None, "a local symlink or special file is in the way"

    def _plan_one(
        self,
        obj: RemoteObject,
        record: MirrorRecord | None,
        report: MirrorReport,
        claims: PathClaims,
    ) -> MirrorAction | None:
        """Decide for one object in the listing thread: None when done here, else the action for a worker."""
        local = None
        try:
            segments = key_to_relpath(obj.key)
        except UnsafeKeyError:
            pass  # plan_mirror says why
        else:
            local, in_the_way = self._local(segments)
            # A local folder (or file) in the way is checked before claiming: it must not take the path
            # from the keys below it, and it is one warning, never a failed item.
            conflict = in_the_way or claims.claim(segments)
            if conflict is not None:
                report.conflicts += 1
                self._report_once(obj.key, "mirror.key_conflict", reason=conflict)
                return None
        decision = plan_mirror(obj.key, _version(obj), _written(record), local)
        action = decision.action
        if action is MirrorAction.UNSAFE:
            report.unsafe += 1
            self._report_once(obj.key, "mirror.unsafe_key", reason=decision.reason)
            return None
        if action is MirrorAction.KEEP_LOCAL:
            report.local_changed += 1  # reported when it was first kept; counted every pass
            return None
        if action in {MirrorAction.DOWNLOAD, MirrorAction.CHECK}:
            if self.dry_run:
                self._would(obj, action, record, report, decision.reason)
                return None
            return action
        report.skipped += 1
        return None

    def _would(
        self, obj: RemoteObject, action: MirrorAction, record: MirrorRecord | None, report: MirrorReport, why: str
    ) -> None:
        """Dry run: count what the real pass would do, reading (never writing) what it would read.

        A local file of unknown owner (CHECK) is hashed and judged as the real pass judges it: the
        same bytes are adopted or skipped there, not downloaded, so they are not counted as a download.
        """
        if action is MirrorAction.CHECK:
            try:
                segments = key_to_relpath(obj.key)
                hashes = hash_file(os.path.join(self._root_str, *segments), md5=True)  # noqa: PTH118 - as in _check
                remote_sha = None
                if hashes.size == obj.size and not is_md5_etag(obj.etag):
                    head = self.transport.head(obj.key)
                    remote_sha = head.sha256 if head is not None else None
                content = LocalContent(hashes.size, hashes.sha256, hashes.md5)
                policy = self.settings.mirror_on_local_change
                decision = plan_checked(content, _version(obj), remote_sha, _written(record), policy)
            except (S3SyncError, OSError) as exc:
                log.info("mirror.would_check", key=obj.key, error=_describe(exc))
            else:
                if decision.action is MirrorAction.SKIP:
                    report.skipped += 1
                    return
                if decision.action is MirrorAction.ADOPT:
                    report.adopted += 1
                    return
                if decision.action is MirrorAction.KEEP_LOCAL:
                    report.local_changed += 1
                    return
                why = decision.reason or why
        log.info("mirror.would_download", key=obj.key, bytes=obj.size, local=why or None)
        report.downloaded += 1
        report.bytes += obj.size

    def _report_once(self, key: str, event: str, **fields: object) -> None:
        with self._lock:
            if key in self._reported:
                return
            if len(self._reported) < 100_000:
                self._reported.add(key)
        log.warning(event, key=key, **fields)

    def _fetch(
        self,
        obj: RemoteObject,
        action: MirrorAction,
        record: MirrorRecord | None,
        pass_no: int,
        report: MirrorReport,
        group: CommitGroup,
    ) -> None:
        """In a worker: look at a local file whose owner is unknown (CHECK), then download if that is what is left.

        The download is told what was at the path when it was decided (nothing, or the file with
        this stat): a file a person saves or edits there during the GET is not renamed over.
        """
        # DOWNLOAD without an owned record is planned only when nothing was at the path.
        expect: Expected = ABSENT
        if action is MirrorAction.DOWNLOAD and record is not None and record.owned:
            # Decided from a stat taken when the key was listed: a person may have edited the file
            # while it waited for a worker. Look again just before replacing it.
            now, _ = self._local(key_to_relpath(obj.key))
            written = _written(record)
            if now is not None and written is not None and not now.same_file(written.local):
                action = MirrorAction.CHECK
            elif now is not None:
                expect = now
        if action is MirrorAction.CHECK:
            try:
                verdict = self._check(obj, record, pass_no, report)
            except (S3SyncError, OSError) as exc:
                self._failed(obj.key, report, _describe(exc))
                return
            if verdict is None:
                return
            expect = verdict
        if self.settings.mirror_on_local_change == "overwrite":
            expect = None
        self._download(obj, pass_no, report, group, expect)

    def _check(
        self, obj: RemoteObject, record: MirrorRecord | None, pass_no: int, report: MirrorReport
    ) -> LocalStat | Literal["absent"] | None:
        """Whose is the local file? Act on it; return None when done, else what the download may replace."""
        segments = key_to_relpath(obj.key)
        path = os.path.join(self._root_str, *segments)  # noqa: PTH118 - a str, as in _local
        local, in_the_way = self._local(segments)
        if in_the_way is not None:
            report.conflicts += 1
            self._report_once(obj.key, "mirror.key_conflict", reason=in_the_way)
            return None
        if local is None:
            return ABSENT  # gone meanwhile: nothing to keep
        hashes = hash_file(path, md5=True)
        content = LocalContent(hashes.size, hashes.sha256, hashes.md5)
        remote_sha = None
        if content.size == obj.size and not is_md5_etag(obj.etag):
            head = self.transport.head(obj.key)  # our SHA-256 is in the metadata, not in the listing
            remote_sha = head.sha256 if head is not None else None
        written = _written(record)
        decision = plan_checked(content, _version(obj), remote_sha, written, self.settings.mirror_on_local_change)
        action = decision.action
        if action is MirrorAction.SKIP and record is not None:
            # Still the mirror's bytes (touched, chmod-ed, restored): note the new stat, keep its version.
            version = _record_version(record)
            self._note(record.key, version, local, pass_no, content.sha256, owned=True, adopted=record.adopted)
            with self._lock:
                report.skipped += 1
            return None
        if action is MirrorAction.ADOPT:
            self._note(obj.key, _version(obj), local, pass_no, content.sha256, owned=True, etag=obj.etag, adopted=True)
            with self._lock:
                report.adopted += 1
            log.info("mirror.adopted", key=obj.key, bytes=content.size)
            return None
        if action is MirrorAction.DOWNLOAD:
            if decision.reason in {"created locally", "changed locally"}:
                self._local_changed(obj.key, report, decision.reason, "overwritten")
            return local
        if action is MirrorAction.MOVE_ASIDE:
            aside = self._move_aside(segments)
            self._local_changed(obj.key, report, decision.reason, "moved aside", aside=aside)
            return ABSENT
        # KEEP_LOCAL: the person's file stays; its stat is noted so that it is not hashed again while unchanged.
        self._note(obj.key, _version(obj), local, pass_no, None, owned=False, etag=obj.etag)
        self._local_changed(obj.key, report, decision.reason, "kept")
        return None

    def _local_changed(self, key: str, report: MirrorReport, reason: str, done: str, **fields: object) -> None:
        with self._lock:
            report.local_changed += 1
        log.warning(
            "mirror.local_changed",
            key=key,
            reason=reason,
            action=done,
            policy=self.settings.mirror_on_local_change,
            **fields,
        )

    def _move_aside(self, segments: tuple[str, ...]) -> str:
        """Rename a person's file to a free ``<name>.local-<UTC time><.ext>`` beside it; never overwrite."""
        fd = open_dir_under(self.root, segments[:-1], create=False)
        name = segments[-1]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        try:
            for attempt in range(1000):
                aside = aside_name(name, stamp, attempt)
                try:
                    # link + unlink: a rename that cannot replace an existing file.
                    os.link(name, aside, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    continue
                os.unlink(name, dir_fd=fd)
                os.fsync(fd)
                return "/".join((*segments[:-1], aside))
        except OSError as exc:
            raise LocalFileError(f"cannot move {'/'.join(segments)!r} aside: {exc.strerror}") from exc
        finally:
            os.close(fd)
        raise LocalFileError(f"cannot move {'/'.join(segments)!r} aside: no free name")

    def _note(
        self,
        key: str,
        version: RemoteVersion,
        local: LocalStat,
        pass_no: int,
        sha256: str | None,
        *,
        owned: bool,
        etag: str | None = None,
        adopted: bool = False,
    ) -> None:
        self.state.record_mirrored(
            key,
            version.size,
            version.etag if etag is None else etag,
            local.size,
            local.mtime_ns,
            pass_no,
            local_ino=local.ino,
            local_ctime_ns=local.ctime_ns,
            sha256=sha256,
            last_modified_us=version.last_modified_us,
            owned=owned,
            adopted=adopted,
        )

    def _download(
        self, obj: RemoteObject, pass_no: int, report: MirrorReport, group: CommitGroup, expect: Expected
    ) -> None:
        """Fetch one object; the commit group finishes it (or it was already identical: skipped)."""
        started = time.monotonic()
        # The SHA-256 of what lands is known when the download returns, which may be after the
        # commit group made it durable: whichever of the two comes second notes it.
        box = _Sha256Box()

        def got(size: int, etag: str) -> None:
            # The GET may return another version than the listing's (replaced in between): the
            # record must name what is on disk, or a version restored later is never fetched.
            if (size, etag) != (obj.size, obj.etag):
                with box.lock:
                    box.version = RemoteVersion(size, etag, None)

        def durable(path: Path | None, error: LocalFileError | None) -> None:
            if isinstance(error, LocalChangedError):
                self._changed_meanwhile(obj, pass_no, report, error)
                return
            if error is not None or path is None:
                self._failed(obj.key, report, str(error))
                return
            with box.lock:
                nbytes = self._record(obj, path, pass_no, report, box.sha256, box.version)
                box.recorded = nbytes is not None
            if nbytes is None:
                return
            seconds = time.monotonic() - started
            with self._lock:
                report.downloaded += 1
                report.bytes += nbytes
            if self._on_result is not None:
                self._on_result("downloaded", nbytes, seconds, key=obj.key, path=path)
            log.info("mirror.downloaded", key=obj.key, bytes=nbytes, duration_ms=int(seconds * 1000))

        try:
            result = self.transport.download_key(
                obj.key,
                remote=obj,
                progress=self._beat,
                group=group,
                on_durable=durable,
                known_absent=expect == ABSENT,
                expect=expect,
                on_version=got,
            )
        except LocalChangedError as exc:
            self._changed_meanwhile(obj, pass_no, report, exc)
            return
        except (S3SyncError, OSError) as exc:
            if isinstance(exc, NotFoundError):
                with self._lock:
                    report.not_found += 1
            self._failed(obj.key, report, _describe(exc))
            return
        if result.skipped:
            if self._record(obj, result.path, pass_no, report, result.sha256) is None:
                return
            with self._lock:
                report.skipped += 1
            if self._on_result is not None:
                self._on_result("skipped", 0, result.duration_ms / 1000, key=obj.key, path=result.path)
            return
        with box.lock:
            box.sha256 = result.sha256
            late = box.recorded and result.sha256 is not None
        if late and result.sha256 is not None:
            try:
                st = os.lstat(result.path)
                self.state.set_mirror_sha256(obj.key, result.sha256, st.st_ino, st.st_mtime_ns)
            except (S3SyncError, OSError) as exc:
                log.debug("mirror.sha256_not_noted", key=obj.key, error=_describe(exc))

    def _record(
        self,
        obj: RemoteObject,
        path: Path,
        pass_no: int,
        report: MirrorReport,
        sha256: str | None,
        version: RemoteVersion | None = None,
    ) -> int | None:
        """Note in the state that ``path`` holds ``obj`` (or the ``version`` the GET returned), as the
        mirror wrote it; its size, or None on failure."""
        try:
            st = os.lstat(path)
            local = LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            written = version or _version(obj)
            self._note(obj.key, written, local, pass_no, sha256, owned=True, etag=written.etag)
        except (S3SyncError, OSError) as exc:
            self._failed(obj.key, report, _describe(exc))
            return None
        return st.st_size

    def _changed_meanwhile(
        self, obj: RemoteObject, pass_no: int, report: MirrorReport, error: LocalChangedError
    ) -> None:
        """A person saved or edited the file during the download: it stays, the download is dropped.

        Under ``keep`` its stat is noted as a person's file (not looked at again while unchanged);
        under ``keep-both`` the next pass moves it aside and downloads.
        """
        keep = self.settings.mirror_on_local_change == "keep"
        if keep:
            local, _ = self._local(key_to_relpath(obj.key))
            if local is not None:
                with contextlib.suppress(S3SyncError, OSError):
                    self._note(obj.key, _version(obj), local, pass_no, None, owned=False, etag=obj.etag)
        done = "kept" if keep else "kept until the next pass"
        self._local_changed(obj.key, report, "changed locally during the download", done, error=str(error))

    def _failed(self, key: str, report: MirrorReport, error: str) -> None:
        with self._lock:
            report.failed += 1
            report.errors.append(error)
        if self._on_result is not None:
            self._on_result("failed", 0, 0.0, key=key, reason=error)
        log.error("mirror.failed", key=key, error=error)

    def _refuse(self, reason: str, **fields: object) -> None:
        """One ``mirror.delete_refused`` when a refusal starts or its reason changes, not one per pass."""
        if reason != self._refused:
            log.warning("mirror.delete_refused", reason=reason, **fields)
        self._refused = reason

    def _delete_gone(self, pass_no: int, report: MirrorReport) -> None:
        """Delete the files of keys absent from this complete listing, each confirmed gone by a HEAD."""
        if report.listed == 0:
            self._refuse("the listing came back empty")
            return
        if report.not_found:
            self._refuse("listed keys were not found (GET 404): the listing may name keys wrongly")
            return
        cap = self.settings.mirror_max_delete
        candidates = self.state.unseen_mirrored(pass_no, self.settings.mirror_prefix, cap + 1)
        if len(candidates) > cap:
            self._refuse(f"more than S3_MIRROR_MAX_DELETE={cap} files would be deleted", candidates=len(candidates))
            return
        self._refused = None
        for rec in candidates:
            self._delete_one(rec, report)

    def _delete_one(self, rec: MirrorRecord, report: MirrorReport, *, confirmed_gone: bool = False) -> None:
        """Delete the file of a key that is gone, if it is still what the mirror wrote; forget the key.

        The object is confirmed gone by a HEAD first, unless the caller has just done that
        (``confirmed_gone``): absence from a listing, or a removal event, is not proof.
        """
        try:
            segments = key_to_relpath(rec.key)
        except UnsafeKeyError as exc:
            # Recorded before such keys were refused: its file is never deleted (nor looked at) now.
            self._report_once(rec.key, "mirror.delete_skipped", reason=f"unsafe key: {exc.reason}")
            self._forget(rec.key)
            return
        try:
            # Absent from the listing is not proof: a listing that mis-encodes a key omits it too.
            if not confirmed_gone and self.transport.head(rec.key) is not None:
                self._report_once(rec.key, "mirror.delete_skipped", reason="the object still exists (HEAD)")
                return
            if self._still_written(rec, segments) and remove_under(self.root, segments):
                with self._lock:
                    report.deleted += 1
                log.info("mirror.deleted", key=rec.key)
                if self._on_result is not None:
                    self._on_result("deleted", 0, 0.0, key=rec.key)
        except S3SyncError as exc:
            self._report_once(rec.key, "mirror.delete_skipped", reason=str(exc))
            if confirmed_gone:  # a removal event: not done, its message comes back
                with self._lock:
                    report.failed += 1
                    report.errors.append(str(exc))
            return
        self._forget(rec.key)

    def _forget(self, key: str) -> None:
        try:
            self.state.forget_mirrored(key)
        except S3SyncError as exc:
            log.warning("mirror.forget_failed", key=key, error=str(exc))

    def _still_written(self, rec: MirrorRecord, segments: tuple[str, ...]) -> bool:
        """Whether the file at a gone key's path is still what the mirror wrote (only then may it go)."""
        st = lstat_under(self.root, segments)
        if st is None or not stat.S_ISREG(st.st_mode):
            return False
        why = "not written by the mirror" if not rec.owned or rec.adopted else None
        if why is None and not LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino).same_file(
            LocalStat(rec.local_size, rec.local_mtime_ns, rec.local_ctime_ns, rec.local_ino)
        ):
            # Its stat moved (touch, chmod, a restore...): only the bytes the mirror wrote may still go.
            same = False
            if st.st_size == rec.local_size and (rec.sha256 or is_md5_etag(rec.etag)):
                try:
                    h = hash_file(self.root.joinpath(*segments), md5=not rec.sha256)
                except (S3SyncError, OSError):
                    h = None
                if h is not None:
                    content = LocalContent(h.size, h.sha256, h.md5)
                    same = holds_object(content, rec.local_size, rec.etag, rec.sha256)
            if not same:
                why = "changed locally since the mirror wrote it"
        if why is not None:
            log.warning("mirror.delete_skipped", key=rec.key, reason=why)
            return False
        return True


class _Sha256Box:
    """The SHA-256 of a download, met by its durable callback (see :meth:`Mirror._download`)."""

    __slots__ = ("lock", "recorded", "sha256", "version")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sha256: str | None = None
        self.recorded = False
        #: The version the GET returned, when not the listed one.
        self.version: RemoteVersion | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(when: datetime | None) -> int | None:
    """A LastModified as whole microseconds since the epoch (exact: no float on the way)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def _version(obj: RemoteObject) -> RemoteVersion:
    return RemoteVersion(obj.size, obj.etag, _micros(obj.last_modified))


def _record_version(rec: MirrorRecord) -> RemoteVersion:
    return RemoteVersion(rec.size, rec.etag, rec.last_modified_us)


def _written(rec: MirrorRecord | None) -> MirrorWritten | None:
    if rec is None:
        return None
    local = LocalStat(rec.local_size, rec.local_mtime_ns, rec.local_ctime_ns, rec.local_ino)
    return MirrorWritten(_record_version(rec), local, rec.sha256, rec.owned)


def _describe(exc: BaseException) -> str:
    """One line for a failed item: our own message, or the OS error without a traceback."""
    if isinstance(exc, S3SyncError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"
