"""Both request stacks behave like botocore where S3-compatible users live: proxies, CAs, retries,
regions and temporary credentials, each on loopback against a real server.

The proxy test gives the endpoint a host name only the proxy can resolve: a request that went
around the proxy could not reach the server at all, so "the upload landed" proves that every
request (awscrt's and botocore's) went through it.
"""

from __future__ import annotations

import itertools
import json
import os
import ssl
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from s3sync.browser import Browser
from s3sync.errors import DownloadError
from s3sync.settings import load_settings
from s3sync.transport import Transport, make_client
from tests.support.faultproxy import Fault
from tests.support.forwardproxy import ForwardProxy
from tests.support.tlsproxy import TLSProxy

MIB = 1024 * 1024
SMALL = "CF0001_WHITE_320x320.jpg"
LARGE = "PP0001_LARGE.png"
STACKS = ["crt", "botocore"]


def _round_trip(settings, small: bytes, large: bytes) -> None:
    """A single PUT, a multipart upload, a listing, a GET and a ranged GET: every kind of request."""
    (settings.upload_dir_path / SMALL).write_bytes(small)
    (settings.upload_dir_path / LARGE).write_bytes(large)
    with Transport(settings) as t:
        up_small, up_large = t.upload(SMALL), t.upload(LARGE)
        assert up_large.multipart
        assert {n.path for n in Browser(transport=t).walk().iter_files()} == {up_small.key, up_large.key}
        listed = {o.key: o for page in t.list_pages() for o in page}
        assert t.download_key(up_small.key).path.read_bytes() == small
        assert t.download_key(up_large.key, remote=listed[up_large.key]).path.read_bytes() == large


