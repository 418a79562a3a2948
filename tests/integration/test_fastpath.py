"""The lean GET/PUT path: byte- and metadata-identical to botocore's, signed so real servers accept it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import botocore.exceptions
import pytest

from s3sync.errors import EndpointError, NotFoundError
from s3sync.fastpath import FastPath, _parse_listing
from s3sync.transport import META_SHA256, Transport, make_client, translate
from tests.support.faultproxy import Fault

KEYS = [
    "CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg",
    "space and plus/a+b=c&d.jpg",
    "unicode/caf\u00e9-\u00fc\u4e2d.jpg",
    "percent/100%25 off.jpg",
    "tilde/~x_y.z-w.jpg",
    "query/a?b#c;d,e.jpg",
]


def fast_for(settings) -> FastPath:
    return FastPath.for_client(
        make_client(settings), bucket=settings.require_bucket(), max_connections=4, connect_timeout=2, read_timeout=10
    )


@pytest.mark.parametrize("key", KEYS)
def test_put_and_get_round_trip_like_botocore(make_settings, key):
    """PUT through the fast path, read with botocore (and back): same bytes, same metadata, MD5 ETag."""
    settings = make_settings()
    fast = fast_for(settings)
    client = make_client(settings)
    bucket = settings.require_bucket()
    data = hashlib.sha256(key.encode()).digest() * 1000
    sha = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data, usedforsecurity=False)
    put = fast.put_object(
        key,
        data,
        sha256_hex=sha,
        content_md5=base64.b64encode(md5.digest()).decode(),
        content_type="image/jpeg",
        metadata={META_SHA256: sha},
    )
    assert put["ETag"].strip('"') == md5.hexdigest()
    via_boto = client.get_object(Bucket=bucket, Key=key)
    assert via_boto["Body"].read() == data
    assert {k.lower(): v for k, v in via_boto["Metadata"].items()}[META_SHA256] == sha
    got = fast.get_object(key)
    body = got["Body"]
    try:
        assert body.read() == data
    finally:
        body.close()
    assert got["ContentLength"] == len(data)
    assert got["Metadata"][META_SHA256] == sha
    fast.close()


def test_errors_map_like_botocore(make_settings):
    """A missing key is NotFoundError through translate(), as with botocore."""
    settings = make_settings()
    fast = fast_for(settings)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        fast.get_object("no/such/key.jpg")
    mapped = translate(err.value, action="GET", bucket=settings.require_bucket(), key="no/such/key.jpg")
    assert isinstance(mapped, NotFoundError)


def test_unreachable_endpoint_is_an_endpoint_error(make_settings):
    """Nothing listening: EndpointError, quickly, like botocore's EndpointConnectionError."""
    settings = make_settings(endpoint_url="http://127.0.0.1:9", connect_timeout=1)
    with Transport(settings) as transport:
        assert transport.fast is not None
        with pytest.raises(botocore.exceptions.BotoCoreError) as err:
            transport.fast.get_object("x.jpg")
    assert isinstance(translate(err.value, action="GET", bucket="b", key="x.jpg"), EndpointError)


def test_switch_off(make_settings):
    """S3_FAST_PATH=false sends everything through botocore."""
    with Transport(make_settings(fast_path=False)) as transport:
        assert transport.fast is None


