"""PURE: whether the daemon is healthy, decided in one place over one typed snapshot.

``/healthz`` (:mod:`s3sync.metrics`), the systemd watchdog gate and ``s3sync status`` all build a
:class:`HealthSnapshot` and call :func:`assess`; none of them decides on its own. Two verdicts
come out of it:

* ``healthy``: nothing an operator must act on. A stuck loop or upload worker, a watcher that
  is not running (or an upload folder that is gone), no complete mirror pass for longer than the
  allowed age, a daemon that stopped or stopped reporting.
* ``alive``: the reasons a restart would cure (a stuck loop or worker). Only these stop the
  watchdog pings: an endpoint that is down for an hour must turn ``/healthz`` red, not make
  systemd restart the daemon five times and give up.

Counts of single items (key conflicts, unsafe keys, locally changed mirror files, failed items)
are warnings: they are reported, and never make the daemon unhealthy. One bad key is not a
broken mirror; a mirror whose listing fails is.

>>> h = assess(HealthSnapshot(now=100.0, started=0.0, conflicts=2))
>>> h.healthy, h.warnings
(True, ('2 key conflicts in the last mirror pass',))
>>> h = assess(HealthSnapshot(now=100.0, started=0.0, stalled_workers=("upload-3",)))
>>> h.healthy, h.alive  # red, but no restart: a slow link is not cured by one
(False, True)
>>> assess(HealthSnapshot(now=100.0, started=0.0, queue_unreachable_since=10.0, queue_stall_seconds=60)).reasons
('the events queue has been unreachable for 90 s (polling the bucket instead)',)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["STALE_REPORT_SECONDS", "Health", "HealthSnapshot", "assess"]

#: A daemon writes its status every 5 s; silent for longer than this, it is killed or stuck.
STALE_REPORT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What health is decided from: plain values, wall-clock seconds (``time.time()``)."""

    now: float
    #: When the daemon started (None: unknown, e.g. a status written by an older version).
    started: float | None = None
    #: False once the daemon stopped (cleanly): ``s3sync status`` reading its last report.
    running: bool = True
    #: When the daemon wrote the report being judged; None when judging the live daemon.
    reported_at: float | None = None
    #: Loops that died or stopped ticking ("upload loop", "mirror loop", "supervisor loop").
    stalled_loops: tuple[str, ...] = ()
    #: Upload workers stuck on one file (the uploader's ``stalled_workers()``).
    stalled_workers: tuple[str, ...] = ()
    watcher_running: bool = True
    #: The upload folder does not exist (deleted or unmounted); the watcher waits for it.
    upload_folder_missing: bool = False
    #: 0 when the mirror is off (``S3_MIRROR_INTERVAL=0``): its age is then not judged.
    mirror_interval: float = 60.0
    #: Longest allowed time without a complete mirror pass (0: three intervals + 60 s).
    max_mirror_age: float = 0.0
    #: When the last complete mirror pass ended (None: none yet). With the event mirror, also
    #: the last time the events queue answered: the mirror is then as fresh as the queue.
    last_mirror_ok: float | None = None
    #: Since when the events queue (``S3_EVENTS_QUEUE_URL``) cannot be reached (None: reachable, or off).
    queue_unreachable_since: float | None = None
    #: How long the queue may stay unreachable before that is a reason (``S3_LOOP_STALL_SECONDS``).
    queue_stall_seconds: float = 60.0
    # --- warnings only ---------------------------------------------------------------------
    conflicts: int = 0
    unsafe_keys: int = 0
    local_changed: int = 0
    failed_items: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values: how the daemon stores its snapshot for ``s3sync status``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HealthSnapshot:
        """The snapshot :meth:`to_dict` stored (unknown names ignored, missing ones defaulted)."""
        known: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            value = values[f.name]
            known[f.name] = tuple(str(v) for v in value) if isinstance(value, list | tuple) else value
        known.setdefault("now", 0.0)
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict: ``healthy`` with the reasons it is not, ``alive`` for the watchdog, warnings."""

    healthy: bool
    alive: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as /healthz and ``s3sync status --json`` show it (``problems``: the older name)."""
        return {
            "ok": self.healthy,
            "healthy": self.healthy,
            "reasons": list(self.reasons),
            "problems": list(self.reasons),
            "warnings": list(self.warnings),
        }


def _mirror_age_limit(s: HealthSnapshot) -> float:
    return s.max_mirror_age or (3 * s.mirror_interval + 60)


def _names(items: tuple[str, ...], shown: int = 5) -> str:
    """Up to ``shown`` names on one line: a file name may hold a newline or a control character."""
    names = [n if n.isprintable() else repr(n) for n in sorted(items)]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def assess(s: HealthSnapshot) -> Health:
    """Decide health from ``s``: reasons (unhealthy), which of them a restart cures, and warnings."""
    fatal: list[str] = []  # a restart would cure these: they also stop the watchdog pings
    reasons: list[str] = []
    if not s.running:
        reasons.append("the daemon is not running (it stopped cleanly)")
    elif s.reported_at is not None and s.now - s.reported_at > STALE_REPORT_SECONDS:
        reasons.append(f"no status from the daemon for {int(s.now - s.reported_at)} s (killed or stuck)")
    else:
        fatal.extend(s.stalled_loops)
        reasons.extend(fatal)
        if s.stalled_workers:
            # Red, but no restart: one request on a slow link can outlast S3_LOOP_STALL_SECONDS
            # (progress is counted per part), and the other workers go on meanwhile.
            reasons.append(f"upload worker stuck: {_names(s.stalled_workers)}")
        if s.upload_folder_missing:
            reasons.append("the upload folder is missing (waiting for it to come back)")
        elif not s.watcher_running:
            reasons.append("watcher is not running")
    if s.queue_unreachable_since is not None and s.now - s.queue_unreachable_since > s.queue_stall_seconds:
        # Not fatal: the mirror polls the bucket meanwhile, and a restart does not bring a queue back.
        down = int(s.now - s.queue_unreachable_since)
        reasons.append(f"the events queue has been unreachable for {down} s (polling the bucket instead)")
    if s.mirror_interval > 0:
        limit = _mirror_age_limit(s)
        if s.last_mirror_ok is not None:
            too_old = s.now - s.last_mirror_ok > limit
        else:
            too_old = s.started is None or s.now - s.started > limit
        if too_old:
            reasons.append(f"no successful mirror pass for more than {int(limit)} s")
    warnings: list[str] = []
    for n, one, many in (
        (s.conflicts, "key conflict", "key conflicts"),
        (s.unsafe_keys, "unsafe key", "unsafe keys"),
        (s.local_changed, "locally changed mirror file", "locally changed mirror files"),
        (s.failed_items, "failed download", "failed downloads"),
    ):
        if n > 0:
            warnings.append(f"{_plural(n, one, many)} in the last mirror pass")
    return Health(healthy=not reasons, alive=not fatal, reasons=tuple(reasons), warnings=tuple(warnings))
