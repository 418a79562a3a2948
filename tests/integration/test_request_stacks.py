"""Both request stacks (awscrt and botocore) answer alike, on real servers: odd keys, metadata,
listings across pages, HEADs, errors, and the integrity the server checks (Content-MD5, SigV4)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import pytest

from s3sync._requests import Reply, RequestFailed
from s3sync.errors import EndpointError, NotFoundError
from s3sync.transport import META_SHA256, Transport, make_client, translate

STACKS = ["crt", "botocore"]
KEYS = [
    "CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg",
    "space and plus/a+b=c&d.jpg",
    "unicode/caf\u00e9-\u00fc\u4e2d.jpg",
    "percent/100%25 off.jpg",
    "tilde/~x_y.z-w.jpg",
    "query/a?b#c;d,e.jpg",
]


class Collect:
    """A sink that keeps a GET's body and the offsets it came at."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.started: list[Reply] = []

    def start(self, reply: Reply) -> None:
        self.started.append(reply)
        self.data.clear()

    def write(self, chunk: memoryview, offset: int) -> None:
        assert offset == len(self.data)
        self.data += chunk


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("key", KEYS)
def test_put_and_get_round_trip_like_botocore(make_settings, key, stack):
    """PUT through the stack, read with botocore (and back): same bytes, same metadata, the MD5 as ETag."""
    settings = make_settings(request_stack=stack)
    data = hashlib.sha256(key.encode()).digest() * 1000
    sha = hashlib.sha256(data).hexdigest()
    with Transport(settings) as t:
        reply = t.requests.put(
            key,
            data,
            {"Content-MD5": _md5_b64(data), "Content-Type": "image/jpeg", f"x-amz-meta-{META_SHA256}": sha},
        )
        assert reply.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
        via_boto = make_client(settings).get_object(Bucket=settings.require_bucket(), Key=key)
        assert via_boto["Body"].read() == data
        assert {k.lower(): v for k, v in via_boto["Metadata"].items()}[META_SHA256] == sha
        sink = Collect()
        t.requests.get(key, None, sink)
        assert bytes(sink.data) == data
        assert sink.started[-1].metadata[META_SHA256] == sha
        assert t.head(key).sha256 == sha


@pytest.mark.parametrize("stack", STACKS)
def test_missing_key_is_not_found(make_settings, stack):
    """A missing key: None from head(), NotFoundError through translate() for a GET, as with botocore."""
    settings = make_settings(request_stack=stack)
    with Transport(settings) as t:
        assert t.head("no/such/key.jpg") is None
        with pytest.raises(RequestFailed) as err:
            t.requests.get("no/such/key.jpg", None, Collect())
    mapped = translate(err.value, action="GET", bucket=settings.require_bucket(), key="no/such/key.jpg")
    assert isinstance(mapped, NotFoundError)


@pytest.mark.parametrize("stack", STACKS)
def test_unreachable_endpoint_is_an_endpoint_error(make_settings, stack):
    """Nothing listening: EndpointError, like botocore's EndpointConnectionError."""
    settings = make_settings(endpoint_url="http://127.0.0.1:9", connect_timeout=1, max_attempts=1, request_stack=stack)
    with Transport(settings) as t, pytest.raises(EndpointError, match="endpoint unreachable"):
        t.head("x.jpg")


@pytest.mark.parametrize("stack", STACKS)
def test_listing_matches_botocore(make_settings, stack):
    """LIST through the stack: the same keys (odd characters included), sizes, ETags and times as botocore."""
    settings = make_settings(request_stack=stack)
    client = make_client(settings)
    bucket = settings.require_bucket()
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i + 1))
    with Transport(settings) as t:
        for prefix in ("", "unicode/", "space and plus/"):
            ours = t.requests.list_page(prefix, None)
            theirs = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
            assert ours["IsTruncated"] is False
            mine = [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in ours["Contents"]]
            expected = [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in theirs.get("Contents", [])]
            assert mine == expected
            assert mine  # every prefix above holds at least one key


