"""The mirror never destroys a file it did not write (issue 18), against real servers and the fault proxy.

Each test asserts what is on disk (bytes) and in the bucket, not only the events.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator

import pytest

from s3sync.service import Service
from s3sync.settings import Settings
from s3sync.transport import make_client
from tests.integration.daemon_helpers import captured_events, counted_transport, events_named, list_keys
from tests.integration.test_cli import env_for, s3sync
from tests.support.faultproxy import Fault, FaultProxy

# The third server (SeaweedFS) runs where the bytes travel; see tests/conftest.py.
pytestmark = pytest.mark.servers("moto", "rclone", "seaweedfs")

FAST = {"mirror_interval": 0, "retry_base": 0.1, "retry_cap": 0.5, "shutdown_timeout": 5}


@pytest.fixture
def proxy(s3_server) -> Iterator[FaultProxy]:
    """A fault proxy in front of the current server."""
    p = FaultProxy("127.0.0.1", s3_server.port, seed=7).start()
    yield p
    p.stop()
    assert p.errors == [], p.errors


def put(settings: Settings, key: str, body: bytes) -> None:
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key=key, Body=body)


def mirror_pass(settings: Settings, service: Service | None = None):
    """One mirror pass (a fresh service unless one is given); its report."""
    own = service is None
    service = service or Service(settings, environ={})
    try:
        report = service.sync_once(upload=False).mirror
    finally:
        if own:
            service.close()
    assert report is not None
    return report


# --- item 1: a key that cannot be placed is never "gone" --------------------------------------


def test_stray_object_named_like_a_folder_deletes_nothing(make_settings, s3_server):
    """A key 'BACKGROUND' beside 20 objects under 'BACKGROUND/' is one conflict; with deletes on, nothing goes."""
    if not s3_server.key_beside_folder:
        pytest.skip(f"{s3_server.kind} cannot hold a key and a folder of the same name")
    settings = make_settings(**FAST, mirror_delete=True)
    keys = [f"BACKGROUND/B{i:03d}/B{i:03d}_D.jpg" for i in range(20)]
    for k in keys:
        put(settings, k, k.encode())
    service = Service(settings, environ={})
    try:
        assert mirror_pass(settings, service).downloaded == 20
        put(settings, "BACKGROUND", b"stray")
        with captured_events() as events:
            report = mirror_pass(settings, service)
            again = mirror_pass(settings, service)
    finally:
        service.close()
    assert (report.deleted, again.deleted) == (0, 0)
    assert report.conflicts == 1
    assert report.ok
    assert len(events_named(events, "mirror.key_conflict")) == 1
    assert not events_named(events, "mirror.deleted")
    assert all((settings.local_path / k).read_bytes() == k.encode() for k in keys)
    assert len(list_keys(settings)) == 21


def test_failed_download_still_counts_as_listed(make_settings, s3_server, proxy):
    """An object whose GET fails is not 'gone': its local copy stays, with deletes on."""
    settings = make_settings(**FAST, mirror_delete=True, endpoint_url=proxy.endpoint, max_attempts=1)
    put(settings, "VASE/F1/F1_A.jpg", b"a1")
    put(settings, "VASE/F2/F2_B.jpg", b"b1")
    assert mirror_pass(settings).downloaded == 2
    put(settings, "VASE/F1/F1_A.jpg", b"a2-changed")
    proxy.set_faults([Fault("status", match=lambda m, p, h: m == "GET" and "F1_A" in p, status=500)])
    report = mirror_pass(settings)
    assert report.failed == 1
    assert report.deleted == 0
    assert (settings.local_path / "VASE/F1/F1_A.jpg").read_bytes() == b"a1"


# --- item 2: local edits are never silently overwritten ---------------------------------------


def test_local_edit_is_kept_by_default(make_settings):
    """A retouched mirror file stays as the person left it, even when the object changes; one warning."""
    settings = make_settings(**FAST)
    key = "VASE/F0001/F0001_A.jpg"
    put(settings, key, b"v1")
    path = settings.local_path / key
    service = Service(settings, environ={})
    try:
        mirror_pass(settings, service)
        assert path.read_bytes() == b"v1"
        path.write_bytes(b"retouched by hand")
        put(settings, key, b"v2 from the bucket")
        with captured_events() as events:
            first = mirror_pass(settings, service)
            second = mirror_pass(settings, service)
    finally:
        service.close()
    assert path.read_bytes() == b"retouched by hand"
    assert (first.local_changed, second.local_changed) == (1, 1)
    assert first.ok
    changed = events_named(events, "mirror.local_changed")
    assert len(changed) == 1
    assert changed[0]["log_level"] == "warning"
    assert changed[0]["action"] == "kept"


def test_a_file_a_person_created_is_not_replaced(make_settings):
    """A file created in the mirror folder before its object appears is kept; the object stays in the bucket."""
    settings = make_settings(**FAST)
    key = "VASE/F0002/F0002_B.jpg"
    path = settings.local_path / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"made here")
    put(settings, key, b"from the bucket")
    report = mirror_pass(settings)
    assert report.local_changed == 1
    assert path.read_bytes() == b"made here"
    assert list_keys(settings) == [key]


def test_edit_while_the_download_waits_is_kept(make_settings, s3_server, proxy):
    """A file edited after the listing judged it the mirror's, before its download ran, is still kept."""
    settings = make_settings(**FAST, endpoint_url=proxy.endpoint, max_concurrency=1)
    first, second = "VASE/F1/F1_A.jpg", "VASE/F2/F2_B.jpg"
    put(settings, first, b"a1")
    put(settings, second, b"b1")
    service = Service(settings, environ={})
    try:
        mirror_pass(settings, service)
        put(settings, first, b"a2")
        put(settings, second, b"b2")
        held = Fault("hold", match=lambda m, p, h: m == "GET" and "F1_A" in p, seconds=20)
        proxy.set_faults([held])
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(mirror_pass(settings, service)))
        worker.start()
        assert held.reached.wait(20)  # the only worker is busy with the first key; the second waits
        (settings.local_path / second).write_bytes(b"edited meanwhile")
        held.release.set()
        worker.join(30)
    finally:
        service.close()
    assert (settings.local_path / first).read_bytes() == b"a2"
    assert (settings.local_path / second).read_bytes() == b"edited meanwhile"
    assert result
    assert getattr(result[0], "local_changed", None) == 1


