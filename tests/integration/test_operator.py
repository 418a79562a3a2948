"""The daemon survives operators' mistakes (issue 18): replaced or deleted upload folders,
symlinked roots, reloads with a broken settings file, and one line per CLI error.

Real files, the real watchdog observer, the real `s3sync` process where the CLI is the subject.
"""

from __future__ import annotations

import os
import time

import pytest

from s3sync.resource import Resource
from tests.integration.daemon_helpers import (
    captured_events,
    drop,
    events_named,
    object_bytes,
    running,
    wait_for,
)

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
    """`mv upload upload.old && mkdir upload` restarts the watcher on the new folder; a deleted folder is
    one warning (no error events), and the watcher comes back with it."""
    settings = make_settings(**FAST)
    up = settings.upload_dir_path
    with captured_events() as events, running(settings):
        os.rename(up, tmp_path / "upload.old")
        up.mkdir()
        restarted = wait_for(lambda: events_named(events, "watcher.restarted"), timeout=10)
        assert restarted[0]["reason"] == "the upload folder was replaced"
        path = drop(up, "B0001_NEWDIR_1x1.jpg", b"new folder")
        wait_for(lambda: object_bytes(settings, key_of(settings, path.name)) == b"new folder", timeout=10)

        os.rename(up, tmp_path / "upload.gone")
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
