"""SourceFile on real files: a symlink is refused, a FIFO never blocks, a short read is a change."""

from __future__ import annotations

import os
import threading

import pytest

from s3sync.errors import FileChangedError, LocalFileError, NotRegularFileError
from s3sync.localfs import hash_file
from s3sync.sourcefile import SourceFile, read_hashes


def test_symlink_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    link = tmp_path / "a.jpg"
    link.symlink_to(secret)
    with pytest.raises(NotRegularFileError) as info:
        SourceFile(link)
    assert info.value.kind == "symlink"
    with pytest.raises(LocalFileError):
        hash_file(link)


@pytest.mark.timeout(10)
def test_fifo_never_blocks(tmp_path):
    fifo = tmp_path / "a.jpg"
    os.mkfifo(fifo)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(NotRegularFileError) as info:
            SourceFile(fifo)
        assert info.value.kind == "FIFO"
        with pytest.raises(LocalFileError):
            hash_file(fifo)
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set(), "opening a FIFO blocked"


def test_short_read_is_a_change(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 1000)
    with SourceFile(path) as src:
        os.truncate(path, 10)
        with pytest.raises(FileChangedError):
            src.read_all()


def test_growth_is_a_change(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 1000)
    with SourceFile(path) as src:
        with open(path, "ab") as f:
            f.write(b"more")
        with pytest.raises(FileChangedError):
            src.read_all()


def test_cp_p_is_seen_by_the_ctime(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"a" * 100)
    st = path.stat()
    with SourceFile(path) as src:
        data = src.read_all()
        with open(path, "r+b") as f:
            f.write(b"b" * 100)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as they were
        with pytest.raises(FileChangedError):
            src.check_unchanged()
    assert data == b"a" * 100


def test_read_hashes_match_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "a.jpg"
    payload = os.urandom(3 * 1024 * 1024 + 5)
    path.write_bytes(payload)
    ident, hashes = read_hashes(path)
    assert hashes.sha256 == hashlib.sha256(payload).hexdigest()
    assert hashes.md5 == hashlib.md5(payload, usedforsecurity=False).hexdigest()
    assert ident.size == len(payload)
    assert ident.ino == path.stat().st_ino
