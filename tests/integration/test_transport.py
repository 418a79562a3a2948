"""Transport and Browser against real S3 servers (moto_server, rclone serve s3, SeaweedFS), over HTTP.

SeaweedFS notes (4.48, `weed mini`): keys are filer paths (`a//b` is stored as `a/b`, a leading `/` is
dropped, `.` and `..` segments are refused with InvalidRequest), a key and a folder of the same name
coexist, listing ETags are quoted like HEAD, multipart ETags have the AWS `-N` form, user metadata is
kept (also across a restart), ranges answer 206, a wrong Content-MD5 is BadDigest. Right after a
(re)start its S3 port answers before the master knows the volume server: a GET of an existing
object is 500 InternalError ("volume 1 not found") for up to ~4 s on a loaded machine, so
`SeaweedFSServer.wait_ready` also waits for the master's `/vol/status`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest

from s3sync import Browser, FileTreeNode, Resource, Transport
from s3sync.errors import DownloadError, EndpointError, IntegrityError, NotFoundError, UnsafeKeyError
from s3sync.paths import TEMP_PREFIX
from s3sync.transport import META_SHA256, make_client
from tests.integration.daemon_helpers import counted_transport
from tests.support.faultproxy import Fault

# The third server (SeaweedFS) runs where the bytes travel; see tests/conftest.py.
pytestmark = pytest.mark.servers("moto", "rclone", "seaweedfs")

NAME = "CF0001-B0001_WHITE_320x320.jpg"


def test_upload_download_round_trip(make_settings):
    """A file uploaded by name comes back byte for byte at S3_LOCAL_PATH/<key>."""
    settings = make_settings()
    data = os.urandom(100_000)
    (settings.upload_dir_path / NAME).write_bytes(data)
    with Transport(settings) as t:
        result = t.upload(NAME)
        assert not result.skipped
        assert result.bytes == len(data)
        assert result.key == "CLIPPING-FLOWER/CF0001-B0001/" + NAME
        path = t.download(Resource(NAME, settings=settings))
    assert path == settings.local_path / result.key
    assert path.read_bytes() == data
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_upload_sets_content_type_and_hash_metadata(make_settings):
    """The object gets Content-Type from the extension and the file's SHA-256 in its metadata."""
    settings = make_settings()
    data = b"<svg/>" * 100
    path = settings.upload_dir_path / "F0001-B0001_320x320.SVG"
    path.write_bytes(data)
    with Transport(settings) as t:
        t.upload(path)
        head = t.client.head_object(Bucket=t.bucket, Key="VASE/F0001-B0001/F0001-B0001_320x320.SVG")
    assert head["ContentType"] == "image/svg+xml"
    meta = {k.lower(): v for k, v in head["Metadata"].items()}
    assert meta[META_SHA256] == hashlib.sha256(data).hexdigest()


def test_unchanged_upload_makes_no_put(make_settings):
    """Uploading the same bytes again makes no PUT and says so."""
    settings = make_settings()
    (settings.upload_dir_path / NAME).write_bytes(os.urandom(5000))
    transport, counter = counted_transport(settings)
    with transport:
        transport.upload(NAME)
        counter.reset()
        again = transport.upload(NAME)
    assert again.skipped
    assert counter.count("PutObject") == 0


def test_unchanged_download_makes_no_get(make_settings):
    """Downloading when the local copy is identical makes no GET."""
    settings = make_settings()
    (settings.upload_dir_path / NAME).write_bytes(os.urandom(5000))
    transport, counter = counted_transport(settings)
    with transport:
        transport.upload(NAME)
        transport.download(NAME)
        counter.reset()
        transport.download(NAME)
    assert counter.count("GetObject") == 0


def test_changed_remote_is_downloaded_again(make_settings):
    """A changed object replaces the local copy."""
    settings = make_settings()
    with Transport(settings) as t:
        key = Resource(NAME, settings=settings).key
        t.client.put_object(Bucket=t.bucket, Key=key, Body=b"one")
        t.download(NAME)
        t.client.put_object(Bucket=t.bucket, Key=key, Body=b"two!")
        path = t.download(NAME)
    assert path.read_bytes() == b"two!"


