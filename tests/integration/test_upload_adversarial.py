"""Adversarial review of the issue 17 fix: holes a hostile or careless member of the drop group can
still open. Each test stages its race deterministically (the fault proxy's hold, the settle time,
or a writer in a child process: the daemon's /proc look skips its own process) and asserts the
outcome in the bucket (bytes, SHA-256) and on disk.

Every test here failed on the code it was written against (the first upload fix of issue 17)
and passes since the holes were closed: paths walked from the upload folder down without
following symlinks, a fresh look at /proc (any name of the inode) before a move or delete and
before any upload, a CRC-32 per part between the hash pass and the send pass, and conflict
verdicts that follow the held-back file (inode or bytes) to another path.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.daemon_helpers import (
    captured_events,
    drop,
    events_named,
    object_bytes,
    running,
    wait_for,
)
from tests.integration.upload_helpers import (
    FAST,
    MIB,
    MULTIPART,
    every_object,
    key_of,
    put_to,
    sha,
)
from tests.support.faultproxy import Fault

SECRET = b"TOP-SECRET-" + b"x" * 29










def head_after_put(key: str):
    """Matches the first HEAD of ``key`` after its PUT: the confirmation before a move/delete."""
    seen = {"put": False}

    def match(m: str, target: str, headers) -> bool:
        if m == "PUT" and key in target:
            seen["put"] = True
            return False
        return m == "HEAD" and key in target and seen["put"]

    return match


def create_multipart(key: str):
    """Matches CreateMultipartUpload of ``key``: the file is hashed, no part is read yet."""

    def match(m: str, target: str, headers) -> bool:
        return m == "POST" and key in target and "uploads" in target and "uploadId" not in target

    return match


def old(path: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


# A writer in another process (the daemon's look at /proc skips its own process, so an fd held by
# the test itself would prove nothing). argv: path, flags ("append" or "create"), first bytes.
# It opens, writes the first bytes (if any), says "open", waits for a line on stdin, writes that
# line (without its newline), closes and says "closed".
_WRITER = r"""
import os, sys
path, how, first = sys.argv[1], sys.argv[2], sys.argv[3].encode()
flags = os.O_WRONLY | (os.O_APPEND if how == "append" else os.O_CREAT | os.O_TRUNC)
fd = os.open(path, flags, 0o644)
if first:
    os.write(fd, first)
print("open", flush=True)
rest = sys.stdin.readline().rstrip("\n").encode()
if rest:
    os.write(fd, rest)
os.close(fd)
print("closed", flush=True)
"""


class Writer:
    """A process that holds ``path`` open for writing until :meth:`finish`."""

    def __init__(self, path: Path, how: str, first: bytes = b"") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), how, first.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "open"

    def finish(self, rest: bytes = b"") -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(rest.decode() + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "closed"
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        """Stop the writer if it still runs, and close the pipes (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


# --- 1. a folder of the path swapped for a symlink: O_NOFOLLOW guards only the last component ------


def test_subfolder_swapped_for_a_symlink_never_leaks_nor_deletes_outside(make_settings, fault_proxy, tmp_path):
    private = tmp_path / "private"  # the daemon user's own files, not the drop group's
    private.mkdir()
    name = "B0101_DIRSWAP_1x1.jpg"
    secret = private / name
    secret.write_bytes(SECRET)
    old(secret)
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, max_attempts=1, after_upload="delete")
    key = key_of(settings, name)
    held = Fault("hold", match=put_to(key), times=1, seconds=30, fail_after_hold=True, status=503)
    fault_proxy.set_faults([held])
    with captured_events() as events, running(settings) as service:
        sub = settings.upload_dir_path / "sub"
        sub.mkdir()
        drop(sub, name, b"an honest photo")
        assert held.reached.wait(20)
        os.rename(sub, tmp_path / "sub-moved-away")  # out of the upload folder
        sub.symlink_to(private, target_is_directory=True)
        held.release.set()  # the attempt fails (503): the retry opens upload/sub/<name> again
        wait_for(
            lambda: events_named(events, "upload.succeeded") or events_named(events, "upload.skipped"),
            timeout=20,
        )
        service.uploader.wait_idle(timeout=10)
        time.sleep(0.5)
    objects = every_object(settings)
    assert all(SECRET not in data for data in objects.values()), "a file outside the upload folder leaked"
    assert secret.exists(), "the daemon deleted a file outside the upload folder"
    assert secret.read_bytes() == SECRET


def test_subfolder_swapped_for_a_symlink_never_moves_an_outside_file_to_rejected(make_settings, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    secret = private / "credentials"  # not a valid name: it would be rejected, i.e. moved
    secret.write_bytes(SECRET)
    old(secret)
    rejected = tmp_path / "rejected"
    settings = make_settings(**{**FAST, "settle_seconds": 3.0}, rejected_dir=rejected)
    incoming = tmp_path / "incoming" / "sub"
    incoming.mkdir(parents=True)
    (incoming / "credentials").write_bytes(b"a badly named drop")
    with running(settings) as service:
        sub = settings.upload_dir_path / "sub"
        os.rename(incoming, sub)  # a folder moved in: its files are scanned and wait for the settle time
        wait_for(lambda: service.uploader.pending() > 0, timeout=10)
        os.rename(sub, tmp_path / "sub-moved-away")
        sub.symlink_to(private, target_is_directory=True)
        wait_for(lambda: service.uploader.pending() == 0, timeout=15)
        time.sleep(0.5)
    assert secret.exists(), "a file outside the upload folder was moved away"
    moved = [p for p in rejected.rglob("*") if p.is_file()] if rejected.exists() else []
    assert all(p.read_bytes() != SECRET for p in moved)


# --- 2. open writers the daemon does not look for -------------------------------------------------


def test_delete_never_unlinks_a_file_reopened_for_writing(make_settings, fault_proxy):
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, after_upload="delete")
    name = "B0102_APPEND_1x1.jpg"
    key = key_of(settings, name)
    held = Fault("hold", match=head_after_put(key), times=1, seconds=30)
    fault_proxy.set_faults([held])
    writer = None
    try:
        with captured_events() as events, running(settings):
            path = drop(settings.upload_dir_path, name, b"header;")
            assert held.reached.wait(20)  # uploaded; the confirmation before the delete is held
            writer = Writer(path, "append")  # `cat body >> file`: open, not written yet
            held.release.set()
            wait_for(lambda: events_named(events, "upload.deleted") or events_named(events, "upload.kept"))
            writer.finish(b"body")
            wait_for(lambda: object_bytes(settings, key) == b"header;body", timeout=15)
            # ... and then, the writer gone, the file is deleted as S3_AFTER_UPLOAD asks.
            wait_for(lambda: not path.exists(), timeout=15)
    finally:
        held.release.set()
        if writer is not None:
            writer.kill()
    assert object_bytes(settings, key) == b"header;body"


