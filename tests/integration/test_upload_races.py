"""Issue 17: what careless and hostile people do to a file while it is uploaded.

Each race is staged deterministically: the fault proxy holds a request of the upload while the
test swaps a symlink or a FIFO in, rewrites the file in place and restores its mtime (``cp -p``),
or keeps a writer open; then the request goes on. Outcomes are asserted in the bucket (bytes,
SHA-256) and on disk, not only in events. Real servers, real files, the real watchdog observer.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from s3sync.service import Service, read_status
from tests.integration.daemon_helpers import (
    captured_events,
    drop,
    events_named,
    object_bytes,
    running,
    wait_for,
)
from tests.integration.upload_helpers import (
    FAST,
    MIB,
    MULTIPART,
    every_object,
    key_of,
    part_of,
    put_to,
    sha,
)
from tests.support.faultproxy import Fault


@pytest.mark.parametrize("size", [1 * MIB, 11 * MIB], ids=["single-put", "multipart"])
def test_symlink_swapped_in_during_upload_never_leaks(make_settings, fault_proxy, tmp_path, size):
    """Item 1: a symlink to a secret renamed over a file being uploaded is never followed."""
    secret = tmp_path / "credential"
    secret.write_bytes(b"TOP-SECRET-" + b"x" * 29)
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, **MULTIPART)
    name = "B0001_SECRET_1x1.jpg"
    key = key_of(settings, name)
    held = Fault("hold", match=part_of(key, 1) if size > 5 * MIB else put_to(key), times=1, seconds=30)
    fault_proxy.set_faults([held])
    original = os.urandom(size)
    with captured_events() as events, running(settings):
        path = drop(settings.upload_dir_path, name, original)
        assert held.reached.wait(20)
        link = settings.upload_dir_path.parent / "link"
        link.symlink_to(secret)
        os.replace(link, path)  # the swap: a rename over the file being uploaded
        held.release.set()
        skipped = lambda: events_named(events, "upload.skipped")  # noqa: E731
        wait_for(lambda: any(e.get("reason") == "symlink (not followed)" for e in skipped()))
        time.sleep(0.5)  # anything a retry would send, it has sent by now
    objects = every_object(settings)
    assert all(b"TOP-SECRET" not in data for data in objects.values())
    # What went up (if anything) is the original file, whole: never part of it, never the secret.
    assert objects.get(key) in (None, original)


def test_cp_p_during_multipart_never_leaves_a_truncated_object(make_settings, fault_proxy):
    """Item 2: the file is cut short while its parts are read, then rewritten whole with its mtime
    restored (cp -p) before the upload would complete.

    Before the fix the short parts went up, the size + mtime check after the upload saw nothing,
    and a truncated object was recorded as done and never repaired. Now a short read discards the
    attempt (the multipart upload is aborted); the object is the whole new file, its SHA-256
    metadata matches it, and so does the state.
    """
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, **MULTIPART)
    name = "B0002_COPY_1x1.jpg"
    key = key_of(settings, name)
    first_part = Fault("hold", match=part_of(key, 1), times=1, seconds=30)
    completing = Fault(
        "hold", match=lambda m, t, h: m == "POST" and key in t and "uploadId=" in t, times=1, seconds=30
    )
    fault_proxy.set_faults([first_part, completing])
    first = os.urandom(12 * MIB)
    second = os.urandom(12 * MIB)
    with captured_events() as events, running(settings) as service:
        path = drop(settings.upload_dir_path, name, first)
        st = path.stat()
        assert first_part.reached.wait(20)
        with open(path, "r+b") as f:
            f.truncate(3 * MIB)  # cp -p over the file: first it is cut short...
            f.flush()
            first_part.release.set()  # ... while the other parts are read
            wait_for(lambda: completing.reached.is_set() or events_named(events, "upload.changed"))
            f.seek(0)
            f.write(second)  # ... then written whole again
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and its mtime restored
        assert path.stat().st_size == st.st_size
        assert path.stat().st_mtime_ns == st.st_mtime_ns
        completing.release.set()
        wait_for(lambda: object_bytes(settings, key) == second, timeout=60)
        service.uploader.wait_idle(timeout=30)
        head = service.transport.head(key)
        assert head is not None
        assert head.sha256 == sha(second)
        rec = service.state.get_upload(name)
        assert rec is not None
        assert rec.sha256 == sha(second)
    assert object_bytes(settings, key) == second


def test_in_place_rewrite_with_mtime_restored_is_uploaded_again(make_settings):
    """Item 2, after the upload: cp -p restores size and mtime, but the state sees the ctime and re-uploads."""
    settings = make_settings(**FAST)
    name = "B0003_TOUCHUP_1x1.jpg"
    key = key_of(settings, name)
    with running(settings) as service:
        path = drop(settings.upload_dir_path, name, b"a" * 1000)
        wait_for(lambda: object_bytes(settings, key) == b"a" * 1000)
        service.uploader.wait_idle(timeout=10)
    st = path.stat()
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = Service(settings).sync_once(mirror=False)
    assert summary.uploaded == 1
    assert object_bytes(settings, key) == b"b" * 1000


@pytest.mark.parametrize("after_upload", ["keep", "delete"])
def test_writer_pausing_longer_than_settle_is_waited_for(make_settings, tmp_path, after_upload):
    """Item 3: a writer that pauses with the file open is never uploaded half, and never deleted."""
    settings = make_settings(**FAST, after_upload=after_upload)
    name = "B0004_SLOW_1x1.jpg"
    key = key_of(settings, name)
    path = settings.upload_dir_path / name
    with running(settings) as service:
        with open(path, "wb") as f:
            f.write(b"first half ")
            f.flush()
            time.sleep(4 * settings.settle_seconds + 1)  # far past the settle time, still open
            assert object_bytes(settings, key) is None, "half a file went up"
            assert path.exists()
            f.write(b"second half")
        wait_for(lambda: object_bytes(settings, key) == b"first half second half")
        service.uploader.wait_idle(timeout=10)
        if after_upload == "delete":
            wait_for(lambda: not path.exists())
    assert object_bytes(settings, key) == b"first half second half"


def test_same_name_in_two_subfolders_is_a_conflict_not_an_overwrite(make_settings):
    """Item 4: bob's file with alice's name (other bytes) is kept and reported; alice's object stays."""
    settings = make_settings(**FAST, after_upload="delete")
    name = "CF0001_WHITE_320x320.jpg"
    key = key_of(settings, name)
    with captured_events() as events, running(settings) as service:
        (settings.upload_dir_path / "alice").mkdir()
        (settings.upload_dir_path / "bob").mkdir()
        outside = settings.upload_dir_path.parent / "staging"
        alice = drop(settings.upload_dir_path / "alice", name, b"alice's photo", staging=outside)
        wait_for(lambda: object_bytes(settings, key) == b"alice's photo")
        wait_for(lambda: not alice.exists())
        bob = drop(settings.upload_dir_path / "bob", name, b"bob's photo", staging=outside)
        conflict = wait_for(lambda: events_named(events, "upload.conflict"))
        service.uploader.wait_idle(timeout=10)
        snapshot = service.status_snapshot()
    assert conflict[0]["path"] == os.path.join("bob", name)
    assert conflict[0]["other"] == os.path.join("alice", name)
    assert len(conflict) == 1
    assert object_bytes(settings, key) == b"alice's photo"
    assert bob.read_bytes() == b"bob's photo", "the conflicting file must stay where it is"
    assert service.uploader.stats.conflicts == 1
    assert snapshot["upload_conflicts"] == 1
    assert read_status(settings)["upload_conflicts"] == 1  # what `s3sync status` shows
    # A later change of alice's own path is a normal update.
    drop(settings.upload_dir_path / "alice", name, b"alice's retouched photo", staging=outside)
    Service(settings).sync_once(mirror=False)
    assert object_bytes(settings, key) == b"alice's retouched photo"
    assert bob.exists()


