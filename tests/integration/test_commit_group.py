"""Group commit of mirror downloads: same guarantees as AtomicWriter.commit, fewer flushes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from s3sync.errors import LocalFileError
from s3sync.localfs import AtomicWriter, CommitGroup
from s3sync.paths import TEMP_PREFIX


def written(root: Path, segments: tuple[str, ...], data: bytes) -> AtomicWriter:
    w = AtomicWriter(root, segments)
    w.write(data)
    return w


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_every_file_lands_once_with_its_bytes_and_callback(tmp_path, syncfs):
    """200 files from 4 threads into 3 folders: all in place, each callback once with its path, no temp file."""
    done: dict[Path, int] = {}
    errors: list[LocalFileError] = []
    lock = threading.Lock()

    def on_done(path: Path | None, error: LocalFileError | None) -> None:
        with lock:
            if error is not None:
                errors.append(error)
            else:
                assert path is not None
                assert path.exists()  # in place before we are told
                done[path] = done.get(path, 0) + 1

    group = CommitGroup(max_batch=16, max_delay=0.01)
    if not syncfs:
        group._syncfs = None  # the fallback for systems without syncfs(2)

    def worker(n: int) -> None:
        for i in range(n * 50, n * 50 + 50):
            segments = (f"d{i % 3}", f"f{i}.jpg")
            group.submit(written(tmp_path, segments, f"data {i}".encode()), on_done)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    group.close()
    assert errors == []
    assert len(done) == 200
    assert set(done.values()) == {1}
    for i in range(200):
        assert (tmp_path / f"d{i % 3}" / f"f{i}.jpg").read_bytes() == f"data {i}".encode()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert group.batches < 200  # batched, not one flush per file


def test_a_file_that_cannot_be_placed_fails_alone(tmp_path):
    """A target that is a folder: that file fails (temp removed, folder untouched); the rest commit."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("keep")
    results: dict[str, str] = {}

    def on_done_for(name: str):
        def on_done(path: Path | None, error: LocalFileError | None) -> None:
            results[name] = "ok" if error is None else str(error)

        return on_done

    with CommitGroup(max_batch=8, max_delay=0.05) as group:
        group.submit(written(tmp_path, ("a.jpg",), b"a"), on_done_for("a"))
        group.submit(written(tmp_path, ("taken",), b"x"), on_done_for("taken"))
        group.submit(written(tmp_path, ("b.jpg",), b"b"), on_done_for("b"))
    assert results["a"] == "ok"
    assert results["b"] == "ok"
    assert "exists as a folder" in results["taken"]
    assert (tmp_path / "taken" / "keep.txt").read_text() == "keep"
    assert (tmp_path / "a.jpg").read_bytes() == b"a"
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_replacing_keeps_the_old_copy_until_the_new_one_is_durable(tmp_path):
    """Before the callback, readers see the old bytes or the new ones, never a partial file."""
    target = tmp_path / "x.jpg"
    target.write_bytes(b"old" * 1000)
    seen: list[bytes] = []
    with CommitGroup(max_batch=4, max_delay=0.2) as group:
        w = written(tmp_path, ("x.jpg",), b"new" * 1000)
        group.submit(w, lambda path, error: seen.append(target.read_bytes()))
        assert target.read_bytes() in {b"old" * 1000, b"new" * 1000}
    assert seen == [b"new" * 1000]


def test_a_few_files_are_fsynced_alone_a_batch_with_one_syncfs(tmp_path):
    """syncfs also flushes other programs' dirty data: a batch of a few files is fsynced file by file."""
    group = CommitGroup(max_batch=16, max_delay=0.5)
    real = group._syncfs
    if real is None:
        pytest.skip("no syncfs(2) on this system: every batch is fsynced file by file")
    calls: list[int] = []

    def counting(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    group._syncfs = counting
    done: list[Path | None] = []
    group.submit(written(tmp_path, ("one.jpg",), b"1"), lambda p, e: done.append(p))
    while not done:
        threading.Event().wait(0.01)
    assert calls == []  # one file: fsync, not syncfs
    for i in range(16):
        group.submit(written(tmp_path, (f"f{i}.jpg",), b"x"), lambda p, e: done.append(p))
    group.close()
    assert len(done) == 17
    assert len(calls) >= 1  # a full batch: one syncfs
    assert (tmp_path / "f15.jpg").read_bytes() == b"x"
