"""The daemon survives operators' mistakes (issue 18): replaced or deleted upload folders,
symlinked roots, reloads with a broken settings file, and one line per CLI error.

Real files, the real watchdog observer, the real `s3sync` process where the CLI is the subject.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from s3sync.resource import Resource
from s3sync.transport import make_client
from tests.integration.daemon_helpers import (
    captured_events,
    drop,
    events_named,
    object_bytes,
    running,
    wait_for,
)
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


def key_of(settings, name: str) -> str:
    return Resource(name, settings=settings).key


@RCLONE_ONLY
def test_watcher_follows_a_replaced_then_deleted_upload_folder(make_settings, tmp_path):
    """`mv upload upload.old && mkdir upload` restarts the watcher on the new folder; a deleted folder
    (`rm -rf upload`) is one warning, no error event, and the watcher comes back with it."""
    settings = make_settings(**FAST)
    up = settings.upload_dir_path
    with captured_events() as events, running(settings):
        os.rename(up, tmp_path / "upload.old")
        up.mkdir()
        restarted = wait_for(lambda: events_named(events, "watcher.restarted"), timeout=10)
        assert restarted[0]["reason"] == "the upload folder was replaced"
        path = drop(up, "B0001_NEWDIR_1x1.jpg", b"new folder")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"new folder", timeout=10)

        shutil.rmtree(up)
        wait_for(lambda: events_named(events, "watcher.folder_missing"), timeout=10)
        time.sleep(2)  # several supervisor ticks and two retries
        assert len(events_named(events, "watcher.folder_missing")) == 1
        assert [e for e in events if e.get("log_level") == "error"] == []

        up.mkdir()
        is_back = "the upload folder is back"
        back = wait_for(lambda: [e for e in events_named(events, "watcher.restarted") if e["reason"] == is_back], 15)
        assert len(back) == 1
        path = drop(up, "B0002_BACK_1x1.jpg", b"back again")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"back again", timeout=10)


def test_symlinked_roots_are_resolved_and_config_shows_both(make_settings, tmp_path):
    """S3_LOCAL_PATH and S3_UPLOAD_DIR_PATH given as symlinks: sync uploads and mirrors into the real
    folders (not `Not a directory`), download works, and `config` prints the given and resolved paths."""
    real_up, real_mirror = tmp_path / "data-upload", tmp_path / "data-mirror"
    real_up.mkdir()
    real_mirror.mkdir()
    (tmp_path / "srv").mkdir()
    link_up, link_mirror = tmp_path / "srv" / "upload", tmp_path / "srv" / "mirror"
    link_up.symlink_to(real_up)
    link_mirror.symlink_to(real_mirror)
    settings = make_settings(upload_dir_path=link_up, local_path=link_mirror)
    env = env_for(settings)
    name = "B0001_LINKED_1x1.jpg"
    (real_up / name).write_bytes(b"through a symlink")
    r = s3sync("sync", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    key = key_of(settings, name)
    assert (real_mirror / key).read_bytes() == b"through a symlink"
    (real_mirror / key).unlink()
    down = s3sync("download", name, env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == str(real_mirror / key)
    shown = s3sync("config", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert f"S3_LOCAL_PATH={link_mirror}" in lines
    assert f"# S3_LOCAL_PATH resolves to {real_mirror}" in lines
    assert f"# S3_UPLOAD_DIR_PATH resolves to {real_up}" in lines
    as_json = json.loads(s3sync("config", "--json", env=env, cwd=tmp_path).stdout)
    assert as_json["S3_LOCAL_PATH"] == str(link_mirror)
    assert as_json["resolved"] == {"S3_LOCAL_PATH": str(real_mirror), "S3_UPLOAD_DIR_PATH": str(real_up)}


class DaemonLog:
    """The JSON events of an `s3sync run` subprocess, read from its stderr file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.path.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if name is None or event["event"] == name:
                    found.append(event)
        return found


