"""Operators' mistakes and racing processes that still get through (an adversarial review).

Each test is a hole found against the fixes for issue 17 (items 6, 7, 9, 10) and issue 18
(items 5, 7, 8, 9, 12): the state guard (lock, namespace, integrity check, rebuild), the
settings file, and the CLI's errors. Each failed on the code it was written against and
passes since its hole was closed.

The real ``s3sync`` command runs as a subprocess (see test_state_guard.py / test_cli.py), the
daemon in a thread where its health is read (daemon_helpers.running);
the lock holder is a :class:`StateLock` in this process (a daemon holds the same one).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync.health import assess
from s3sync.lock import StateLock
from s3sync.resource import Resource
from s3sync.settings import Settings
from tests.integration.daemon_helpers import captured_events, drop, events_named, object_bytes, running, wait_for
from tests.integration.test_cli import env_for, s3sync

FAST = {
    "settle_seconds": 0.5,
    "mirror_interval": 0,
    "retry_base": 0.1,
    "retry_cap": 0.5,
    "rescan_interval": 600,  # no rescan during a test: only the watcher can find the files
    "shutdown_timeout": 5,
}
RCLONE_ONLY = pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)  # the server plays no part
NAME = "CF0001_WHITE_320x320.jpg"
KEY = "CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg"


def _human(stderr: str) -> list[str]:
    """The lines of stderr meant for a person (not JSON log events)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _bounded(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m s3sync ARGS``; a process still alive after ``timeout`` is SIGKILLed and fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "s3sync", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:  # subprocess.run has SIGKILLed it (SIGTERM would not do)
        pytest.fail(f"`s3sync {' '.join(args)}` still running after {timeout} s (killed)")


# --- a second instance --------------------------------------------------------------------------
@RCLONE_ONLY
def test_a_symlinked_state_path_does_not_get_a_second_lock(make_settings, tmp_path):
    """A daemon on /var/lib/s3sync/state.db and a `sync` given a symlink to it use one database:
    the second must exit 2 like any second instance, not upload beside the first."""
    settings = make_settings(mirror_interval=0)
    real = settings.state_path
    assert s3sync("sync", "--upload-only", env=env_for(settings), cwd=tmp_path).returncode == 0  # creates it
    link = tmp_path / "srv-state.db"
    link.symlink_to(real)
    (settings.upload_dir_path / NAME).write_bytes(b"dropped while a daemon runs")
    with StateLock(real):  # the running daemon
        second = s3sync("sync", "--upload-only", env=env_for(settings, S3_STATE_PATH=str(link)), cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    assert "another s3sync" in second.stderr
    assert object_bytes(settings, KEY) is None  # the refused process sent nothing


@RCLONE_ONLY
def test_a_lock_file_deleted_while_held_still_keeps_a_second_instance_out(make_settings, tmp_path):
    """The daemon holds the lock; someone removes state.db.lock; a second `sync` must still be refused."""
    settings = make_settings(mirror_interval=0)
    (settings.upload_dir_path / NAME).write_bytes(b"dropped while a daemon runs")
    with StateLock(settings.state_path) as held:
        held.path.unlink()  # the holder's descriptor still has the flock, on an inode nobody can reach
        second = s3sync("sync", "--upload-only", env=env_for(settings), cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    assert "another s3sync" in second.stderr
    assert object_bytes(settings, KEY) is None


# --- a state path that is not a file ------------------------------------------------------------
@RCLONE_ONLY
def test_a_fifo_at_the_state_path_is_one_line_not_a_hang(make_settings, tmp_path):
    """S3_STATE_PATH names a FIFO (a mistyped path, a leftover of a pipeline): one line, exit 2, no hang."""
    settings = make_settings(mirror_interval=0)
    settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(settings.state_path)
    env = env_for(settings)
    for args in (["status"], ["run"]):
        r = _bounded(args, env, tmp_path, timeout=5)
        assert r.returncode == 2, (args, r.stderr)
        lines = _human(r.stderr)
        assert len(lines) == 1, (args, r.stderr)
        assert lines[0].startswith("s3sync: error: S3_STATE_PATH: "), (args, r.stderr)


@RCLONE_ONLY
def test_config_refuses_a_state_path_that_is_not_a_regular_file(make_settings, tmp_path):
    """`config` validates like `run`: a state path that is a FIFO is exit 2 and one line naming it."""
    settings = make_settings(mirror_interval=0)
    settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(settings.state_path)
    r = _bounded(["config"], env_for(settings), tmp_path, timeout=10)
    assert r.returncode == 2, r.stderr
    assert _human(r.stderr)[-1].startswith("s3sync: error: S3_STATE_PATH: "), r.stderr


# --- who owns a key, after the state forgot -----------------------------------------------------
def _drop(settings: Settings, who: str, data: bytes) -> Path:
    folder = settings.upload_dir_path / who
    folder.mkdir(exist_ok=True)
    path = folder / NAME
    path.write_bytes(data)
    return path


def _alice_up_and_deleted_bob_held_back(settings: Settings, env: dict[str, str], cwd: Path) -> Path:
    """alice/X is uploaded and deleted (after_upload=delete); bob/X (other bytes) is a conflict, kept."""
    alice = _drop(settings, "alice", b"alice's photo " * 50)
    first = s3sync("sync", "--upload-only", env=env, cwd=cwd)
    assert first.returncode == 0, first.stderr
    assert not alice.exists()
    assert _sha(object_bytes(settings, KEY)) == _sha(b"alice's photo " * 50)
    bob = _drop(settings, "bob", b"bob's other photo " * 50)
    second = s3sync("sync", "--upload-only", env=env, cwd=cwd)
    assert second.returncode == 0, second.stderr
    assert "conflicts 1" in _human(second.stderr)[-1], second.stderr  # the rule of issue 17 item 4 holds here
    assert bob.exists()
    assert _sha(object_bytes(settings, KEY)) == _sha(b"alice's photo " * 50)
    return bob


@RCLONE_ONLY
def test_adding_a_category_does_not_hand_a_deleted_owners_key_to_another_path(make_settings, tmp_path):
    """issue 17 item 4 again, after the operator adds a category code (as issue 17 item 9 has them do)."""
    settings = make_settings(mirror_interval=0, after_upload="delete")
    bob = _alice_up_and_deleted_bob_held_back(settings, env_for(settings), tmp_path)

    more = {**settings.category_map, "ZZ": "ZEBRA"}
    env = env_for(settings, S3_CATEGORY_MAP=json.dumps(more))
    third = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert _sha(object_bytes(settings, KEY)) == _sha(b"alice's photo " * 50), "alice's object was overwritten"
    assert bob.exists(), "bob's file was uploaded over alice's and deleted"


@RCLONE_ONLY
def test_state_rebuild_does_not_hand_a_deleted_owners_key_to_another_path(make_settings, tmp_path):
    """After `state rebuild` (a corrupted state, or an operator's precaution), bob's held-back file stays held back."""
    settings = make_settings(mirror_interval=0, after_upload="delete")
    env = env_for(settings)
    bob = _alice_up_and_deleted_bob_held_back(settings, env, tmp_path)

    rebuilt = s3sync("state", "rebuild", env=env, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = s3sync("sync", "--upload-only", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _sha(object_bytes(settings, KEY)) == _sha(b"alice's photo " * 50), "alice's object was overwritten"
    assert bob.exists(), "bob's file was uploaded over alice's and deleted"


# --- the settings file of the shipped unit ------------------------------------------------------
@RCLONE_ONLY
def test_empty_credential_lines_of_the_example_file_do_not_hide_load_credential(make_settings, tmp_path):
    """The README's systemd install: settings file from .env.example, secrets in LoadCredential files."""
    settings = make_settings(mirror_interval=0)
    assert settings.aws_access_key_id
    assert settings.aws_secret_access_key
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "S3_AWS_ACCESS_KEY_ID").write_text(settings.aws_access_key_id.get_secret_value() + "\n")
    (creds / "S3_AWS_SECRET_ACCESS_KEY").write_text(settings.aws_secret_access_key.get_secret_value() + "\n")
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    assert "\nS3_AWS_SECRET_ACCESS_KEY=\n" in example
    lines = []
    for line in example.splitlines():  # "then edit it": the bucket and the endpoint, as an admin would
        if line.startswith("S3_BUCKET_NAME="):
            line = f"S3_BUCKET_NAME={settings.bucket_name}"
        elif line.startswith("S3_ENDPOINT_URL="):
            line = f"S3_ENDPOINT_URL={settings.endpoint_url}"
        elif line.startswith("S3_REGION="):
            line = f"S3_REGION={settings.region}"
        lines.append(line)
    env_file = tmp_path / "s3sync.env"
    env_file.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in env_for(settings).items() if not k.startswith("S3_")}
    env |= {
        "CREDENTIALS_DIRECTORY": str(creds),
        "S3_STATE_PATH": str(settings.state_path),  # the unit's Environment= lines
        "S3_UPLOAD_DIR_PATH": str(settings.upload_dir_path),
        "S3_LOCAL_PATH": str(settings.local_path),
        "S3_LOG_FORMAT": "json",
    }
    shown = s3sync("--env-file", str(env_file), "config", "--json", env=env, cwd=tmp_path)
    secret = settings.aws_secret_access_key.get_secret_value()
    assert secret not in shown.stdout + shown.stderr
    values = json.loads(shown.stdout)
    assert values["S3_AWS_SECRET_ACCESS_KEY"] == "********", "the credential file was ignored"
    (settings.upload_dir_path / NAME).write_bytes(b"from the unit")
    r = s3sync("--env-file", str(env_file), "sync", "--upload-only", env=env, cwd=tmp_path)
    assert secret not in r.stdout + r.stderr
    assert r.returncode == 0, r.stderr
    assert object_bytes(settings, KEY) == b"from the unit"


# --- the upload folder swapped for a symlink at runtime -----------------------------------------
@RCLONE_ONLY
def test_upload_folder_replaced_by_a_symlink_is_not_silently_ignored(make_settings, tmp_path):
    """`mv upload upload.old && ln -s /data/upload upload` while the daemon runs: a file dropped there is
    uploaded (the root followed again, as at start), or the daemon says it cannot (health not green)."""
    settings = make_settings(**FAST, metrics_addr="127.0.0.1:0")
    up = settings.upload_dir_path
    target = tmp_path / "data-upload"
    target.mkdir()
    with captured_events() as events, running(settings) as service:
        os.rename(up, tmp_path / "upload.old")
        up.symlink_to(target)
        noticed = ("watcher.restarted", "watcher.failed")  # followed, or said it cannot
        wait_for(lambda: any(events_named(events, name) for name in noticed), timeout=10)
        drop(target, "B0001_LINKED_1x1.jpg", b"dropped through the new symlink")
        key = Resource("B0001_LINKED_1x1.jpg", settings=settings).key

        def outcome() -> object:
            if object_bytes(settings, key) == b"dropped through the new symlink":
                return "uploaded"
            reasons = assess(service.health_snapshot()).reasons
            return reasons and f"unhealthy: {reasons}"

        try:
            wait_for(outcome, timeout=6)
        except AssertionError:
            pytest.fail("the file was neither uploaded nor reported; health is green")
