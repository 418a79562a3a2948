"""Publishing for the web against real servers: ACLs, Cache-Control, public and presigned URLs.

moto_server enforces object ACLs for anonymous requests (a private object answers 403, a
``public-read`` one 200) but not the expiry of presigned URLs; rclone serve s3 checks SigV4
presigned URLs, expiry included. Neither refuses an ACL on a bucket whose Object Ownership is
``BucketOwnerEnforced`` (moto 5.2 stores the setting and accepts the ACL anyway): the fault proxy
answers the ACL'd PUT with AWS's exact error in front of such a moto bucket.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3sync.errors import AclNotSupportedError, ConfigurationError
from s3sync.publish import check_public
from s3sync.resource import Resource
from s3sync.settings import Settings
from s3sync.transport import Transport
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.servers import S3Server

NAME = "CF0001_WHITE_320x320.jpg"
BODY = b"\xff\xd8\xff\xe0 not really a jpeg " * 64


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _settings_for(server: S3Server, tmp_path: Path, **overrides: Any) -> Settings:
    bucket = overrides.pop("bucket_name", None) or server.create_bucket(f"p-{uuid.uuid4().hex[:12]}")
    values: dict[str, Any] = {
        "bucket_name": bucket,
        "endpoint_url": server.endpoint,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "region": server.region,
        "local_path": tmp_path / "mirror",
        "upload_dir_path": tmp_path / "upload",
        "state_path": tmp_path / "state" / "state.db",
    } | overrides
    settings = Settings(_env_file=None, **values)
    settings.upload_dir_path.mkdir(parents=True, exist_ok=True)
    settings.local_path.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
def moto_settings(moto_only_server: S3Server, tmp_path: Path) -> Callable[..., Settings]:
    """``moto_settings(**overrides)``: settings for a fresh bucket on moto_server."""
    return lambda **overrides: _settings_for(moto_only_server, tmp_path, **overrides)


def _upload(settings: Settings, size: int = len(BODY)) -> Resource:
    path = settings.upload_dir_path / NAME
    path.write_bytes((BODY * (size // len(BODY) + 1))[:size])
    with Transport(settings) as transport:
        result = transport.upload(path)
    assert not result.skipped
    return Resource(NAME, settings)


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
def test_public_read_acl_makes_anonymous_get_work(moto_settings: Callable[..., Settings], request_stack: str) -> None:
    """S3_DEFAULT_ACL=public-read: Resource.url answers 200 to anyone, with the bytes uploaded."""
    settings = moto_settings(default_acl="public-read", request_stack=request_stack)
    res = _upload(settings)
    assert res.url.startswith(settings.endpoint_url or "?")
    status, body, _ = _get(res.url)
    assert (status, body) == (200, BODY)
    assert check_public(res.url).public


def test_without_acl_anonymous_get_is_403(moto_settings: Callable[..., Settings]) -> None:
    """No S3_DEFAULT_ACL: the object stays private, the anonymous GET answers 403 and the check says why."""
    settings = moto_settings()
    res = _upload(settings)
    status, _, _ = _get(res.url)
    assert status == 403
    verdict = check_public(res.url)
    assert not verdict.public
    assert "private" in verdict.explain()
    assert "S3_DEFAULT_ACL=public-read" in verdict.explain()


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
def test_cache_control_is_stored(moto_settings: Callable[..., Settings], request_stack: str) -> None:
    """S3_CACHE_CONTROL reaches the stored object (HEAD and the public GET both return it)."""
    settings = moto_settings(
        cache_control="public, max-age=86400", default_acl="public-read", request_stack=request_stack
    )
    res = _upload(settings)
    with Transport(settings) as transport:
        head = transport.client.head_object(Bucket=transport.bucket, Key=res.key)
    assert head.get("CacheControl") == "public, max-age=86400"
    assert head.get("ContentType") == "image/jpeg"
    assert check_public(res.url).cache_control == "public, max-age=86400"


def test_multipart_upload_carries_acl_and_cache_control(moto_settings: Callable[..., Settings]) -> None:
    """A multipart upload (CreateMultipartUpload) gets the same ACL and Cache-Control as a single PUT."""
    mib = 1024 * 1024
    settings = moto_settings(
        default_acl="public-read",
        cache_control="max-age=60",
        multipart_threshold=5 * mib,
        multipart_chunksize=5 * mib,
    )
    res = _upload(settings, size=6 * mib)
    with Transport(settings) as transport:
        head = transport.client.head_object(Bucket=transport.bucket, Key=res.key)
    assert head.get("CacheControl") == "max-age=60"
    assert head["ContentLength"] == 6 * mib
    assert check_public(res.url).status == 206  # a ranged GET of byte 0, answered for anyone


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
def test_bucket_owner_enforced_gives_one_clear_error(
    moto_only_server: S3Server, tmp_path: Path, request_stack: str
) -> None:
    """A bucket with ACLs disabled refuses S3_DEFAULT_ACL: one AclNotSupportedError pointing to bucket policies."""
    bucket = moto_only_server.create_bucket(f"p-{uuid.uuid4().hex[:12]}")
    moto_only_server.client().put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    with FaultProxy("127.0.0.1", moto_only_server.port, seed=1) as proxy:
        # AWS's answer to an ACL on such a bucket (moto 5.2 stores the setting but does not enforce it).
        proxy.set_faults(
            [Fault("status", status=400, code="AccessControlListNotSupported", match=lambda m, p, h: "x-amz-acl" in h)]
        )
        settings = _settings_for(
            moto_only_server,
            tmp_path,
            bucket_name=bucket,
            endpoint_url=proxy.endpoint,
            default_acl="public-read",
            request_stack=request_stack,
            max_attempts=1,
        )
        (settings.upload_dir_path / NAME).write_bytes(BODY)
        with Transport(settings) as transport, pytest.raises(AclNotSupportedError) as info:
            transport.upload(NAME)
        assert proxy.faults[0].hits == 1
    message = str(info.value)
    assert "\n" not in message
    assert "AccessControlListNotSupported" in message
    assert "bucket policy" in message
    assert "unset S3_DEFAULT_ACL" in message
    assert info.value.exit_code == 2


def test_presigned_get_works_then_expires(rclone_server: S3Server, tmp_path: Path) -> None:
    """Transport.presigned_url: a SigV4 GET URL that serves the object, then is refused once expired."""
    settings = _settings_for(rclone_server, tmp_path)
    res = _upload(settings)
    with Transport(settings) as transport:
        url = transport.presigned_url(res, expires=2)
        by_name = transport.presigned_url(NAME, expires=3600)
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=2" in url
    assert "X-Amz-Expires=3600" in by_name
    status, body, _ = _get(url)
    assert (status, body) == (200, BODY)
    time.sleep(3.2)
    status, _, _ = _get(url)
    assert status in {400, 403}


def test_presigned_url_rejects_bad_expiry(moto_settings: Callable[..., Settings]) -> None:
    """expires must be 1 s to 7 days: a longer one would be refused by S3 at the first click."""
    settings = moto_settings()
    with Transport(settings) as transport:
        for bad in (0, -1, 7 * 24 * 3600 + 1):
            with pytest.raises(ValueError, match="expires"):
                transport.presigned_url(NAME, expires=bad)


def test_cdn_url_needs_no_bucket() -> None:
    """S3_PUBLIC_BASE_URL alone gives URLs (a CDN root); nothing at all is an error, not a broken link."""
    cdn = Settings(_env_file=None, public_base_url="https://cdn.example.com/img")
    assert Resource(NAME, cdn).url == "https://cdn.example.com/img/CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg"
    bare = Resource(NAME, Settings(_env_file=None))
    assert bare.as_dict()["url"] is None
    with pytest.raises(ConfigurationError, match="S3_BUCKET_NAME: not set"):
        _ = bare.url


def test_async_wrappers_round_trip(moto_settings: Callable[..., Settings]) -> None:
    """aupload/adownload do the same as upload/download, from an event loop."""
    import asyncio

    settings = moto_settings()
    (settings.upload_dir_path / NAME).write_bytes(BODY)

    async def go() -> Path:
        with Transport(settings) as transport:
            result = await transport.aupload(NAME)
            assert result.bytes == len(BODY)
            return await transport.adownload(NAME)

    path = asyncio.run(go())
    assert path.read_bytes() == BODY
    assert path == settings.local_path / "CLIPPING-FLOWER" / "CF0001" / NAME
