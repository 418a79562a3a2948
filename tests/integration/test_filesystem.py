"""The file system side: vanishing, replaced, symlinked, empty and unreadable files, floods, full disks,
hostile keys."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from s3sync import localfs
from s3sync.paths import TEMP_PREFIX
from s3sync.resource import Resource
from s3sync.service import Service
from s3sync.transport import make_client
from tests.integration.daemon_helpers import (
    captured_events,
    drop,
    events_named,
    list_keys,
    object_bytes,
    running,
    wait_for,
)

FAST = {"settle_seconds": 0.5, "mirror_interval": 0, "retry_base": 0.1, "retry_cap": 0.5, "shutdown_timeout": 5}


def key_of(settings, name: str) -> str:
    return Resource(name, settings=settings).key


def test_vanished_file_is_skipped_and_daemon_continues(make_settings):
    """A file deleted before its events are handled is skipped quietly; later files still upload.

    Each file is unlinked before it is closed, so its close-after-write event arrives for a path
    that is already gone. (A file deleted just after its close may be uploaded: it was complete.)
    """
    settings = make_settings(**FAST)
    with running(settings) as service:
        for i in range(20):
            p = settings.upload_dir_path / f"B{i:04d}_GONE.jpg"
            with p.open("wb") as f:
                f.write(b"x" * 100)
                f.flush()
                p.unlink()
        good = drop(settings.upload_dir_path, "B9999_STAYS.jpg", b"stays")
        wait_for(lambda: object_bytes(settings, key_of(settings, good.name)) == b"stays")
        assert service.uploader is not None
        assert service.uploader.is_alive()
    assert list_keys(settings) == [key_of(settings, good.name)]


def test_file_replaced_by_rename_uploads_new_content(make_settings):
    """A file replaced by renaming another file over it is uploaded again with the new bytes."""
    settings = make_settings(**FAST)
    with running(settings):
        p = drop(settings.upload_dir_path, "F0001_SWAP.jpg", b"first version")
        key = key_of(settings, p.name)
        wait_for(lambda: object_bytes(settings, key) == b"first version")
        drop(settings.upload_dir_path, "F0001_SWAP.jpg", b"second version, longer")
        wait_for(lambda: object_bytes(settings, key) == b"second version, longer")


def test_symlink_in_upload_folder_not_followed(make_settings, tmp_path):
    """A symlink in the upload folder is not followed out of it, and not uploaded."""
    settings = make_settings(**FAST)
    secret = tmp_path / "outside.jpg"
    secret.write_bytes(b"outside data")
    with captured_events() as events, running(settings):
        (settings.upload_dir_path / "B0001_LINK.jpg").symlink_to(secret)
        good = drop(settings.upload_dir_path, "B0002_REAL.jpg", b"real")
        wait_for(lambda: object_bytes(settings, key_of(settings, good.name)) == b"real")
        time.sleep(settings.settle_seconds + 0.5)
    assert object_bytes(settings, key_of(settings, "B0001_LINK.jpg")) is None
    assert any(e.get("reason", "").startswith("symlink") for e in events_named(events, "upload.skipped"))


def test_directory_with_valid_name_and_zero_byte_file(make_settings):
    """A folder named like a resource is walked, not uploaded; a zero-byte file is uploaded as empty."""
    settings = make_settings(**FAST)
    with running(settings):
        folder = settings.upload_dir_path / "B0001_FOLDER.jpg"
        folder.mkdir()
        inner = drop(folder, "B0002_INNER.jpg", b"inner", staging=settings.upload_dir_path.parent / "st")
        empty = drop(settings.upload_dir_path, "B0003_EMPTY.jpg", b"")
        wait_for(lambda: object_bytes(settings, key_of(settings, inner.name)) == b"inner")
        wait_for(lambda: object_bytes(settings, key_of(settings, empty.name)) == b"")
    assert key_of(settings, "B0001_FOLDER.jpg") not in list_keys(settings)


class TestFlood:
    """10,000 files at once overflow the inotify queue; the rescan catches up."""

    @pytest.fixture
    def s3_server(self, rclone_server):
        """rclone only: the fastest server keeps this test short."""
        return rclone_server

    @pytest.mark.timeout(420)  # 10,000 real uploads: a few minutes on a busy 2-core machine
    def test_ten_thousand_files(self, make_settings):
        """10,000 files written at once all reach the bucket (events lost on overflow are found by the rescan)."""
        settings = make_settings(**{**FAST, "rescan_interval": 3.0, "max_concurrency": 16})
        names = [f"B{i:05d}_FLOOD.jpg" for i in range(10_000)]
        with running(settings) as service:
            for n in names:
                (settings.upload_dir_path / n).write_bytes(n.encode())
            uploader = service.uploader
            assert uploader is not None
            # Polled through the daemon's counters: listing 10,000 keys every few seconds would
            # take CPU from the daemon under test. The bucket itself is checked once, at the end.
            wait_for(lambda: uploader.stats.uploaded + uploader.stats.skipped >= len(names), timeout=400, interval=1)
        assert uploader.stats.uploaded + uploader.stats.skipped == len(names)  # none twice
        assert set(list_keys(settings, "BACKGROUND/")) == {key_of(settings, n) for n in names}


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_mirror_on_full_disk_fails_cleanly_and_recovers(make_settings, tmp_path):
    """On a full disk the pass fails cleanly, earlier copies stay intact, and it recovers when space returns."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1m"):
        pytest.skip("needs root to mount a 1 MiB tmpfs (the machine forbids it here)")
    try:
        settings = make_settings(**FAST, local_path=disk / "mirror")
        client = make_client(settings)
        bucket = settings.require_bucket()
        client.put_object(Bucket=bucket, Key="VASE/F1/F1_SMALL.jpg", Body=b"small-v1")
        service = Service(settings, environ={})
        try:
            assert service.sync_once(upload=False).mirror.downloaded == 1  # type: ignore[union-attr]
            client.put_object(Bucket=bucket, Key="VASE/F1/F1_SMALL.jpg", Body=b"small-v2" * 40_000)
            for i in range(3):
                client.put_object(Bucket=bucket, Key=f"VASE/F2/F2_BIG{i}.jpg", Body=os.urandom(600_000))
            with captured_events() as events:
                full = service.sync_once(upload=False).mirror
            assert full is not None
            assert full.failed >= 1
            assert events_named(events, "mirror.failed")
            assert (settings.local_path / "VASE/F1/F1_SMALL.jpg").read_bytes() in {b"small-v1", b"small-v2" * 40_000}
            assert [p for p in disk.rglob("*") if p.name.startswith(TEMP_PREFIX)] == []
            subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
            again = service.sync_once(upload=False).mirror
            assert again is not None
            assert again.failed == 0
        finally:
            service.close()
        assert (settings.local_path / "VASE/F1/F1_SMALL.jpg").read_bytes() == b"small-v2" * 40_000
        assert len(list((settings.local_path / "VASE/F2").iterdir())) == 3
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


