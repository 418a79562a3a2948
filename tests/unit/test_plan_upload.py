"""plan_upload and ready_to_upload: what the upload side decides from a stat and a record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s3sync.plan import WRITER_GRACE_SECONDS, LocalStat, UploadAction, plan_upload, ready_to_upload

A = LocalStat(10, 1, 100, 7)


def test_cp_p_is_a_change():
    """Same size and mtime, another ctime (cp -p): hashed and compared, never skipped."""
    rewritten = LocalStat(10, 1, 200, 7)
    assert plan_upload(rewritten, "uploaded", A) is UploadAction.VERIFY


def test_another_inode_is_a_change():
    assert plan_upload(LocalStat(10, 1, 100, 8), "uploaded", A) is UploadAction.VERIFY


def test_records_without_ctime_compare_size_and_mtime():
    assert plan_upload(A, "uploaded", LocalStat(10, 1)) is UploadAction.SKIP


def test_a_gone_record_never_skips_a_new_file():
    assert plan_upload(A, "gone", A) is UploadAction.UPLOAD


def test_verdicts_stand_only_under_the_same_rules():
    for status in ("rejected", "conflict"):
        assert plan_upload(A, status, A, record_rules="r1", rules="r1") is UploadAction.IGNORE_REJECTED
        assert plan_upload(A, status, A, record_rules="r1", rules="r2") is UploadAction.UPLOAD
        assert plan_upload(A, status, A, record_rules=None, rules="r2") is UploadAction.UPLOAD
        assert plan_upload(LocalStat(10, 1, 101, 7), status, A, record_rules="r", rules="r") is UploadAction.UPLOAD


def test_unclosed_writer_waits_for_the_grace_time_only_with_close_events():
    kw = {"hint": "modified", "age_seconds": 1e6, "settle_seconds": 2.0, "writing": True}
    assert not ready_to_upload(stable_seconds=100.0, close_events=True, **kw)
    assert ready_to_upload(stable_seconds=WRITER_GRACE_SECONDS, close_events=True, **kw)
    assert ready_to_upload(stable_seconds=0.0, close_events=False, **kw)  # polling: the mtime's age decides


STATS = st.builds(LocalStat, st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))


@given(STATS, STATS)
def test_skip_only_for_the_very_same_file(local, record):
    """SKIP means nothing differs that both sides know; anything else is looked at."""
    action = plan_upload(local, "uploaded", record)
    if action is UploadAction.SKIP:
        assert (local.size, local.mtime_ns) == (record.size, record.mtime_ns)
        assert not (local.ctime_ns and record.ctime_ns and local.ctime_ns != record.ctime_ns)
        assert not (local.ino and record.ino and local.ino != record.ino)
    else:
        assert action in {UploadAction.VERIFY, UploadAction.UPLOAD}


@given(st.sampled_from(["scan", "created", "modified"]), st.floats(0, 1e5), st.floats(0, 1e5), st.booleans())
def test_a_written_unclosed_file_is_never_ready_before_the_grace_time(hint, age, stable, closed_hint):
    ready = ready_to_upload(
        hint="closed" if closed_hint else hint,
        age_seconds=age,
        stable_seconds=stable,
        settle_seconds=2.0,
        writing=True,
        close_events=True,
    )
    if stable < WRITER_GRACE_SECONDS:
        assert not ready
