"""The test infrastructure itself: real servers, the fault proxy and the request counter.

Every fault kind is observed here with a plain boto3 client, so a test elsewhere that relies on
a fault can trust that the fault really happens on the wire.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from s3sync.settings import Settings
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.servers import CLIENT_CONFIG, RequestCounter, S3Server, SeaweedFSServer, find_rclone, find_weed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

NO_RETRY: dict[str, Any] = {"retries": {"mode": "standard", "total_max_attempts": 1}}
BODY = bytes(range(256)) * 40  # 10 KiB, every byte value


def everything(method: str, path: str, headers: Any) -> bool:
    """Match every request."""
    return True


def gets(method: str, path: str, headers: Any) -> bool:
    """Object GETs (not listings)."""
    return method == "GET" and "list-type" not in path


def puts(method: str, path: str, headers: Any) -> bool:
    """PUTs (objects, parts, buckets)."""
    return method == "PUT"


@pytest.fixture
def open_client(s3_server: S3Server) -> Iterator[Callable[..., S3Client]]:
    """Factory of clients for the current server (optionally through another endpoint), closed at teardown."""
    made: list[S3Client] = []

    def make(endpoint_url: str | None = None, **config: Any) -> S3Client:
        client = s3_server.client(endpoint_url, **config)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def direct(open_client: Callable[..., S3Client]) -> S3Client:
    """A client straight to the server."""
    return open_client()


@pytest.fixture
def via(open_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> S3Client:
    """A client through the fault proxy, with no retry, so each fault surfaces as one error."""
    return open_client(fault_proxy.endpoint, read_timeout=5, **NO_RETRY)


# --- servers ---------------------------------------------------------------------------------


def test_server_is_loopback_http_and_serves_buckets(s3_server: S3Server, direct: S3Client, bucket: str) -> None:
    """The server listens on 127.0.0.1 over plain HTTP, and the fresh bucket is listed."""
    assert s3_server.endpoint == f"http://127.0.0.1:{s3_server.port}"
    assert s3_server.running
    assert s3_server.kind in {"moto", "rclone"}
    assert bucket in [b["Name"] for b in direct.list_buckets()["Buckets"]]
    assert 3 <= len(bucket) <= 63
    assert bucket == bucket.lower()


def test_restart_keeps_port_and_documented_persistence(s3_server: S3Server, direct: S3Client, bucket: str) -> None:
    """restart() comes back on the same port; rclone keeps objects, moto loses them."""
    direct.put_object(Bucket=bucket, Key="kept/one.bin", Body=BODY)
    port, pid = s3_server.port, s3_server.pid
    s3_server.restart()
    assert s3_server.port == port
    assert s3_server.endpoint.endswith(f":{port}")
    assert s3_server.pid != pid
    if s3_server.persistent:
        assert direct.get_object(Bucket=bucket, Key="kept/one.bin")["Body"].read() == BODY
    else:
        with pytest.raises(ClientError) as err:
            direct.head_object(Bucket=bucket, Key="kept/one.bin")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_stopped_server_refuses_then_start_serves_again(
    s3_server: S3Server, open_client: Callable[..., S3Client]
) -> None:
    """After stop() the port refuses connections; start() brings the server back on it."""
    client = open_client(**NO_RETRY)
    s3_server.stop()
    try:
        assert not s3_server.running
        with pytest.raises(EndpointConnectionError):
            client.list_buckets()
    finally:
        s3_server.start()
    assert "Buckets" in client.list_buckets()


def test_rclone_checks_signatures(rclone_server: S3Server) -> None:
    """rclone serve s3 refuses a request signed with the wrong secret (SigV4 is really checked)."""
    session = boto3.session.Session(
        aws_access_key_id=rclone_server.access_key, aws_secret_access_key="x" * 40, region_name="us-east-1"
    )
    client = session.client("s3", endpoint_url=rclone_server.endpoint, config=CLIENT_CONFIG)
    try:
        with pytest.raises(ClientError) as err:
            client.list_buckets()
    finally:
        client.close()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_find_rclone_prefers_the_venv_binary() -> None:
    """The rclone binary next to the running Python is found first."""
    found = Path(find_rclone())
    assert found.name == "rclone"
    assert os.access(found, os.X_OK)
    beside = Path(sys.executable).parent / "rclone"
    if beside.exists():
        assert found == beside


def test_seaweedfs_checks_signatures_keeps_metadata_and_leaves_nothing_behind() -> None:
    """weed mini: SigV4 checked, objects and metadata survive a crash, close() removes its /tmp sockets."""
    server = SeaweedFSServer()
    assert Path(find_weed()).name == "weed"
    with server:
        client = server.client()
        try:
            server.create_bucket("sw-check")
            client.put_object(Bucket="sw-check", Key="a/b.jpg", Body=BODY, Metadata={"sha256": "x"})
            server.restart(kill=True)
            head = client.head_object(Bucket="sw-check", Key="a/b.jpg")
            assert head["Metadata"] == {"sha256": "x"}
            assert client.get_object(Bucket="sw-check", Key="a/b.jpg")["Body"].read() == BODY
        finally:
            client.close()
        session = boto3.session.Session(
            aws_access_key_id=server.access_key, aws_secret_access_key="x" * 40, region_name="us-east-1"
        )
        wrong = session.client("s3", endpoint_url=server.endpoint, config=CLIENT_CONFIG)
        try:
            with pytest.raises(ClientError) as err:
                wrong.list_buckets()
        finally:
            wrong.close()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert list(server.workdir.glob("weed.*")), "glog files belong in the work folder"
        ports = {str(server.port), *map(str, server.ports.values())}
        assert server.version()[0].isdigit()
    assert not server.workdir.exists()
    assert not [p for p in Path("/tmp").glob("seaweedfs-*.sock") if p.stem.rsplit("-", 1)[-1] in ports]


def test_make_settings_points_at_server_and_creates_folders(
    make_settings: Callable[..., Settings], s3_server: S3Server, bucket: str
) -> None:
    """make_settings wires the server, keys and bucket, creates the folders, and applies overrides."""
    settings = make_settings(max_attempts=1)
    assert settings.endpoint_url == s3_server.endpoint
    assert settings.bucket_name == bucket
    assert settings.aws_secret_access_key is not None
    assert settings.aws_secret_access_key.get_secret_value() == s3_server.secret_key
    assert settings.upload_dir_path.is_dir()
    assert settings.local_path.is_dir()
    assert settings.max_attempts == 1
    assert settings.region == "us-east-1"


def test_environment_is_clean() -> None:
    """No S3_* or AWS_* variable reaches a test except the ones that keep boto3 off the network."""
    leaked = {k for k in os.environ if k.startswith(("S3_", "AWS_"))}
    assert leaked == {"AWS_EC2_METADATA_DISABLED", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"}
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"


# --- request counter -------------------------------------------------------------------------


def test_request_counter_counts_calls_and_attempts(direct: S3Client, bucket: str) -> None:
    """RequestCounter counts operations by name; reset() zeroes, detach() stops counting."""
    counter = RequestCounter(direct)
    direct.put_object(Bucket=bucket, Key="a", Body=b"1")
    direct.put_object(Bucket=bucket, Key="b", Body=b"2")
    direct.get_object(Bucket=bucket, Key="a")["Body"].read()
    direct.head_object(Bucket=bucket, Key="b")
    direct.list_objects_v2(Bucket=bucket)
    assert counter.count("PutObject") == 2
    assert counter.attempts("PutObject") == 2
    assert (counter.count("GetObject"), counter.count("HeadObject"), counter.count("ListObjectsV2")) == (1, 1, 1)
    assert counter.count() == 5
    counter.reset()
    assert counter.count() == 0
    assert counter.count("PutObject") == 0
    counter.detach()
    direct.head_object(Bucket=bucket, Key="a")
    assert counter.count() == 0


def test_request_counter_sees_multipart_parts_through_proxy(
    open_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A 6 MiB multipart upload through the proxy arrives intact; the counter sees each UploadPart."""
    from boto3.s3.transfer import TransferConfig

    client = open_client(fault_proxy.endpoint)
    counter = RequestCounter(client)
    data = os.urandom(6 * 1024 * 1024 + 123)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    mib5 = 5 * 1024 * 1024
    client.upload_file(
        str(source), bucket, "big.bin", Config=TransferConfig(multipart_threshold=mib5, multipart_chunksize=mib5)
    )
    assert counter.count("CreateMultipartUpload") == 1
    assert counter.count("UploadPart") == 2
    assert counter.count("CompleteMultipartUpload") == 1
    assert counter.count("PutObject") == 0
    assert client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
    assert fault_proxy.count("PUT", "uploadId=") == 2


