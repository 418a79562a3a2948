"""The watcher on its own: which hints real file operations give, with the real watchdog observers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from s3sync.watcher import Watcher
from tests.integration.daemon_helpers import wait_for


class Hints:
    """A sink that records every (file name, hint) the watcher passes on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def __call__(self, path: Path, hint: str) -> None:
        with self._lock:
            self.seen.append((path.name, hint))

    def of(self, name: str) -> list[str]:
        with self._lock:
            return [hint for n, hint in self.seen if n == name]


@pytest.fixture
def watched(tmp_path: Path):
    def start(mode: str) -> tuple[Watcher, Hints]:
        hints = Hints()
        watcher = Watcher(tmp_path, hints, mode=mode)
        watcher.start()
        started.append(watcher)
        return watcher, hints

    started: list[Watcher] = []
    yield start
    for watcher in started:
        watcher.stop()


def test_inotify_gives_created_then_closed_and_no_event_per_write(watched, tmp_path):
    """A file written in several writes: one 'created', one 'closed', no 'modified' per write."""
    watcher, hints = watched("inotify")
    assert watcher.kind == "InotifyObserver"
    with open(tmp_path / "A0001_SLOW_1x1.jpg", "wb") as f:
        for _ in range(5):
            f.write(b"x" * 1000)
            f.flush()
            time.sleep(0.05)
    (tmp_path / "B0001_WRITTEN_1x1.jpg").write_bytes(b"y")
    outside = tmp_path.parent / f"{tmp_path.name}-out.tmp"
    outside.write_bytes(b"z")
    outside.rename(tmp_path / "C0001_MOVED_1x1.jpg")
    (tmp_path / "sub").mkdir()
    (tmp_path / "B0001_WRITTEN_1x1.jpg").unlink()
    wait_for(lambda: hints.of("sub") and hints.of("B0001_WRITTEN_1x1.jpg")[-1:] == ["deleted"], timeout=10)
    assert hints.of("A0001_SLOW_1x1.jpg") == ["created", "closed"]
    assert hints.of("B0001_WRITTEN_1x1.jpg") == ["created", "closed", "deleted"]
    assert hints.of("C0001_MOVED_1x1.jpg") == ["moved"]
    assert hints.of("sub") == ["dir"]


def test_polling_still_reports_a_file_changed_in_place(watched, tmp_path):
    """The polling observer (no close events) keeps 'modified': it is its only sign of a change."""
    path = tmp_path / "A0001_EDITED_1x1.jpg"
    path.write_bytes(b"v1")
    watcher, hints = watched("polling")
    assert watcher.kind == "PollingObserver"
    time.sleep(1.2)  # one polling round sees the file as it is
    with open(path, "ab") as f:
        f.write(b"-v2")
    wait_for(lambda: "modified" in hints.of(path.name), timeout=10)
