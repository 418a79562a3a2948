"""An https endpoint whose certificate comes from a private CA (an on-premises MinIO, say).

Each real server sits behind a TLS front (:class:`tests.support.tlsproxy.TLSProxy`) with a
certificate issued by a throw-away ``trustme`` CA. Both request stacks, awscrt and
botocore, must trust exactly what ``S3_CA_BUNDLE`` (or botocore's ``AWS_CA_BUNDLE``) names,
and an untrusted certificate must be one clear error that loses nothing.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from s3sync import Browser, Resource, Transport
from s3sync.errors import ConfigurationError, EndpointError
from s3sync.settings import Settings
from tests.integration.daemon_helpers import object_bytes, wait_for
from tests.support.tlsproxy import TLSProxy

SMALL = "CF0001_WHITE_320x320.jpg"
LARGE = "CF0002_WHITE_320x320.jpg"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_pem(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def tls_proxy(ca: trustme.CA, s3_server) -> Iterator[TLSProxy]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with TLSProxy(context, "127.0.0.1", s3_server.port) as proxy:
        yield proxy


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
def test_private_ca_bundle_is_trusted_by_every_request(
    make_settings, tls_proxy, ca_pem, s3_server, bucket, request_stack
):
    """With S3_CA_BUNDLE, single PUTs, multipart uploads, ranged GETs and listings all go over TLS."""
    settings = make_settings(
        endpoint_url=tls_proxy.endpoint,
        ca_bundle=ca_pem,
        request_stack=request_stack,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
    )
    small, large = os.urandom(70_000), os.urandom(11 * MIB)  # large: three parts, up and down
    (settings.upload_dir_path / SMALL).write_bytes(small)
    (settings.upload_dir_path / LARGE).write_bytes(large)
    with Transport(settings) as t:
        assert type(t.requests).__name__ == {"crt": "CrtRequests", "botocore": "BotoRequests"}[request_stack]
        up_small, up_large = t.upload(SMALL), t.upload(LARGE)
        assert up_large.multipart
        keys = {node.path for node in Browser(transport=t).walk().iter_files()}
        assert keys == {up_small.key, up_large.key}
        assert t.download(Resource(SMALL, settings=settings)).read_bytes() == small
        assert t.download(Resource(LARGE, settings=settings)).read_bytes() == large
    assert tls_proxy.refused == 0
    plain = make_settings()  # behind the proxy, in plain HTTP
    assert object_bytes(plain, up_large.key) == large


@pytest.mark.parametrize("request_stack", ["crt", "botocore"])
def test_untrusted_certificate_is_one_clear_error(make_settings, tls_proxy, s3_server, bucket, request_stack):
    """Without the CA, an upload fails with a message that says what to set; the file stays, nothing is sent."""
    settings = make_settings(endpoint_url=tls_proxy.endpoint, request_stack=request_stack)
    data = os.urandom(10_000)
    (settings.upload_dir_path / SMALL).write_bytes(data)
    with Transport(settings) as t, pytest.raises(EndpointError) as info:
        t.upload(SMALL)
    message = str(info.value)
    assert ("TLS certificate is not trusted" in message) or ("certificate trusted?" in message)
    assert "S3_CA_BUNDLE" in message
    assert "\n" not in message
    wait_for(lambda: tls_proxy.refused >= 1, timeout=10)  # the proxy's side of the handshake, on its thread
    assert (settings.upload_dir_path / SMALL).read_bytes() == data
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_bundle_that_is_not_pem_is_a_configuration_error(tmp_path):
    """A CA bundle that OpenSSL cannot load stops the transport at once, naming the setting."""
    junk = tmp_path / "not-a-ca.pem"
    junk.write_text("not a certificate\n")
    settings = Settings(
        _env_file=None,
        bucket_name="tls",
        endpoint_url="https://127.0.0.1:9",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ca_bundle=junk,
        local_path=tmp_path / "mirror",
        upload_dir_path=tmp_path / "upload",
        state_path=tmp_path / "state.db",
    )
    with pytest.raises(ConfigurationError, match=r"^S3_CA_BUNDLE: cannot load CA certificates") as info:
        Transport(settings)
    assert info.value.exit_code == 2


def test_sync_command_honours_aws_ca_bundle(make_settings, tls_proxy, ca_pem, s3_server, bucket, tmp_path):
    """`s3sync sync` trusts botocore's AWS_CA_BUNDLE; without it, one line on stderr and exit 1."""
    settings = make_settings()
    (settings.upload_dir_path / SMALL).write_bytes(b"x" * 5000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
    env |= {
        "AWS_EC2_METADATA_DISABLED": "true",
        "S3_BUCKET_NAME": bucket,
        "S3_ENDPOINT_URL": tls_proxy.endpoint,
        "S3_AWS_ACCESS_KEY_ID": s3_server.access_key,
        "S3_AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "S3_REGION": s3_server.region,
        "S3_UPLOAD_DIR_PATH": str(settings.upload_dir_path),
        "S3_LOCAL_PATH": str(settings.local_path),
        "S3_STATE_PATH": str(settings.state_path),
        "S3_LOG_FORMAT": "json",
    }

    def sync(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "s3sync", "sync", "--upload-only"]
        return subprocess.run(argv, env=env | extra, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    refused = sync({})
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "S3_CA_BUNDLE" in refused.stderr
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    done = sync({"AWS_CA_BUNDLE": str(ca_pem)})
    assert done.returncode == 0, done.stderr
    assert object_bytes(settings, Resource(SMALL, settings=settings).key) == b"x" * 5000