@pytest.mark.parametrize("stack", STACKS)
def test_listing_pages_with_continuation_tokens(make_settings, stack):
    """More than one page: the continuation token is signed and sent back; every key comes once."""
    settings = make_settings(request_stack=stack)
    client = make_client(settings)
    bucket = settings.require_bucket()
    keys = [f"page/{i:04d}.jpg" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"p"), keys))
    with Transport(settings) as t:
        pages = list(t.list_pages("page/"))
    assert [len(p) for p in pages] == [1000, 5]
    assert [o.key for p in pages for o in p] == keys


class TestWhereTheServerChecks:
    """rclone serve s3 checks Content-MD5 and SigV4 (moto_server checks neither)."""

    @pytest.fixture
    def s3_server(self, rclone_server):
        return rclone_server

    @pytest.mark.parametrize("stack", STACKS)
    def test_wrong_content_md5_is_refused(self, make_settings, stack):
        """A body whose Content-MD5 does not match is refused, never stored wrong."""
        with Transport(make_settings(request_stack=stack)) as t, pytest.raises(RequestFailed) as err:
            t.requests.put("B1/x.jpg", b"x" * 1000, {"Content-MD5": _md5_b64(b"other")})
        assert err.value.code in {"BadDigest", "InvalidDigest"}

    @pytest.mark.parametrize("stack", STACKS)
    def test_part_with_wrong_content_md5_is_refused(self, make_settings, stack):
        """Parts carry Content-MD5, which the server checks: a wrong one is refused, the right one kept."""
        settings = make_settings(request_stack=stack)
        client = make_client(settings)
        bucket = settings.require_bucket()
        data = b"p" * 1000
        with Transport(settings) as t:
            for content_md5, refused in ((_md5_b64(b"other"), True), (_md5_b64(data), False)):
                # A fresh upload each time: rclone drops an upload whose part it refused.
                upload_id = client.create_multipart_upload(Bucket=bucket, Key="B1/big.jpg")["UploadId"]
                try:
                    if refused:
                        with pytest.raises(RequestFailed) as err:
                            t.requests.upload_part("B1/big.jpg", upload_id, 1, data, content_md5)
                        assert err.value.code in {"BadDigest", "InvalidDigest"}
                    else:
                        etag = t.requests.upload_part("B1/big.jpg", upload_id, 1, data, content_md5).etag
                        assert etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
                finally:
                    with contextlib.suppress(botocore.exceptions.ClientError):
                        client.abort_multipart_upload(Bucket=bucket, Key="B1/big.jpg", UploadId=upload_id)

    @pytest.mark.parametrize("stack", STACKS)
    def test_bad_secret_is_access_denied(self, make_settings, stack):
        """A wrong secret is refused: the signature really is checked (and ours, elsewhere, is right)."""
        settings = make_settings(aws_secret_access_key="not-the-secret-" + "x" * 24, request_stack=stack)
        with Transport(settings) as t, pytest.raises(EndpointError, match="access denied"):
            t.download_key("anything.jpg")


def test_finished_requests_leave_nothing_behind(make_settings, monkeypatch):
    """Each awscrt request's answer is freed once it is done (a cycle through the native request kept
    every answer, and the daemon grew ~11 KB per request): none is left after many requests."""
    import gc
    import weakref

    from s3sync import _crt

    made: list[weakref.ref[object]] = []

    class Tracked(_crt._Answer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    monkeypatch.setattr(_crt, "_Answer", Tracked)  # the answers of this test only, whatever else runs
    settings = make_settings(request_stack="crt")
    with Transport(settings) as t:
        t.requests.put("leak/x.jpg", b"x" * 100, {"Content-MD5": _md5_b64(b"x" * 100)})

        class Refuses(Collect):
            def write(self, chunk: memoryview, offset: int) -> None:
                raise OSError(28, "No space left on device")

        for _ in range(50):
            t.head("leak/x.jpg")
            t.requests.get("leak/x.jpg", None, Collect())
            assert t.head("leak/none.jpg") is None  # an error answer
            with pytest.raises(RequestFailed):
                t.requests.get("leak/none.jpg", None, Collect())
            with pytest.raises(OSError, match="No space"):
                t.requests.get("leak/x.jpg", None, Refuses())  # the sink fails mid-answer
        gc.collect()
    assert len(made) >= 250
    assert [r for r in made if r() is not None] == []