class TestWhereTheServerChecks:
    """rclone serve s3 checks Content-MD5 and SigV4 (moto_server checks neither)."""

    @pytest.fixture
    def s3_server(self, rclone_server):
        return rclone_server

    def test_wrong_content_md5_is_refused(self, make_settings):
        """A body whose Content-MD5 does not match is refused, never stored wrong."""
        settings = make_settings()
        fast = fast_for(settings)
        data = b"x" * 1000
        wrong = base64.b64encode(hashlib.md5(b"other", usedforsecurity=False).digest()).decode()
        sha = hashlib.sha256(data).hexdigest()
        with pytest.raises(botocore.exceptions.ClientError) as err:
            fast.put_object("B1/x.jpg", data, sha256_hex=sha, content_md5=wrong, content_type="image/jpeg", metadata={})
        assert err.value.response["Error"]["Code"] in {"BadDigest", "InvalidDigest"}

    def test_part_with_wrong_content_md5_is_refused(self, make_settings):
        """Parts go unsigned (UNSIGNED-PAYLOAD) but still carry Content-MD5, which the server checks."""
        settings = make_settings()
        fast = fast_for(settings)
        client = make_client(settings)
        bucket = settings.require_bucket()
        data = b"p" * 1000
        good = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        wrong = base64.b64encode(hashlib.md5(b"other", usedforsecurity=False).digest()).decode()
        for content_md5, refused in ((wrong, True), (good, False)):
            # A fresh upload each time: rclone drops an upload whose part it refused.
            upload_id = client.create_multipart_upload(Bucket=bucket, Key="B1/big.jpg")["UploadId"]
            try:
                if refused:
                    with pytest.raises(botocore.exceptions.ClientError) as err:
                        fast.upload_part("B1/big.jpg", upload_id, 1, data, content_md5=content_md5)
                    assert err.value.response["Error"]["Code"] in {"BadDigest", "InvalidDigest"}
                else:
                    etag = fast.upload_part("B1/big.jpg", upload_id, 1, data, content_md5=content_md5)["ETag"]
                    assert etag.strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()
            finally:
                with contextlib.suppress(botocore.exceptions.ClientError):
                    client.abort_multipart_upload(Bucket=bucket, Key="B1/big.jpg", UploadId=upload_id)

    def test_bad_secret_is_access_denied(self, make_settings):
        """A wrong secret is refused: the signature really is checked (and ours, elsewhere, is right)."""
        settings = make_settings(aws_secret_access_key="not-the-secret-" + "x" * 24)
        with Transport(settings) as transport:
            assert transport.fast is not None
            with pytest.raises(botocore.exceptions.ClientError) as err:
                transport.fast.get_object("anything.jpg")
        mapped = translate(err.value, action="GET", bucket=settings.require_bucket(), key="anything.jpg")
        assert isinstance(mapped, EndpointError)
        assert "access denied" in str(mapped)


@pytest.mark.parametrize(("attempts", "survives"), [(3, True), (1, False)])
def test_retries_a_slowdown_like_botocore(make_settings, fault_proxy, attempts, survives):
    """One 503 SlowDown is retried within S3_MAX_ATTEMPTS (as botocore's standard mode does); 1 means no retry."""
    settings = make_settings()
    data = b"retry me" * 100
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key="r/x.jpg", Body=data)
    via_proxy = settings.model_copy(update={"endpoint_url": fault_proxy.endpoint, "max_attempts": attempts})
    fault_proxy.set_faults([Fault("status", match=lambda m, p, h: m == "GET", status=503, times=1)])
    with Transport(via_proxy) as transport:
        assert transport.fast is not None
        if survives:
            got = transport.fast.get_object("r/x.jpg")
            assert got["Body"].read() == data
            got["Body"].close()
        else:
            with pytest.raises(botocore.exceptions.ClientError) as err:
                transport.fast.get_object("r/x.jpg")
            assert err.value.response["Error"]["Code"] == "SlowDown"
    assert fault_proxy.count("GET", "r/x.jpg") == (2 if survives else 1)


def test_listing_matches_botocore(make_settings):
    """LIST through the fast path: the same keys (odd characters included), sizes, ETags and times as botocore."""
    settings = make_settings()
    client = make_client(settings)
    bucket = settings.require_bucket()
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i + 1))
    fast = fast_for(settings)
    try:
        for prefix in ("", "unicode/", "space and plus/"):
            ours = fast.list_objects(prefix, None)
            theirs = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
            assert ours["IsTruncated"] is False
            mine = [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in ours["Contents"]]
            expected = [(o["Key"], o["Size"], o["ETag"], o["LastModified"]) for o in theirs.get("Contents", [])]
            assert mine == expected
            assert mine  # every prefix above holds at least one key
    finally:
        fast.close()


