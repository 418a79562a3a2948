"""Prometheus metrics and a /healthz endpoint (prometheus-client, its own registry).

Off by default; ``S3_METRICS_ADDR=127.0.0.1:9108`` serves ``/metrics`` and ``/healthz``.
Only counters and timestamps are exposed: nothing here can carry a secret.

Without an address nobody can read the counters, so :class:`Metrics` keeps only the
timestamps that health and status need, and prometheus-client is not even imported
(a one-shot ``sync`` starts faster, an idle daemon holds less memory).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from s3sync.health import HealthSnapshot, assess

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Metrics", "MetricsServer"]


class Metrics:
    """The daemon's counters, in a private registry; ``enabled=False`` keeps timestamps only."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._last_mirror: float | None = None
        self._last_queue_ok: float | None = None
        self._last_event: float | None = None
        self._last_rescan: float | None = None
        self.registry: CollectorRegistry | None = None
        if not enabled:
            return
        # Imported here: only a daemon that serves /metrics pays for prometheus-client.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.uploads = Counter("s3sync_uploads", "Upload outcomes.", ["outcome"], registry=r)
        self.upload_bytes = Counter("s3sync_upload_bytes", "Bytes uploaded.", registry=r)
        self.downloads = Counter("s3sync_downloads", "Mirror download outcomes.", ["outcome"], registry=r)
        self.download_bytes = Counter("s3sync_download_bytes", "Bytes downloaded.", registry=r)
        self.deletes = Counter("s3sync_mirror_deletes", "Local files deleted by the mirror.", registry=r)
        self.queue = Gauge("s3sync_queue_depth", "Files queued or in flight.", registry=r)
        self.durations = Histogram(
            "s3sync_transfer_seconds", "Transfer durations.", ["direction"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )  # fmt: skip
        self.mirror_ok_ts = Gauge(
            "s3sync_last_mirror_success_timestamp_seconds", "Unix time of the last good mirror pass.", registry=r
        )
        self.mirror_passes = Counter("s3sync_mirror_passes", "Mirror passes by result.", ["result"], registry=r)
        self.events = Counter(
            "s3sync_events", "Bucket events from the queue: applied, ignored, failed.", ["outcome"], registry=r
        )
        self.queue_lag = Gauge(
            "s3sync_events_queue_lag_seconds", "Age of the oldest message applied in the last batch.", registry=r
        )
        self.queue_up = Gauge("s3sync_events_queue_reachable", "1 while the events queue answers.", registry=r)
        self.reconcile_diffs = Counter(
            "s3sync_reconcile_differences", "Differences the event mirror's full listings found.", registry=r
        )
        self.last_reconcile_diffs = Gauge(
            "s3sync_last_reconcile_differences", "Differences the last full listing found (0: events work).", registry=r
        )
        for name, doc, fn in (
            ("s3sync_seconds_since_last_mirror", "Seconds since the last good mirror pass.", self.seconds_since_mirror),
            (
                "s3sync_seconds_since_watcher_event",
                "Seconds since the last file event.",
                self.seconds_since_watcher_event,
            ),
            ("s3sync_seconds_since_rescan", "Seconds since the last upload-folder rescan.", self.seconds_since_rescan),
        ):
            Gauge(name, doc, registry=r).set_function(_nan_if_none(fn))

    def upload_done(self, outcome: str, nbytes: int, seconds: float) -> None:
        """One upload ended (succeeded, skipped, failed, rejected)."""
        if self.registry is None:
            return
        self.uploads.labels(outcome).inc()
        if nbytes:
            self.upload_bytes.inc(nbytes)
        if seconds:
            self.durations.labels("upload").observe(seconds)

    def download_done(self, outcome: str, nbytes: int, seconds: float) -> None:
        """One mirror download ended."""
        if self.registry is None:
            return
        self.downloads.labels(outcome).inc()
        if nbytes:
            self.download_bytes.inc(nbytes)
        if seconds:
            self.durations.labels("download").observe(seconds)

    def deleted(self) -> None:
        """The mirror deleted a local file."""
        if self.registry is not None:
            self.deletes.inc()

    def set_queue_depth(self, n: int) -> None:
        """Files queued or in flight."""
        if self.registry is not None:
            self.queue.set(n)

    def mirror_completed(self, ok: bool) -> None:
        """A mirror pass ended."""
        if ok:
            self._last_mirror = time.time()
        if self.registry is None:
            return
        self.mirror_passes.labels("ok" if ok else "failed").inc()
        if self._last_mirror is not None and ok:
            self.mirror_ok_ts.set(self._last_mirror)

    def events_done(self, applied: int, ignored: int, failed: int, lag: float | None) -> None:
        """One batch from the events queue was handled (the queue answered)."""
        self._last_queue_ok = time.time()
        if self.registry is None:
            return
        self.queue_up.set(1)
        for outcome, n in (("applied", applied), ("ignored", ignored), ("failed", failed)):
            if n:
                self.events.labels(outcome).inc(n)
        if lag is not None:
            self.queue_lag.set(lag)

    def queue_unreachable(self) -> None:
        """The events queue did not answer."""
        if self.registry is not None:
            self.queue_up.set(0)

    def reconciled(self, differences: int) -> None:
        """A full listing of the event mirror ended, having found ``differences``."""
        if self.registry is not None:
            self.reconcile_diffs.inc(differences)
            self.last_reconcile_diffs.set(differences)

    @property
    def last_queue_time(self) -> float | None:
        """Unix time the events queue last answered (None: never, or events off)."""
        return self._last_queue_ok

    def watcher_event(self) -> None:
        """A file event arrived."""
        self._last_event = time.time()

    def rescan_done(self) -> None:
        """A rescan of the upload folder finished."""
        self._last_rescan = time.time()

    @property
    def last_mirror_time(self) -> float | None:
        """Unix time of the last good (complete) mirror pass (None: none yet)."""
        return self._last_mirror

    def seconds_since_mirror(self) -> float | None:
        """Age of the last good mirror pass (None: never)."""
        return None if self._last_mirror is None else time.time() - self._last_mirror

    def seconds_since_watcher_event(self) -> float | None:
        """Age of the last file event (None: never)."""
        return None if self._last_event is None else time.time() - self._last_event

    def seconds_since_rescan(self) -> float | None:
        """Age of the last rescan (None: never)."""
        return None if self._last_rescan is None else time.time() - self._last_rescan


def _nan_if_none(fn: Callable[[], float | None]) -> Callable[[], float]:
    def value() -> float:
        v = fn()
        return float("nan") if v is None else v

    return value


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP on ``HOST:PORT`` (port 0 picks a free one).

    ``/healthz`` is 200 or 503 as :func:`s3sync.health.assess` decides over ``snapshot()``; its JSON
    body has the verdict (``ok``, ``reasons``, ``warnings``) and the counters of ``details()``.
    """

    def __init__(
        self,
        addr: str,
        metrics: Metrics,
        snapshot: Callable[[], HealthSnapshot],
        details: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        from prometheus_client import generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        if metrics.registry is None:
            raise ValueError("MetricsServer needs Metrics(enabled=True)")
        host, _, port = addr.rpartition(":")
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/healthz":
                    verdict = assess(snapshot())
                    body = json.dumps({**details(), **verdict.to_dict()}, default=str).encode()
                    status, ctype = (200 if verdict.healthy else 503), "application/json"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        bind_host = host.strip("[]") or "127.0.0.1"
        server_class = _ThreadingHTTPServerV6 if ":" in bind_host else ThreadingHTTPServer
        self._server = server_class((bind_host, int(port)), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``HOST:PORT`` as bound (the real port when 0 was asked for)."""
        host = str(self._server.server_address[0])
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3sync-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
