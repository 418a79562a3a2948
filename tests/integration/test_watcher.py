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


def test_inotify_gives_created_writes_then_closed(watched, tmp_path):
    """A file written in several writes: 'created', 'modified' for the writes, then 'closed'.

    The writes are wanted: a file written to and not closed since is not complete, however long
    its writer pauses (issue 17). Attribute changes (chmod, touch) give no event.
    """
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
    (tmp_path / "C0001_MOVED_1x1.jpg").chmod(0o600)
    (tmp_path / "sub").mkdir()
    (tmp_path / "B0001_WRITTEN_1x1.jpg").unlink()
    wait_for(lambda: hints.of("sub") and hints.of("B0001_WRITTEN_1x1.jpg")[-1:] == ["deleted"], timeout=10)
    slow = hints.of("A0001_SLOW_1x1.jpg")
    assert slow[0] == "created"
    assert slow[-1] == "closed"
    assert set(slow[1:-1]) == {"modified"}
    assert len(slow) >= 3
    assert hints.of("B0001_WRITTEN_1x1.jpg") == ["created", "modified", "closed", "deleted"]
    assert hints.of("C0001_MOVED_1x1.jpg") == ["moved"]  # no event for the chmod
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