@RCLONE_ONLY
def test_reload_checks_the_new_settings_first_and_keeps_running(make_settings, tmp_path):
    """SIGHUP re-reads `run --env-file`: a file without the bucket or with a folder under /proc is one
    daemon.reload_failed each and the old settings go on; a good file is applied (a new category)."""
    settings = make_settings(**FAST)
    env = env_for(settings, S3_LOG_FORMAT="json")
    del env["S3_BUCKET_NAME"]  # only in the file, so that removing it there is seen
    env_file = tmp_path / "s3sync.env"
    bucket = f"S3_BUCKET_NAME={settings.bucket_name}\n"
    env_file.write_text(bucket)
    log = DaemonLog(tmp_path / "daemon.log")
    with log.path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3sync", "run", "--env-file", str(env_file)], env=env, cwd=tmp_path, stderr=stderr
        )
    try:
        wait_for(lambda: log.events("daemon.ready"), timeout=30)
        env_file.write_text("S3_REGION=us-east-1\n")  # the bucket line removed
        proc.send_signal(signal.SIGHUP)
        first = wait_for(lambda: log.events("daemon.reload_failed"), timeout=10)[0]
        assert "S3_BUCKET_NAME: not set" in first["reason"]
        env_file.write_text(bucket + "S3_UPLOAD_DIR_PATH=/proc/s3sync-upload\n")
        proc.send_signal(signal.SIGHUP)
        second = wait_for(lambda: log.events("daemon.reload_failed")[1:], timeout=10)[0]
        assert "S3_UPLOAD_DIR_PATH: '/proc/s3sync-upload' is not a usable folder" in second["reason"]
        path = drop(settings.upload_dir_path, "B0001_OLD_1x1.jpg", b"old settings")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"old settings", timeout=10)

        env_file.write_text(bucket + 'S3_CATEGORY_MAP={"ZZ": "ZEBRA"}\n')
        proc.send_signal(signal.SIGHUP)
        reloaded = wait_for(lambda: log.events("daemon.reloaded"), timeout=10)[0]
        assert reloaded["changed"] == ["S3_CATEGORY_MAP"]
        wait_for(lambda: len(log.events("daemon.ready")) == 2, timeout=30)
        drop(settings.upload_dir_path, "ZZ0001_NEW_1x1.jpg", b"new settings")
        wait_for(lambda: object_bytes(settings, "ZEBRA/ZZ0001/ZZ0001_NEW_1x1.jpg") == b"new settings", timeout=10)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert len(log.events("daemon.reload_failed")) == 2
    assert [e for e in log.events() if e.get("level") == "error" and e["event"] != "daemon.reload_failed"] == []


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET (503 included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback URL of our own server
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@RCLONE_ONLY
def test_one_key_that_cannot_be_placed_is_a_warning_not_an_outage(make_settings):
    """A key equal to a person's folder in the mirror: /healthz stays 200 past the mirror age, with a warning."""
    settings = make_settings(
        **{**FAST, "mirror_interval": 0.3, "health_max_mirror_age": 1.0, "metrics_addr": "127.0.0.1:0"}
    )
    (settings.local_path / "BACKGROUND").mkdir()  # someone's folder, where the object "BACKGROUND" would go
    make_client(settings).put_object(Bucket=settings.bucket_name, Key="BACKGROUND", Body=b"in the way")
    with captured_events() as events, running(settings) as service:
        assert service.metrics_server is not None
        url = f"http://{service.metrics_server.address}/healthz"
        wait_for(lambda: len(events_named(events, "mirror.completed")) >= 2, timeout=10)
        time.sleep(1.5)  # beyond S3_HEALTH_MAX_MIRROR_AGE: only passes counted good keep it green
        code, body = get_json(url)
        assert code == 200, body
        assert body["reasons"] == []
        assert body["warnings"], body
        assert any("in the last mirror pass" in w for w in body["warnings"])
