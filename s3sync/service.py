"""The composition root: wires settings, state, transport, uploader, mirror and watcher.

Everything stops on one :class:`threading.Event`. :meth:`Service.run` is the daemon
(``s3sync run``); :meth:`Service.sync_once` is one catch-up upload pass plus one mirror pass
(``s3sync sync``). The supervisor loop in :meth:`Service.run` restarts a dead watcher,
rescans the upload folder on a timer (events are hints; the rescan is the truth), keeps
systemd informed (READY, STATUS, WATCHDOG only while the loops are alive, STOPPING) and
persists a status snapshot for ``s3sync status``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from s3sync import __version__
from s3sync.errors import S3SyncError
from s3sync.localfs import sweep_temp_files
from s3sync.metrics import Metrics, MetricsServer
from s3sync.mirror import Mirror, MirrorReport
from s3sync.notify import Notifier, WatchdogPinger
from s3sync.settings import Settings
from s3sync.state import State, StateNamespace
from s3sync.transport import PENDING_MULTIPART, RemoteObject, Transport
from s3sync.uploader import Uploader

if TYPE_CHECKING:
    from s3sync.watcher import Watcher

__all__ = ["Service", "SyncSummary", "read_status"]

log = structlog.get_logger("s3sync")

_STATUS_EVERY = 5.0
_RESCAN_BACKLOG = 2  # files waiting per worker above which a rescan waits
_RESCAN_DEFER_LIMIT = 10  # ... but for at most this many rescan intervals
_LIST_AT_LEAST = 32  # files to look up before a listing replaces a HEAD each


@dataclass
class SyncSummary:
    """What ``s3sync sync`` did."""

    uploaded: int = 0
    upload_skipped: int = 0
    rejected: int = 0
    upload_failed: int = 0
    uploaded_bytes: int = 0
    mirror: MirrorReport | None = None

    @property
    def failed(self) -> bool:
        """True when any item failed (exit code 1)."""
        mirror_failed = self.mirror is not None and not self.mirror.ok
        return self.upload_failed > 0 or mirror_failed


class Service:
    """The daemon and the one-shot sync, built from explicit settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        environ: Mapping[str, str] | None = None,
        on_result: Callable[[str, int], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.metrics = Metrics(enabled=bool(settings.metrics_addr))
        self._on_result_extra = on_result
        # A dry run must change nothing, not even create the state database.
        # Bound to these settings: another bucket's or folder's records are dropped (dry run: ignored).
        self.state = State(settings.state_path, read_only=read_only, namespace=StateNamespace.of(settings))
        self.transport = transport if transport is not None else Transport(settings, tracker=self.state)
        if self.transport.tracker is None:
            self.transport.tracker = self.state
        self.notifier = Notifier.from_environ(self.environ)
        self.uploader: Uploader | None = None
        self.mirror: Mirror | None = None
        self.watcher: Watcher | None = None
        self._mirror_thread: threading.Thread | None = None
        self._mirror_heartbeat = time.monotonic()
        self._last_mirror: MirrorReport | None = None
        self._last_rescan = 0.0
        self._started = time.monotonic()
        self._supervisor_heartbeat = time.monotonic()
        self._running = False
        self.metrics_server: MetricsServer | None = None
        self._lookup: threading.Thread | None = None  # a daemon catch-up's listing, under way

    # --- shared set-up -------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the folders, sweep leftover temp files, abort multipart uploads a crash left open."""
        for folder in (self.settings.upload_dir_path, self.settings.local_path):
            folder.mkdir(parents=True, exist_ok=True)
        swept = sweep_temp_files(self.settings.local_path)
        if swept:
            log.info("mirror.temp_swept", count=swept)
        for upload_id, key in self.state.open_multipart():
            try:
                if upload_id.startswith(PENDING_MULTIPART):
                    # Killed while creating it: the id never reached us; any upload of the key is stale.
                    gone = self.transport.abort_orphans(key)
                    if gone:
                        self.state.remove_multipart(upload_id)
                else:
                    gone = self.transport.abort_multipart(key, upload_id)
            except S3SyncError:
                gone = False
            if not gone:
                log.warning("upload.multipart_abort_failed", key=key)
            elif not upload_id.startswith(PENDING_MULTIPART):
                log.info("upload.multipart_aborted", key=key, upload_id=upload_id, reason="left open by a crash")

    def _result(self, direction: str) -> Callable[[str, int, float], None]:
        def record(outcome: str, nbytes: int, seconds: float) -> None:
            if direction == "upload":
                self.metrics.upload_done(outcome, nbytes, seconds)
            elif outcome == "deleted":
                self.metrics.deleted()
            else:
                self.metrics.download_done(outcome, nbytes, seconds)
            if self._on_result_extra is not None:
                self._on_result_extra(f"{direction}.{outcome}", nbytes)

        return record

    def close(self) -> None:
        """Release the transport and the state database."""
        self.transport.close()
        self.state.close()

    # --- one-shot --------------------------------------------------------------------------
    def sync_once(self, *, upload: bool = True, mirror: bool = True, dry_run: bool = False) -> SyncSummary:
        """One catch-up upload pass, then one mirror pass."""
        summary = SyncSummary()
        if not dry_run:
            self.prepare()
        if upload:
            uploader = Uploader(
                self.settings,
                self.transport,
                self.state,
                one_shot=True,
                dry_run=dry_run,
                on_result=self._result("upload"),
            )
            self.uploader = uploader
            uploader.start()
            self._catch_up(uploader)
            uploader.wait_idle()
            uploader.stop(timeout=self.settings.shutdown_timeout)
            s = uploader.stats
            summary.uploaded, summary.upload_skipped, summary.rejected = s.uploaded, s.skipped, s.rejected
            summary.upload_failed, summary.uploaded_bytes = s.failed_final, s.bytes
        if mirror:
            if self.mirror is None or self.mirror.dry_run != dry_run:
                self.mirror = Mirror(
                    self.settings, self.transport, self.state, dry_run=dry_run, on_result=self._result("download")
                )
            summary.mirror = self.mirror.run_pass()
        return summary

    def _catch_up(self, uploader: Uploader, *, in_background: bool = False) -> int:
        """Queue every file that needs an upload; return how many.

        The start-up catch-up of both commands and the daemon's rescans: one listing replaces a
        HEAD per file when there are many (see :meth:`_listing_for`). ``in_background`` (the
        daemon) lists on a thread of its own and queues the files when the listing is done: a
        listing waits on the network (a hung endpoint for minutes), and the supervisor loop,
        whose ticks gate the systemd watchdog, must not.
        """
        candidates = uploader.candidates()
        if in_background and len(candidates) >= _LIST_AT_LEAST and not self._lookup_running():
            self._lookup = threading.Thread(
                target=self._queue_listed, args=(uploader, candidates), name="s3sync-catch-up", daemon=True
            )
            self._lookup.start()
            return len(candidates)
        if in_background:  # few files, or a listing already under way: a HEAD each, in the workers
            return uploader.queue(candidates)
        return self._queue_listed(uploader, candidates)

    def _queue_listed(self, uploader: Uploader, candidates: list[Path]) -> int:
        listing = None
        try:
            listing = self._listing_for(candidates)
        except Exception:  # never lose the files: without a listing each gets a HEAD
            log.exception("upload.catch_up_listing_failed")
        return uploader.queue(candidates, remote_lookup=listing.get if listing is not None else None)

    def _lookup_running(self) -> bool:
        return self._lookup is not None and self._lookup.is_alive()

    def _listing_for(self, paths: list[Path]) -> dict[str, RemoteObject] | None:
        """For a large catch-up, a listing replaces a HEAD per file (1 request per 1,000 keys).

        ``paths`` are the files that need an upload: files the state knows as uploaded and
        unchanged cost nothing, so a no-op sync makes no request at all.

        The keys of the files to upload are grouped by their first path segment; with few groups
        each is listed, else their longest common prefix (often the whole bucket). A listing that
        grows beyond a quarter of the files' count in pages, or beyond 200 pages, is abandoned:
        HEADs are cheaper then, and memory stays bounded.
        """
        keys: list[str] = []
        for path in paths:
            try:
                keys.append(self.transport.resource(path.name).key)
            except S3SyncError:
                continue
        if len(keys) < _LIST_AT_LEAST:
            return None
        groups = sorted({key.split("/", 1)[0] + "/" if "/" in key else key for key in keys})
        # A character prefix is what S3 wants here, not a path prefix.
        prefixes = groups if len(groups) <= 64 else [os.path.commonprefix(keys)]  # noqa: RUF071
        budget = min(200, max(1, len(keys) // 4))
        listing: dict[str, RemoteObject] = {}
        pages = 0
        try:
            for prefix in prefixes:
                for page in self.transport.list_pages(prefix):
                    pages += 1
                    if pages > budget:
                        return None
                    listing.update((o.key, o) for o in page)
        except S3SyncError:
            return None
        return _AbsentDefault(listing)

    # --- the daemon ------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, object]]:
        """Whether the loops are alive and the last mirror pass is recent enough."""
        now = time.monotonic()
        reasons = self._stalled_loops()
        if self.settings.mirror_interval > 0:
            max_age = self.settings.health_max_mirror_age or (3 * self.settings.mirror_interval + 60)
            age = self.metrics.seconds_since_mirror()
            started_ago = now - self._started
            if (age is None and started_ago > max_age) or (age is not None and age > max_age):
                reasons.append(f"no successful mirror pass for more than {int(max_age)} s")
        if self.watcher is None or not self.watcher.is_alive():
            reasons.append("watcher is not running")
        return not reasons, {"ok": not reasons, "reasons": reasons, **self.status_snapshot()}

    def loops_alive(self) -> bool:
        """Upload, mirror and supervisor loops all ticked recently (gates the systemd watchdog pings)."""
        return not self._stalled_loops()

    def _stalled_loops(self) -> list[str]:
        """Why the daemon is not healthy right now: each loop that died or stopped ticking."""
        now = time.monotonic()
        stall = self.settings.loop_stall_seconds
        reasons: list[str] = []
        if self.uploader is None or not self.uploader.is_alive():
            reasons.append("upload loop is not running or stuck")
        if self.settings.mirror_interval > 0:
            self._mirror_beat()
            if now - self._mirror_heartbeat > stall:
                reasons.append("mirror loop is stuck")
        if now - self._supervisor_heartbeat > stall:
            reasons.append("supervisor loop is stuck")
        return reasons

    def status_snapshot(self) -> dict[str, Any]:
        """Counters for STATUS=, ``s3sync status`` and /healthz."""
        s = self.uploader.stats if self.uploader else None
        last = self._last_mirror
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "queued": self.uploader.pending() if self.uploader else 0,
            "uploaded": s.uploaded if s else 0,
            "skipped": s.skipped if s else 0,
            "rejected": s.rejected if s else 0,
            "failed": s.failed if s else 0,
            "last_mirror_ok": self.state.get_meta("last_mirror_ok"),
            "last_mirror": asdict(last) if last else None,
            "watcher": self.watcher.kind if self.watcher else None,
            "state": "running" if self._running else "stopped",
            "problems": self._stalled_loops() if self._running else [],
        }

    def _status_line(self) -> str:
        snap = self.status_snapshot()
        last = snap["last_mirror_ok"]
        ago = f"{int(time.time() - float(last))}s ago" if last else "never"
        return (
            f"queued {snap['queued']}, uploaded {snap['uploaded']}, failed {snap['failed']}, "
            f"rejected {snap['rejected']}, last mirror {ago}"
        )

    def _save_status(self) -> None:
        with contextlib.suppress(S3SyncError):
            self.state.set_meta("status", json.dumps(self.status_snapshot(), default=str))

    def _mirror_loop(self, stop: threading.Event) -> None:
        mirror = self.mirror
        assert mirror is not None
        while not stop.is_set():
            self._mirror_heartbeat = time.monotonic()
            try:
                report = mirror.run_pass(stop)
                self._last_mirror = report
                self.metrics.mirror_completed(report.ok)
            except Exception as exc:
                log.exception("mirror.failed", error=f"{type(exc).__name__}: {exc}")
                self.metrics.mirror_completed(False)
            self._mirror_heartbeat = time.monotonic()
            deadline = time.monotonic() + self.settings.mirror_interval
            while not stop.is_set() and time.monotonic() < deadline:
                self._mirror_heartbeat = time.monotonic()
                stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _mirror_beat(self) -> None:
        if self.mirror is not None and self._mirror_thread is not None and self._mirror_thread.is_alive():
            self._mirror_heartbeat = max(self._mirror_heartbeat, self.mirror.heartbeat)

    def run(self, stop: threading.Event, *, reload: threading.Event | None = None) -> int:
        """Run the daemon until ``stop`` (or ``reload``) is set; return the exit code."""
        settings = self.settings
        self._started = time.monotonic()
        log.info(
            "daemon.started",
            version=__version__,
            bucket=settings.bucket_name,
            endpoint=settings.endpoint_url or "aws",
            upload_dir=str(settings.upload_dir_path),
            local_path=str(settings.local_path),
            mirror_interval=settings.mirror_interval,
            after_upload=settings.after_upload,
        )
        self.prepare()
        uploader = Uploader(settings, self.transport, self.state, on_result=self._result("upload"))
        self.uploader = uploader
        uploader.start()
        queued = self._catch_up(uploader, in_background=True)
        self._last_rescan = time.monotonic()
        self.metrics.rescan_done()
        from s3sync.watcher import Watcher  # here: watchdog is loaded by the daemon only

        self.watcher = Watcher(
            settings.upload_dir_path, self._on_file_event, mode=settings.watch_mode, ignore=uploader.ignored
        )
        self.watcher.start()
        halt = threading.Event()  # stops the inner loops, on shutdown and on reload alike
        if settings.mirror_interval > 0:
            self.mirror = Mirror(settings, self.transport, self.state, on_result=self._result("download"))
            self._mirror_thread = threading.Thread(
                target=self._mirror_loop, args=(halt,), name="s3sync-mirror", daemon=True
            )
            self._mirror_thread.start()
        server = None
        if settings.metrics_addr:
            server = MetricsServer(settings.metrics_addr, self.metrics, self.health)
            server.start()
            self.metrics_server = server
            log.info("metrics.listening", url=f"http://{server.address}/metrics")
        self._running = True
        pinger = WatchdogPinger(self.notifier, self.loops_alive, halt)
        if self.notifier.watchdog_interval:
            pinger.start()
        self.notifier.ready()
        log.info("daemon.ready", queued=queued, watcher=self.watcher.kind)
        last_status = 0.0
        wake = reload or threading.Event()
        try:
            while not stop.is_set() and not wake.is_set():
                stop.wait(0.5)
                self._supervisor_heartbeat = time.monotonic()
                self._supervise()
                self._mirror_beat()
                now = time.monotonic()
                if now - last_status >= _STATUS_EVERY:
                    last_status = now
                    self.metrics.set_queue_depth(uploader.pending())
                    self.notifier.status(self._status_line())
                    self._save_status()
        finally:
            if wake.is_set() and not stop.is_set():
                self.notifier.reloading()
            else:
                self.notifier.stopping()
            log.info("daemon.stopping", in_flight=uploader.pending())
            halt.set()
            self._running = False
            self.watcher.stop()
            clean = uploader.stop(timeout=settings.shutdown_timeout)
            if self._mirror_thread is not None:
                self._mirror_thread.join(timeout=max(1.0, settings.shutdown_timeout))
            if server is not None:
                server.stop()
            self._save_status()
            self.close()
            log.info("daemon.stopped", clean=clean)
        return 0

    def _on_file_event(self, path: Any, hint: str) -> None:
        self.metrics.watcher_event()
        if self.uploader is not None:
            self.uploader.notify(path, hint)

    def _supervise(self) -> None:
        watcher, uploader = self.watcher, self.uploader
        if watcher is not None and not watcher.is_alive():
            try:
                watcher.restart()
                log.warning("watcher.restarted", watcher=watcher.kind)
            except OSError as exc:
                log.error("watcher.failed", error=f"{type(exc).__name__}: {exc}")
            if uploader is not None:
                self._catch_up(uploader, in_background=True)
        if uploader is not None and self._rescan_due(uploader):
            self._last_rescan = time.monotonic()
            n = self._catch_up(uploader, in_background=True)
            self.metrics.rescan_done()
            if n:
                log.info("upload.rescan", queued=n)

    def _rescan_due(self, uploader: Uploader) -> bool:
        """Whether the periodic rescan should run now.

        Every ``S3_RESCAN_INTERVAL``, but not while a backlog is still waiting: a file the rescan
        finds then would only join the end of the queue, and walking a folder of thousands of
        queued files every few seconds takes CPU from the uploads themselves. A backlog defers
        the rescan for at most ten intervals, so events lost under a sustained flood are still
        found. Nor while the previous catch-up's listing is still under way.
        """
        since = time.monotonic() - self._last_rescan
        interval = self.settings.rescan_interval
        if since < interval or self._lookup_running():
            return False
        backlog = uploader.pending() > _RESCAN_BACKLOG * self.settings.max_concurrency
        return not backlog or since >= _RESCAN_DEFER_LIMIT * interval


class _AbsentDefault(dict[str, RemoteObject]):
    """A listing: keys not in it are known to be absent (``get`` returns None, not UNKNOWN)."""


def read_status(settings: Settings) -> dict[str, Any] | None:
    """The daemon's last status snapshot from the state database, for ``s3sync status``."""
    if not settings.state_path.exists():
        return None
    state = State(settings.state_path, read_only=True)
    try:
        raw = state.get_meta("status")
        last_ok = state.get_meta("last_mirror_ok")
        uploaded = state.count_uploads("uploaded")
        rejected = state.count_uploads("rejected")
    finally:
        state.close()
    snap: dict[str, Any] = json.loads(raw) if raw else {}
    snap["last_mirror_ok"] = last_ok
    snap["recorded_uploaded"] = uploaded
    snap["recorded_rejected"] = rejected
    return snap