def test_same_name_twice_in_one_pass_uploads_one_and_keeps_the_other(make_settings):
    """Item 4, one pass: two new files mapping to one key; exactly one is uploaded, the other kept."""
    settings = make_settings(**FAST)
    name = "CF0002_BLACK_320x320.jpg"
    for who in ("alice", "bob"):
        (settings.upload_dir_path / who).mkdir()
        (settings.upload_dir_path / who / name).write_bytes(f"{who}'s bytes".encode())
        os.utime(settings.upload_dir_path / who / name, (time.time() - 60, time.time() - 60))
    summary = Service(settings).sync_once(mirror=False)
    assert (summary.uploaded, summary.conflicts) == (1, 1)
    assert object_bytes(settings, key_of(settings, name)) in (b"alice's bytes", b"bob's bytes")
    # The verdict is remembered: a second pass says nothing new and uploads nothing.
    again = Service(settings).sync_once(mirror=False)
    assert (again.uploaded, again.conflicts) == (0, 0)


def test_same_content_under_two_paths_is_not_a_conflict(make_settings):
    settings = make_settings(**FAST)
    name = "CF0003_GREY_320x320.jpg"
    for who in ("alice", "bob"):
        (settings.upload_dir_path / who).mkdir()
        (settings.upload_dir_path / who / name).write_bytes(b"the same bytes")
        os.utime(settings.upload_dir_path / who / name, (time.time() - 60, time.time() - 60))
    summary = Service(settings).sync_once(mirror=False)
    assert summary.conflicts == 0
    assert summary.uploaded + summary.upload_skipped == 2