NFC = unicodedata.normalize("NFC", "caf\u00e9")
NFD = unicodedata.normalize("NFD", "caf\u00e9")


def test_hostile_keys_one_event_each_never_outside(make_settings, moto_only_server, tmp_path):
    """Overlong, case-twin, Unicode-twin and file-vs-prefix keys: no crash, no write outside, one event each."""
    settings = make_settings(
        **FAST,
        endpoint_url=moto_only_server.endpoint,
        aws_access_key_id=moto_only_server.access_key,
        aws_secret_access_key=moto_only_server.secret_key,
    )
    client = make_client(settings)
    bucket = settings.require_bucket()
    client.create_bucket(Bucket=bucket)
    keys = {
        "long/" + "x" * 300 + ".jpg": "unsafe",
        "deep/" + "/".join(["d" * 200] * 20) + "/f.jpg": "unsafe",
        "case/Photo.jpg": "ok",
        "case/photo.jpg": "ok",
        f"uni/{NFC}.jpg": "ok",
        f"uni/{NFD}.jpg": "ok",
        "both": "ok",
        "both/child.jpg": "conflict",
    }
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    service = Service(settings, environ={})
    try:
        with captured_events() as events:
            report = service.sync_once(upload=False).mirror
            again = service.sync_once(upload=False).mirror
    finally:
        service.close()
    assert report is not None
    assert again is not None
    assert report.unsafe == 2
    assert len(events_named(events, "mirror.unsafe_key")) == 2  # reported once, not every pass
    for key, kind in keys.items():
        if kind == "ok":
            assert (settings.local_path / key).read_bytes() == key.encode()
    assert report.conflicts == 1  # 'both' is listed first and keeps its file; 'both/child.jpg' cannot be mirrored
    assert report.failed == 0
    assert again.conflicts == 1
    conflicts = events_named(events, "mirror.key_conflict")
    assert [e["key"] for e in conflicts] == ["both/child.jpg"]  # one event, not one per pass
    assert not (settings.local_path / "both").is_dir()
    outside = [p for p in tmp_path.rglob("*") if settings.local_path not in p.parents and p.suffix == ".jpg"]
    assert all(settings.upload_dir_path in p.parents for p in outside)