def test_file_moved_in_while_still_open_is_not_uploaded_half_nor_deleted(make_settings, tmp_path):
    settings = make_settings(**FAST, after_upload="delete")
    name = "B0103_EARLYMOVE_1x1.jpg"
    key = key_of(settings, name)
    staging = tmp_path / "staging-early"
    staging.mkdir()
    writer = Writer(staging / name, "create", b"first half;")
    try:
        with running(settings):
            path = settings.upload_dir_path / name
            os.rename(staging / name, path)  # renamed in early; the writer goes on through its fd
            time.sleep(4 * settings.settle_seconds + 1)
            assert object_bytes(settings, key) is None, "half a file went up while its writer held it open"
            assert path.exists(), "the file was deleted while its writer held it open"
            writer.finish(b"second half")
            wait_for(lambda: object_bytes(settings, key) == b"first half;second half", timeout=15)
            wait_for(lambda: not path.exists(), timeout=15)  # closed and confirmed: now it goes
    finally:
        writer.kill()


def test_hard_link_of_a_file_still_being_written_elsewhere_is_not_uploaded_half(make_settings, tmp_path):
    settings = make_settings(**FAST)
    name = "B0104_LINKED_1x1.jpg"
    key = key_of(settings, name)
    work = tmp_path / "work"
    work.mkdir()
    writer = Writer(work / name, "create", b"first half;")
    try:
        with running(settings):
            os.link(work / name, settings.upload_dir_path / name)  # `ln` instead of `cp`, too early
            time.sleep(4 * settings.settle_seconds + 1)
            assert object_bytes(settings, key) is None, "half a file went up while its writer held it open"
            writer.finish(b"second half")
            wait_for(lambda: object_bytes(settings, key) == b"first half;second half", timeout=15)
    finally:
        writer.kill()


# --- 3. the SHA-256 in the metadata is not computed from the bytes sent ---------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def test_multipart_sha256_metadata_is_that_of_the_bytes_sent(make_settings, fault_proxy, tmp_path):
    settings = make_settings(endpoint_url=fault_proxy.endpoint, **FAST, **MULTIPART)
    name = "B0105_MMAP_1x1.jpg"
    key = key_of(settings, name)
    held = Fault("hold", match=create_multipart(key), times=1, seconds=30)
    fault_proxy.set_faults([held])
    size = 11 * MIB
    staging = tmp_path / "staging-mmap"
    staging.mkdir()
    src = staging / name
    src.write_bytes(os.urandom(size))
    fd = os.open(src, os.O_RDWR)
    addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        ctypes.memmove(addr, b"A" * 4096, 4096)  # the first write faults: mtime and ctime move now
        os.close(fd)  # no descriptor left, the mapping stays: the writer is "closed"
        with running(settings) as service:
            path = settings.upload_dir_path / name
            os.rename(src, path)
            assert held.reached.wait(20)  # the file is hashed; no part is read yet
            ctypes.memmove(addr, b"B" * 4096, 4096)  # the page is writable and dirty: no fault, no stat change
            held.release.set()
            wait_for(lambda: service.state.get_upload(name) is not None, timeout=30)
            service.uploader.wait_idle(timeout=30)
            head = service.transport.head(key)
    finally:
        held.release.set()
        _libc.munmap(addr, size)
    stored = object_bytes(settings, key)
    assert stored is not None
    assert head is not None
    assert head.sha256 == sha(stored), "the object's SHA-256 metadata is not that of its bytes"


# --- 4. the conflict rule: a path is not a person -----------------------------------------------


def test_conflicting_file_moved_to_the_owners_gone_path_does_not_overwrite(make_settings):
    settings = make_settings(**FAST, after_upload="delete")
    name = "CF0101_WHITE_320x320.jpg"
    key = key_of(settings, name)
    up = settings.upload_dir_path
    outside = up.parent / "staging"
    with captured_events() as events, running(settings) as service:
        (up / "alice").mkdir()
        (up / "bob").mkdir()
        alice = drop(up / "alice", name, b"alice's photo", staging=outside)
        wait_for(lambda: object_bytes(settings, key) == b"alice's photo")
        wait_for(lambda: not alice.exists())
        bob = drop(up / "bob", name, b"bob's photo", staging=outside)
        wait_for(lambda: events_named(events, "upload.conflict"))
        service.uploader.wait_idle(timeout=10)
        os.rename(bob, alice)  # the very file judged a conflict, now at alice's (deleted) path
        time.sleep(2.0)
        service.uploader.wait_idle(timeout=10)
    assert object_bytes(settings, key) == b"alice's photo", "alice's photo was overwritten; it exists nowhere now"
