"""The daemon against real local S3 servers, with real files and the real watchdog observer."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from s3sync.resource import Resource
from s3sync.service import Service
from s3sync.transport import META_SHA256, make_client
from s3sync.uploader import Uploader
from tests.integration.daemon_helpers import (
    captured_events,
    counted_transport,
    drop,
    events_named,
    list_keys,
    object_bytes,
    running,
    wait_for,
)

# The third server (SeaweedFS) runs where the bytes travel; see tests/conftest.py.
pytestmark = pytest.mark.servers("moto", "rclone", "seaweedfs")

FAST = {
    "settle_seconds": 1.0,
    "mirror_interval": 0,
    "retry_base": 0.1,
    "retry_cap": 0.5,
    "rescan_interval": 30,
    "shutdown_timeout": 10,
}


def key_of(settings, name: str) -> str:
    return Resource(name, settings=settings).key


def test_slow_writer_uploaded_once_complete(make_settings):
    """A file written slowly over several seconds reaches the bucket once, complete."""
    settings = make_settings(**FAST)
    transport, counter = counted_transport(settings)
    name = "CF0001_SLOW_100x100.jpg"
    chunks = [os.urandom(50_000) for _ in range(8)]
    with running(settings, transport):
        with open(settings.upload_dir_path / name, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.4)  # the writer's pace, not a wait for the daemon
        key = key_of(settings, name)
        wait_for(lambda: object_bytes(settings, key) == b"".join(chunks), timeout=20)
        time.sleep(1.5)  # give a duplicate upload the chance to happen, then check there was none
    assert counter.count("PutObject", key) == 1


def test_two_hundred_files_all_arrive(make_settings):
    """200 files dropped at once all arrive, each with its bytes."""
    settings = make_settings(**FAST)
    payloads = {f"B{i:04d}_BULK_10x10.png": os.urandom(1000 + i) for i in range(200)}
    staging = settings.upload_dir_path.parent / "staging200"
    staging.mkdir()
    for name, data in payloads.items():
        (staging / name).write_bytes(data)
    with running(settings):
        for name in payloads:
            os.replace(staging / name, settings.upload_dir_path / name)
        expected = {key_of(settings, n) for n in payloads}
        wait_for(lambda: expected <= set(list_keys(settings)), timeout=60)
    for name, data in list(payloads.items())[::37]:
        assert object_bytes(settings, key_of(settings, name)) == data


def test_files_dropped_while_stopped_are_uploaded_at_start(make_settings):
    """Files dropped while the daemon was down are uploaded at start; unchanged ones are not re-uploaded."""
    settings = make_settings(**FAST)
    first = drop(settings.upload_dir_path, "F0001_FIRST_1x1.jpg", os.urandom(2000))
    with running(settings):
        wait_for(lambda: object_bytes(settings, key_of(settings, first.name)) is not None)
    second = drop(settings.upload_dir_path, "F0002_SECOND_1x1.jpg", os.urandom(3000))
    transport, counter = counted_transport(settings)
    with running(settings, transport):
        wait_for(lambda: object_bytes(settings, key_of(settings, second.name)) == second.read_bytes())
    assert counter.count("PutObject", key_of(settings, first.name)) == 0
    assert counter.count("HeadObject", key_of(settings, first.name)) == 0


def test_invalid_name_rejected_with_reason(make_settings):
    """An invalid name gives one upload.rejected event with its reason and stays in place."""
    settings = make_settings(**FAST)
    with captured_events() as events, running(settings):
        bad = drop(settings.upload_dir_path, "XY0001_A.jpg", b"data")
        wait_for(lambda: events_named(events, "upload.rejected"))
        os.utime(bad)  # a metadata-only change: no inotify event is asked for it; the next rescan sees it
        time.sleep(1.0)
    rejected = events_named(events, "upload.rejected")
    assert "unknown category code 'XY'" in rejected[0]["reason"]
    assert bad.exists()
    assert list_keys(settings) == []


def test_rejected_dir_receives_invalid_files(make_settings, tmp_path):
    """With S3_REJECTED_DIR set, an invalid file is moved there."""
    settings = make_settings(**FAST, rejected_dir=tmp_path / "rejected")
    with running(settings):
        drop(settings.upload_dir_path, "no-underscore.jpg", b"x")
        wait_for(lambda: (tmp_path / "rejected" / "no-underscore.jpg").exists())
    assert not (settings.upload_dir_path / "no-underscore.jpg").exists()


@pytest.mark.parametrize("policy", ["keep", "move", "delete"])
def test_after_upload_policies(make_settings, tmp_path, policy):
    """keep leaves the file, move puts it in S3_DONE_DIR, delete removes it: only after the object is confirmed."""
    extra = {"done_dir": tmp_path / "done"} if policy == "move" else {}
    settings = make_settings(**FAST, after_upload=policy, **extra)
    data = os.urandom(5000)
    with running(settings):
        path = drop(settings.upload_dir_path, "CM0001_POLICY_2x2.webp", data)
        key = key_of(settings, path.name)
        wait_for(lambda: object_bytes(settings, key) == data)
        if policy == "keep":
            time.sleep(0.5)
            assert path.read_bytes() == data
        elif policy == "move":
            wait_for(lambda: (tmp_path / "done" / path.name).exists())
            assert not path.exists()
            assert (tmp_path / "done" / path.name).read_bytes() == data
        else:
            wait_for(lambda: not path.exists())
    assert object_bytes(settings, key) == data


def _no_etag_no_metadata(method: str, path: str, headers: object) -> bool:
    """HEADs and object GETs: what the JuiceFS gateway answers without ETag nor user metadata."""
    return method in {"HEAD", "GET"} and "list-type" not in path


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)  # the proxy plays the gateway: one server is enough
def test_after_upload_move_on_a_gateway_without_etags_or_metadata(make_settings, s3_server, tmp_path):
    """A gateway like JuiceFS's (ETag only on the PUT's answer, no user metadata): moved once, PUT once.

    Neither a HEAD nor a GET can then prove the upload: confirm() reads the object back and hashes it.
    """
    from tests.support.faultproxy import Fault, FaultProxy

    proxy = FaultProxy("127.0.0.1", s3_server.port).start()
    strip = frozenset({"etag", "x-amz-meta-" + META_SHA256})
    proxy.set_faults(
        [
            Fault("rewrite", match=lambda m, p, h: m == "GET" and "list-type" in p, rewrite=_strip_listing_etags),
            Fault("rewrite", match=_no_etag_no_metadata, drop_headers=strip),
        ]
    )
    try:
        settings = make_settings(**FAST, endpoint_url=proxy.endpoint, after_upload="move", done_dir=tmp_path / "done")
        with captured_events() as events, running(settings):
            path = drop(settings.upload_dir_path, "CM0002_GATEWAY_2x2.webp", os.urandom(5000))
            moved = tmp_path / "done" / path.name
            wait_for(lambda: moved.exists() or len(events_named(events, "upload.succeeded")) >= 3, timeout=30)
    finally:
        proxy.stop()
    assert moved.exists()
    assert len(events_named(events, "upload.succeeded")) == 1


def _strip_listing_etags(body: bytes) -> bytes:
    import re

    return re.sub(rb"<ETag>.*?</ETag>", b"<ETag></ETag>", body, flags=re.S)


def test_endpoint_down_then_back_everything_arrives(make_settings, s3_server):
    """With the endpoint unreachable for a while, the daemon keeps running and catches up."""
    from tests.support.faultproxy import FaultProxy

    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    proxy.start()
    try:
        settings = make_settings(**FAST, endpoint_url=proxy.endpoint, connect_timeout=1, max_attempts=1)
        with captured_events() as events, running(settings) as service:
            proxy.pause()
            names = [f"PP{i:03d}_DOWN_5x5.jpg" for i in range(5)]
            for n in names:
                drop(settings.upload_dir_path, n, n.encode() * 100)
            wait_for(lambda: len(events_named(events, "upload.failed")) >= 5, timeout=30)
            assert service.uploader is not None
            assert service.uploader.is_alive()
            proxy.resume()
            direct = settings.model_copy(update={"endpoint_url": s3_server.endpoint})
            wait_for(lambda: all(object_bytes(direct, key_of(direct, n)) for n in names), timeout=30)
        failed = events_named(events, "upload.failed")
        assert {"error", "attempt", "retry_in"} <= set(failed[0])
    finally:
        proxy.stop()


def test_mirror_downloads_new_and_changed_and_skips_unchanged(make_settings):
    """The mirror fetches new and changed objects, and an unchanged bucket costs no HEAD or GET."""
    settings = make_settings(**FAST)
    client = make_client(settings)
    bucket = settings.require_bucket()
    for i in range(30):
        client.put_object(Bucket=bucket, Key=f"VASE/F{i:03d}/F{i:03d}_M.jpg", Body=f"v1-{i}".encode())
    transport, counter = counted_transport(settings)
    service = Service(settings, transport=transport, environ={})
    try:
        first = service.sync_once(upload=False)
        assert first.mirror is not None
        assert first.mirror.downloaded == 30
        counter.reset()
        again = service.sync_once(upload=False)
        assert again.mirror is not None
        assert again.mirror.downloaded == 0
        assert counter.count("GetObject") == 0
        assert counter.count("HeadObject") == 0
        client.put_object(Bucket=bucket, Key="VASE/F003/F003_M.jpg", Body=b"v2-changed")
        third = service.sync_once(upload=False)
        assert third.mirror is not None
        assert third.mirror.downloaded == 1
    finally:
        service.close()
    assert (settings.local_path / "VASE/F003/F003_M.jpg").read_bytes() == b"v2-changed"
    assert (settings.local_path / "VASE/F010/F010_M.jpg").read_bytes() == b"v1-10"


UNSAFE_KEYS = ["../escape.jpg", "a/../../escape2.jpg", "/abs.jpg", "x\\..\\y.jpg", "ok/./dot.jpg", "c/\x01ctl.jpg"]


def test_unsafe_keys_never_write_outside(make_settings, moto_only_server, tmp_path):
    """Keys with '..', absolute paths, backslashes or control characters are skipped with an event."""
    settings = make_settings(
        **FAST,
        endpoint_url=moto_only_server.endpoint,
        aws_access_key_id=moto_only_server.access_key,
        aws_secret_access_key=moto_only_server.secret_key,
    )
    client = make_client(settings)
    bucket = settings.require_bucket()
    client.create_bucket(Bucket=bucket)
    for key in UNSAFE_KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=b"evil")
    client.put_object(Bucket=bucket, Key="good/file.jpg", Body=b"good")
    before = set(tmp_path.parent.rglob("*"))
    service = Service(settings, environ={})
    try:
        with captured_events() as events:
            report = service.sync_once(upload=False).mirror
    finally:
        service.close()
    assert report is not None
    assert report.unsafe == len(UNSAFE_KEYS)
    unsafe = events_named(events, "mirror.unsafe_key")
    assert len(unsafe) == len(UNSAFE_KEYS)
    assert (settings.local_path / "good/file.jpg").read_bytes() == b"good"
    after = set(tmp_path.parent.rglob("*"))
    created_outside = {p for p in after - before if settings.local_path not in p.parents and p != settings.local_path}
    created_outside = {
        p for p in created_outside if tmp_path not in p.parents or "evil" in p.name or "escape" in p.name
    }
    assert not any("escape" in p.name or "abs" in p.name for p in created_outside)


def test_mirror_symlink_inside_is_not_followed(make_settings, tmp_path):
    """A symlink planted inside the mirror folder never redirects a download out of it."""
    settings = make_settings(**FAST)
    outside = tmp_path / "outside"
    outside.mkdir()
    settings.local_path.mkdir(parents=True, exist_ok=True)
    (settings.local_path / "VASE").symlink_to(outside)
    client = make_client(settings)
    client.put_object(Bucket=settings.require_bucket(), Key="VASE/F001/F001_X.jpg", Body=b"data")
    service = Service(settings, environ={})
    try:
        report = service.sync_once(upload=False).mirror
    finally:
        service.close()
    assert report is not None
    assert report.failed == 1
    assert list(outside.rglob("*")) == []


def test_mirror_delete_safety(make_settings):
    """Only mirror-created files whose objects are gone are deleted; empty listings and big deletes are refused."""
    settings = make_settings(**FAST, mirror_delete=True, mirror_max_delete=3)
    client = make_client(settings)
    bucket = settings.require_bucket()
    keys = [f"BACKGROUND/B{i:03d}/B{i:03d}_D.jpg" for i in range(6)]
    for k in keys:
        client.put_object(Bucket=bucket, Key=k, Body=k.encode())
    mine = settings.local_path / "BACKGROUND" / "user-file.txt"
    service = Service(settings, environ={})
    try:
        service.sync_once(upload=False)
        mine.write_text("not the mirror's")
        client.delete_object(Bucket=bucket, Key=keys[0])
        report = service.sync_once(upload=False).mirror
        assert report is not None
        assert report.deleted == 1
        assert not (settings.local_path / keys[0]).exists()
        for k in keys[1:5]:
            client.delete_object(Bucket=bucket, Key=k)
        with captured_events() as events:
            capped = service.sync_once(upload=False).mirror
        assert capped is not None
        assert capped.deleted == 0
        assert events_named(events, "mirror.delete_refused")
        client.delete_object(Bucket=bucket, Key=keys[5])
        with captured_events() as events:
            empty = service.sync_once(upload=False).mirror
        assert empty is not None
        assert empty.deleted == 0
        assert "empty" in events_named(events, "mirror.delete_refused")[0]["reason"]
    finally:
        service.close()
    assert mine.read_text() == "not the mirror's"
    assert all((settings.local_path / k).exists() for k in keys[1:])


def test_sync_dry_run_changes_nothing(make_settings):
    """`sync --dry-run` uploads, downloads and writes nothing, not even the state database."""
    settings = make_settings(**FAST)
    drop(settings.upload_dir_path, "B0001_DRY_1x1.jpg", b"dry")
    client = make_client(settings)
    client.put_object(Bucket=settings.require_bucket(), Key="VASE/F1/F1_R.jpg", Body=b"remote")
    service = Service(settings, environ={}, read_only=True)
    try:
        summary = service.sync_once(dry_run=True)
    finally:
        service.close()
    assert summary.uploaded == 1
    assert summary.mirror is not None
    assert summary.mirror.downloaded == 1
    assert list_keys(settings) == ["VASE/F1/F1_R.jpg"]
    assert list(settings.local_path.rglob("*")) == []
    assert not settings.state_path.exists()


def test_file_renamed_inside_folder_uploads_new_key(make_settings):
    """A file renamed inside the upload folder is uploaded under its new key; the old object stays."""
    settings = make_settings(**FAST)
    data = os.urandom(3000)
    with running(settings):
        old = drop(settings.upload_dir_path, "WF0001_OLD_3x3.jpg", data)
        wait_for(lambda: object_bytes(settings, key_of(settings, old.name)) == data)
        new = settings.upload_dir_path / "WF0001_NEW_3x3.jpg"
        os.rename(old, new)
        wait_for(lambda: object_bytes(settings, key_of(settings, new.name)) == data)
    assert object_bytes(settings, key_of(settings, "WF0001_OLD_3x3.jpg")) == data


def test_hidden_and_temp_files_ignored(make_settings):
    """Hidden files and temp patterns (*.part, *.tmp, ...) are neither uploaded nor rejected."""
    settings = make_settings(**FAST)
    with captured_events() as events, running(settings):
        for n in [".B0001_H.jpg", "B0001_P.jpg.part", "B0001_T.tmp", "x.crdownload", "B0001_E.jpg~", ".x.swp"]:
            (settings.upload_dir_path / n).write_bytes(b"x")
        good = drop(settings.upload_dir_path, "B0002_G_1x1.jpg", b"good")
        wait_for(lambda: object_bytes(settings, key_of(settings, good.name)) == b"good")
    assert events_named(events, "upload.rejected") == []
    assert list_keys(settings) == [key_of(settings, good.name)]


def test_which_paths_are_ignored(make_settings):
    """Hidden parts, temp names, the daemon's own folders and anything outside: ignored; the rest not."""
    probe = make_settings(**FAST)
    root = probe.upload_dir_path
    settings = make_settings(**FAST, after_upload="move", done_dir=root / "done", rejected_dir=root / "rejected")
    service = Service(settings, environ={})
    uploader = Uploader(settings, service.transport, service.state)
    try:
        for rel in ["B0001_A_1x1.jpg", "sub/B0001_A_1x1.jpg", "a.b/c.d/B0001_A_1x1.jpg", "donee/B0001_A_1x1.jpg"]:
            assert not uploader.ignored(root / rel), rel
        for rel in [
            ".B0001_A_1x1.jpg",
            ".hidden/B0001_A_1x1.jpg",
            "sub/.x/B0001_A_1x1.jpg",
            "B0001_A_1x1.jpg.part",
            "sub/B0001_A_1x1.tmp",
            "done",
            "done/B0001_A_1x1.jpg",
            "rejected/sub/B0001_A_1x1.jpg",
            "../B0001_A_1x1.jpg",
        ]:
            assert uploader.ignored(root / rel), rel
        assert uploader.ignored(root.parent / "B0001_A_1x1.jpg")
        assert uploader.ignored(Path("/elsewhere/B0001_A_1x1.jpg"))
    finally:
        uploader.stop(timeout=1)
        service.close()