def test_keep_both_moves_the_local_version_aside(make_settings):
    """keep-both: the person's bytes go to 'name.local-<time>.ext' (never over another file), then the download."""
    settings = make_settings(**FAST, mirror_on_local_change="keep-both")
    key = "VASE/F0003/F0003_C.jpg"
    path = settings.local_path / key
    path.parent.mkdir(parents=True)
    path.write_bytes(b"mine")
    put(settings, key, b"theirs")
    report = mirror_pass(settings)
    assert report.local_changed == 1
    assert path.read_bytes() == b"theirs"
    aside = [p for p in path.parent.iterdir() if p != path]
    assert len(aside) == 1
    assert re.fullmatch(r"F0003_C\.local-\d{8}T\d{6}\.jpg", aside[0].name)
    assert aside[0].read_bytes() == b"mine"
    # A second edit in the same second gets its own name; the first aside copy is untouched.
    path.write_bytes(b"mine again")
    mirror_pass(settings)
    kept = sorted(p.read_bytes() for p in path.parent.iterdir() if p != path)
    assert kept == [b"mine", b"mine again"]
    assert path.read_bytes() == b"theirs"


def test_overwrite_only_when_asked(make_settings):
    """overwrite: the old behaviour, the object's bytes replace the local edit."""
    settings = make_settings(**FAST, mirror_on_local_change="overwrite")
    key = "VASE/F0004/F0004_D.jpg"
    put(settings, key, b"object")
    mirror_pass(settings)
    (settings.local_path / key).write_bytes(b"edited")
    mirror_pass(settings)
    assert (settings.local_path / key).read_bytes() == b"object"


def test_identical_local_file_is_adopted_without_download(make_settings):
    """A lost state: files already holding their objects' bytes are adopted (no GET) and later updated normally."""
    settings = make_settings(**FAST)
    keys = [f"VASE/F{i}/F{i}_E.jpg" for i in range(3)]
    for k in keys:
        put(settings, k, k.encode() * 10)
        (settings.local_path / k).parent.mkdir(parents=True, exist_ok=True)
        (settings.local_path / k).write_bytes(k.encode() * 10)
    transport, counter = counted_transport(settings)
    service = Service(settings, transport=transport, environ={})
    try:
        report = mirror_pass(settings, service)
        assert (report.adopted, report.downloaded, report.local_changed) == (3, 0, 0)
        assert counter.count("GetObject") == 0
        put(settings, keys[0], b"new version")
        assert mirror_pass(settings, service).downloaded == 1  # adopted = the mirror's: updates flow again
    finally:
        service.close()
    assert (settings.local_path / keys[0]).read_bytes() == b"new version"


def test_touched_mirror_file_is_still_the_mirrors(make_settings):
    """Only the stat changed (touch, chmod): the bytes are what the mirror wrote, so updates still arrive."""
    settings = make_settings(**FAST)
    key = "VASE/F0005/F0005_F.jpg"
    put(settings, key, b"one")
    service = Service(settings, environ={})
    path = settings.local_path / key
    try:
        mirror_pass(settings, service)
        os.utime(path, ns=(1, 1))
        path.chmod(0o600)
        put(settings, key, b"two")
        report = mirror_pass(settings, service)
    finally:
        service.close()
    assert report.local_changed == 0
    assert path.read_bytes() == b"two"