def test_rejected_folder_never_overwrites(make_settings, tmp_path):
    """Item 5: camera names repeat; every rejected file is kept, under a unique name."""
    settings = make_settings(**FAST, rejected_dir=tmp_path / "rejected")
    with captured_events() as events:
        for n in range(3):
            (settings.upload_dir_path / "IMG_1234.JPG").write_bytes(f"photo {n}".encode())
            Service(settings).sync_once(mirror=False)
    kept = sorted(p.read_bytes() for p in (tmp_path / "rejected").iterdir())
    assert kept == [b"photo 0", b"photo 1", b"photo 2"]
    moved = [e["moved_to"] for e in events_named(events, "upload.rejected")]
    assert len(set(moved)) == 3
    assert all(Path(m).exists() for m in moved)


@pytest.mark.timeout(60)
def test_fifo_swapped_in_during_upload_blocks_nothing(make_settings, fault_proxy):
    """Item 8: a FIFO renamed over a file being uploaded is skipped; no worker blocks; stop is prompt."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, max_attempts=1)  # the daemon retries
    name = "B0005_PIPE_1x1.jpg"
    key = key_of(settings, name)
    held = Fault("hold", match=put_to(key), times=1, seconds=30, fail_after_hold=True, status=503)
    fault_proxy.set_faults([held])
    started = 0.0
    with captured_events() as events, running(settings) as service:
        path = drop(settings.upload_dir_path, name, b"data" * 1000)
        assert held.reached.wait(20)
        fifo = settings.upload_dir_path.parent / "fifo"
        os.mkfifo(fifo)
        os.replace(fifo, path)
        held.release.set()  # the attempt fails: the retry meets the FIFO
        wait_for(lambda: any("FIFO" in str(e.get("reason")) for e in events_named(events, "upload.skipped")))
        service.uploader.wait_idle(timeout=10)
        assert service.uploader.stalled_workers() == []
        started = time.monotonic()
    assert time.monotonic() - started < settings.shutdown_timeout + 5
    assert object_bytes(settings, key) is None


def test_rejection_is_looked_at_again_when_the_rules_change(make_settings, tmp_path):
    """Item 9: a category added, a rejected folder set later, or --retry-rejected re-examine a rejection."""
    settings = make_settings(**FAST)
    name = "ZZ0001_NEW_1x1.jpg"
    path = settings.upload_dir_path / name
    path.write_bytes(b"new category")
    first = Service(settings).sync_once(mirror=False)
    assert first.rejected == 1
    assert Service(settings).sync_once(mirror=False).rejected == 0  # said once
    # --retry-rejected: the same rules, looked at again all the same.
    assert Service(settings).sync_once(mirror=False, retry_rejected=True).rejected == 1
    # A rejected folder set later: the file is moved there now.
    later = make_settings(**FAST, rejected_dir=tmp_path / "rejected")
    assert Service(later).sync_once(mirror=False).rejected == 1
    assert (tmp_path / "rejected" / name).read_bytes() == b"new category"
    # The category added: the file (dropped again) is uploaded.
    os.replace(tmp_path / "rejected" / name, path)
    mapped = make_settings(**FAST, category_map={**settings.category_map, "ZZ": "ZEDS"})
    summary = Service(mapped).sync_once(mirror=False)
    assert summary.uploaded == 1
    assert object_bytes(mapped, key_of(mapped, name)) == b"new category"


def test_a_worker_stuck_in_one_file_is_reported(make_settings, fault_proxy):
    """A worker inside one file with no progress for S3_LOOP_STALL_SECONDS is named by stalled_workers()."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, loop_stall_seconds=1, read_timeout=30)
    name = "B0006_STUCK_1x1.jpg"
    key = key_of(settings, name)
    held = Fault("hold", match=put_to(key), times=1, seconds=30)
    fault_proxy.set_faults([held])
    with running(settings) as service:
        drop(settings.upload_dir_path, name, b"stuck")
        assert held.reached.wait(20)
        stalled = wait_for(lambda: service.uploader.stalled_workers(), timeout=10)
        assert stalled == [name]
        healthy, _ = service.health()
        assert not healthy
        held.release.set()
        wait_for(lambda: object_bytes(settings, key) == b"stuck")
        wait_for(lambda: service.uploader.stalled_workers() == [], timeout=10)
    with contextlib.suppress(Exception):
        held.release.set()


