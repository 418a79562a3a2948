"""Many writers, one bucket: an upload never overwrites what another writer put there meanwhile.

Each race is made deterministic with the fault proxy's ``hold``: the upload's PUT (or its
CompleteMultipartUpload) is held at the proxy while the test, as a second host, writes the same
key directly; then the held request goes on and the server judges its condition
(``If-None-Match: *`` for a key that was absent, ``If-Match: <ETag>`` for the version seen).
moto and SeaweedFS honour conditions; rclone ignores them (the probe finds out, one warning).
"""

from __future__ import annotations

import os
import threading

import pytest

from s3sync.errors import WriteConflictError
from s3sync.service import Service
from s3sync.transport import Transport, make_client
from tests.integration.daemon_helpers import captured_events, events_named
from tests.support.faultproxy import Fault

pytestmark = pytest.mark.servers("moto", "seaweedfs")

MIB = 1024 * 1024
NAME = "CF0001_WHITE_320x320.jpg"


def _held_upload(t: Transport, name: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def upload() -> None:
        try:
            outcome.append(t.upload(name))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    return thread, outcome


def _hold(fault_proxy, method: str, contains: str) -> Fault:
    rule = Fault("hold", match=lambda m, p, h: m == method and contains in p, times=1, seconds=30)
    fault_proxy.set_faults([rule])
    return rule


def test_key_created_by_another_writer_meanwhile_is_a_conflict(make_settings, fault_proxy):
    """Absent when looked at, created by another host before our PUT lands: 412, nothing overwritten."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint)
    other = make_client(make_settings())
    (settings.upload_dir_path / NAME).write_bytes(b"ours " * 100)
    with Transport(settings) as t:
        assert t.conditional_writes()  # probed once, before the race
        key = t.resource(NAME).key
        held = _hold(fault_proxy, "PUT", NAME)
        thread, outcome = _held_upload(t, NAME)
        assert held.reached.wait(20)
        other.put_object(Bucket=settings.require_bucket(), Key=key, Body=b"theirs")
        held.release.set()
        thread.join(30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], WriteConflictError)
    assert other.get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read() == b"theirs"


def test_version_replaced_by_another_writer_meanwhile_is_a_conflict(make_settings, fault_proxy):
    """We saw version 1 (If-Match its ETag); another host wrote version 2 before our PUT landed: 412."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint)
    other = make_client(make_settings())
    bucket = settings.require_bucket()
    (settings.upload_dir_path / NAME).write_bytes(b"our edit " * 100)
    with Transport(settings) as t:
        key = t.resource(NAME).key
        other.put_object(Bucket=bucket, Key=key, Body=b"version 1")
        assert t.conditional_writes()
        held = _hold(fault_proxy, "PUT", NAME)
        thread, outcome = _held_upload(t, NAME)
        assert held.reached.wait(20)
        other.put_object(Bucket=bucket, Key=key, Body=b"version 2 by another host")
        held.release.set()
        thread.join(30)
    assert isinstance(outcome[0], WriteConflictError)
    assert other.get_object(Bucket=bucket, Key=key)["Body"].read() == b"version 2 by another host"


def test_multipart_complete_is_conditional_too(make_settings, fault_proxy):
    """A large file: the other host's object lands while the parts go up; CompleteMultipartUpload is refused."""
    settings = make_settings(
        endpoint_url=fault_proxy.endpoint, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB
    )
    other = make_client(make_settings())
    bucket = settings.require_bucket()
    (settings.upload_dir_path / NAME).write_bytes(os.urandom(11 * MIB))
    with Transport(settings) as t:
        key = t.resource(NAME).key
        assert t.conditional_writes()
        held = _hold(fault_proxy, "POST", "uploadId=")
        thread, outcome = _held_upload(t, NAME)
        assert held.reached.wait(30)
        other.put_object(Bucket=bucket, Key=key, Body=b"theirs")
        held.release.set()
        thread.join(60)
    assert isinstance(outcome[0], WriteConflictError)
    assert other.get_object(Bucket=bucket, Key=key)["Body"].read() == b"theirs"
    assert not other.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted, nothing left behind


def test_same_bytes_written_meanwhile_are_simply_there(make_settings, fault_proxy):
    """The other writer put the very same bytes: not a conflict, the upload counts as done."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint)
    other_settings = make_settings()
    data = b"identical " * 100
    (settings.upload_dir_path / NAME).write_bytes(data)
    with Transport(settings) as t, Transport(other_settings) as other:
        assert t.conditional_writes()
        held = _hold(fault_proxy, "PUT", NAME)
        thread, outcome = _held_upload(t, NAME)
        assert held.reached.wait(20)
        (other_settings.upload_dir_path / NAME).write_bytes(data)
        other.upload(NAME)  # the same bytes, with s3sync's metadata, by the other host
        held.release.set()
        thread.join(30)
    assert not isinstance(outcome[0], Exception)
    assert outcome[0].skipped


def test_daemon_keeps_the_file_and_says_conflict(make_settings, fault_proxy):
    """Through the uploader: one upload.conflict naming another writer; the file stays; no retry loop."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint)
    other = make_client(make_settings())
    path = settings.upload_dir_path / NAME
    path.write_bytes(b"ours " * 100)
    with Transport(settings) as probe:
        key = probe.resource(NAME).key
    held = _hold(fault_proxy, "PUT", NAME)
    summary: list[object] = []
    service = Service(settings, environ={})

    def sync() -> None:
        summary.append(service.sync_once(mirror=False))

    with captured_events() as events:
        thread = threading.Thread(target=sync, daemon=True)
        thread.start()
        assert held.reached.wait(30)
        other.put_object(Bucket=settings.require_bucket(), Key=key, Body=b"theirs")
        held.release.set()
        thread.join(60)
    service.close()
    assert summary
    assert summary[0].conflicts == 1
    assert summary[0].uploaded == 0
    conflicts = events_named(events, "upload.conflict")
    assert len(conflicts) == 1
    assert "another writer" in conflicts[0]["other"]
    assert path.read_bytes() == b"ours " * 100
    assert other.get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read() == b"theirs"


def test_off_sends_no_conditions(make_settings, fault_proxy):
    """S3_CONDITIONAL_WRITES=off: no probe, no condition; the last writer wins as before."""
    seen: list[str] = []
    fault_proxy.set_faults(
        [Fault("delay", seconds=0, match=lambda m, p, h: seen.append(h.get("if-none-match", "")) or False)]
    )
    settings = make_settings(endpoint_url=fault_proxy.endpoint, conditional_writes="off")
    (settings.upload_dir_path / NAME).write_bytes(b"x" * 100)
    with Transport(settings) as t:
        t.upload(NAME)
    assert set(seen) == {""}
    assert fault_proxy.count("PUT", ".s3sync-probe", probes=True) == 0


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_server_that_ignores_conditions_is_found_once_and_said_once(make_settings, s3_server):
    """rclone ignores If-None-Match: the probe says so, one warning, uploads go on as before (last writer wins)."""
    settings = make_settings()
    for i in range(2):
        (settings.upload_dir_path / f"CF000{i + 1}_WHITE_320x320.jpg").write_bytes(b"y" * (100 + i))
    with captured_events() as events, Transport(settings) as t:
        for i in range(2):
            t.upload(f"CF000{i + 1}_WHITE_320x320.jpg")
        assert t.conditional_writes() is False
    assert len(events_named(events, "upload.conditional_writes_unsupported")) == 1
    keys = {o.key for page in Transport(settings).list_pages() for o in page}
    assert not any(".s3sync-probe" in k for k in keys)  # the probe object is gone


def test_probe_answer_is_kept_in_the_state(make_settings, fault_proxy):
    """A restarted daemon (same state) does not probe again: two probe PUTs in all, one run each."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint)
    for _ in range(2):
        service = Service(settings, environ={})
        try:
            assert service.transport.conditional_writes()
        finally:
            service.close()
    assert fault_proxy.count("PUT", ".s3sync-probe", probes=True) == 2
    assert fault_proxy.count("DELETE", ".s3sync-probe", probes=True) == 1


def test_probe_left_by_a_killed_run_is_deleted_at_the_next_start(make_settings):
    """A run killed between the probe's PUT and its DELETE noted the key first: the next start deletes it."""
    from s3sync._upload import PROBE_PENDING

    settings = make_settings()
    client = make_client(settings)
    bucket = settings.require_bucket()
    left = ".s3sync-probe/conditional-0123456789abcdef"
    client.put_object(Bucket=bucket, Key=left, Body=b"")
    client.put_object(Bucket=bucket, Key="art/not-a-probe.jpg", Body=b"x")
    service = Service(settings, environ={})
    try:
        service.state.set_meta(PROBE_PENDING, left)
        service.prepare()
        assert service.state.get_meta(PROBE_PENDING) == ""
        service.state.set_meta(PROBE_PENDING, "art/not-a-probe.jpg")  # a damaged note never deletes content
        service.prepare()
    finally:
        service.close()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["art/not-a-probe.jpg"]
