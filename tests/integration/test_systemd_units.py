"""The unit files: systemd-analyze verify, the security exposure, and settings consistent with the daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync.settings import Settings
from tests.integration.test_cli import env_for

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"s3sync.service": "s3sync.service", "s3sync@.service": "s3sync@catalogue.service"}
MAX_EXPOSURE = 2.0


def analyze() -> str:
    """systemd-analyze; .ci/systemd-deps.sh installs it where the machine lacks it."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: run .ci/systemd-deps.sh (scripts/test does)"
    return tool


def directives(unit: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, comments dropped, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def installed_copy(unit: str, name: str, tmp_path: Path) -> Path:
    """The unit as an operator installs it: ExecStart pointing at a real s3sync executable."""
    exe = Path(sys.executable).with_name("s3sync")
    assert exe.exists(), f"{exe} missing: is s3sync installed in this environment?"
    text = (ROOT / "systemd" / unit).read_text().replace("/opt/s3sync/bin/s3sync", str(exe))
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify_passes(unit, tmp_path):
    """`systemd-analyze verify` finds nothing to complain about (the template as an instance)."""
    path = installed_copy(unit, UNITS[unit], tmp_path)
    r = subprocess.run([analyze(), "verify", str(path)], capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if UNITS[unit] in line or "s3sync" in line]
    assert r.returncode == 0, r.stdout + r.stderr
    assert complaints == []


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_security_exposure_is_at_most_2(unit, tmp_path):
    """`systemd-analyze security --offline=true` rates the hardening 2.0 or better."""
    path = installed_copy(unit, UNITS[unit], tmp_path)
    r = subprocess.run(
        [analyze(), "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, r.stdout


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_matches_the_daemon(unit):
    """Type=notify with a watchdog; stop timeout above S3_SHUTDOWN_TIMEOUT; secrets as credentials, not env."""
    d = directives(unit)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # The daemon reads the settings file itself, so that a reload (SIGHUP) re-reads it; an
    # EnvironmentFile= would leave the values of the start in the environment.
    env_file = "/etc/s3sync/s3sync.env" if unit == "s3sync.service" else "/etc/s3sync/%i.env"
    assert d["ExecStart"] == [f"/opt/s3sync/bin/s3sync run --env-file {env_file}"]
    assert "EnvironmentFile" not in d
    watchdog = int(d["WatchdogSec"][0].removesuffix("s"))
    stop = int(d["TimeoutStopSec"][0].removesuffix("s"))
    default_shutdown = Settings.model_fields["shutdown_timeout"].default
    default_stall = Settings.model_fields["loop_stall_seconds"].default
    assert stop > default_shutdown + 5  # in-flight uploads get S3_SHUTDOWN_TIMEOUT, then a clean exit
    assert watchdog >= default_stall  # a loop is declared hung by s3sync before systemd gives up on pings
    creds = {v.split(":", 1)[0] for v in d["LoadCredential"]}
    assert creds == {"S3_AWS_ACCESS_KEY_ID", "S3_AWS_SECRET_ACCESS_KEY"}
    assert not any("SECRET" in v or "ACCESS_KEY" in v for v in d.get("Environment", []))
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "MemoryDenyWriteExecute"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["CapabilityBoundingSet"] == [""]
    state = next(v for v in d["Environment"] if v.startswith("S3_STATE_PATH="))
    assert state.startswith("S3_STATE_PATH=%S/s3sync/")  # inside StateDirectory=, the only writable state
    assert d["StateDirectory"][0].startswith("s3sync")
    writable = d["ReadWritePaths"][0]
    for var in ("S3_UPLOAD_DIR_PATH", "S3_LOCAL_PATH"):
        folder = next(v for v in d["Environment"] if v.startswith(var + "=")).split("=", 1)[1]
        assert folder.startswith(writable + "/")


def test_daemon_runs_with_memory_deny_write_execute(make_settings, tmp_path):
    """MemoryDenyWriteExecute=yes does not break s3sync: a sync under the kernel's MDWE prctl succeeds."""
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes; print(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "0":
        pytest.skip(f"this kernel has no PR_SET_MDWE (prctl returned {probe.stdout.strip()!r})")
    settings = make_settings()
    (settings.upload_dir_path / "B0001_MDWE.jpg").write_bytes(b"x" * 1000)
    code = (
        "import ctypes, sys; assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0;"
        "import watchdog.observers.inotify; from s3sync.cli import main; sys.argv = ['s3sync', 'sync']; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env_for(settings), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "uploaded 1" in r.stderr