def test_file_changed_during_upload_is_redone(make_settings):
    """A file that changes while it is uploaded ends in the bucket with its final content."""
    settings = make_settings(**FAST, multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    path = settings.upload_dir_path / "CR01-047_B0001_320x320.jpg"
    first = os.urandom(12 * 1024 * 1024)
    final = os.urandom(12 * 1024 * 1024)
    stop = threading.Event()
    with running(settings):
        path.write_bytes(first)
        time.sleep(0.05)
        path.write_bytes(final)
        key = key_of(settings, path.name)
        wait_for(lambda: object_bytes(settings, key) == final, timeout=60)
    stop.set()
    assert hashlib.sha256(object_bytes(settings, key) or b"").digest() == hashlib.sha256(final).digest()


def test_polling_watch_mode(make_settings):
    """S3_WATCH_MODE=polling (for network filesystems) still uploads dropped files."""
    settings = make_settings(**FAST, watch_mode="polling")
    with running(settings) as service:
        assert service.watcher is not None
        assert service.watcher.kind == "PollingObserver"
        path = drop(settings.upload_dir_path, "F0001_POLL_1x1.jpg", b"polled")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"polled", timeout=20)


def test_dead_watcher_is_restarted(make_settings):
    """If the observer thread dies, the supervisor restarts it (watcher.restarted) and uploads continue."""
    settings = make_settings(**FAST)
    with captured_events() as events, running(settings) as service:
        assert service.watcher is not None
        service.watcher._observer.stop()  # simulate the observer dying (e.g. an inotify error)
        wait_for(lambda: events_named(events, "watcher.restarted"), timeout=10)
        path = drop(settings.upload_dir_path, "B0001_AFTER_1x1.jpg", b"after")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"after", timeout=20)