@pytest.mark.timeout(90)
def test_sigterm_with_a_worker_stuck_in_a_request_exits_within_the_timeout(make_settings, fault_proxy, tmp_path):
    """A worker stuck inside one file does not keep a stopping daemon alive past S3_SHUTDOWN_TIMEOUT."""
    import signal
    import subprocess
    import sys

    from tests.integration.test_cli import env_for

    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST)
    name = "B0007_HANG_1x1.jpg"
    held = Fault("hold", match=put_to(key_of(settings, name)), times=1, seconds=80)
    fault_proxy.set_faults([held])
    env = env_for(settings, S3_LOG_FORMAT="json", S3_SHUTDOWN_TIMEOUT="1", S3_READ_TIMEOUT="120", S3_MAX_ATTEMPTS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3sync", "run"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"daemon.ready"' in line:
                break
        drop(settings.upload_dir_path, name, b"hang")
        assert held.reached.wait(20)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        held.release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert took < 1 + 5 + 5, f"took {took:.1f} s to stop"  # the timeout, the abort grace, start-up slack
    assert "daemon.workers_abandoned" in err


def test_a_key_whose_object_was_removed_is_free_again(make_settings):
    """Item 4: ownership protects what is in the bucket; once the object is gone, another path may take the key."""
    from s3sync.transport import make_client

    settings = make_settings(**FAST)
    name = "CF0004_BLUE_320x320.jpg"
    key = key_of(settings, name)
    for who in ("alice", "bob"):
        (settings.upload_dir_path / who).mkdir()
    (settings.upload_dir_path / "alice" / name).write_bytes(b"alice")
    os.utime(settings.upload_dir_path / "alice" / name, (time.time() - 60, time.time() - 60))
    assert Service(settings).sync_once(mirror=False).uploaded == 1
    (settings.upload_dir_path / "bob" / name).write_bytes(b"bob")
    os.utime(settings.upload_dir_path / "bob" / name, (time.time() - 60, time.time() - 60))
    assert Service(settings).sync_once(mirror=False).conflicts == 1
    assert object_bytes(settings, key) == b"alice"
    make_client(settings).delete_object(Bucket=settings.require_bucket(), Key=key)
    summary = Service(settings).sync_once(mirror=False, retry_rejected=True)
    assert (summary.uploaded, summary.conflicts) == (1, 0)
    assert object_bytes(settings, key) == b"bob"


def test_a_delete_interrupted_by_a_crash_is_undone_at_the_next_start(make_settings):
    """A file renamed aside for its deletion when the daemon died comes back, and is handled again."""
    settings = make_settings(**FAST, after_upload="delete")
    name = "B0008_ASIDE_1x1.jpg"
    (settings.upload_dir_path / "sub").mkdir()
    aside = settings.upload_dir_path / "sub" / f".s3sync-delete-{name}"  # as a SIGKILL leaves it
    aside.write_bytes(b"aside")
    os.utime(aside, (time.time() - 60, time.time() - 60))
    summary = Service(settings).sync_once(mirror=False)
    assert summary.uploaded == 1
    assert object_bytes(settings, key_of(settings, name)) == b"aside"
    assert list(settings.upload_dir_path.rglob("*.jpg")) == []  # uploaded, then deleted for real
    assert not aside.exists()