def test_multipart_upload_above_threshold(make_settings):
    """A file above the threshold goes multipart, round-trips, and is then recognised as unchanged."""
    mib = 1024 * 1024
    settings = make_settings(multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    data = os.urandom(12 * mib + 123)
    path = settings.upload_dir_path / "B0001_BIG.png"
    path.write_bytes(data)
    transport, counter = counted_transport(settings)
    with transport:
        result = transport.upload(path)
        assert result.multipart
        assert counter.count("UploadPart") == 3
        counter.reset()
        assert transport.upload(path).skipped
        assert counter.count("UploadPart") == 0
        out = transport.download("B0001_BIG.png")
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert transport.client.list_multipart_uploads(Bucket=transport.bucket).get("Uploads", []) == []


def test_missing_object_is_not_found(make_settings):
    """Downloading a name that is not in the bucket raises NotFoundError and writes nothing."""
    settings = make_settings()
    with Transport(settings) as t, pytest.raises(NotFoundError, match="no such object"):
        t.download("B0404_MISSING.jpg")
    assert list(settings.local_path.rglob("*")) == []


def test_unreachable_endpoint_is_a_clear_fast_error(make_settings):
    """A closed port gives an EndpointError quickly, naming the problem, not a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1, max_attempts=1)
    (settings.upload_dir_path / NAME).write_bytes(b"x")
    started = time.monotonic()
    with Transport(settings) as t, pytest.raises(EndpointError, match="unreachable"):
        t.upload(NAME)
    assert time.monotonic() - started < 10


def test_tree_walk_of_1200_objects(make_settings):
    """Browser.walk paginates past 1,000 keys and builds DIR/FILE nodes; a prefix of exactly one full page."""
    settings = make_settings()
    client = make_client(settings)
    bucket = settings.require_bucket()
    keys = [f"BACKGROUND/B{i // 100:04d}/B{i // 100:04d}_{i:05d}.jpg" for i in range(1200)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"x"), keys))
    browser = Browser(settings)
    root = browser.walk()
    files = list(root.iter_files())
    assert len(files) == 1200
    assert root["BACKGROUND"].type == FileTreeNode.DIR
    leaf = root["BACKGROUND"]["B0003"]["B0003_00345.jpg"]
    assert leaf.type == FileTreeNode.FILE == FileTreeNode.File
    assert leaf.size == 1
    assert leaf.path == "BACKGROUND/B0003/B0003_00345.jpg"
    assert leaf.etag
    sub = browser.walk("BACKGROUND/B0011")
    assert sub.is_dir
    assert len(sub) == 100
    assert sum(1 for _ in browser.iter_objects("BACKGROUND/B000")) == 1000
    browser.transport.close()


def test_walk_missing_prefix_is_not_found(make_settings):
    """Walking a prefix that does not exist is a clear NotFoundError."""
    settings = make_settings()
    with pytest.raises(NotFoundError, match="no such folder"):
        Browser(settings).walk("NOPE/NOTHING")


def test_download_rejects_corrupted_bytes(make_settings, s3_server):
    """A download whose bytes do not match the stored SHA-256 fails and keeps the previous copy."""
    from tests.support.faultproxy import Fault, FaultProxy

    settings = make_settings()
    data = os.urandom(20_000)
    (settings.upload_dir_path / NAME).write_bytes(data)
    with Transport(settings) as t:
        t.upload(NAME)
        good = t.download(NAME)
        key = Resource(NAME, settings=settings).key
        t.client.put_object(
            Bucket=t.bucket, Key=key, Body=data[::-1], Metadata={META_SHA256: hashlib.sha256(data[::-1]).hexdigest()}
        )
    host, port = s3_server.endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    proxy.start()
    try:
        proxy.set_faults([Fault("flip_byte", match=lambda method, path, headers: method == "GET")])
        bad = make_settings(endpoint_url=proxy.endpoint, max_attempts=1)
        with Transport(bad) as t, pytest.raises(IntegrityError):
            t.download(NAME)
    finally:
        proxy.stop()
    assert good.read_bytes() == data
    assert not [p for p in good.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_unsafe_key_download_refused(make_settings):
    """download_key refuses keys that would escape the mirror folder."""
    settings = make_settings()
    with Transport(settings) as t, pytest.raises(UnsafeKeyError):
        t.download_key("../../etc/passwd")


def test_sweeping_a_key_with_no_open_upload_finds_nothing_to_abort(make_settings):
    """rclone answers an empty ListMultipartUploads with NoSuchUpload: that means "none", not "try again"."""
    settings = make_settings()
    with Transport(settings) as t:
        assert t.abort_orphans("NOTHING/OPEN/here.png") is True


MIB = 1024 * 1024


def _listed(transport: Transport, key: str):
    return next(o for page in transport.list_pages(key) for o in page if o.key == key)


@pytest.mark.parametrize("how", ["ours", "plain-md5", "foreign-multipart"])
def test_large_download_in_ranges_is_byte_exact(make_settings, how):
    """Above the threshold a download goes in parallel ranges when its content can be verified.

    Our own uploads (SHA-256 in the metadata) and plain-MD5 objects do; a multipart object
    from another tool (no metadata, ETag not an MD5) is fetched in one stream instead.
    """
    settings = make_settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    data = os.urandom(17 * MIB + 123)
    key = "big/object.bin"
    client = make_client(settings)
    bucket = settings.require_bucket()
    if how == "ours":
        name = "PP0001_LARGE.png"
        (settings.upload_dir_path / name).write_bytes(data)
        with Transport(settings) as t:
            key = t.upload(name).key
    elif how == "plain-md5":
        client.put_object(Bucket=bucket, Key=key, Body=data)
    else:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, start in enumerate(range(0, len(data), 8 * MIB), start=1):
            resp = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=data[start : start + 8 * MIB]
            )
            parts.append({"PartNumber": n, "ETag": resp["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    transport, counter = counted_transport(settings)
    with transport:
        listed = _listed(transport, key)
        result = transport.download_key(key, remote=listed)
    assert result.path.read_bytes() == data
    assert not [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    # 4 ranges of 5 MiB; or, when nothing could verify a mix of versions, one range, then the whole.
    # (rclone gives every object an MD5 ETag, multipart or not: that verifies it.)
    verifiable = how != "foreign-multipart" or listed.etag_is_md5
    assert counter.count("GetObject", key) == (4 if verifiable else 2)


@pytest.mark.parametrize(
    ("size", "gets"),
    [
        (0, 2),  # no byte 0 to ask for (InvalidRange): then one plain GET
        (1000, 1),  # the first range holds the whole object
        (5 * MIB, 1),  # exactly one range
        (17 * MIB + 123, 4),  # 5 MiB ranges
    ],
)
def test_download_by_name_learns_the_size_from_its_first_range(make_settings, size, gets):
    """Without a listing (a library download by name) no HEAD is sent, and a large object still goes in ranges."""
    settings = make_settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    data = os.urandom(size)
    name = "PP0001_LARGE.png"
    (settings.upload_dir_path / name).write_bytes(data)
    with Transport(settings) as t:
        key = t.upload(name).key
    transport, counter = counted_transport(settings)
    with transport:
        result = transport.download_key(key)
    assert result.path.read_bytes() == data
    assert result.bytes == size
    assert counter.count("HeadObject", key) == 0
    assert counter.count("GetObject", key) == gets
    assert not [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("size", [0, 1000, 17 * MIB + 123])
def test_downloads_through_botocore_are_byte_exact(make_settings, size):
    """With S3_REQUEST_STACK=botocore, botocore's stream lands byte-exact, streamed or ranged."""
    settings = make_settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, request_stack="botocore")
    data = os.urandom(size)
    name = "PP0001_LARGE.png"
    (settings.upload_dir_path / name).write_bytes(data)
    with Transport(settings) as t:
        assert type(t.requests).__name__ == "BotoRequests"
        key = t.upload(name).key
        by_listing = t.download_key(key, remote=_listed(t, key))  # ranged when large
        assert by_listing.path.read_bytes() == data
        by_listing.path.unlink()
        by_name = t.download_key(key)  # size unknown: one stream
        assert by_name.path.read_bytes() == data
    assert not [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize(
    ("fault", "range_start", "error"),
    [
        pytest.param("flip_byte", "bytes=5", IntegrityError, id="later-range-flipped"),
        pytest.param("truncate", "bytes=0-", DownloadError, id="first-range-cut"),
    ],
)
def test_broken_range_fails_the_download_and_leaves_nothing(make_settings, fault_proxy, fault, range_start, error):
    """One range damaged in transit: one clear error, no file, no temp file, and the transport still works.

    A flipped byte in a later part is caught by the whole-file hash. A first range cut short
    fails while the other ranges are already streaming: they are stopped before the temp file goes.
    """
    settings = make_settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, request_stack="botocore")
    data = os.urandom(12 * MIB)
    key = f"big/{fault}.bin"
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key=key, Body=data)
    via_proxy = settings.model_copy(update={"endpoint_url": fault_proxy.endpoint})
    fault_proxy.set_faults(
        [Fault(fault, match=lambda m, p, h: m == "GET" and h.get("range", "").startswith(range_start), times=1)]
    )
    with Transport(via_proxy) as t:
        listed = _listed(t, key)
        with pytest.raises(error):
            t.download_key(key, remote=listed)
        assert [p for p in settings.local_path.rglob("*") if not p.is_dir()] == []
        assert t.download_key(key, remote=listed).path.read_bytes() == data  # the fault fired once


def test_range_cut_before_any_byte_landed_is_retried(make_settings, fault_proxy):
    """awscrt hands a part over only once it is whole: a first range cut short is retried, and lands intact.

    The other ranges, already started from the first answer's headers, are stopped and started
    again with it: nothing of the failed attempt is left, and the file is byte-exact.
    """
    settings = make_settings(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, request_stack="crt")
    data = os.urandom(12 * MIB)
    key = "big/retried.bin"
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key=key, Body=data)
    via_proxy = settings.model_copy(update={"endpoint_url": fault_proxy.endpoint})
    fault_proxy.set_faults(
        [Fault("truncate", match=lambda m, p, h: m == "GET" and h.get("range", "").startswith("bytes=0-"), times=1)]
    )
    with Transport(via_proxy) as t:
        result = t.download_key(key, remote=_listed(t, key))
    assert result.path.read_bytes() == data
    assert fault_proxy.count("GET", contains="retried.bin") >= 4  # three ranges, the first one twice
    assert not [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
