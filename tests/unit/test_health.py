"""s3sync.health: the one pure function that decides health, with examples and properties."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from s3sync.health import STALE_REPORT_SECONDS, HealthSnapshot, assess

NOW = 1_000_000.0


def fresh(**changes: object) -> HealthSnapshot:
    """A healthy daemon started 10 s ago whose last mirror pass ended 5 s ago."""
    base = HealthSnapshot(now=NOW, started=NOW - 10, last_mirror_ok=NOW - 5)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_fresh_daemon_is_healthy_and_alive():
    """Nothing wrong: healthy, alive, no reasons, no warnings."""
    h = assess(fresh())
    assert (h.healthy, h.alive, h.reasons, h.warnings) == (True, True, (), ())


def test_a_stuck_loop_is_unhealthy_and_stops_the_watchdog():
    """A stalled loop is a reason, and one a restart cures (alive=False)."""
    h = assess(fresh(stalled_loops=("mirror loop is stuck",)))
    assert not h.healthy
    assert not h.alive
    assert h.reasons == ("mirror loop is stuck",)


def test_a_stalled_upload_worker_is_unhealthy():
    """Any stalled worker makes the daemon unhealthy; the watchdog pings go on (a slow link is no hang)."""
    h = assess(fresh(stalled_workers=("s3sync-upload-2", "s3sync-upload-0")))
    assert not h.healthy
    assert h.alive
    assert h.reasons == ("upload worker stuck: s3sync-upload-0, s3sync-upload-2",)
    odd = assess(fresh(stalled_workers=("a\nb.jpg", *(f"{i}.jpg" for i in range(6)))))
    assert odd.reasons == ("upload worker stuck: 0.jpg, 1.jpg, 2.jpg, 3.jpg, 4.jpg and 2 more",)
    assert assess(fresh(stalled_workers=("a\nb.jpg",))).reasons == ("upload worker stuck: 'a\\nb.jpg'",)


def test_an_old_mirror_is_unhealthy_but_a_restart_would_not_help():
    """No complete mirror pass for too long: red /healthz, but watchdog pings go on (the endpoint is down)."""
    h = assess(fresh(last_mirror_ok=NOW - 500, mirror_interval=60))
    assert not h.healthy
    assert h.alive
    assert h.reasons == ("no successful mirror pass for more than 240 s",)
    assert assess(fresh(last_mirror_ok=NOW - 500, max_mirror_age=600)).healthy


def test_a_new_daemon_gets_one_mirror_age_of_grace():
    """Before its first pass, a daemon is judged by the time since it started."""
    assert assess(fresh(last_mirror_ok=None, started=NOW - 200)).healthy
    assert not assess(fresh(last_mirror_ok=None, started=NOW - 300)).healthy
    assert not assess(fresh(last_mirror_ok=None, started=None)).healthy


def test_mirror_off_is_never_judged_by_age():
    """S3_MIRROR_INTERVAL=0: no mirror pass is expected."""
    assert assess(fresh(mirror_interval=0, last_mirror_ok=None, started=None)).healthy


def test_an_unreachable_events_queue_is_red_after_the_stall_time_without_a_restart():
    """The queue down longer than S3_LOOP_STALL_SECONDS is a reason (the mirror polls meanwhile), never fatal."""
    assert assess(fresh(queue_unreachable_since=NOW - 30, queue_stall_seconds=60)).healthy
    h = assess(fresh(queue_unreachable_since=NOW - 61, queue_stall_seconds=60))
    assert (h.healthy, h.alive) == (False, True)
    assert h.reasons == ("the events queue has been unreachable for 61 s (polling the bucket instead)",)
    stored = HealthSnapshot.from_dict(json.loads(json.dumps(fresh(queue_unreachable_since=NOW - 61).to_dict())))
    assert not assess(stored).healthy


def test_watcher_down_and_folder_missing():
    """A dead watcher is unhealthy; a missing folder says so instead; neither stops the watchdog."""
    down = assess(fresh(watcher_running=False))
    assert down.reasons == ("watcher is not running",)
    assert down.alive
    missing = assess(fresh(watcher_running=False, upload_folder_missing=True))
    assert missing.reasons == ("the upload folder is missing (waiting for it to come back)",)
    assert missing.alive


def test_stopped_or_silent_daemon_from_its_last_report():
    """`s3sync status`: a clean stop, or a report older than 30 s, is the reason (not the stale loops)."""
    stopped = assess(fresh(running=False, stalled_loops=("upload loop is not running or stuck",)))
    assert stopped.reasons == ("the daemon is not running (it stopped cleanly)",)
    silent = assess(fresh(reported_at=NOW - 45))
    assert silent.reasons == ("no status from the daemon for 45 s (killed or stuck)",)
    assert assess(fresh(reported_at=NOW - 3)).healthy


def test_item_counts_are_warnings_only():
    """Conflicts, unsafe keys, local changes and failed items are warnings, never reasons."""
    h = assess(fresh(conflicts=1, unsafe_keys=3, local_changed=2, failed_items=4))
    assert h.healthy
    assert h.warnings == (
        "1 key conflict in the last mirror pass",
        "3 unsafe keys in the last mirror pass",
        "2 locally changed mirror files in the last mirror pass",
        "4 failed downloads in the last mirror pass",
    )


snapshots = st.builds(
    HealthSnapshot,
    now=st.floats(0, 1e9),
    started=st.none() | st.floats(0, 1e9),
    running=st.booleans(),
    reported_at=st.none() | st.floats(0, 1e9),
    stalled_loops=st.lists(st.sampled_from(["upload loop", "mirror loop", "supervisor loop"]), max_size=3).map(tuple),
    stalled_workers=st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
    watcher_running=st.booleans(),
    upload_folder_missing=st.booleans(),
    mirror_interval=st.floats(0, 86400),
    max_mirror_age=st.floats(0, 1e6),
    last_mirror_ok=st.none() | st.floats(0, 1e9),
    conflicts=st.integers(0, 10**6),
    unsafe_keys=st.integers(0, 10**6),
    local_changed=st.integers(0, 10**6),
    failed_items=st.integers(0, 10**6),
)


@given(snapshots)
def test_healthy_exactly_when_there_is_no_reason(s):
    """The verdict and its reasons agree; whatever is fatal for the watchdog is also a reason."""
    h = assess(s)
    assert h.healthy == (not h.reasons)
    assert h.alive or not h.healthy
    assert all(isinstance(r, str) and r and "\n" not in r for r in h.reasons + h.warnings)


@given(snapshots, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_warning_counts_never_change_the_verdict(s, conflicts, unsafe, local, failed):
    """Changing only the item counts never changes healthy, alive or the reasons."""
    other = dataclasses.replace(s, conflicts=conflicts, unsafe_keys=unsafe, local_changed=local, failed_items=failed)
    a, b = assess(s), assess(other)
    assert (a.healthy, a.alive, a.reasons) == (b.healthy, b.alive, b.reasons)


@given(snapshots)
def test_a_stuck_worker_is_always_unhealthy_while_running(s):
    """A running, reporting daemon with a stalled worker is unhealthy, whatever else holds."""
    stuck = dataclasses.replace(s, running=True, reported_at=None, stalled_workers=("w",))
    h = assess(stuck)
    assert not h.healthy
    assert any(r.startswith("upload worker stuck") for r in h.reasons)


def test_stale_limit_is_the_documented_one():
    """The staleness limit is 30 s: six missed 5 s reports."""
    assert STALE_REPORT_SECONDS == 30.0


@given(snapshots)
def test_a_stored_snapshot_reads_back_equal(s):
    """to_dict -> JSON -> from_dict is the identity (what `s3sync status` reads is what the daemon saw)."""
    assert HealthSnapshot.from_dict(json.loads(json.dumps(s.to_dict()))) == s
