"""Durable, confined writes under a root folder.

Everything the mirror writes goes through :class:`AtomicWriter`: folders are walked with
directory file descriptors and ``O_NOFOLLOW``, so a symlink planted inside the mirror can
never redirect a write out of it; data goes to a ``.s3sync-tmp-*`` file in the target
folder, is fsynced, renamed over the target and the folder is fsynced. A reader never sees
a partial file and a failed download leaves the previous copy intact.

Two fsyncs per file dominate the cost of mirroring many small objects, so a mirror pass hands
its finished files to a :class:`CommitGroup`, which makes a whole batch durable with one flush
of the file system, then renames them and fsyncs each folder once (a group commit, as
databases do for their logs). The guarantees per file are the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import itertools
import os
import queue
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import structlog

from s3sync.errors import LocalChangedError, LocalFileError
from s3sync.paths import TEMP_PREFIX
from s3sync.plan import LocalStat

#: Temporary file names: a clash (another process, a leftover) is detected by O_EXCL and retried.
_temp_names = random.Random()  # uniqueness, not secrecy
_TEMP_ATTEMPTS = 8

__all__ = [
    "ABSENT",
    "AtomicWriter",
    "CommitGroup",
    "Durable",
    "FileHashes",
    "hash_file",
    "lstat_under",
    "move_no_replace",
    "open_dir_under",
    "remove_under",
    "rename_no_replace",
    "sweep_temp_files",
]

_WRITE_BEHIND = 16 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing ``nbytes`` at ``offset`` to disk, without waiting (best effort)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileHashes:
    """Size and content hashes of a local file, from one read."""

    size: int
    sha256: str
    md5: str


def hash_file(path: Path | str, *, md5: bool = True) -> FileHashes:
    """Hash a regular file in one pass (``md5`` may be skipped: it is the slower of the two).

    A symlink is not followed and a FIFO or device is never read (:class:`LocalFileError`).
    """
    sha = hashlib.sha256()
    m = hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LocalFileError(f"{os.fspath(path)!r} is not a regular file", path=str(path))
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
                if m is not None:
                    m.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise LocalFileError(f"cannot read {os.fspath(path)!r}: {exc.strerror}", path=str(path)) from exc
    return FileHashes(size, sha.hexdigest(), m.hexdigest() if m else "")


def open_dir_under(root: Path, segments: Sequence[str], *, create: bool) -> int:
    """Open ``root/segments...`` as a directory fd without following any symlink below ``root``.

    Missing folders are created when ``create`` is true. Raises :class:`LocalFileError` when a
    component is a symlink or a file, or on any OS error.
    """
    # Open first, create only what is missing: in a mirror pass almost every folder exists already.
    try:
        try:
            fd = os.open(root, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(root, exist_ok=True)
            fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise LocalFileError(f"cannot open folder {str(root)!r}: {exc.strerror}", path=str(root)) from exc
    try:
        for seg in segments:
            try:
                try:
                    child = os.open(seg, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(seg, 0o755, dir_fd=fd)
                    child = os.open(seg, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                reason = {
                    errno.ELOOP: "is a symlink (not followed)",
                    errno.ENOTDIR: "is a file, not a folder",
                    errno.ENOENT: "does not exist",
                }.get(exc.errno or 0, exc.strerror or str(exc))
                raise LocalFileError(f"folder {seg!r} under {str(root)!r} {reason}", path=str(root)) from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_under(root: Path, segments: Sequence[str], *, strict: bool = False) -> os.stat_result | None:
    """``lstat`` of ``root/segments`` without following symlinks on the way; None if absent.

    Not there includes a folder on the way that is a symlink or a file now. Any other failure
    gives None too, unless ``strict``: then it raises :class:`LocalFileError` (a passing error must
    not make a file look gone).
    """
    if not segments:
        return None
    try:
        fd = open_dir_under(root, segments[:-1], create=False)
    except LocalFileError as exc:
        cause = exc.__cause__
        if not strict or (isinstance(cause, OSError) and cause.errno in _GONE):
            return None
        raise
    try:
        return os.stat(segments[-1], dir_fd=fd, follow_symlinks=False)
    except OSError as exc:
        if not strict or exc.errno in _GONE:
            return None
        raise LocalFileError(f"cannot look at {'/'.join(segments)!r}: {exc.strerror}", path=str(root)) from exc
    finally:
        os.close(fd)


#: What says "not there" when a path is walked without following symlinks.
_GONE = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})


def remove_under(root: Path, segments: Sequence[str]) -> bool:
    """Remove the regular file ``root/segments`` (never a folder or through a symlink)."""
    fd = open_dir_under(root, segments[:-1], create=False)
    try:
        st = os.stat(segments[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return False
        os.unlink(segments[-1], dir_fd=fd)
        os.fsync(fd)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LocalFileError(f"cannot remove {'/'.join(segments)!r}: {exc.strerror}", path=str(root)) from exc
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _rename_no_replace(src_fd: int, src: str, dir_fd: int, name: str) -> None:
    """Rename ``src`` (in the folder ``src_fd``) to ``name`` in the folder ``dir_fd``; FileExistsError
    when that name is taken.

    ``renameat2(RENAME_NOREPLACE)`` where the kernel and file system have it, else a hard link
    (which never replaces) and an unlink, else (another file system) an exclusive copy.
    """
    if _renameat2 is not None:
        if _renameat2(src_fd, os.fsencode(src), dir_fd, os.fsencode(name), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in {errno.EINVAL, errno.ENOSYS, errno.EXDEV}:
            raise OSError(err, os.strerror(err), src)
    try:
        os.link(src, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP}:
            raise
        _copy_exclusive(src_fd, src, dir_fd, name)
    os.unlink(src, dir_fd=src_fd)


def _copy_exclusive(src_fd: int, src: str, dir_fd: int, name: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with open(os.open(src, flags, dir_fd=src_fd), "rb") as f:
            while chunk := f.read(_CHUNK):
                os.write(fd, chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        fd = -1
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def unique_names(name: str) -> Iterator[str]:
    """``name``, then ``stem.1.ext``, ``stem.2.ext``, ... (the names tried for a file that must not overwrite).

    >>> list(itertools.islice(unique_names("IMG_1234.JPG"), 3))
    ['IMG_1234.JPG', 'IMG_1234.1.JPG', 'IMG_1234.2.JPG']
    """
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dot file
        stem, dot, ext = name, "", ""
    yield name
    for n in itertools.count(1):
        yield f"{stem}.{n}{dot}{ext}"


def move_no_replace(
    src: Path,
    root: Path,
    segments: Sequence[str],
    *,
    src_root: Path | None = None,
    src_segments: Sequence[str] = (),
    attempts: int = 10_000,
) -> Path:
    """Move ``src`` to ``root/segments``, never over an existing file: a taken name gets a suffix.

    Folders below ``root`` are created and walked without following symlinks; so is the source's
    path below ``src_root`` when given (``src_segments``: the source's parts below it). Returns
    the path the file now has.
    """
    if not segments:
        raise LocalFileError("empty target path", path=str(root))
    if src_root is not None and src_segments:
        src_fd = open_dir_under(src_root, src_segments[:-1], create=False)
        src_name = src_segments[-1]
    else:
        try:
            src_fd = os.open(src.parent, _DIR_FLAGS)
        except OSError as exc:
            raise LocalFileError(f"cannot move {str(src)!r}: {exc.strerror}", path=str(src)) from exc
        src_name = src.name
    try:
        fd = open_dir_under(root, segments[:-1], create=True)
        try:
            try:
                name = rename_no_replace(src_fd, src_name, fd, segments[-1], attempts=attempts)
            except OSError as exc:
                raise LocalFileError(f"cannot move {str(src)!r}: {exc.strerror}", path=str(src)) from exc
            with contextlib.suppress(OSError):
                os.fsync(fd)
            return root.joinpath(*segments[:-1], name)
        finally:
            os.close(fd)
    finally:
        os.close(src_fd)


def rename_no_replace(src_fd: int, src: str, dir_fd: int, name: str, *, attempts: int = 10_000) -> str:
    """Rename ``src`` (in folder ``src_fd``) into folder ``dir_fd`` as ``name``, or ``name.1``... when
    taken: nothing is ever replaced. Returns the name used; :class:`LocalFileError` when none is free.
    """
    for candidate in itertools.islice(unique_names(name), attempts):
        try:
            _rename_no_replace(src_fd, src, dir_fd, candidate)
        except FileExistsError:
            continue
        return candidate
    raise LocalFileError(f"cannot move {src!r}: no free name for {name!r}", path=src)


class OrderedHasher:
    """SHA-256 and/or MD5 of a file written in parts, in file order, as the parts land.

    A part that lands out of order waits in a note; whichever thread completes the next part
    in order hashes every contiguous part (read back from the page cache) while the others go
    on downloading. Only one thread hashes at a time, and no part is read twice.
    """

    def __init__(self, writer: AtomicWriter, *, sha256: bool, md5: bool) -> None:
        self._sha = hashlib.sha256() if sha256 else None
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._fd = writer.open_for_reading()
        self._lock = threading.Lock()
        self._landed: dict[int, int] = {}
        self._busy = False
        #: Bytes hashed so far, from offset 0 without a gap.
        self.hashed = 0

    def landed(self, offset: int, length: int) -> None:
        """Bytes ``[offset, offset + length)`` are written; hash what is now contiguous."""
        with self._lock:
            self._landed[offset] = length
            if self._busy:
                return  # the hashing thread will find it
            self._busy = True
        try:
            while True:
                with self._lock:
                    n = self._landed.pop(self.hashed, None)
                    if n is None:
                        self._busy = False
                        return
                self._hash(self.hashed, n)
                self.hashed += n
        except BaseException:
            with self._lock:
                self._busy = False
            raise

    def _hash(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            chunk = os.pread(self._fd, min(_CHUNK, end - offset), offset)
            if not chunk:
                raise OSError(errno.EIO, "the file is shorter than what was written")
            if self._sha is not None:
                self._sha.update(chunk)
            if self._md5 is not None:
                self._md5.update(chunk)
            offset += len(chunk)

    def close(self) -> None:
        """Release the read descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def digests(self) -> tuple[str | None, str | None]:
        """(SHA-256 hex or None, MD5 hex or None) of the first :attr:`hashed` bytes."""
        return (
            self._sha.hexdigest() if self._sha is not None else None,
            self._md5.hexdigest() if self._md5 is not None else None,
        )


#: ``AtomicWriter(expect=ABSENT)``: nothing may be at the target when the file is put in place.
ABSENT: Final = "absent"

#: What the writer's caller saw at the target when it decided to write: nothing (:data:`ABSENT`),
#: a file with this stat, or None (replace whatever is there).
Expected = LocalStat | Literal["absent"] | None


class AtomicWriter:
    """Write ``root/segments`` atomically and durably; use as a context manager.

    >>> # with AtomicWriter(root, ("a", "b.jpg")) as w: w.write(data); w.commit()

    Leaving the block without :meth:`commit` removes the temporary file.

    ``expect`` is what the caller saw at the target when it decided to replace it: the rename
    then never replaces anything else (a file a person saved or edited there meanwhile) and
    raises :class:`LocalChangedError` instead. :data:`ABSENT` renames with ``RENAME_NOREPLACE``;
    a stat is compared right before the rename (a window of one system call remains).
    """

    def __init__(self, root: Path, segments: Sequence[str], *, mode: int = 0o644, expect: Expected = None) -> None:
        if not segments:
            raise LocalFileError("empty target path", path=str(root))
        self.root = root
        self.segments = tuple(segments)
        self.expect = expect
        self._dir_fd = open_dir_under(root, self.segments[:-1], create=True)
        # The name only has to be new in its folder (O_EXCL checks that, and we retry on a clash),
        # not unpredictable: a plain PRNG saves a getrandom() call per file.
        for attempt in range(_TEMP_ATTEMPTS):
            self._tmp = f"{TEMP_PREFIX}{_temp_names.getrandbits(48):012x}"
            try:
                self._fd = os.open(
                    self._tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=self._dir_fd,
                )
                break
            except FileExistsError:
                if attempt + 1 < _TEMP_ATTEMPTS:
                    continue
                os.close(self._dir_fd)
                raise LocalFileError(f"cannot create a file under {str(root)!r}: no free temporary name") from None
            except OSError as exc:
                os.close(self._dir_fd)
                raise LocalFileError(f"cannot create a file under {str(root)!r}: {exc.strerror}") from exc
        self._done = False
        self.bytes_written = 0
        self._written_back = 0
        # Parts of a download write in parallel, but the kernel lets one write into a file at a
        # time (the inode's lock), and its waiters spin for it: on two cores that spinning took
        # CPU from the threads still receiving. Waiting here sleeps instead.
        self._write_lock = threading.Lock()

    @functools.cached_property
    def path(self) -> Path:
        """The final path."""
        return self.root.joinpath(*self.segments)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the temporary file."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.bytes_written += n
        except OSError as exc:
            raise LocalFileError(f"cannot write {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc
        if self.bytes_written - self._written_back >= _WRITE_BEHIND:
            # Start writing a large file to disk while the rest still downloads, so the final
            # fsync has little left to do (write-behind; the durability point is still the fsync).
            _start_writeback(self._fd, self._written_back, self.bytes_written - self._written_back)
            self._written_back = self.bytes_written

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` (parts of a download land in parallel); starts its write-back."""
        view = memoryview(data)
        pos = offset
        try:
            with self._write_lock:
                while view:
                    n = os.pwrite(self._fd, view, pos)
                    view = view[n:]
                    pos += n
        except OSError as exc:
            raise LocalFileError(f"cannot write {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc
        _start_writeback(self._fd, offset, pos - offset)

    def open_for_reading(self) -> int:
        """A new read-only descriptor on the temporary file (to hash what landed); the caller closes it."""
        return os.open(self._tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)

    def commit(self) -> Path:
        """fsync, rename over the target, fsync the folder."""
        self.sync_data()
        self.rename()
        self.sync_folder()
        return self.path

    def sync_data(self) -> None:
        """Flush the written data to disk (first step of :meth:`commit`)."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise LocalFileError(f"cannot finish {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc

    def rename(self) -> None:
        """Close the data and rename it over the target; the data must be on disk already."""
        name = self.segments[-1]
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            try:
                existing = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                kind = "folder" if stat.S_ISDIR(existing.st_mode) else "symlink or special file"
                raise LocalFileError(f"{str(self.path)!r} exists as a {kind}; not replaced", path=str(self.path))
            if self.expect == ABSENT:
                try:
                    _rename_no_replace(self._dir_fd, self._tmp, self._dir_fd, name)
                except FileExistsError:
                    raise self._changed("a file was created there") from None
            else:
                if isinstance(self.expect, LocalStat) and not _is_stat(existing, self.expect):
                    raise self._changed("the file there changed" if existing else "the file there is gone")
                os.rename(self._tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError as exc:
            raise LocalFileError(f"cannot finish {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc
        self._done = True

    def _changed(self, what: str) -> LocalChangedError:
        return LocalChangedError(f"{str(self.path)!r} not replaced: {what} during the download", path=str(self.path))

    def sync_folder(self) -> None:
        """Make the rename durable: fsync the target's folder."""
        try:
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise LocalFileError(f"cannot finish {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc

    @property
    def folder_fd(self) -> int:
        """The open descriptor of the target's folder (valid until :meth:`close`)."""
        return self._dir_fd

    @property
    def data_fd(self) -> int:
        """The open descriptor of the temporary file (-1 once renamed or aborted)."""
        return self._fd

    def abort(self) -> None:
        """Remove the temporary file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._done:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            self._done = True

    def close(self) -> None:
        """Abort if not committed and release the folder descriptor."""
        self.abort()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _is_stat(st: os.stat_result | None, planned: LocalStat) -> bool:
    """Whether ``st`` is exactly the planned file (size, mtime, ctime, inode all as seen)."""
    if st is None:
        return False
    now = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return now == (planned.size, planned.mtime_ns, planned.ctime_ns or st.st_ctime_ns, planned.ino or st.st_ino)


def _walk_no_follow(root: Path) -> Iterator[Path]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        yield Path(entry.path)
        except OSError:
            continue


def sweep_temp_files(root: Path) -> int:
    """Remove leftover ``.s3sync-tmp-*`` files below ``root`` (a crash mid-download); return the count."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in _walk_no_follow(root):
        if path.name.startswith(TEMP_PREFIX):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


Durable = Callable[[Path | None, LocalFileError | None], None]
_STOP = object()


#: Batches of up to this many files are fsynced one by one rather than with one syncfs.
_FSYNC_EACH_UP_TO = 4


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


class CommitGroup:
    """Commit finished :class:`AtomicWriter` files in batches, on a thread of its own.

    Each file keeps :meth:`AtomicWriter.commit`'s guarantees, in the same order: its data is on
    disk before the rename, and the rename is on disk before ``on_done(path, None)`` is called
    (``on_done(None, error)`` when it could not be committed; the temporary file is gone then).
    A batch of up to ``max_batch`` files, gathered for at most ``max_delay`` seconds, costs one
    ``syncfs(2)`` of the file system (one ``fsync`` per file for a batch of a few files, or where
    syncfs is unavailable), the renames, and one ``fsync`` per distinct folder, instead of two
    fsyncs per file.

    :meth:`submit` blocks while ``max_batch`` files wait, so open descriptors stay bounded.
    :meth:`close` commits what is pending and stops the thread.
    """

    def __init__(self, *, max_batch: int = 64, max_delay: float = 0.05) -> None:
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_batch)
        self._syncfs = _load_syncfs()
        self._thread = threading.Thread(target=self._run, name="s3sync-commit", daemon=True)
        self._thread.start()
        self.batches = 0

    def submit(self, writer: AtomicWriter, on_done: Durable) -> None:
        """Hand over ``writer`` (written and verified, not committed); it is closed for you."""
        self._queue.put((writer, on_done))

    def close(self) -> None:
        """Commit everything submitted so far, then stop."""
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> CommitGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._flush(batch)  # type: ignore[arg-type]

    def _flush(self, batch: list[tuple[AtomicWriter, Durable]]) -> None:
        self.batches += 1
        pending: list[tuple[AtomicWriter, Durable]] = []
        failed: list[tuple[AtomicWriter, Durable, LocalFileError]] = []
        synced = self._sync_all([w for w, _ in batch])
        for writer, on_done in batch:
            try:
                if not synced:
                    writer.sync_data()
                writer.rename()
                pending.append((writer, on_done))
            except LocalFileError as exc:
                failed.append((writer, on_done, exc))
        folders: dict[tuple[int, int], AtomicWriter] = {}
        for writer, _ in pending:
            with contextlib.suppress(OSError):
                st = os.fstat(writer.folder_fd)
                folders.setdefault((st.st_dev, st.st_ino), writer)
        folder_errors: dict[int, LocalFileError] = {}
        for writer in folders.values():
            try:
                writer.sync_folder()
            except LocalFileError as exc:
                folder_errors[writer.folder_fd] = exc
        for writer, on_done in pending:
            error = folder_errors.get(writer.folder_fd)
            path = writer.path
            writer.close()
            _call(on_done, None if error else path, error)
        for writer, on_done, failure in failed:
            writer.close()
            _call(on_done, None, failure)

    def _sync_all(self, writers: list[AtomicWriter]) -> bool:
        """One syncfs per file system the batch touches; False when each file must be fsynced.

        A batch of a few files is fsynced file by file instead: syncfs also flushes whatever
        other programs left dirty on the file system (a server that just wrote 512 MiB), which
        a few fsyncs never wait for.
        """
        if self._syncfs is None or len(writers) <= _FSYNC_EACH_UP_TO:
            return False
        devices: dict[int, int] = {}
        try:
            for w in writers:
                devices.setdefault(os.fstat(w.data_fd).st_dev, w.data_fd)
        except OSError:
            return False
        return all(self._syncfs(fd) == 0 for fd in devices.values())


def _call(on_done: Durable, path: Path | None, error: LocalFileError | None) -> None:
    try:
        on_done(path, error)
    except Exception:  # noqa: BLE001 - a callback's bug must not stop the commits of the others
        structlog.get_logger("s3sync").exception("mirror.commit_callback_failed")
