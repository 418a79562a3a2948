"""Fixtures: real S3 servers on loopback (moto_server, rclone serve s3, SeaweedFS), fresh buckets, settings.

Each kind of server is started at most once per test session (lazily, by the first test that
needs it), shared by every fixture that asks for it, and stopped when the session ends. A test
that stops or restarts a server gets it running again for the next test, on the same port.

A test that uses ``s3_server`` runs once per kind in :data:`SERVER_KINDS` (moto, rclone). A module
that marks itself ``pytestmark = pytest.mark.servers("moto", "rclone", "seaweedfs")`` runs on those
kinds instead: the third server costs CI time, so it goes where the transfers are (transport,
mirror, daemon, faults). A test's own ``parametrize("s3_server", [...], indirect=True)`` wins.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3sync.logs import configure_logging
from s3sync.settings import Settings
from tests.support.faultproxy import FaultProxy
from tests.support.servers import MotoServer, RcloneServer, S3Server, SeaweedFSServer

#: The servers every ``s3_server`` test runs on.
SERVER_KINDS = ("moto", "rclone")
#: Every kind a module may ask for with ``pytest.mark.servers(...)``.
SERVER_CLASSES: dict[str, type[S3Server]] = {"moto": MotoServer, "rclone": RcloneServer, "seaweedfs": SeaweedFSServer}

# Module-level, not fixture-level: pytest tears down a parametrized session fixture's instance
# when it moves to the next parameter; the cache keeps both servers alive for the whole session.
_SERVERS: dict[str, S3Server] = {}

# Variables of the developer's shell that must not reach a test (nor a server it starts).
_LEAKY_NAMES = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"}


def _server(kind: str) -> S3Server:
    """The session's server of ``kind``: started on first use, restarted if a test left it stopped."""
    server = _SERVERS.get(kind)
    if server is None:
        server = SERVER_CLASSES[kind]()
        _SERVERS[kind] = server
    if not server.running:
        server.start()
    return server


@pytest.fixture(scope="session")
def _server_pool() -> Iterator[dict[str, S3Server]]:
    """Owns the session's servers: closes them (process and temp folder) when the session ends."""
    yield _SERVERS
    for server in list(_SERVERS.values()):
        server.close()
    _SERVERS.clear()


@pytest.fixture(autouse=True)
def _servers_running() -> None:
    """A test that stopped a shared server and failed before starting it leaves it stopped: fix that."""
    for server in _SERVERS.values():
        if not server.running:
            server.start()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No S3_*/AWS_* setting of the developer's leaks into a test; boto3 never probes the network."""
    for name in list(os.environ):
        if name.startswith(("S3_", "AWS_")) or name in _LEAKY_NAMES:
            monkeypatch.delenv(name, raising=False)
    # No instance-metadata probe (169.254.169.254), no shared config/credentials files.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (pytest swaps it for each test's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _daemon_logging() -> None:
    """Every test starts with the daemon's own logging: JSON lines at info, through the redactor.

    Not structlog's unconfigured default (a console renderer, several times slower per event),
    which no s3sync process ever uses. A test that captures events still sees every one.
    """
    configure_logging(fmt="json", level="info", stream=_CurrentStderr())  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "servers(*kinds): run this module's s3_server tests on these kinds (moto, rclone, seaweedfs)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``s3_server`` over the module's ``servers`` mark, else :data:`SERVER_KINDS`."""
    if "s3_server" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "s3_server" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return  # the test chose its servers itself
    mark = metafunc.definition.get_closest_marker("servers")
    kinds = tuple(mark.args) if mark is not None else SERVER_KINDS
    unknown = set(kinds) - set(SERVER_CLASSES)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown server kinds {sorted(unknown)}")
    metafunc.parametrize("s3_server", kinds, ids=kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest, _server_pool: dict[str, S3Server]) -> S3Server:
    """Each real server in turn (see :func:`pytest_generate_tests`), each started once per session."""
    return _server(str(request.param))


@pytest.fixture(scope="session")
def moto_only_server(_server_pool: dict[str, S3Server]) -> S3Server:
    """moto_server only: for tests that need AWS semantics (e.g. keys rclone refuses)."""
    return _server("moto")


@pytest.fixture(scope="session")
def rclone_server(_server_pool: dict[str, S3Server]) -> S3Server:
    """rclone serve s3 only: for tests that need persistence across a restart, or speed."""
    return _server("rclone")


@pytest.fixture(scope="session")
def server_pair(_server_pool: dict[str, S3Server]) -> tuple[S3Server, S3Server]:
    """Both servers, (moto, rclone), for tests comparing behaviour."""
    return _server("moto"), _server("rclone")


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, uniquely named bucket on the current server (``t-`` + 12 hex digits)."""
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the current server, with no faults until a test sets some."""
    proxy = FaultProxy("127.0.0.1", s3_server.port, seed=7).start()
    yield proxy
    proxy.stop()
    assert proxy.errors == [], f"the fault proxy itself failed: {proxy.errors!r}"


@pytest.fixture
def make_settings(s3_server: S3Server, bucket: str, tmp_path: Path) -> Callable[..., Settings]:
    """Factory ``make_settings(**overrides) -> Settings`` for the current server and bucket.

    Folders live under ``tmp_path`` (``mirror``, ``upload``, ``state/state.db``); the upload and
    mirror folders are created. No ``.env`` file is read.
    """

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
        settings.local_path.mkdir(parents=True, exist_ok=True)
        return settings

    return make
