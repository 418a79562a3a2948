"""OpenWriters on real processes: a writer is seen by its inode, whatever name it wrote through."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from s3sync.openfiles import OpenWriters

_HOLD = "import os, sys; fd = os.open(sys.argv[1], int(sys.argv[2])); print('open', flush=True); sys.stdin.readline()"


def _holder(path, flags: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), str(flags)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "open"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.communicate("\n", timeout=10)  # closes both pipes


def test_writer_reader_and_hard_link(tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.write_bytes(b"x")
    linked = folder / "linked.jpg"
    os.link(elsewhere, linked)
    plain = folder / "plain.jpg"
    plain.write_bytes(b"y")
    writer = _holder(elsewhere, os.O_WRONLY | os.O_APPEND)  # writes through the name outside the folder
    reader = _holder(plain, os.O_RDONLY)
    try:
        seen = OpenWriters(folder)
        st_linked, st_plain = linked.stat(), plain.stat()
        assert seen.is_open_for_writing(st_linked.st_dev, st_linked.st_ino)
        assert not seen.is_open_for_writing(st_plain.st_dev, st_plain.st_ino)  # a reader is no writer
    finally:
        _stop(writer)
        _stop(reader)
    # A snapshot older than the moment asked for is taken again: the writer is gone now.
    assert not seen.is_open_for_writing(st_linked.st_dev, st_linked.st_ino, since=time.monotonic())