# --- the proxy without faults ----------------------------------------------------------------


def test_round_trip_through_proxy_is_recorded(via: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """PUT then GET through the proxy returns the same bytes, and both requests are recorded."""
    via.put_object(Bucket=bucket, Key="dir/a b.bin", Body=BODY)
    assert via.get_object(Bucket=bucket, Key="dir/a b.bin")["Body"].read() == BODY
    seen = fault_proxy.requests
    assert ("PUT", f"/{bucket}/dir/a%20b.bin") in seen
    assert ("GET", f"/{bucket}/dir/a%20b.bin") in seen
    assert fault_proxy.hits == 0


def test_keep_alive_connection_is_reused(
    s3_server: S3Server, via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """Sequential requests reuse one connection through the proxy without stalling (moto closes each one)."""
    direct.put_object(Bucket=bucket, Key="k", Body=b"k")
    started = time.monotonic()
    for _ in range(10):
        assert via.head_object(Bucket=bucket, Key="k")["ContentLength"] == 1
    assert time.monotonic() - started < 5.0
    # moto_server (werkzeug) answers every request with "Connection: close"; rclone keeps it alive.
    assert fault_proxy.connections == (10 if s3_server.kind == "moto" else 1)
    assert fault_proxy.count("HEAD") == 10


def test_listing_through_proxy_equals_direct(via: S3Client, direct: S3Client, bucket: str) -> None:
    """A listing too big for one buffered write (chunked on rclone) comes through the proxy unchanged."""
    for i in range(40):
        direct.put_object(Bucket=bucket, Key=f"folder/with/a/rather/long/key/name/number-{i:04d}.jpg", Body=b"x")
    through = via.list_objects_v2(Bucket=bucket)
    straight = direct.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in through["Contents"]] == [o["Key"] for o in straight["Contents"]]
    assert len(through["Contents"]) == 40


def test_proxy_stop_joins_threads_and_frees_port(s3_server: S3Server, direct: S3Client, bucket: str) -> None:
    """stop() ends every proxy thread and closes the port, even with an idle keep-alive connection open."""
    proxy = FaultProxy("127.0.0.1", s3_server.port).start()
    client = s3_server.client(proxy.endpoint, **NO_RETRY)
    try:
        client.list_objects_v2(Bucket=bucket)  # leaves a pooled keep-alive connection
    finally:
        proxy.stop()
        client.close()
    alive = [t.name for t in threading.enumerate() if t.name.startswith(f"faultproxy-{proxy.port}")]
    assert alive == []
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", proxy.port), timeout=1):
        pass


# --- each fault kind -------------------------------------------------------------------------


def test_reset_request_aborts_put_and_stores_nothing(
    via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """reset_request cuts the PUT mid-body: the client gets a connection error and no object exists."""
    fault_proxy.set_faults([Fault("reset_request", match=puts)])
    with pytest.raises(ConnectionClosedError):
        via.put_object(Bucket=bucket, Key="never", Body=BODY)
    assert fault_proxy.hits == 1
    with pytest.raises(ClientError) as err:
        direct.head_object(Bucket=bucket, Key="never")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_reset_response_after_put_lands(via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """reset_response on a PUT: the object is stored upstream but the client sees a broken connection."""
    fault_proxy.set_faults([Fault("reset_response", match=puts)])
    with pytest.raises(ConnectionClosedError):
        via.put_object(Bucket=bucket, Key="landed", Body=BODY)
    assert direct.get_object(Bucket=bucket, Key="landed")["Body"].read() == BODY


def test_reset_response_mid_body_breaks_get(
    via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """reset_response on a GET: headers arrive, then the body stream is reset half-way."""
    direct.put_object(Bucket=bucket, Key="obj", Body=BODY)
    fault_proxy.set_faults([Fault("reset_response", match=gets)])
    response = via.get_object(Bucket=bucket, Key="obj")
    assert response["ContentLength"] == len(BODY)
    with pytest.raises(ResponseStreamingError):
        response["Body"].read()


def test_delay_beyond_read_timeout(open_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str) -> None:
    """delay holds the answer: a client with a shorter read timeout times out."""
    client = open_client(fault_proxy.endpoint, read_timeout=0.3, **NO_RETRY)
    fault_proxy.set_faults([Fault("delay", match=everything, seconds=1.0, times=1)])
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.list_objects_v2(Bucket=bucket)
    assert 0.25 <= time.monotonic() - started < 1.0
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)  # times=1: the next one is on time


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_status_fault_is_an_s3_error(
    via: S3Client, fault_proxy: FaultProxy, bucket: str, status: int, code: str
) -> None:
    """status answers 503 SlowDown / 500 InternalError without forwarding; without retries it is a ClientError."""
    fault_proxy.set_faults([Fault("status", match=puts, status=status)])
    with pytest.raises(ClientError) as err:
        via.put_object(Bucket=bucket, Key="k", Body=BODY)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    fault_proxy.clear_faults()
    with pytest.raises(ClientError):  # never forwarded: nothing was stored
        via.head_object(Bucket=bucket, Key="k")


def test_status_fault_once_is_retried_by_default_client(
    open_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    """One 503 with the default two attempts: the call succeeds, after two HTTP requests."""
    client = open_client(fault_proxy.endpoint)
    counter = RequestCounter(client)
    fault_proxy.set_faults([Fault("status", match=puts, status=503, times=1)])
    client.put_object(Bucket=bucket, Key="retried", Body=BODY)
    assert counter.count("PutObject") == 1
    assert counter.attempts("PutObject") == 2
    assert fault_proxy.count("PUT", "/retried") == 2


def test_status_fault_on_head_has_no_body(
    via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """An injected error for HEAD carries no body, so the keep-alive connection stays usable."""
    direct.put_object(Bucket=bucket, Key="h", Body=b"h")
    fault_proxy.set_faults([Fault("status", match=lambda m, p, h: m == "HEAD", status=503, times=1)])
    with pytest.raises(ClientError) as err:
        via.head_object(Bucket=bucket, Key="h")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    for _ in range(3):
        assert via.head_object(Bucket=bucket, Key="h")["ContentLength"] == 1


def test_clock_skew_is_request_time_too_skewed(via: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """clock_skew answers 403 RequestTimeTooSkewed."""
    fault_proxy.set_faults([Fault("clock_skew")])
    with pytest.raises(ClientError) as err:
        via.list_objects_v2(Bucket=bucket)
    assert err.value.response["Error"]["Code"] == "RequestTimeTooSkewed"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_flip_byte_changes_one_body_byte(via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """flip_byte returns a body of the same length that differs from the stored one in exactly one byte."""
    direct.put_object(Bucket=bucket, Key="obj", Body=BODY)
    fault_proxy.set_faults([Fault("flip_byte", match=gets)])
    got = via.get_object(Bucket=bucket, Key="obj")["Body"].read()
    assert len(got) == len(BODY)
    assert sum(a != b for a, b in zip(got, BODY, strict=True)) == 1
    assert direct.get_object(Bucket=bucket, Key="obj")["Body"].read() == BODY


def test_truncate_cuts_the_body(via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """truncate sends fewer bytes than Content-Length and closes: reading the body fails."""
    direct.put_object(Bucket=bucket, Key="obj", Body=BODY)
    fault_proxy.set_faults([Fault("truncate", match=gets)])
    response = via.get_object(Bucket=bucket, Key="obj")
    assert response["ContentLength"] == len(BODY)
    with pytest.raises(ResponseStreamingError):
        response["Body"].read()


# --- rule selection ---------------------------------------------------------------------------


def test_match_targets_second_listing_page(
    via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """A rule matching continuation-token fails page two of ListObjectsV2 and leaves page one alone."""
    for key in ("a", "b", "c"):
        direct.put_object(Bucket=bucket, Key=key, Body=b"x")
    fault_proxy.set_faults([Fault("status", match=lambda m, p, h: "continuation-token=" in p, status=500)])
    first = via.list_objects_v2(Bucket=bucket, MaxKeys=1)
    assert [o["Key"] for o in first["Contents"]] == ["a"]
    assert first["IsTruncated"]
    with pytest.raises(ClientError) as err:
        via.list_objects_v2(Bucket=bucket, MaxKeys=1, ContinuationToken=first["NextContinuationToken"])
    assert err.value.response["Error"]["Code"] == "InternalError"
    assert fault_proxy.hits == 1


def test_times_limits_hits(via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """A rule with times=3 fails exactly the first three matching requests."""
    direct.put_object(Bucket=bucket, Key="obj", Body=b"x")
    rule = Fault("status", match=gets, times=3)
    fault_proxy.set_faults([rule])
    outcomes = []
    for _ in range(6):
        try:
            via.get_object(Bucket=bucket, Key="obj")["Body"].read()
            outcomes.append(True)
        except ClientError:
            outcomes.append(False)
    assert outcomes == [False, False, False, True, True, True]
    assert rule.hits == 3


def test_probability_is_deterministic_with_a_seed(
    via: S3Client, direct: S3Client, fault_proxy: FaultProxy, bucket: str
) -> None:
    """The same seed gives the same pattern of faults; a different seed gives another one."""
    direct.put_object(Bucket=bucket, Key="obj", Body=b"x")

    def pattern(seed: int) -> list[bool]:
        fault_proxy.set_faults([Fault("status", match=gets, probability=0.5, seed=seed)])
        out = []
        for _ in range(16):
            try:
                via.get_object(Bucket=bucket, Key="obj")["Body"].read()
                out.append(True)
            except ClientError:
                out.append(False)
        return out

    first, again, other = pattern(1), pattern(1), pattern(2)
    assert first == again
    assert first != other
    assert 0 < first.count(False) < 16


def test_unknown_fault_kind_is_refused() -> None:
    """A misspelt kind fails at construction, not silently at run time."""
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("reset")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        Fault("delay", probability=1.5)


def test_pause_refuses_connections_and_resume_keeps_port(via: S3Client, fault_proxy: FaultProxy, bucket: str) -> None:
    """pause() makes the endpoint refuse connections (cutting pooled ones); resume() serves on the same port."""
    port = fault_proxy.port
    via.list_objects_v2(Bucket=bucket)  # a pooled connection that pause() must cut
    fault_proxy.pause()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        via.list_objects_v2(Bucket=bucket)
    fault_proxy.resume()
    assert fault_proxy.port == port
    assert "Contents" not in via.list_objects_v2(Bucket=bucket)


def test_match_error_is_recorded_not_hidden(s3_server: S3Server, bucket: str) -> None:
    """A rule whose match raises drops that request and is recorded in proxy.errors."""

    def broken(method: str, path: str, headers: Any) -> bool:
        raise KeyError("oops")

    with FaultProxy("127.0.0.1", s3_server.port) as proxy:
        proxy.set_faults([Fault("status", match=broken)])
        with (
            contextlib.closing(s3_server.client(proxy.endpoint, **NO_RETRY)) as client,
            pytest.raises(ConnectionClosedError),
        ):
            client.list_objects_v2(Bucket=bucket)
    assert [type(e) for e in proxy.errors] == [KeyError]