def test_rescan_catches_missed_files(make_settings):
    """A file the watcher never reported (here: watcher stopped) is found by the periodic rescan."""
    settings = make_settings(**{**FAST, "rescan_interval": 1.0})
    with captured_events() as events, running(settings) as service:
        assert service.watcher is not None
        service.watcher.stop()
        service.watcher.is_alive = lambda: True  # type: ignore[method-assign]  # keep the supervisor away
        path = drop(settings.upload_dir_path, "B0002_MISSED_1x1.jpg", b"missed")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"missed", timeout=20)
    assert events_named(events, "upload.rescan")


def test_daemon_start_up_catch_up_lists_instead_of_a_head_per_file(make_settings):
    """Files dropped while the daemon was stopped: its start-up catch-up lists once, as `sync` does."""
    settings = make_settings(**FAST)
    client = make_client(settings)
    names = [f"B{i:04d}_OFFLINE_1x1.jpg" for i in range(120)]
    for name in names:
        (settings.upload_dir_path / name).write_bytes(name.encode())
    for name in names[:20]:  # already there with the same bytes
        client.put_object(Bucket=settings.require_bucket(), Key=key_of(settings, name), Body=name.encode())
    transport, counter = counted_transport(settings)
    with running(settings, transport) as service:
        uploader = service.uploader
        assert uploader is not None
        wait_for(lambda: uploader.stats.uploaded + uploader.stats.skipped == len(names), timeout=60)
        stats = uploader.stats
    assert (stats.uploaded, stats.skipped, stats.failed) == (100, 20, 0)
    assert counter.count("HeadObject") == 0  # the listing answered for every file
    assert counter.count("PutObject") == 100
    assert 1 <= counter.count("ListObjectsV2") <= 5
    assert set(list_keys(settings, "BACKGROUND/")) == {key_of(settings, n) for n in names}


