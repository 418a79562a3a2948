"""The state's single-instance lock: exclusive, names its holder, released by the kernel on death."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from s3sync.errors import StateLockedError
from s3sync.lock import StateLock, lock_path


def test_lock_file_sits_beside_the_state(tmp_path):
    """state.db -> state.db.lock, in the same folder."""
    assert lock_path(tmp_path / "state.db") == tmp_path / "state.db.lock"


def test_second_holder_is_refused_naming_the_pid(tmp_path):
    """A second lock on the same state fails at once with the holder's PID (exit code 2)."""
    state = tmp_path / "sub" / "state.db"
    with StateLock(state) as first:
        assert first.held
        assert (tmp_path / "sub" / "state.db.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StateLockedError) as info:
            StateLock(state).acquire()
    assert info.value.pid == os.getpid()
    assert info.value.exit_code == 2
    assert str(info.value) == f"another s3sync (pid {os.getpid()}) is using {state}"


def test_released_lock_can_be_taken_again_and_names_no_one(tmp_path):
    """After release the file no longer names a PID, and the next holder gets the lock."""
    state = tmp_path / "state.db"
    lock = StateLock(state)
    lock.acquire()
    lock.release()
    assert lock_path(state).read_text() == ""
    with StateLock(state):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    """The kernel drops a flock when its process dies, even by SIGKILL: no stale lock."""
    state = tmp_path / "state.db"
    code = (
        "import os, sys; from pathlib import Path; from s3sync.lock import StateLock;"
        f"StateLock(Path({str(state)!r})).acquire(); print('held', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "held"
            with pytest.raises(StateLockedError, match=f"pid {child.pid}"):
                StateLock(state).acquire()
        finally:
            child.kill()
            child.wait(timeout=10)
    with StateLock(state):
        pass