def test_unreadable_file_reported_and_retried(make_settings, tmp_path):
    """A file the daemon cannot read is reported (upload.failed, permission) and uploaded once readable."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop CAP_DAC_OVERRIDE with setpriv")
    settings = make_settings(**FAST)
    from tests.integration.test_cli import env_for

    env = env_for(settings, S3_LOG_FORMAT="json", S3_SETTLE_SECONDS="0.2", S3_RETRY_CAP="0.5", S3_RETRY_BASE="0.1")
    locked = settings.upload_dir_path / "B0001_LOCKED.jpg"
    locked.write_bytes(b"locked")
    locked.chmod(0o000)
    # Root ignores permission bits; without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH it obeys them like any user.
    drop_caps = "-dac_override,-dac_read_search"
    proc = subprocess.Popen(
        ["setpriv", f"--bounding-set={drop_caps}", f"--inh-caps={drop_caps}", sys.executable, "-m", "s3sync", "run"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if '"upload.failed"' in line and "B0001_LOCKED" in line:
                assert "ermission" in line
                break
        locked.chmod(0o644)
        wait_for(lambda: object_bytes(settings, key_of(settings, locked.name)) == b"locked", timeout=30)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_temporary_name_clash_is_retried_and_never_clobbers(tmp_path, monkeypatch):
    """A temp name already taken (a leftover, another process, a planted symlink) is skipped, never reused."""
    root = tmp_path / "mirror"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    first = f"{TEMP_PREFIX}{random.Random(7).getrandbits(48):012x}"
    (root / first).symlink_to(outside)  # the name the writer will try first
    monkeypatch.setattr(localfs, "_temp_names", random.Random(7))
    with localfs.AtomicWriter(root, ("a.jpg",)) as w:
        w.write(b"new bytes")
        w.commit()
    assert (root / "a.jpg").read_bytes() == b"new bytes"
    assert outside.read_text() == "keep me"
    assert (root / first).is_symlink()  # left alone


def test_atomic_writer_never_replaces_what_it_was_not_told_of(tmp_path):
    """expect=ABSENT: a file that appeared is kept; expect=<stat>: a file edited since is kept; both raise."""
    from s3sync.errors import LocalChangedError
    from s3sync.plan import LocalStat

    target = tmp_path / "a.jpg"
    with localfs.AtomicWriter(tmp_path, ("a.jpg",), expect=localfs.ABSENT) as w:
        w.write(b"mirror")
        target.write_bytes(b"person")
        with pytest.raises(LocalChangedError):
            w.commit()
    assert target.read_bytes() == b"person"
    st = target.stat()
    seen = LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with localfs.AtomicWriter(tmp_path, ("a.jpg",), expect=seen) as w:
        w.write(b"mirror")
        target.write_bytes(b"person, edited")
        with pytest.raises(LocalChangedError):
            w.commit()
    assert target.read_bytes() == b"person, edited"
    st = target.stat()
    with localfs.AtomicWriter(
        tmp_path, ("a.jpg",), expect=LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    ) as w:
        w.write(b"mirror")
        w.commit()
    assert target.read_bytes() == b"mirror"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]