# --- proxies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_every_request_goes_through_http_proxy(make_settings, s3_server, monkeypatch, stack):
    """HTTP_PROXY: PUTs, parts, listings, HEADs and GETs all pass through the proxy (the host resolves only there)."""
    with ForwardProxy(hosts={"only-via-proxy": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        settings = make_settings(
            endpoint_url=f"http://only-via-proxy:{s3_server.port}",
            request_stack=stack,
            multipart_threshold=5 * MIB,
            multipart_chunksize=5 * MIB,
        )
        _round_trip(settings, os.urandom(20_000), os.urandom(11 * MIB))
        assert proxy.count("only-via-proxy") >= 1


@pytest.mark.parametrize("stack", STACKS)
def test_no_proxy_covering_the_endpoint_bypasses_the_proxy(make_settings, monkeypatch, stack):
    """NO_PROXY naming the endpoint's host: not one request reaches the proxy, and everything works."""
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        settings = make_settings(request_stack=stack, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
        _round_trip(settings, os.urandom(20_000), os.urandom(11 * MIB))
        assert proxy.seen == []


# --- a private CA, named the ways botocore reads it ------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_front(ca: trustme.CA, s3_server) -> Iterator[TLSProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with TLSProxy(context, "127.0.0.1", s3_server.port) as proxy:
        yield proxy


@pytest.mark.parametrize("how", ["AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "config-file"])
@pytest.mark.parametrize("stack", STACKS)
def test_private_ca_named_like_botocore_is_trusted_everywhere(
    make_settings, tls_front, ca, tmp_path, monkeypatch, stack, how
):
    """The CA from AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE or the AWS config file's ``ca_bundle``: every request trusts it."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    if how == "config-file":
        config = tmp_path / "aws-config"
        config.write_text(f"[default]\nca_bundle = {pem}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    else:
        monkeypatch.setenv(how, str(pem))
    base = make_settings()
    env = {
        "S3_BUCKET_NAME": base.require_bucket(),
        "S3_ENDPOINT_URL": tls_front.endpoint,
        "S3_AWS_ACCESS_KEY_ID": base.aws_access_key_id.get_secret_value(),
        "S3_AWS_SECRET_ACCESS_KEY": base.aws_secret_access_key.get_secret_value(),
        "S3_LOCAL_PATH": str(base.local_path),
        "S3_UPLOAD_DIR_PATH": str(base.upload_dir_path),
        "S3_STATE_PATH": str(base.state_path),
        "S3_REQUEST_STACK": stack,
        "S3_MULTIPART_THRESHOLD": str(5 * MIB),
        "S3_MULTIPART_CHUNKSIZE": str(5 * MIB),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env_file=None)
    _round_trip(settings, os.urandom(20_000), os.urandom(11 * MIB))
    assert tls_front.refused == 0


def test_plain_ca_bundle_variable_changes_nothing(make_settings, monkeypatch, tmp_path):
    """A bare CA_BUNDLE variable (no S3_ or AWS_ prefix) is not a setting: the trust store stays as it was."""
    monkeypatch.setenv("CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    monkeypatch.setenv("S3_BUCKET_NAME", "any-bucket")
    assert load_settings(env_file=None).ca_bundle is None


# --- retries -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(("attempts", "faults", "survives"), [(3, 2, True), (3, 3, False), (1, 1, False)])
def test_slowdown_is_retried_like_botocore(make_settings, fault_proxy, stack, attempts, faults, survives):
    """503 SlowDown: S3_MAX_ATTEMPTS attempts in all, spaced by throttling backoff; the last answer is the error."""
    settings = make_settings()
    data = b"retry me" * 100
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key="r/x.jpg", Body=data)
    via_proxy = settings.model_copy(
        update={"endpoint_url": fault_proxy.endpoint, "max_attempts": attempts, "request_stack": stack}
    )
    sent: list[float] = []

    def throttled(method: str, path: str, headers) -> bool:
        sent.append(time.monotonic())
        return method == "GET"

    fault_proxy.set_faults([Fault("status", match=throttled, status=503, times=faults)])
    with Transport(via_proxy) as t:
        if survives:
            assert t.download_key("r/x.jpg").path.read_bytes() == data
        else:
            with pytest.raises(DownloadError, match="SlowDown"):
                t.download_key("r/x.jpg")
    assert fault_proxy.count("GET", "r/x.jpg") == (faults + 1 if survives else attempts)
    # Full jitter under botocore's 1 s throttling base, doubled each time (exact values: the unit tests).
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(gap < 2.0**i + 0.5 for i, gap in enumerate(gaps, start=1)), gaps


@pytest.mark.parametrize("stack", ["botocore"])
def test_retry_after_header_is_honoured(make_settings, fault_proxy, stack):
    """x-amz-retry-after (milliseconds) on a throttled answer: the next attempt waits at least that long.

    awscrt (0.38) passes on neither the headers nor the body of a 5xx answer, only "throttled" or
    "server error": on that stack the policy backs off with botocore's throttling base instead
    (see test_slowdown_is_retried_like_botocore) and the header cannot be seen.
    """
    settings = make_settings()
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key="r/after.jpg", Body=b"a" * 10)
    via_proxy = settings.model_copy(update={"endpoint_url": fault_proxy.endpoint, "request_stack": stack})
    fault_proxy.set_faults(
        [
            Fault(
                "status",
                match=lambda m, p, h: m == "GET",
                status=503,
                times=1,
                headers={"x-amz-retry-after": "1200"},
            )
        ]
    )
    started = time.monotonic()
    with Transport(via_proxy) as t:
        assert t.download_key("r/after.jpg").path.read_bytes() == b"a" * 10
    assert time.monotonic() - started >= 1.2
    assert fault_proxy.count("GET", "r/after.jpg") == 2


# --- regions -------------------------------------------------------------------------------------
def test_region_mismatch_is_signed_again_for_the_named_region(make_settings, fault_proxy):
    """An answer naming another region (AuthorizationHeaderMalformed, <Region>): awscrt signs again, and stays there.

    (botocore's stack serves AWS itself, where botocore's own region redirector does the same.)
    """
    settings = make_settings()
    make_client(settings).put_object(Bucket=settings.require_bucket(), Key="r/region.jpg", Body=b"r" * 10)
    scopes: list[str] = []

    def wrong_region(method: str, path: str, headers) -> bool:
        auth = headers.get("authorization", "")
        scopes.append(auth.split("Credential=", 1)[-1].split(",", 1)[0])
        return "/us-east-1/" in auth

    fault_proxy.set_faults(
        [
            Fault(
                "status",
                match=wrong_region,
                status=400,
                code="AuthorizationHeaderMalformed",
                extra_xml="<Region>eu-central-1</Region>",
            )
        ]
    )
    via_proxy = settings.model_copy(
        update={"endpoint_url": fault_proxy.endpoint, "region": "us-east-1", "request_stack": "crt"}
    )
    with Transport(via_proxy) as t:
        assert t.download_key("r/region.jpg").path.read_bytes() == b"r" * 10
        assert t.head("r/region.jpg") is not None
    assert "/us-east-1/" in scopes[0]
    assert all("/eu-central-1/" in s for s in scopes[1:])
    assert len(scopes) == 3  # the refused GET, the GET again, then the HEAD signed right away


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
@pytest.mark.parametrize("stack", STACKS)
def test_sdk_region_variables_apply_when_s3_region_is_unset(make_settings, fault_proxy, monkeypatch, stack, variable):
    """No S3_REGION, an endpoint, and AWS_REGION (or AWS_DEFAULT_REGION): requests are signed for that region."""
    base = make_settings()
    scopes: list[str] = []
    fault_proxy.set_faults(
        [Fault("delay", seconds=0, match=lambda m, p, h: scopes.append(h.get("authorization", "")) or False)]
    )
    monkeypatch.setenv(variable, "ap-southeast-2")
    for name, value in {
        "S3_BUCKET_NAME": base.require_bucket(),
        "S3_ENDPOINT_URL": fault_proxy.endpoint,
        "S3_AWS_ACCESS_KEY_ID": base.aws_access_key_id.get_secret_value(),
        "S3_AWS_SECRET_ACCESS_KEY": base.aws_secret_access_key.get_secret_value(),
        "S3_LOCAL_PATH": str(base.local_path),
        "S3_UPLOAD_DIR_PATH": str(base.upload_dir_path),
        "S3_STATE_PATH": str(base.state_path),
        "S3_REQUEST_STACK": stack,
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(env_file=None)
    assert settings.region == "ap-southeast-2"
    with Transport(settings) as t:
        t.head("any/key.jpg")
    assert scopes
    assert all("/ap-southeast-2/s3/aws4_request" in s for s in scopes)


# --- temporary credentials -----------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_session_token_setting_is_sent_on_every_request(make_settings, fault_proxy, stack):
    """S3_AWS_SESSION_TOKEN goes out as X-Amz-Security-Token on PUTs, HEADs, LISTs and GETs."""
    seen: list[str | None] = []
    fault_proxy.set_faults(
        [Fault("delay", seconds=0, match=lambda m, p, h: seen.append(h.get("x-amz-security-token")) or False)]
    )
    settings = make_settings(
        endpoint_url=fault_proxy.endpoint, aws_session_token="FwoGZXIvYXdzEXAMPLETOKEN", request_stack=stack
    )
    (settings.upload_dir_path / SMALL).write_bytes(b"t" * 1000)
    with Transport(settings) as t:
        key = t.upload(SMALL).key
        list(t.list_pages())
        t.download_key(key)
    assert len(seen) >= 4
    assert set(seen) == {"FwoGZXIvYXdzEXAMPLETOKEN"}


def test_session_token_is_masked_like_the_secret(make_settings):
    """`s3sync config` shows the session token as stars, never its value."""
    masked = make_settings(aws_session_token="FwoGZXIvYXdzEXAMPLETOKEN").masked()
    assert masked["S3_AWS_SESSION_TOKEN"] == "********"
    assert "FwoGZXIvYXdzEXAMPLETOKEN" not in json.dumps(masked)


def test_temporary_credentials_from_the_chain_are_refreshed(make_settings, fault_proxy, tmp_path, monkeypatch):
    """Keys from the chain that expire (credential_process): awscrt asks botocore again and signs with the new token."""
    base = make_settings()
    counter = tmp_path / "calls"
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)\n"
        f"print(json.dumps({{'Version': 1, 'AccessKeyId': {base.aws_access_key_id.get_secret_value()!r},"
        f" 'SecretAccessKey': {base.aws_secret_access_key.get_secret_value()!r},"
        " 'SessionToken': f'token-{n}', 'Expiration': soon.isoformat()}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    tokens: list[str | None] = []
    fault_proxy.set_faults(
        [Fault("delay", seconds=0, match=lambda m, p, h: tokens.append(h.get("x-amz-security-token")) or False)]
    )
    settings = base.model_copy(
        update={"endpoint_url": fault_proxy.endpoint, "aws_access_key_id": None, "aws_secret_access_key": None}
    )
    with Transport(settings) as t:
        assert type(t.requests).__name__ == "CrtRequests"
        for _ in range(3):
            t.head("x/y.jpg")
    # Five minutes from expiry is inside botocore's mandatory refresh window: each request refreshes.
    assert len(tokens) == 3
    assert len(set(tokens)) == 3
    assert all(tok is not None and tok.startswith("token-") for tok in tokens)
    assert int(Path(counter).read_text()) >= 3


def test_unreadable_proxy_settings_do_not_leak_secrets(make_settings, monkeypatch):
    """A proxy URL with credentials in it never shows up in a transport's repr or an error line."""
    monkeypatch.setenv("HTTP_PROXY", "http://user:hunter2@127.0.0.1:9")
    settings = make_settings(endpoint_url="http://127.0.0.1:9", connect_timeout=1, max_attempts=1)
    with Transport(settings) as t, pytest.raises(Exception) as info:
        t.head("x.jpg")
    assert "hunter2" not in str(info.value)