def test_rescan_waits_while_a_backlog_drains_but_not_forever(make_settings):
    """The periodic rescan is skipped while many files wait (it would only add to the queue's end)."""

    class Queue:
        def __init__(self, pending: int) -> None:
            self._pending = pending

        def pending(self) -> int:
            return self._pending

    settings = make_settings(**{**FAST, "rescan_interval": 10.0, "max_concurrency": 4})
    service = Service(settings, environ={})
    try:
        now = time.monotonic()
        service._last_rescan = now - 5
        assert not service._rescan_due(Queue(0))  # not yet time
        service._last_rescan = now - 11
        assert service._rescan_due(Queue(8))  # a short queue: the rescan runs
        assert not service._rescan_due(Queue(9))  # a backlog: it waits
        service._last_rescan = now - 101
        assert service._rescan_due(Queue(10_000))  # ... for ten intervals at most
    finally:
        service.close()


@pytest.mark.parametrize("template", ["{category}/{folder}/{name}", "{name}"])
def test_large_catch_up_lists_instead_of_a_head_per_file(make_settings, template):
    """`sync` over 300 new files (some already in the bucket) lists once: no HEAD per file, no re-upload."""
    settings = make_settings(**FAST, key_template=template)
    client = make_client(settings)
    names = [f"B{i:04d}_CATCHUP_1x1.jpg" for i in range(300)]
    for name in names:
        (settings.upload_dir_path / name).write_bytes(name.encode())
    for name in names[:50]:  # already there with the same bytes, put by someone else
        client.put_object(
            Bucket=settings.require_bucket(), Key=Resource(name, settings=settings).key, Body=name.encode()
        )
    transport, counter = counted_transport(settings)
    service = Service(settings, transport=transport, environ={})
    try:
        summary = service.sync_once(mirror=False)
        calls_after_first = sum(counter.calls.values())
        again = service.sync_once(mirror=False)
        calls_by_noop = sum(counter.calls.values()) - calls_after_first
    finally:
        service.close()
    assert (again.uploaded, again.upload_skipped, again.upload_failed) == (0, 0, 0)
    assert calls_by_noop == 0  # everything is known unchanged: not even a LIST
    assert (summary.uploaded, summary.upload_skipped, summary.upload_failed) == (250, 50, 0)
    assert counter.count("HeadObject") == 0  # the listing answered for every file
    assert counter.count("PutObject") == 250  # the 50 identical objects were recognised by their MD5 ETag
    assert 1 <= counter.count("ListObjectsV2") <= 5
