"""No secret in any log event, error message, `s3sync config` output or exception text."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync.errors import S3SyncError
from s3sync.logs import configure_logging
from s3sync.settings import load_settings
from s3sync.transport import Transport
from tests.integration.test_cli import env_for

ACCESS = "AKIASECRETACCESSKEY0123"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzSECRETKEY"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "s3sync", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    return r.stdout + r.stderr


def test_secrets_absent_from_every_output(make_settings, tmp_path):
    """Debug logs, failures against a wrong endpoint, bad settings and `config` never print the credentials."""
    settings = make_settings()
    env = env_for(settings, S3_LOG_LEVEL="debug", S3_LOG_FORMAT="json")
    env["S3_AWS_ACCESS_KEY_ID"] = ACCESS
    env["S3_AWS_SECRET_ACCESS_KEY"] = SECRET
    (settings.upload_dir_path / "B0001_S_1x1.jpg").write_bytes(b"x")
    outputs = [
        run(["--debug", "config"], env, tmp_path),
        run(["--debug", "sync"], env, tmp_path),  # access denied by the real server: the keys are wrong
        run(["--debug", "upload", str(settings.upload_dir_path / "B0001_S_1x1.jpg")], env, tmp_path),
        run(["--debug", "tree"], {**env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}"}, tmp_path),
        run(["config"], {**env, "S3_MAX_CONCURRENCY": SECRET}, tmp_path),  # a secret typed in the wrong place
        run(["config"], {**env, "S3_CATEGORY_MAP": '{"B": "' + SECRET + '"}'}, tmp_path),
    ]
    text = "\n".join(outputs)
    assert "error" in text  # the failures did happen and were reported
    assert ACCESS not in text
    assert SECRET not in text
    assert SECRET.split("/")[0] not in text


def test_exception_text_has_no_secret(make_settings):
    """Errors raised by the library carry no credential in their message or context."""
    settings = make_settings(
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        connect_timeout=1,
        max_attempts=1,
    )
    (settings.upload_dir_path / "B0001_E.jpg").write_bytes(b"x")
    with Transport(settings) as t, pytest.raises(S3SyncError) as info:
        t.upload("B0001_E.jpg")
    blob = f"{info.value} {info.value.context} {info.value.__cause__!r}"
    assert ACCESS not in blob
    assert SECRET not in blob


def test_settings_repr_and_validation_errors_hide_secrets(monkeypatch):
    """repr(Settings) masks the secret; a validation error next to it does not echo it."""
    monkeypatch.setenv("S3_AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("S3_AWS_ACCESS_KEY_ID", ACCESS)
    settings = load_settings(None)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.masked())
    monkeypatch.setenv("S3_LOCAL_PATH", SECRET)  # relative path: invalid, and must not be echoed
    with pytest.raises(S3SyncError) as info:
        load_settings(None)
    assert SECRET not in str(info.value)


def test_log_redaction_catches_stray_secret():
    """Even if code logged a secret by mistake, the configured redactor masks it."""
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream, secrets=[SECRET])
    import structlog

    structlog.get_logger("t").error("oops", detail={"nested": f"key={SECRET}"}, exc=RuntimeError(SECRET))
    out = stream.getvalue()
    assert "oops" in out
    assert SECRET not in out
    assert "********" in out
    configure_logging("json", "warning", stream=io.StringIO())
    os.environ.pop("S3_LOG_LEVEL", None)
