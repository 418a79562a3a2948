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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from s3sync import preflight
from s3sync._upload import PROBE_PENDING
from s3sync._version import __version__
from s3sync.errors import QueueUnreachableError, S3SyncError
from s3sync.eventqueue import (
    BatchReport,
    EventConsumer,
    EventsSchedule,
    SqsQueue,
    make_sqs_client,
)
from s3sync.health import HealthSnapshot, assess
from s3sync.localfs import sweep_temp_files
from s3sync.lock import StateLock
from s3sync.metrics import Metrics, MetricsServer
from s3sync.mirror import Mirror, MirrorReport
from s3sync.notify import Notifier, WatchdogPinger
from s3sync.outcomes import Outcome, ResultSink, Subscriber
from s3sync.settings import Settings, resolve_folders
from s3sync.state import State, StateNamespace
from s3sync.transport import PENDING_MULTIPART, RemoteObject, Transport
from s3sync.uploader import Uploader

if TYPE_CHECKING:
    from s3sync.watcher import Watcher

__all__ = ["Service", "SyncSummary", "read_status", "reported_health"]

log = structlog.get_logger("s3sync")

_STATUS_EVERY = 5.0
_RESCAN_BACKLOG = 2  # files waiting per worker above which a rescan waits
_RESCAN_DEFER_LIMIT = 10  # ... but for at most this many rescan intervals
_LIST_AT_LEAST = 32  # files to look up before a listing replaces a HEAD each
_FOLDER_CHECK_EVERY = 2.0  # seconds between checks that the watched folder is still the same folder
_FOLDER_RETRY_CAP = 30.0  # longest wait between looks for a missing upload folder
_QUEUE_RETRY_CAP = 30.0  # longest wait between looks at an unreachable events queue
#: Sequencers older than this are forgotten: SQS keeps a message 14 days at most.
_SEQUENCER_KEEP = 15 * 86400.0


