"""Durable, confined writes under a root folder.

Everything the mirror writes goes through :class:`AtomicWriter`: folders are walked with
directory file descriptors and ``O_NOFOLLOW``, so a symlink planted inside the mirror can
never redirect a write out of it; data goes to a ``.s3sync-tmp-*`` file in the target
folder, is fsynced, renamed over the target and the folder is fsynced. A reader never sees
a partial file and a failed download leaves the previous copy intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from s3sync.errors import LocalFileError
from s3sync.paths import TEMP_PREFIX

__all__ = [
    "AtomicWriter",
    "FileHashes",
    "hash_file",
    "lstat_under",
    "open_dir_under",
    "remove_under",
    "sweep_temp_files",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileHashes:
    """Size and content hashes of a local file, from one read."""

    size: int
    sha256: str
    md5: str


def hash_file(path: Path | str, *, md5: bool = True) -> FileHashes:
    """Hash a file in one pass (``md5`` may be skipped: it is the slower of the two)."""
    sha = hashlib.sha256()
    m = hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    try:
        with open(path, "rb", buffering=0) as f:
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
    try:
        if create:
            os.makedirs(root, exist_ok=True)
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise LocalFileError(f"cannot open folder {str(root)!r}: {exc.strerror}", path=str(root)) from exc
    try:
        for seg in segments:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(seg, 0o755, dir_fd=fd)
            try:
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


def lstat_under(root: Path, segments: Sequence[str]) -> os.stat_result | None:
    """``lstat`` of ``root/segments`` without following symlinks on the way; None if absent."""
    if not segments:
        return None
    try:
        fd = open_dir_under(root, segments[:-1], create=False)
    except LocalFileError:
        return None
    try:
        return os.stat(segments[-1], dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)


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


class AtomicWriter:
    """Write ``root/segments`` atomically and durably; use as a context manager.

    >>> # with AtomicWriter(root, ("a", "b.jpg")) as w: w.write(data); w.commit()

    Leaving the block without :meth:`commit` removes the temporary file.
    """

    def __init__(self, root: Path, segments: Sequence[str], *, mode: int = 0o644) -> None:
        if not segments:
            raise LocalFileError("empty target path", path=str(root))
        self.root = root
        self.segments = tuple(segments)
        self._dir_fd = open_dir_under(root, self.segments[:-1], create=True)
        self._tmp = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        try:
            self._fd = os.open(
                self._tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                mode,
                dir_fd=self._dir_fd,
            )
        except OSError as exc:
            os.close(self._dir_fd)
            raise LocalFileError(f"cannot create a file under {str(root)!r}: {exc.strerror}") from exc
        self._done = False
        self.bytes_written = 0

    @property
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

    def commit(self) -> Path:
        """fsync, rename over the target, fsync the folder."""
        name = self.segments[-1]
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            try:
                existing = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                kind = "folder" if stat.S_ISDIR(existing.st_mode) else "symlink or special file"
                raise LocalFileError(f"{str(self.path)!r} exists as a {kind}; not replaced", path=str(self.path))
            os.rename(self._tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise LocalFileError(f"cannot finish {str(self.path)!r}: {exc.strerror}", path=str(self.path)) from exc
        self._done = True
        return self.path

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
