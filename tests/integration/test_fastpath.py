"""The lean GET/PUT path: byte- and metadata-identical to botocore's, signed so real servers accept it."""

from __future__ import annotations

import base64
import hashlib

import botocore.exceptions
import pytest

from s3sync.errors import EndpointError, NotFoundError
from s3sync.fastpath import FastPath
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
    return FastPath(
        make_client(settings), settings.require_bucket(), max_connections=4, connect_timeout=2, read_timeout=10
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