@dataclass
class SyncSummary:
    """What ``s3sync sync`` did."""

    uploaded: int = 0
    upload_skipped: int = 0
    rejected: int = 0
    conflicts: int = 0
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
        subscribers: Sequence[Subscriber] = (),
    ) -> None:
        # Symlinked roots (/srv/mirror -> /data/mirror) are followed once, here; never inside.
        self.settings = settings = resolve_folders(settings)
        self.environ = os.environ if environ is None else environ
        self.metrics = Metrics(enabled=bool(settings.metrics_addr))
        self._on_result_extra = on_result
        #: Told of every file's outcome (the Django app's signals are one): see :mod:`s3sync.outcomes`.
        self.subscribers = tuple(subscribers)
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
        #: The state's lock (``s3sync run`` sets it): checked every tick, recreated if deleted.
        self.state_lock: StateLock | None = None
        self._lock_lost = False
        self._mirror_thread: threading.Thread | None = None
        self._mirror_heartbeat = time.monotonic()
        self._last_mirror: MirrorReport | None = None
        self._last_rescan = 0.0
        self._started = time.monotonic()
        self._started_wall = time.time()
        self._supervisor_heartbeat = time.monotonic()
        # The watched folder: when it was last checked, and while it is missing or unwatchable,
        # why, and when to look again (backoff).
        self._folder_checked = 0.0
        self._watch_trouble: str | None = None
        self._watch_retry_at = 0.0
        self._watch_backoff = 0.0
        self._running = False
        self.metrics_server: MetricsServer | None = None
        self._lookup: threading.Thread | None = None  # a daemon catch-up's listing, under way
        #: The event mirror (``S3_EVENTS_QUEUE_URL``): its consumer, and since when (Unix time)
        #: its queue has been unreachable (the mirror polls the bucket meanwhile), or None.
        self.events: EventConsumer | None = None
        self._queue_down_since: float | None = None
        #: The settings of an accepted reload: the caller starts the next daemon with them.
        self.next_settings: Settings | None = None

    # --- shared set-up -------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the folders, sweep leftover temp files, abort multipart uploads a crash left open."""
        for folder in (self.settings.upload_dir_path, self.settings.local_path):
            folder.mkdir(parents=True, exist_ok=True)
        swept = sweep_temp_files(self.settings.local_path)
        if swept:
            log.info("mirror.temp_swept", count=swept)
        probe = self.state.get_meta(PROBE_PENDING)
        if probe and self.transport.delete_probe(probe):
            self.state.set_meta(PROBE_PENDING, "")
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

    def _result(self, direction: Literal["upload", "download"]) -> ResultSink:
        def record(
            outcome: str,
            nbytes: int,
            seconds: float,
            /,
            *,
            key: str | None = None,
            path: Path | None = None,
            reason: str | None = None,
        ) -> None:
            if direction == "upload":
                self.metrics.upload_done(outcome, nbytes, seconds)
            elif outcome == "deleted":
                self.metrics.deleted()
            else:
                self.metrics.download_done(outcome, nbytes, seconds)
            if self._on_result_extra is not None:
                self._on_result_extra(f"{direction}.{outcome}", nbytes)
            if self.subscribers:
                told = Outcome(direction, outcome, key, path, nbytes, seconds, reason)
                for subscriber in self.subscribers:
                    try:
                        subscriber.on_outcome(told)
                    except Exception as exc:  # noqa: BLE001 - a subscriber's bug must not fail a transfer
                        log.error("subscriber.failed", subscriber=type(subscriber).__name__, error=repr(exc))

        return record

    def close(self) -> None:
        """Release the transport and the state database."""
        self.transport.close()
        self.state.close()

    # --- one-shot --------------------------------------------------------------------------
    def sync_once(
        self, *, upload: bool = True, mirror: bool = True, dry_run: bool = False, retry_rejected: bool = False
    ) -> SyncSummary:
        """One catch-up upload pass, then one mirror pass (``retry_rejected``: forget earlier verdicts first)."""
        summary = SyncSummary()
        if not dry_run:
            self.prepare()
        if upload and retry_rejected and not dry_run:
            self.state.clear_verdicts()
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
            summary.conflicts = s.conflicts
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
    def health_snapshot(self) -> HealthSnapshot:
        """What health is decided from, now (see :mod:`s3sync.health`)."""
        last = self._last_mirror
        return HealthSnapshot(
            now=time.time(),
            started=self._started_wall,
            running=True,
            stalled_loops=tuple(self._stalled_loops()),
            stalled_workers=self._stalled_workers(),
            watcher_running=self.watcher is not None and self.watcher.is_alive(),
            upload_folder_missing=self._watch_trouble in {"missing", "symlink"},
            mirror_interval=self.settings.mirror_interval,
            max_mirror_age=self.settings.health_max_mirror_age,
            last_mirror_ok=self._last_mirror_ok(),
            queue_unreachable_since=self._queue_down_since,
            queue_stall_seconds=self.settings.loop_stall_seconds,
            conflicts=last.conflicts if last else 0,
            unsafe_keys=last.unsafe if last else 0,
            local_changed=int(getattr(last, "local_changed", 0) or 0),
            failed_items=last.failed if last else 0,
        )

    def _last_mirror_ok(self) -> float | None:
        """The last complete pass; with events, also the queue's last answer (it keeps the mirror fresh)."""
        times = [self.metrics.last_mirror_time]
        if self.events is not None and self._queue_down_since is None:
            times.append(self.metrics.last_queue_time)
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy or not, with the reasons, warnings and the status counters (as /healthz shows them)."""
        verdict = assess(self.health_snapshot())
        return verdict.healthy, {**self.status_snapshot(), **verdict.to_dict()}

    def loops_alive(self) -> bool:
        """Nothing a restart would cure (gates the systemd watchdog pings): see :func:`s3sync.health.assess`."""
        return assess(self.health_snapshot()).alive

    def _stalled_workers(self) -> tuple[str, ...]:
        """The files whose upload made no progress for ``S3_LOOP_STALL_SECONDS`` (a stuck worker)."""
        return tuple(self.uploader.stalled_workers()) if self.uploader is not None else ()

    def _stalled_loops(self) -> list[str]:
        """Why the daemon is not healthy right now: each loop that died or stopped ticking."""
        now = time.monotonic()
        stall = self.settings.loop_stall_seconds
        reasons: list[str] = []
        if self.uploader is None or not self.uploader.is_alive():
            reasons.append("upload loop is not running or stuck")
        if self.settings.mirror_interval > 0:
            self._mirror_beat()
            # The event mirror's loop waits in a long poll (up to S3_EVENTS_WAIT_SECONDS, plus the
            # read timeout's margin) between ticks.
            slack = self.settings.events_wait_seconds + 10.0 if self.events is not None else 0.0
            if now - self._mirror_heartbeat > stall + slack:
                reasons.append("mirror loop is stuck")
        if now - self._supervisor_heartbeat > stall:
            reasons.append("supervisor loop is stuck")
        return reasons

    def status_snapshot(self) -> dict[str, Any]:
        """Counters for STATUS=, ``s3sync status`` and /healthz."""
        s = self.uploader.stats if self.uploader else None
        last = self._last_mirror
        health = self.health_snapshot()
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "queued": self.uploader.pending() if self.uploader else 0,
            "uploaded": s.uploaded if s else 0,
            "skipped": s.skipped if s else 0,
            "rejected": s.rejected if s else 0,
            "failed": s.failed if s else 0,
            # Files kept in the upload folder because another path owns their key (all, not this run's).
            "upload_conflicts": self._count_upload_conflicts(),
            "last_mirror_ok": self.state.get_meta("last_mirror_ok"),
            "last_mirror": asdict(last) if last else None,
            "watcher": self.watcher.kind if self.watcher else None,
            "mirror_mode": self._mirror_mode(),
            "state": "running" if self._running else "stopped",
            "problems": list(assess(health).reasons) if self._running else [],
            # What `s3sync status` judges health from, with the same function as /healthz.
            "health": health.to_dict(),
        }

    def _count_upload_conflicts(self) -> int:
        try:
            return self.state.count_uploads("conflict")
        except S3SyncError:
            return 0

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
            self._mirror_pass(mirror, stop)
            deadline = time.monotonic() + self.settings.mirror_interval
            while not stop.is_set() and time.monotonic() < deadline:
                self._mirror_heartbeat = time.monotonic()
                stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))

    def _mirror_mode(self) -> str:
        if self.settings.mirror_interval <= 0:
            return "off"
        if self.events is None:
            return "polling"
        return "polling (events queue unreachable)" if self._queue_down_since is not None else "events"

    def _mirror_pass(self, mirror: Mirror, stop: threading.Event) -> MirrorReport | None:
        """One full pass, recorded for health and metrics; None when it raised (logged)."""
        self._mirror_heartbeat = time.monotonic()
        try:
            report = mirror.run_pass(stop)
        except Exception as exc:
            log.exception("mirror.failed", error=f"{type(exc).__name__}: {exc}")
            self.metrics.mirror_completed(False)
            return None
        finally:
            self._mirror_heartbeat = time.monotonic()
        self._last_mirror = report
        # A complete listing is a good pass for health: a bad key is a warning, not an outage.
        self.metrics.mirror_completed(report.complete)
        return report

    def _reconcile(self, mirror: Mirror, stop: threading.Event) -> bool:
        """The event mirror's full listing: what the queue lost (S3 events are best-effort) is found here.

        False when the listing could not be completed (it is tried again at the polling interval).
        """
        report = self._mirror_pass(mirror, stop)
        if report is None or stop.is_set():
            return False
        differences = report.downloaded + report.deleted
        self.metrics.reconciled(differences)
        log.info(
            "mirror.reconciled",
            differences=differences,
            downloaded=report.downloaded,
            deleted=report.deleted,
            listed=report.listed,
            complete=report.complete,
            next_in_s=self.settings.mirror_reconcile_interval,
        )
        try:
            self.state.prune_sequencers(time.time() - _SEQUENCER_KEEP)
        except S3SyncError as exc:
            log.warning("events.prune_failed", error=str(exc))
        return report.complete

    def _events_loop(self, stop: threading.Event) -> None:
        """The event mirror: a full listing at start and every ``S3_MIRROR_RECONCILE_INTERVAL``, the
        queue's changes in between; while the queue is unreachable, a pass every ``S3_MIRROR_INTERVAL``
        (one ``events.queue_unreachable``), and events again when it answers (``events.queue_back``)."""
        mirror, consumer = self.mirror, self.events
        assert mirror is not None
        assert consumer is not None
        settings = self.settings
        schedule = EventsSchedule(settings.mirror_reconcile_interval, settings.mirror_interval, _QUEUE_RETRY_CAP)
        while not stop.is_set():
            self._mirror_heartbeat = time.monotonic()
            step, wait = schedule.next_step(time.monotonic())
            if step == "reconcile":
                complete = self._reconcile(mirror, stop)
                schedule.reconciled(time.monotonic(), complete=complete)
            elif step == "poll":
                self._mirror_pass(mirror, stop)
                schedule.polled(time.monotonic())
            elif step == "wait":
                stop.wait(min(1.0, wait))
            else:
                self._receive(consumer, schedule, stop)

    def _receive(self, consumer: EventConsumer, schedule: EventsSchedule, stop: threading.Event) -> None:
        """One batch from the queue; an unreachable queue switches to polling (one event), an answer back."""
        try:
            consumer.poll_once()
        except QueueUnreachableError as exc:
            self.metrics.queue_unreachable()
            if schedule.queue_failed(time.monotonic()):
                self._queue_down_since = time.time()
                log.warning(
                    "events.queue_unreachable",
                    error=str(exc),
                    fallback="polling the bucket every S3_MIRROR_INTERVAL",
                    interval_s=self.settings.mirror_interval,
                )
            return
        except Exception as exc:  # one bad batch must not end the loop: its messages come back
            log.exception("events.failed", error=f"{type(exc).__name__}: {exc}")
            stop.wait(1.0)
            return
        if schedule.queue_answered() and self._queue_down_since is not None:
            log.info("events.queue_back", down_s=int(time.time() - self._queue_down_since), mode="events")
        self._queue_down_since = None

    def _mirror_beat(self) -> None:
        if self.mirror is not None and self._mirror_thread is not None and self._mirror_thread.is_alive():
            self._mirror_heartbeat = max(self._mirror_heartbeat, self.mirror.heartbeat)

    def run(
        self,
        stop: threading.Event,
        *,
        reload: threading.Event | None = None,
        reconfigure: Callable[[], Settings] | None = None,
    ) -> int:
        """Run the daemon until ``stop`` is set, or a reload is accepted; return the exit code.

        ``reload`` set (SIGHUP) with ``reconfigure``: the new settings are built and checked
        (:func:`s3sync.preflight.problems`) while this daemon goes on. Accepted, they are in
        :attr:`next_settings` and the daemon stops for the caller to start one with them;
        refused, one ``daemon.reload_failed`` and the daemon goes on with its settings.
        Without ``reconfigure``, ``reload`` just stops the daemon (the caller reloads).
        """
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
        # Where close events are seen, a file written to and not closed is never uploaded early.
        uploader.set_close_events(self.watcher.kind.startswith("Inotify"))
        halt = threading.Event()  # stops the inner loops, on shutdown and on reload alike
        if settings.mirror_interval > 0:
            self.mirror = Mirror(settings, self.transport, self.state, on_result=self._result("download"))
            loop = self._mirror_loop
            if settings.events_queue_url:
                queue = SqsQueue(
                    make_sqs_client(settings), settings.events_queue_url, wait_seconds=settings.events_wait_seconds
                )
                self.events = EventConsumer(
                    settings, self.mirror, self.state, queue, subscriber=_EventsMetrics(self.metrics)
                )
                loop = self._events_loop
                log.info(
                    "events.started",
                    queue=settings.events_queue_url,
                    reconcile_interval_s=settings.mirror_reconcile_interval,
                )
            self._mirror_thread = threading.Thread(target=loop, args=(halt,), name="s3sync-mirror", daemon=True)
            self._mirror_thread.start()
        server = None
        if settings.metrics_addr:
            server = MetricsServer(settings.metrics_addr, self.metrics, self.health_snapshot, self.status_snapshot)
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
        reloading = False
        try:
            while not stop.is_set():
                if wake.is_set():
                    if reconfigure is None:
                        reloading = True
                        self.notifier.reloading()
                        break
                    wake.clear()
                    self.next_settings = self._reconfigure(reconfigure)
                    if self.next_settings is not None:
                        reloading = True
                        break
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
            if not reloading or stop.is_set():
                self.notifier.stopping()
            log.info("daemon.stopping", in_flight=uploader.pending())
            halt.set()
            self._running = False
            self.watcher.stop()
            clean = uploader.stop(timeout=settings.shutdown_timeout)
            if self._mirror_thread is not None:
                self._mirror_thread.join(timeout=max(1.0, settings.shutdown_timeout))
            if self.events is not None and not (self._mirror_thread and self._mirror_thread.is_alive()):
                self.events.queue.close()
            if server is not None:
                server.stop()
            self._save_status()
            self.close()
            log.info("daemon.stopped", clean=clean)
        return 0

    def _reconfigure(self, build: Callable[[], Settings]) -> Settings | None:
        """Build and check the new settings while the daemon runs on; None when they are refused."""
        self.notifier.reloading()
        try:
            fresh = build()
            found = preflight.problems(fresh)
            if fresh.state_path != self.settings.state_path:
                # The state's lock and namespace belong to the process: a new state needs a new one.
                found.append("S3_STATE_PATH: a new state database needs a restart, not a reload")
        except S3SyncError as exc:
            found = [str(exc)]
        except Exception as exc:  # noqa: BLE001 - a reload must never take the running daemon down
            found = [f"{type(exc).__name__}: {exc}"]
        if found:
            log.error("daemon.reload_failed", reason="; ".join(found), kept="the settings in force")
            self.notifier.ready()
            return None
        old = self.settings.masked()
        changed = sorted(name for name, value in fresh.masked().items() if old.get(name) != value)
        log.info("daemon.reloaded", changed=changed)
        return fresh

    def _on_file_event(self, path: Any, hint: str) -> None:
        self.metrics.watcher_event()
        if self.uploader is not None:
            self.uploader.notify(path, hint)

    def _supervise(self) -> None:
        uploader = self.uploader
        lock = self.state_lock
        if lock is not None and not lock.ensure() and not self._lock_lost:
            self._lock_lost = True
            log.error("state.lock_lost", path=str(lock.path), reason="the lock file was replaced by another process's")
        self._supervise_watcher()
        if uploader is not None and self._rescan_due(uploader):
            self._last_rescan = time.monotonic()
            n = self._catch_up(uploader, in_background=True)
            self.metrics.rescan_done()
            if n:
                log.info("upload.rescan", queued=n)

    def _supervise_watcher(self) -> None:
        """Keep the watcher on the folder that has the upload path now.

        A dead observer is restarted at once. Every ``_FOLDER_CHECK_EVERY`` seconds the folder's
        identity (device + inode) is compared with the one the observer started on: an inotify
        watch follows the inode, so after ``mv upload upload.old && mkdir upload`` it would
        silently go on watching ``upload.old``. A replaced folder restarts the watcher on the new
        one; a missing folder (or one that cannot be watched) is one warning, then looks again
        with backoff (1 s doubling up to 30 s) and recovers when it is back. Each restart queues
        a scan: files dropped in between had no watcher.
        """
        watcher = self.watcher
        if watcher is None:
            return
        now = time.monotonic()
        if self.settings.upload_dir_path.is_symlink():
            # Swapped for a symlink while running: the uploader works only inside the real folder
            # it resolved at start (it follows no symlink), so files dropped there would wait
            # unseen. Red until the folder is back, or a reload/restart resolves the new one.
            if self._watch_trouble != "symlink" and now >= self._watch_retry_at:
                message = "the upload folder was replaced by a symlink; reload or restart to follow it"
                self._watch_problem("symlink", message, watcher)
            return
        if self._watch_trouble is not None:
            if now < self._watch_retry_at:
                return
            state = watcher.folder_state()
            back = self._watch_trouble == "missing"
            reason = "the upload folder is back" if back else "the upload folder can be watched again"
        else:
            alive, state = watcher.is_alive(), "same"
            if not alive or now - self._folder_checked >= _FOLDER_CHECK_EVERY:
                self._folder_checked = now
                state = watcher.folder_state()  # a deleted folder also kills the observer
            if state == "same" and alive:
                return
            reason = {"replaced": "the upload folder was replaced", "missing": ""}.get(state, "the observer had died")
        if state == "missing":
            self._watch_problem("missing", "the upload folder is missing", watcher)
            return
        try:
            watcher.restart()
        except OSError as exc:  # e.g. the inotify watch limit: look again later, without a flood of events
            if watcher.folder_state() == "missing":  # gone in between
                self._watch_problem("missing", "the upload folder is missing", watcher)
            else:
                message = f"cannot watch the upload folder: {type(exc).__name__}: {exc}"
                self._watch_problem("unwatchable", message, watcher)
            return
        self._watch_trouble, self._watch_backoff, self._folder_checked = None, 0.0, now
        log.warning("watcher.restarted", watcher=watcher.kind, reason=reason, path=str(watcher.root))
        if self.uploader is not None:
            self._catch_up(self.uploader, in_background=True)

    def _watch_problem(self, kind: str, message: str, watcher: Watcher) -> None:
        """One event per episode (warning: a folder being swapped; error: it cannot be watched)."""
        if self._watch_trouble != kind:
            watcher.stop()
            self._watch_backoff = 0.0
            if kind == "missing":
                log.warning("watcher.folder_missing", path=str(watcher.root), reason=message)
            else:
                log.error("watcher.failed", path=str(watcher.root), error=message)
        self._watch_trouble = kind
        self._watch_backoff = min(_FOLDER_RETRY_CAP, max(1.0, self._watch_backoff * 2))
        self._watch_retry_at = time.monotonic() + self._watch_backoff

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


class _EventsMetrics:
    """The consumer's subscriber: each batch to the daemon's metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def events_done(self, report: BatchReport) -> None:
        self._metrics.events_done(report.applied, report.ignored, report.failed, report.lag)


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
        conflicts = state.count_uploads("conflict")
    finally:
        state.close()
    snap: dict[str, Any] = json.loads(raw) if raw else {}
    snap["last_mirror_ok"] = last_ok
    snap["recorded_uploaded"] = uploaded
    snap["recorded_rejected"] = rejected
    snap["upload_conflicts"] = conflicts  # files held back in the upload folder: their key is another path's
    return snap


def _as_float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def reported_health(snap: Mapping[str, Any], settings: Settings, now: float) -> HealthSnapshot:
    """The health snapshot of the daemon's last report (:func:`read_status`), judged at ``now``.

    A report without a snapshot (an older daemon) gives one from its ``problems`` and the settings.
    """
    stored = snap.get("health")
    if isinstance(stored, Mapping):
        base = HealthSnapshot.from_dict(stored)
    else:
        base = HealthSnapshot(
            now=now,
            stalled_loops=tuple(str(p) for p in snap.get("problems") or ()),
            mirror_interval=settings.mirror_interval,
            max_mirror_age=settings.health_max_mirror_age,
        )
    times = [t for t in (base.last_mirror_ok, _as_float(snap.get("last_mirror_ok"))) if t is not None]
    return replace(
        base,
        now=now,
        running=snap.get("state") != "stopped",
        reported_at=_as_float(snap.get("time")) or None,
        last_mirror_ok=max(times) if times else None,
    )
