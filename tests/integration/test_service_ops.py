"""Running as a service: sd_notify over a real socket, the watchdog gate, /metrics and /healthz, `s3sync status`."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3sync.resource import Resource
from s3sync.service import Service
from s3sync.transport import make_client
from tests.integration.daemon_helpers import wait_for
from tests.integration.test_cli import env_for, s3sync
from tests.support.faultproxy import Fault

NAME = "CF0001_NOTIFY_1x1.jpg"


class NotifySocket:
    """A real AF_UNIX datagram socket, as systemd binds for ``NOTIFY_SOCKET``; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        """Every ``KEY=value`` line received, in order."""
        with self._lock:
            return [line for _, msg in self.messages for line in msg.split("\n")]

    def times_of(self, line: str) -> list[float]:
        """When ``line`` arrived, each time."""
        with self._lock:
            return [t for t, msg in self.messages if line in msg.split("\n")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def first_index(lines: list[str], prefix: str, start: int = 0) -> int:
    """Index of the first line at or after ``start`` that starts with ``prefix``."""
    for i in range(start, len(lines)):
        if lines[i].startswith(prefix):
            return i
    raise AssertionError(f"no {prefix!r} after line {start} in {lines!r}")


def test_notify_sequence_over_a_real_socket(make_settings, notify_socket, tmp_path):
    """`s3sync run` under Type=notify: READY, STATUS, WATCHDOG, RELOADING/READY on SIGHUP, STOPPING, in order."""
    settings = make_settings(settle_seconds=0.2, mirror_interval=1)
    env = env_for(
        settings,
        NOTIFY_SOCKET=str(notify_socket.path),
        WATCHDOG_USEC="1000000",  # pings every 0.5 s
        S3_LOG_FORMAT="json",
    )
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "s3sync", "run"], env=env, cwd=tmp_path, stderr=log)
        try:
            wait_for(lambda: "READY=1" in notify_socket.lines(), timeout=30)
            (settings.upload_dir_path / NAME).write_bytes(b"notify me")
            wait_for(lambda: any("uploaded 1" in x for x in notify_socket.lines() if x.startswith("STATUS=")), 30)
            wait_for(lambda: len(notify_socket.times_of("WATCHDOG=1")) >= 3, timeout=10)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "RELOADING=1" in notify_socket.lines(), timeout=30)
            wait_for(lambda: notify_socket.lines().count("READY=1") >= 2, timeout=30)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = notify_socket.lines()
    ready = first_index(lines, "READY=1")
    status = first_index(lines, "STATUS=", ready)
    watchdog = first_index(lines, "WATCHDOG=1", ready)
    reloading = first_index(lines, "RELOADING=1", max(status, watchdog))
    ready_again = first_index(lines, "READY=1", reloading)
    stopping = first_index(lines, "STOPPING=1", ready_again)
    assert stopping == max(i for i, line in enumerate(lines) if line.startswith(("READY=", "RELOADING=", "STOPPING=")))
    reload_msg = next(msg for _, msg in notify_socket.messages if "RELOADING=1" in msg)
    assert "MONOTONIC_USEC=" in reload_msg  # what Type=notify-reload managers require with RELOADING=1
    status_line = next(line for line in lines if line.startswith("STATUS=") and "uploaded 1" in line)
    assert "queued" in status_line
    assert "last mirror" in status_line
    assert "\n" not in status_line
    assert (
        make_client(settings)
        .get_object(Bucket=settings.require_bucket(), Key=Resource(NAME, settings=settings).key)["Body"]
        .read()
        == b"notify me"
    )
    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert events.count("daemon.ready") == 2  # once at start, once after the reload
    assert events[-1] == "daemon.stopped"


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (4xx/5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL of our own server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    """The value of one sample line ``name value`` in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_hung_loop_stops_watchdog_pings_and_fails_healthz(make_settings, fault_proxy, notify_socket):
    """A mirror pass stuck in a LIST stops WATCHDOG=1 and turns /healthz to 503; both recover with the loop."""
    settings = make_settings(
        endpoint_url=fault_proxy.endpoint,
        settle_seconds=0.1,
        mirror_interval=1,
        loop_stall_seconds=1.5,
        read_timeout=30,
        metrics_addr="127.0.0.1:0",
    )
    environ = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}  # a ping per 0.2 s
    service = Service(settings, environ=environ)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: "READY=1" in notify_socket.lines(), timeout=30)
        assert service.metrics_server is not None
        base = f"http://{service.metrics_server.address}"
        (settings.upload_dir_path / NAME).write_bytes(b"metrics")
        wait_for(lambda: get(base + "/healthz")[0] == 200, timeout=30)
        wait_for(lambda: 'outcome="succeeded"} 1.0' in get(base + "/metrics")[1], timeout=30)
        status, text = get(base + "/metrics")
        assert status == 200
        assert metric(text, 's3sync_uploads_total{outcome="succeeded"}') == 1.0
        assert metric(text, "s3sync_upload_bytes_total") == len(b"metrics")
        assert metric(text, 's3sync_transfer_seconds_count{direction="upload"}') == 1.0
        assert metric(text, "s3sync_queue_depth") >= 0
        assert 0 <= metric(text, "s3sync_seconds_since_last_mirror") < 60
        assert metric(text, "s3sync_seconds_since_rescan") >= 0
        assert metric(text, "s3sync_seconds_since_watcher_event") >= 0
        assert get(base + "/nope")[0] == 404

        # The next listing is held by the proxy for 8 s: the mirror loop hangs inside a request.
        fault_proxy.set_faults([Fault("delay", match=lambda m, p, h: "list-type" in p, seconds=8, times=1)])
        wait_for(lambda: get(base + "/healthz")[0] == 503, timeout=20)
        code, body = get(base + "/healthz")
        assert code == 503
        assert "mirror loop is stuck" in json.loads(body)["reasons"]
        stuck_at = time.monotonic()
        time.sleep(1.0)
        assert not [t for t in notify_socket.times_of("WATCHDOG=1") if t > stuck_at], "pings went on while stuck"
        wait_for(lambda: get(base + "/healthz")[0] == 200, timeout=30)  # the LIST answered; the loop ticks again
        resumed_at = time.monotonic()
        wait_for(lambda: [t for t in notify_socket.times_of("WATCHDOG=1") if t > resumed_at], timeout=5)
    finally:
        stop.set()
        thread.join(timeout=30)
    pings = notify_socket.times_of("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) > 2.0  # the hang shows as a hole in the pings, which systemd's WatchdogSec= would catch
    assert sorted(gaps)[len(gaps) // 2] < 0.5  # otherwise every 0.2 s
    assert "STOPPING=1" in notify_socket.lines()


def test_status_command_reports_health_from_the_state_database(make_settings, tmp_path):
    """`s3sync status` reads the daemon's last snapshot: counts, mirror age, and why it is unhealthy."""
    settings = make_settings(settle_seconds=0.1, mirror_interval=1)
    env = env_for(settings)
    missing = s3sync("status", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no state database" in missing.stderr
    proc = subprocess.Popen([sys.executable, "-m", "s3sync", "run"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        (settings.upload_dir_path / NAME).write_bytes(b"status")

        def healthy_with_upload() -> dict[str, object] | None:
            r = s3sync("status", "--json", env=env, cwd=tmp_path)
            snap = json.loads(r.stdout) if r.stdout.strip() else {}
            return snap if r.returncode == 0 and snap.get("uploaded") == 1 else None

        snap = wait_for(healthy_with_upload, timeout=60, interval=0.5)
        assert snap["healthy"] is True
        assert snap["state"] == "running"
        assert snap["recorded_uploaded"] == 1
        assert snap["last_mirror_ok"] is not None
        table = s3sync("status", env=env, cwd=tmp_path)
        assert table.returncode == 0
        assert "healthy" in table.stdout
        assert "yes" in table.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    after = s3sync("status", "--json", env=env, cwd=tmp_path)
    assert after.returncode == 1
    snap = json.loads(after.stdout)
    assert snap["state"] == "stopped"
    assert snap["problems"] == ["the daemon is not running (it stopped cleanly)"]