def test_deletes_only_untouched_mirror_files(make_settings):
    """With deletes on, an object gone from the bucket removes the mirror's copy, never an edited one."""
    settings = make_settings(**FAST, mirror_delete=True)
    keep, gone = "VASE/F1/F1_G.jpg", "VASE/F2/F2_H.jpg"
    put(settings, keep, b"k")
    put(settings, gone, b"g")
    put(settings, "VASE/F3/F3_STAYS.jpg", b"s")  # an empty listing would refuse every delete
    service = Service(settings, environ={})
    try:
        mirror_pass(settings, service)
        (settings.local_path / keep).write_bytes(b"edited, same key")
        client = make_client(settings)
        client.delete_object(Bucket=settings.require_bucket(), Key=keep)
        client.delete_object(Bucket=settings.require_bucket(), Key=gone)
        with captured_events() as events:
            report = mirror_pass(settings, service)
    finally:
        service.close()
    assert report.deleted == 1
    assert not (settings.local_path / gone).exists()
    assert (settings.local_path / keep).read_bytes() == b"edited, same key"
    assert events_named(events, "mirror.delete_skipped")


# --- item 3: listing integrity ----------------------------------------------------------------

_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)


def _drop_token(body: bytes) -> bytes:
    """The first two entries, 'truncated', and no continuation token."""
    entries = _CONTENTS.findall(body)
    if not entries:
        return body
    head, tail = body.split(entries[0], 1)[0], body.rsplit(entries[-1], 1)[1]
    tail = re.sub(rb"<NextContinuationToken>.*?</NextContinuationToken>", b"", tail)
    out = head + b"".join(entries[:2]) + tail
    return re.sub(rb"<IsTruncated>\w+</IsTruncated>", b"<IsTruncated>true</IsTruncated>", out)


def _duplicate(body: bytes) -> bytes:
    entries = _CONTENTS.findall(body)
    return body.replace(entries[1], entries[1] + entries[1], 1) if len(entries) > 1 else body


def _swap(body: bytes) -> bytes:
    entries = _CONTENTS.findall(body)
    if len(entries) < 3:
        return body
    return (
        body.replace(entries[1], b"\x00SWAP\x00", 1)
        .replace(entries[2], entries[1], 1)
        .replace(b"\x00SWAP\x00", entries[2], 1)
    )


def listings(method: str, path: str, headers: object) -> bool:
    return method == "GET" and "list-type=2" in path


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
@pytest.mark.parametrize("broken", ["no_token", "duplicate", "out_of_order"])
def test_broken_listing_is_incomplete_and_deletes_nothing(make_settings, s3_server, proxy, broken, request_stack):
    """Truncated without a token, a key twice, keys out of order: the pass is incomplete and deletes nothing."""
    settings = make_settings(**FAST, mirror_delete=True, endpoint_url=proxy.endpoint, request_stack=request_stack)
    keys = [f"VASE/F{i}/F{i}_L.jpg" for i in range(6)]
    for k in keys:
        put(settings, k, k.encode())
    assert mirror_pass(settings).downloaded == 6
    rewrite = {"no_token": _drop_token, "duplicate": _duplicate, "out_of_order": _swap}[broken]
    proxy.set_faults([Fault("rewrite", match=listings, rewrite=rewrite)])
    with captured_events() as events:
        summary_service = Service(settings, environ={})
        try:
            summary = summary_service.sync_once(upload=False)
        finally:
            summary_service.close()
    report = summary.mirror
    assert report is not None
    assert proxy.hits > 0
    assert not report.complete
    assert report.listing_error is not None
    assert "incomplete listing" in report.listing_error
    assert summary.failed  # `s3sync sync` exits 1
    assert report.deleted == 0
    assert not events_named(events, "mirror.deleted")
    assert all((settings.local_path / k).read_bytes() == k.encode() for k in keys)


