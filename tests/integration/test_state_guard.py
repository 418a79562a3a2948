"""The state database is tied to its bucket and folders, used by one process, and recoverable.

Issue 17 items 6, 7, 10 and issue 18 item 9, through the real `s3sync` command against real
servers (through the fault proxy where PUTs are counted).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from s3sync.lock import StateLock
from s3sync.settings import Settings
from s3sync.transport import make_client
from tests.integration.daemon_helpers import object_bytes, wait_for
from tests.integration.test_cli import env_for, s3sync
from tests.support.faultproxy import FaultProxy
from tests.support.servers import S3Server

NAMES = ("CF0001_WHITE_320x320.jpg", "B0002_SKY.png", "F0003-1_RED_10x10.jpg")


def _key(name: str) -> str:
    code = name.split("0", 1)[0]
    category = {"CF": "CLIPPING-FLOWER", "B": "BACKGROUND", "F": "VASE"}[code]
    return f"{category}/{name.split('_', 1)[0]}/{name}"


def _drop_files(settings: Settings) -> dict[str, bytes]:
    files = {}
    for i, name in enumerate(NAMES):
        data = f"{name} {i} ".encode() * (100 + i)
        (settings.upload_dir_path / name).write_bytes(data)
        files[name] = data
    return files


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _human(stderr: str) -> list[str]:
    """The lines of stderr meant for a person (not JSON log events)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def _events(stderr: str, name: str) -> list[dict[str, object]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def test_bucket_switch_with_the_same_state_uploads_everything(s3_server: S3Server, make_settings, tmp_path):
    """staging -> production with one S3_STATE_PATH: every file reaches the new bucket, byte for byte."""
    staging = make_settings(mirror_interval=0)
    files = _drop_files(staging)
    first = s3sync("sync", "--upload-only", env=env_for(staging, S3_LOG_FORMAT="json"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert _human(first.stderr)[-1].startswith("uploaded 3 ")

    production = make_settings(mirror_interval=0, bucket_name=s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}"))
    assert production.state_path == staging.state_path
    second = s3sync("sync", "--upload-only", env=env_for(production, S3_LOG_FORMAT="json"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert _human(second.stderr)[-1].startswith("uploaded 3 "), second.stderr
    changed = _events(second.stderr, "state.namespace_changed")
    assert len(changed) == 1
    assert changed[0]["changed"] == ["bucket"]
    assert changed[0]["uploads_dropped"] == 3
    for name, data in files.items():
        assert _sha(object_bytes(production, _key(name))) == _sha(data), name


def _start_daemon(env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "s3sync", "run"], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=sink
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_one_process_per_state(make_settings, fault_proxy: FaultProxy, tmp_path):
    """A daemon holds the state: a second daemon and a `sync` exit 2 naming its PID; `status` still reads."""
    settings = make_settings(endpoint_url=fault_proxy.endpoint, mirror_interval=0, settle_seconds=0.2)
    files = _drop_files(settings)
    env = env_for(settings, S3_LOG_FORMAT="json")
    log = tmp_path / "daemon.log"
    daemon = _start_daemon(env, tmp_path, log)
    try:
        wait_for(lambda: b'"daemon.ready"' in log.read_bytes() or daemon.poll() is not None, timeout=30)
        assert daemon.poll() is None, log.read_text()
        wait_for(lambda: fault_proxy.count("PUT") >= len(files), timeout=30)
        expected = f"s3sync: error: another s3sync (pid {daemon.pid}) is using {settings.state_path}"

        second = s3sync("run", env=env, cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        assert _human(second.stderr) == [expected]
        one_shot = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
        assert one_shot.returncode == 2, one_shot.stderr
        assert _human(one_shot.stderr) == [expected]
        assert "Traceback" not in second.stderr + one_shot.stderr

        status = s3sync("status", "--json", env=env, cwd=tmp_path)
        assert status.returncode in (0, 1), status.stderr
        assert json.loads(status.stdout)["pid"] == daemon.pid
    finally:
        _stop(daemon)
    assert daemon.returncode == 0, log.read_text()
    assert fault_proxy.count("PUT") == len(files)  # the refused processes sent nothing
    for name, data in files.items():
        assert _sha(object_bytes(settings, _key(name))) == _sha(data)
    # The daemon gone, the lock is free again.
    after = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert fault_proxy.count("PUT") == len(files)


def test_default_folders_of_two_homes_share_nothing(make_settings, tmp_path):
    """Unconfigured folders and state follow HOME: two users' settings have nothing in common."""
    settings = make_settings(mirror_interval=0)
    seen: list[set[str]] = []
    for user in ("alice", "bob"):
        home = tmp_path / user
        home.mkdir()
        env = env_for(settings, HOME=str(home))
        for name in ("S3_LOCAL_PATH", "S3_UPLOAD_DIR_PATH", "S3_STATE_PATH", "XDG_STATE_HOME", "XDG_DATA_HOME"):
            env.pop(name, None)
        r = s3sync("config", "--json", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        values = json.loads(r.stdout)
        mine = {values["S3_LOCAL_PATH"], values["S3_UPLOAD_DIR_PATH"], values["S3_STATE_PATH"]}
        assert all(Path(p).is_relative_to(home) for p in mine), mine
        assert "/tmp/s3sync/" not in " ".join(mine)
        seen.append(mine)
        if user == "alice":
            r = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
            assert r.returncode == 0, r.stderr
            assert Path(values["S3_STATE_PATH"]).is_file()
    assert not seen[0] & seen[1]
    assert not (tmp_path / "bob" / ".local").exists()


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _damage_a_page(path: Path) -> None:
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed at close: the pages are in the file
    size = path.stat().st_size
    assert size >= 3 * 4096
    with path.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)  # a page in the middle of the file, from its header on
        f.write(b"\xa5" * 200)


@pytest.mark.parametrize("damage", [_garbage, _damage_a_page], ids=["garbage", "damaged_page"])
def test_corrupted_state_is_one_line_and_rebuild_recovers(
    damage, s3_server: S3Server, make_settings, fault_proxy: FaultProxy, tmp_path
):
    """A broken state: one line and exit 2; `state rebuild` recovers and nothing the bucket holds is sent again."""
    if (damage is _garbage) != (s3_server.kind == "moto"):
        pytest.skip("each damage on one server (garbage: moto, damaged page: rclone) keeps the suite short")
    settings = make_settings(endpoint_url=fault_proxy.endpoint, mirror_interval=0)
    files = _drop_files(settings)
    env = env_for(settings, S3_LOG_FORMAT="json")
    assert s3sync("sync", "--upload-only", env=env, cwd=tmp_path).returncode == 0
    damage(settings.state_path)

    for args in (("sync", "--upload-only"), ("run",), ("status",)):
        r = s3sync(*args, env=env, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = _human(r.stderr)
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("s3sync: error: S3_STATE_PATH: ")
        assert "s3sync state rebuild" in lines[0]
        assert "Traceback" not in r.stderr

    # While it was broken, one file was added and one object changed in the bucket (same size).
    (settings.upload_dir_path / "CM0004_NEW.jpg").write_bytes(b"new file")
    changed = NAMES[0]  # written straight to the server: a plain MD5 ETag, no s3sync metadata
    bucket = settings.require_bucket()
    make_client(settings).put_object(Bucket=bucket, Key=_key(changed), Body=bytes(len(files[changed])))
    fault_proxy.clear_requests()

    rebuilt = s3sync("state", "rebuild", env=env, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    summary = _human(rebuilt.stderr)[-1]
    assert summary.startswith("state rebuilt: 4 files in the upload folder; already in the bucket 2; to upload 2")
    assert fault_proxy.count("PUT") == 0
    aside = [p for p in settings.state_path.parent.glob("state.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1
    assert str(aside[0]) in summary

    again = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _human(again.stderr)[-1].startswith("uploaded 2 "), again.stderr
    assert fault_proxy.count("PUT") == 2  # the new file and the changed object; not the two the bucket held
    files["CM0004_NEW.jpg"] = b"new file"
    for name, data in files.items():
        key = _key(name) if name != "CM0004_NEW.jpg" else "COMPOSITION/CM0004/CM0004_NEW.jpg"
        assert _sha(object_bytes(settings, key)) == _sha(data), name


def test_rebuild_of_a_sound_state_keeps_the_old_file_and_takes_the_lock(make_settings, tmp_path):
    """Rebuilding a healthy state moves it aside as .old-<time>; a rebuild while a sync holds the lock is refused."""
    settings = make_settings(mirror_interval=0)
    _drop_files(settings)
    env = env_for(settings)
    assert s3sync("sync", "--upload-only", env=env, cwd=tmp_path).returncode == 0
    r = s3sync("state", "rebuild", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already in the bucket 3; to upload 0" in r.stderr
    aside = [p for p in settings.state_path.parent.glob("state.db.old-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1

    with StateLock(settings.state_path):
        refused = s3sync("state", "rebuild", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert _human(refused.stderr) == [
        f"s3sync: error: another s3sync (pid {os.getpid()}) is using {settings.state_path}"
    ]
    again = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert again.returncode == 0
    assert _human(again.stderr)[-1].startswith("uploaded 0 ")


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)  # the state's fault, not the server's
def test_rebuild_of_a_lost_state_recovers(make_settings, tmp_path):
    """A deleted state database: `state rebuild` recreates it from the bucket; nothing is sent again."""
    settings = make_settings(mirror_interval=0)
    _drop_files(settings)
    env = env_for(settings)
    assert s3sync("sync", "--upload-only", env=env, cwd=tmp_path).returncode == 0
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.state_path}{suffix}").unlink(missing_ok=True)  # the lock file stays, as it would
    r = s3sync("state", "rebuild", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = _human(r.stderr)[-1]
    assert "already in the bucket 3; to upload 0" in summary
    assert "moved to" not in summary  # no previous state: nothing to keep aside
    assert not list(settings.state_path.parent.glob("state.db.old-*"))
    again = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _human(again.stderr)[-1].startswith("uploaded 0 ")