def test_listing_pages_with_continuation_tokens(make_settings):
    """More than one page: the continuation token is signed and sent back; every key comes once."""
    settings = make_settings()
    client = make_client(settings)
    bucket = settings.require_bucket()
    keys = [f"page/{i:04d}.jpg" for i in range(1005)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=b"p"), keys))
    with Transport(settings) as transport:
        assert transport.fast is not None
        pages = list(transport.list_pages("page/"))
    assert [len(p) for p in pages] == [1000, 5]
    assert [o.key for p in pages for o in p] == keys


def test_listing_that_declares_a_dtd_is_refused():
    """A listing never declares a DTD: one that does is refused before the XML parser sees it."""
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult>&a;</ListBucketResult>'
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        _parse_listing(bomb)
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        _parse_listing(b"<ListBucketResult><Contents>")  # cut short: unreadable, not an empty page


def test_url_encoded_keys_are_decoded_only_when_the_server_says_so():
    """``EncodingType=url`` in the answer: keys are decoded (as botocore does); without it, kept as sent."""
    page = (
        b"<ListBucketResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>{enc}<IsTruncated>false</IsTruncated>"
        b"<Contents><Key>a+b%2Bc%25d</Key><Size>3</Size><ETag>&quot;e&quot;</ETag>"
        b"<LastModified>2026-11-27T14:31:55.000Z</LastModified></Contents></ListBucketResult>"
    )
    decoded = _parse_listing(page.replace(b"{enc}", b"<EncodingType>url</EncodingType>"))
    assert decoded["Contents"][0]["Key"] == "a b+c%d"
    assert decoded["Contents"][0]["ETag"] == '"e"'
    assert decoded["Contents"][0]["LastModified"].isoformat() == "2026-11-27T14:31:55+00:00"
    raw = _parse_listing(page.replace(b"{enc}", b""))
    assert raw["Contents"][0]["Key"] == "a+b%2Bc%25d"


def test_one_shot_sync_never_loads_botocore(make_settings):
    """With keys in the settings, a fast-path sync lists, GETs and PUTs without importing boto3/botocore's client."""
    settings = make_settings()
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key="CLIPPING-FLOWER/CF0001/a.jpg", Body=b"a")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))},
        "S3_BUCKET_NAME": settings.require_bucket(),
        "S3_ENDPOINT_URL": str(settings.endpoint_url),
        "S3_AWS_ACCESS_KEY_ID": settings.aws_access_key_id.get_secret_value(),
        "S3_AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
        "S3_REGION": str(settings.region),
        "S3_LOCAL_PATH": str(settings.local_path),
        "S3_UPLOAD_DIR_PATH": str(settings.upload_dir_path),
        "S3_STATE_PATH": str(settings.state_path),
    }
    (settings.upload_dir_path / "CF0002_WHITE_320x320.jpg").write_bytes(b"b" * 100)
    probe = (
        "import sys\n"
        "from s3sync.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('LOADED', sorted(m for m in ('boto3', 'botocore.session', 'botocore.client') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "sync"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout
    assert (settings.local_path / "CLIPPING-FLOWER" / "CF0001" / "a.jpg").read_bytes() == b"a"
    assert "uploaded 1 " in done.stderr


def test_head_matches_botocore(make_settings):
    """HEAD through the fast path: Transport.head() sees what botocore sees; a missing key is None."""
    settings = make_settings()
    client = make_client(settings)
    bucket = settings.require_bucket()
    key = KEYS[1]
    client.put_object(Bucket=bucket, Key=key, Body=b"h" * 321, Metadata={META_SHA256: "ab" * 32})
    theirs = client.head_object(Bucket=bucket, Key=key)
    with Transport(settings) as transport:
        assert transport.fast is not None
        mine = transport.head(key)
        assert transport.head("no/such/key.jpg") is None
    assert mine is not None
    assert mine.size == theirs["ContentLength"] == 321
    assert mine.etag == theirs["ETag"].strip('"').lower()
    assert mine.sha256 == "ab" * 32
    assert mine.last_modified == theirs["LastModified"]