def test_sync_exits_1_on_a_listing_without_token(make_settings, s3_server, proxy, tmp_path):
    """`s3sync sync` on a truncated listing without a token: exit 1, one line naming it, nothing deleted."""
    settings = make_settings(**FAST, mirror_delete=True, endpoint_url=proxy.endpoint)
    keys = [f"VASE/F{i}/F{i}_S.jpg" for i in range(4)]
    for k in keys:
        put(settings, k, b"x")
    assert mirror_pass(settings).downloaded == 4
    proxy.set_faults([Fault("rewrite", match=listings, rewrite=_drop_token)])
    done = s3sync("sync", "--mirror-only", env=env_for(settings), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "incomplete listing" in done.stdout + done.stderr
    assert all((settings.local_path / k).exists() for k in keys)


# --- item 4: servers without ETags ------------------------------------------------------------


def _strip_etags(body: bytes) -> bytes:
    return re.sub(rb"<ETag>.*?</ETag>", b"<ETag></ETag>", body, flags=re.S)


def test_same_size_change_without_etags_reaches_the_mirror(make_settings, s3_server, proxy):
    """A gateway with empty ETags: a same-size change is found by LastModified, and the bytes arrive."""
    settings = make_settings(**FAST, endpoint_url=proxy.endpoint)
    direct = settings.model_copy(update={"endpoint_url": s3_server.endpoint})
    proxy.set_faults(
        [Fault("rewrite", match=listings, rewrite=_strip_etags), Fault("rewrite", drop_headers=frozenset({"etag"}))]
    )
    key = "VASE/F0006/F0006_I.jpg"
    put(direct, key, b"AAAA-version-1")
    service = Service(settings, environ={})
    try:
        assert mirror_pass(settings, service).downloaded == 1
        unchanged = mirror_pass(settings, service)
        assert (unchanged.downloaded, unchanged.skipped) == (0, 1)
        time.sleep(1.1)  # LastModified has one-second resolution on some servers
        put(direct, key, b"BBBB-version-2")
        report = mirror_pass(settings, service)
    finally:
        service.close()
    assert report.downloaded == 1
    assert (settings.local_path / key).read_bytes() == b"BBBB-version-2"


# --- item 6: a key equal to a local folder ----------------------------------------------------


def test_key_equal_to_a_local_folder_is_a_warning(make_settings):
    """An object named like a local folder is one conflict; the pass is complete and ok, the folder untouched."""
    settings = make_settings(**FAST)
    folder = settings.local_path / "VASE"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "notes.txt").write_text("a person's")
    put(settings, "VASE", b"object named like the folder")
    put(settings, "OTHER/F1/F1_J.jpg", b"fine")
    service = Service(settings, environ={})
    try:
        with captured_events() as events:
            summary = service.sync_once(upload=False)
        last_ok = service.state.get_meta("last_mirror_ok")
    finally:
        service.close()
    report = summary.mirror
    assert report is not None
    assert report.complete
    assert report.ok
    assert not summary.failed
    assert (report.conflicts, report.failed) == (1, 0)
    assert last_ok is not None
    assert events_named(events, "mirror.key_conflict")[0]["reason"] == "a local folder is in the way"
    assert (folder / "mine" / "notes.txt").read_text() == "a person's"
    assert (settings.local_path / "OTHER/F1/F1_J.jpg").read_bytes() == b"fine"


# --- item 10: format characters ---------------------------------------------------------------


def test_bidi_and_invisible_characters_are_unsafe(make_settings):
    """Keys with U+202E or U+200B are skipped with one mirror.unsafe_key each; no such file is written."""
    settings = make_settings(**FAST)
    bad = ["VASE/F1/\u202egpj.exe", "VASE/F1/F1\u200b_K.jpg"]
    for k in bad:
        put(settings, k, b"x")
    put(settings, "VASE/F1/F1_K.jpg", b"good")
    service = Service(settings, environ={})
    try:
        with captured_events() as events:
            report = mirror_pass(settings, service)
            mirror_pass(settings, service)
    finally:
        service.close()
    assert report.unsafe == 2
    assert sorted(e["key"] for e in events_named(events, "mirror.unsafe_key")) == sorted(bad)
    names = [p.name for p in settings.local_path.rglob("*")]
    assert not any("\u202e" in n or "\u200b" in n for n in names)
    assert (settings.local_path / "VASE/F1/F1_K.jpg").read_bytes() == b"good"


# --- item 11: the refusal to delete is said once ----------------------------------------------


def test_empty_bucket_refusal_is_logged_once(make_settings):
    """With deletes on and an empty bucket, mirror.delete_refused is one event over three passes; nothing goes."""
    settings = make_settings(**FAST, mirror_delete=True)
    put(settings, "VASE/F1/F1_M.jpg", b"m")
    service = Service(settings, environ={})
    try:
        mirror_pass(settings, service)
        make_client(settings).delete_object(Bucket=settings.require_bucket(), Key="VASE/F1/F1_M.jpg")
        with captured_events() as events:
            for _ in range(3):
                assert mirror_pass(settings, service).deleted == 0
    finally:
        service.close()
    assert len(events_named(events, "mirror.delete_refused")) == 1
    assert (settings.local_path / "VASE/F1/F1_M.jpg").read_bytes() == b"m"
