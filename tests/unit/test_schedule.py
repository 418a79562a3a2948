"""UploadSchedule: the upload scheduler's rules, one call at a time (no threads, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.plan import WRITER_GRACE_SECONDS
from s3sync.schedule import Entry, Hint, Probe, UploadSchedule

P = Path("/up/a.jpg")
OLD = Probe("file", size=10, mtime_ns=0, ctime_ns=0, ino=1)  # mtime at the epoch: old enough to be settled


def probe_of(p: Probe):
    return lambda path: p


def test_closed_file_is_taken_at_once():
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.CLOSED, now=0.0)
    item = s.take(0.0, probe_of(OLD), wall=0.0)
    assert item is not None
    assert item.rel == "a"
    assert s.in_flight == 1
    assert s.queued == 0


def test_written_and_not_closed_waits_whatever_its_age():
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.MODIFIED, now=0.0)
    assert s.take(0.0, probe_of(OLD), wall=1e9) is None
    assert s.take(1000.0, probe_of(OLD), wall=1e9) is None  # unchanged for 1000 s: still open
    s.note("a", P, Hint.CLOSED, now=1000.0)
    assert s.take(1000.0, probe_of(OLD), wall=1e9) is not None


def test_a_dropped_close_event_does_not_hold_a_file_for_ever():
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.MODIFIED, now=0.0)
    assert s.take(0.0, probe_of(OLD), wall=1e9) is None
    item = s.take(WRITER_GRACE_SECONDS + 1, probe_of(OLD), wall=1e9)
    assert item is not None
    assert item.unclosed


def test_without_close_events_the_settle_time_decides():
    s = UploadSchedule(settle_seconds=2.0, close_events=False)
    s.note("a", P, Hint.MODIFIED, now=0.0)
    fresh = Probe("file", size=10, mtime_ns=int(100e9), ino=1)
    assert s.take(0.0, probe_of(fresh), wall=100.0) is None
    assert s.take(1.0, probe_of(fresh), wall=101.0) is None
    assert s.take(2.5, probe_of(fresh), wall=102.5) is not None


def test_created_only_with_data_is_no_writer_of_ours():
    """A hard link, or a file that came with a folder moved in: settle time and veto decide."""
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.CREATED, now=0.0)
    assert s.take(0.0, probe_of(OLD), wall=1e9) is not None


def test_veto_keeps_a_settled_file_that_a_process_still_writes():
    s = UploadSchedule(settle_seconds=2.0, close_events=False)
    s.note("a", P, Hint.SCAN, now=0.0)
    assert s.take(0.0, probe_of(OLD), wall=1e9, veto=lambda e, p: True) is None
    assert s.take(1.0, probe_of(OLD), wall=1e9, veto=lambda e, p: False) is not None


def test_veto_is_asked_after_a_close_too():
    """A close (or a rename in) says one writer is done, not that no process still writes to the file."""
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.MOVED, now=0.0)
    assert s.take(0.0, probe_of(OLD), wall=1e9, veto=lambda e, p: True) is None
    assert s.take(1.0, probe_of(OLD), wall=1e9, veto=lambda e, p: False) is not None


def test_a_change_after_close_waits_again():
    s = UploadSchedule(settle_seconds=2.0, close_events=False)
    s.note("a", P, Hint.CLOSED, now=0.0)
    first = Probe("file", size=10, mtime_ns=int(99e9), ino=1)
    s._items["a"].seen = first.signature  # seen once before: then it changed (cp -p moves the ctime)
    changed = Probe("file", size=10, mtime_ns=int(99e9), ctime_ns=5, ino=1)
    assert s.take(0.0, probe_of(changed), wall=100.0) is None
    assert s.take(2.5, probe_of(changed), wall=102.5) is not None


def test_symlink_or_fifo_is_dropped_with_its_kind():
    s = UploadSchedule(settle_seconds=0.0)
    dropped: list[tuple[str, str]] = []
    s.note("a", P, Hint.CLOSED, now=0.0)
    s.note("b", Path("/up/b.jpg"), Hint.CLOSED, now=0.0)
    kinds = {"a.jpg": Probe("symlink"), "b.jpg": Probe("FIFO")}
    assert s.take(0.0, lambda p: kinds[p.name], wall=0.0, on_drop=lambda e, k: dropped.append((e.rel, k))) is None
    assert sorted(dropped) == [("a", "symlink"), ("b", "FIFO")]
    assert s.queued == 0


def test_hint_while_in_flight_is_applied_after_release():
    s = UploadSchedule(settle_seconds=2.0, close_events=True)
    s.note("a", P, Hint.CLOSED, now=0.0)
    item = s.take(0.0, probe_of(OLD), wall=1e9)
    assert item is not None
    s.note("a", P, Hint.MODIFIED, now=1.0)  # written again while it uploads
    assert s.queued == 0
    assert s.in_flight == 1
    s.release(item, 2.0, None)
    assert s.queued == 1
    assert s.take(2.0, probe_of(OLD), wall=1e9) is None  # open again: waits for the close
    s.note("a", P, Hint.CLOSED, now=3.0)
    assert s.take(3.0, probe_of(OLD), wall=1e9) is not None


def test_deleted_while_in_flight_is_not_queued_again():
    s = UploadSchedule(settle_seconds=0.0)
    s.note("a", P, Hint.CLOSED, now=0.0)
    item = s.take(0.0, probe_of(OLD), wall=0.0)
    assert item is not None
    s.note("a", P, Hint.DELETED, now=0.5)
    s.release(item, 1.0, None)
    assert s.queued == 0


def test_retry_comes_back_after_its_delay():
    s = UploadSchedule(settle_seconds=0.0)
    s.note("a", P, Hint.CLOSED, now=0.0)
    item = s.take(0.0, probe_of(OLD), wall=0.0)
    assert item is not None
    s.release(item, 1.0, 5.0)
    assert s.take(5.9, probe_of(OLD), wall=0.0) is None
    again = s.take(6.0, probe_of(OLD), wall=0.0)
    assert again is item


RELS = st.sampled_from(["a", "b", "c"])
HINTS = st.sampled_from([h for h in Hint if h is not Hint.DIR])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("note"), RELS, HINTS),
        st.tuples(st.just("take"), st.booleans(), st.booleans()),
        st.tuples(st.just("release"), st.integers(0, 5), st.one_of(st.none(), st.floats(0, 3))),
        st.tuples(st.just("tick"), st.floats(0, 3), st.just(None)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.booleans())
def test_no_interleaving_ever_has_one_path_in_flight_twice(ops, close_events):
    s = UploadSchedule(settle_seconds=1.0, close_events=close_events)
    now = 0.0
    flying: list[Entry] = []
    for op in ops:
        if op[0] == "note":
            s.note(op[1], Path("/up") / op[1], op[2], now=now)
        elif op[0] == "take":
            kind = "file" if op[1] else "gone"
            item = s.take(now, lambda p, k=kind: Probe(k, size=1, ino=1), wall=now, veto=lambda e, p, v=op[2]: v)
            if item is not None:
                assert item.rel not in {f.rel for f in flying}, "taken while in flight"
                flying.append(item)
        elif op[0] == "release" and flying:
            item = flying.pop(op[1] % len(flying))
            s.release(item, now, op[2])
        else:
            now += float(op[1])
        # Invariants after every step.
        in_flight = set(s.in_flight_paths())
        assert in_flight == {f.rel for f in flying}
        assert len(in_flight) == len(flying)
        assert not (in_flight & set(s._items)), "a path both queued and in flight"


def test_a_failing_probe_loses_nothing():
    """A probe (or veto) that raises leaves the file queued: it is taken once the probe works again."""
    s = UploadSchedule(settle_seconds=0.0)
    s.note("a", P, Hint.CLOSED, now=0.0)

    def broken(path: Path) -> Probe:
        raise OSError("EMFILE")

    with pytest.raises(OSError, match="EMFILE"):
        s.take(0.0, broken, wall=0.0)
    assert s.queued == 1
    assert s.take(1.0, probe_of(OLD), wall=0.0) is not None
