"""The fault matrix: a fault-injecting proxy between the daemon and a real S3 server.

For each fault the daemon keeps running, retries with backoff, every file ends in the bucket
once with equal bytes, no multipart upload is left open, no temp file is left in the mirror
folder, and a failed or partial listing deletes nothing. RELIABILITY.md lists the results.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from s3sync.paths import TEMP_PREFIX
from s3sync.plan import is_probe_key
from s3sync.resource import Resource
from s3sync.service import Service
from s3sync.transport import make_client
from tests.integration.daemon_helpers import captured_events, drop, events_named, running, wait_for
from tests.support.faultproxy import Fault, FaultProxy

# The third server (SeaweedFS) runs where the bytes travel; see tests/conftest.py.
pytestmark = pytest.mark.servers("moto", "rclone", "seaweedfs")

MIB = 1024 * 1024


@pytest.fixture
def proxy(s3_server) -> Iterator[FaultProxy]:
    """A fault proxy in front of the current server."""
    p = FaultProxy("127.0.0.1", s3_server.port, seed=7).start()
    yield p
    p.stop()


def writes(method: str, path: str, headers: dict[str, str]) -> bool:
    """PUTs and POSTs (objects, parts, completes)."""
    return method in {"PUT", "POST"}


def gets(method: str, path: str, headers: dict[str, str]) -> bool:
    """GETs of objects (not listings)."""
    return method == "GET" and "list-type" not in path


UPLOAD_FAULTS = {
    "reset_mid_request": Fault("reset_request", match=writes, probability=0.3, times=8),
    "reset_mid_response": Fault("reset_response", match=writes, probability=0.3, times=8),
    "delay_beyond_timeout": Fault("delay", match=writes, probability=0.2, times=3, seconds=3.0),
    "503_slowdown": Fault("status", match=writes, probability=0.4, times=10, status=503),
    "500_internal": Fault("status", match=writes, probability=0.4, times=10, status=500),
    "clock_skew": Fault("clock_skew", probability=0.3, times=6),
}


def fast(make_settings, endpoint: str, **extra: object):
    """Settings with short timeouts and quick retries, through ``endpoint``."""
    return make_settings(
        endpoint_url=endpoint,
        settle_seconds=0.2,
        mirror_interval=0,
        retry_base=0.1,
        retry_cap=0.5,
        read_timeout=1.5,
        connect_timeout=1,
        max_attempts=1,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
        shutdown_timeout=5,
        **extra,
    )


def payloads() -> dict[str, bytes]:
    """Some small files and one multipart file."""
    files = {f"B{i:03d}_FAULT_{i + 1}x1.jpg": os.urandom(2000 + i * 37) for i in range(12)}
    files["PP001_BIG_1x1.png"] = os.urandom(11 * MIB)
    return files


@pytest.mark.parametrize("fault", sorted(UPLOAD_FAULTS))
def test_upload_fault(make_settings, s3_server, proxy, fault):
    """Under each network fault every file arrives once with its bytes, and no multipart upload dangles."""
    settings = fast(make_settings, proxy.endpoint)
    direct = settings.model_copy(update={"endpoint_url": s3_server.endpoint})
    rule = UPLOAD_FAULTS[fault]
    proxy.set_faults([Fault(rule.kind, rule.match, rule.probability, rule.times, rule.status, rule.seconds)])
    files = payloads()
    client = make_client(direct)
    with captured_events() as events, running(settings) as service:
        for name, data in files.items():
            drop(settings.upload_dir_path, name, data)
        keys = {Resource(n, settings=settings).key: hashlib.sha256(d).digest() for n, d in files.items()}

        def all_there() -> bool:
            for key, digest in keys.items():
                try:
                    body = client.get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read()
                except Exception:  # not there yet
                    return False
                if hashlib.sha256(body).digest() != digest:
                    return False
            return True

        wait_for(all_there, timeout=90, interval=0.3)
        assert service.uploader is not None
        assert service.uploader.is_alive()
        wait_for(lambda: service.uploader is not None and service.uploader.pending() == 0, timeout=30)
    hits = sum(f.hits for f in proxy._faults)
    assert hits > 0, "the fault never fired"
    assert events_named(events, "upload.failed"), "a fired fault must show as upload.failed"
    assert client.list_multipart_uploads(Bucket=settings.require_bucket()).get("Uploads", []) == []
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=settings.require_bucket()).get("Contents", [])]
    # A probe PUT of conditional writes held by the fault may land after the probe deleted its
    # object: s3sync's own empty object, never mirrored, deleted at the next start (noted in the state).
    probes = [k for k in listed if is_probe_key(k)]
    assert len(probes) <= 1, probes
    assert sorted(k for k in listed if k not in probes) == sorted(keys)


@pytest.mark.parametrize("kind", ["flip_byte", "truncate", "reset_response"])
def test_download_fault_keeps_previous_copy(make_settings, s3_server, proxy, kind):
    """A corrupted, cut or reset download fails that item, leaves no temp file, and the next pass repairs it."""
    settings = fast(make_settings, proxy.endpoint)
    client = make_client(settings.model_copy(update={"endpoint_url": s3_server.endpoint}))
    bucket = settings.require_bucket()
    data = {f"VASE/F{i:03d}/F{i:03d}_D.jpg": os.urandom(30_000 + i) for i in range(10)}
    for key, body in data.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    proxy.set_faults([Fault(kind, match=gets, probability=0.5, times=4)])
    service = Service(settings, environ={})
    try:
        first = service.sync_once(upload=False).mirror
        assert first is not None
        assert first.failed > 0
        proxy.clear_faults()
        second = service.sync_once(upload=False).mirror
        assert second is not None
        assert second.failed == 0
    finally:
        service.close()
    for key, body in data.items():
        assert (settings.local_path / key).read_bytes() == body
    assert [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)] == []


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)  # the proxy's behaviour is what matters
def test_hung_listing_at_start_holds_up_nothing(make_settings, s3_server, proxy):
    """The start-up catch-up's listing hangs: the daemon is ready at once, its loops tick, every file arrives.

    The listing runs on a thread of its own; the supervisor loop (whose ticks gate the systemd
    watchdog) never waits on the network. Here the listing times out and each file gets a HEAD.
    """
    settings = fast(make_settings, proxy.endpoint).model_copy(update={"read_timeout": 6.0})
    client = make_client(settings.model_copy(update={"endpoint_url": s3_server.endpoint}))
    names = [f"B{i:04d}_HUNG_1x1.jpg" for i in range(40)]
    for name in names:
        (settings.upload_dir_path / name).write_bytes(name.encode())
    proxy.set_faults([Fault("delay", match=lambda m, p, h: "list-type" in p, seconds=8.0, times=1)])
    started = time.monotonic()
    with captured_events() as events, running(settings) as service:
        wait_for(lambda: events_named(events, "daemon.ready"), timeout=10)
        assert time.monotonic() - started < 4.0  # not after the listing's 6 s read timeout
        time.sleep(1.5)  # the listing still hangs
        assert service.loops_alive()
        keys = {Resource(n, settings=settings).key for n in names}

        def all_there() -> bool:
            listed = client.list_objects_v2(Bucket=settings.require_bucket()).get("Contents", [])
            return {o["Key"] for o in listed} == keys

        wait_for(all_there, timeout=60, interval=0.5)
    assert proxy._faults[0].hits == 1  # the listing did hang


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)  # 1,100 objects: moto takes 20 s to fill
def test_listing_failing_half_way_deletes_nothing(make_settings, s3_server, proxy):
    """A listing that fails on its second page makes the pass incomplete: nothing is deleted.

    On rclone only: what is tested is the pass's reaction to a failed page, not the server's
    listing (which ``test_request_stacks.py`` covers on both stacks).
    """
    settings = fast(make_settings, proxy.endpoint, mirror_delete=True, mirror_max_delete=10_000)
    client = make_client(settings.model_copy(update={"endpoint_url": s3_server.endpoint}))
    bucket = settings.require_bucket()
    keys = [f"BACKGROUND/B{i:05d}/B{i:05d}_L.jpg" for i in range(1100)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    service = Service(settings, environ={})
    try:
        assert service.sync_once(upload=False).mirror.downloaded == 1100  # type: ignore[union-attr]
        proxy.set_faults([Fault("status", match=lambda m, p, h: "continuation-token" in p, status=500)])
        with captured_events() as events:
            partial = service.sync_once(upload=False).mirror
        assert partial is not None
        assert not partial.complete
        assert partial.deleted == 0
        assert events_named(events, "mirror.failed")
    finally:
        service.close()
    assert sum(1 for p in settings.local_path.rglob("*.jpg")) == 1100


def test_server_restarted_on_same_port(make_settings, s3_server, proxy):
    """The server going away and coming back on the same port: the daemon catches up."""
    settings = fast(make_settings, proxy.endpoint)
    direct = settings.model_copy(update={"endpoint_url": s3_server.endpoint})
    with running(settings) as service:
        drop(settings.upload_dir_path, "CM0001_BEFORE_1x1.jpg", b"before")
        wait_for(lambda: proxy.count("PUT") > 0)
        proxy.pause()
        drop(settings.upload_dir_path, "CM0002_DURING_1x1.jpg", b"during")
        s3_server.stop()
        s3_server.start()
        if s3_server.kind == "moto":  # moto keeps data in RAM: recreate the bucket, as an operator would
            s3_server.create_bucket(settings.require_bucket())
        proxy.resume()
        wait_for(
            lambda: _get(direct, "COMPOSITION/CM0002/CM0002_DURING_1x1.jpg") == b"during",
            timeout=60,
            interval=0.3,
        )
        assert service.uploader is not None
        assert service.uploader.is_alive()


def _get(settings, key: str) -> bytes | None:
    try:
        return bytes(make_client(settings).get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read())
    except Exception:
        return None
