"""Fixtures: real S3 servers on loopback (moto_server and rclone serve s3), fresh buckets, settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3sync.settings import Settings
from tests.support.servers import MotoServer, RcloneServer, S3Server

_SERVERS: dict[str, S3Server] = {}


def _server(kind: str) -> S3Server:
    if kind not in _SERVERS:
        _SERVERS[kind] = (MotoServer() if kind == "moto" else RcloneServer()).start()
    return _SERVERS[kind]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop every server started for the session."""
    for server in _SERVERS.values():
        server.cleanup()
    _SERVERS.clear()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No S3_*/AWS_* setting of the developer's leaks into a test; boto3 never probes the network."""
    for name in list(os.environ):
        if name.startswith(("S3_", "AWS_")) or name in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "CREDENTIALS_DIRECTORY"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(params=["moto", "rclone"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real server in turn (started once per session)."""
    return _server(str(request.param))


@pytest.fixture
def moto_only_server() -> S3Server:
    """moto_server: for tests that need AWS semantics (e.g. keys rclone refuses)."""
    return _server("moto")


@pytest.fixture
def rclone_server() -> S3Server:
    """rclone serve s3 only."""
    return _server("rclone")


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh bucket on the current server."""
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def make_settings(s3_server: S3Server, bucket: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the current server and bucket, with folders under tmp_path; overrides as keywords."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bucket_name": bucket,
            "endpoint_url": s3_server.endpoint,
            "aws_access_key_id": s3_server.access_key,
            "aws_secret_access_key": s3_server.secret_key,
            "region": s3_server.region,
            "local_path": tmp_path / "mirror",
            "upload_dir_path": tmp_path / "upload",
            "state_path": tmp_path / "state" / "state.db",
            "log_format": "json",
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        settings.upload_dir_path.mkdir(parents=True, exist_ok=True)
        return settings

    return make


@pytest.fixture
def server_pair() -> Iterator[tuple[S3Server, S3Server]]:
    """Both servers (for tests comparing behaviour)."""
    yield _server("moto"), _server("rclone")
