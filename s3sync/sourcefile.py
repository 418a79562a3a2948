"""Reading a file of the upload folder: one open per attempt, every check on that descriptor.

The upload folder is shared with people, some careless and a few hostile. Between two looks at
a path, it can be rewritten in place (``cp -p`` restores size and mtime, not the ctime),
replaced by a symlink to a secret, or by a FIFO that blocks whoever opens it. So a file is
opened once, with ``O_NOFOLLOW | O_NONBLOCK`` (a symlink fails, a FIFO or device never
blocks), checked with ``fstat`` (a regular file, else :class:`NotRegularFileError`), and every
byte that is hashed or sent comes from that descriptor. A read that comes back short, or an
``fstat`` that differs from the first one (size, mtime, ctime, inode), raises
:class:`FileChangedError`: the caller discards what it read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from s3sync.errors import FileChangedError, LocalFileError, NotRegularFileError
from s3sync.localfs import FileHashes, open_dir_under
from s3sync.plan import LocalStat

__all__ = ["FileHashes", "SourceFile", "file_kind", "identity", "read_hashes"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1024 * 1024


def file_kind(mode: int) -> str:
    """A readable name for what a mode says the path is."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def identity(st: os.stat_result) -> LocalStat:
    """The parts of a stat that change with any write, ``cp -p`` or replacement."""
    return LocalStat(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def split_under(path: Path | str, root: Path | None) -> tuple[Path, tuple[str, ...]] | None:
    """``(root, parts)`` when ``path`` lies below ``root``, else None.

    >>> split_under("/up/a/b.jpg", Path("/up"))
    (PosixPath('/up'), ('a', 'b.jpg'))
    >>> split_under("/elsewhere/b.jpg", Path("/up")) is None
    True
    """
    if root is None:
        return None
    prefix = os.fspath(root).rstrip(os.sep) + os.sep
    text = os.fspath(path)
    if not text.startswith(prefix) or len(text) == len(prefix):
        return None
    parts = Path(text[len(prefix) :]).parts
    if not parts or ".." in parts or parts[0] == os.sep:
        return None
    return root, parts


def _open_under(root: Path, parts: tuple[str, ...], path: str) -> int:
    """Open ``root/parts`` read-only, following no symlink below ``root`` (a folder swapped for one)."""
    try:
        dir_fd = open_dir_under(root, parts[:-1], create=False)
    except LocalFileError as exc:
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            raise LocalFileError(f"{path!r} does not exist (vanished?)", path=path) from cause
        if isinstance(cause, OSError) and cause.errno in {errno.ELOOP, errno.ENOTDIR}:
            raise NotRegularFileError(
                f"{path!r}: a folder on its way is a symlink or a file (not followed)", kind="symlink", path=path
            ) from None
        raise
    try:
        return os.open(parts[-1], _OPEN_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


class SourceFile:
    """One open of a regular file, for one attempt; use as a context manager.

    With ``root`` (the upload folder), a ``path`` below it is reached one folder at a time
    without following any symlink: a subfolder swapped for a symlink cannot lead outside.
    """

    def __init__(self, path: Path | str, *, root: Path | None = None) -> None:
        self.path = os.fspath(path)
        rooted = split_under(self.path, root)
        try:
            self.fd = _open_under(*rooted, self.path) if rooted is not None else os.open(self.path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotRegularFileError(
                    f"{self.path!r} is a symlink (not followed)", kind="symlink", path=self.path
                ) from None
            if isinstance(exc, FileNotFoundError):
                raise LocalFileError(f"{self.path!r} does not exist (vanished?)", path=self.path) from exc
            raise LocalFileError(f"cannot read {self.path!r}: {exc.strerror}", path=self.path) from exc
        try:
            self.stat = os.fstat(self.fd)
        except OSError as exc:
            os.close(self.fd)
            raise LocalFileError(f"cannot read {self.path!r}: {exc.strerror}", path=self.path) from exc
        if not stat.S_ISREG(self.stat.st_mode):
            os.close(self.fd)
            kind = file_kind(self.stat.st_mode)
            raise NotRegularFileError(f"{self.path!r} is a {kind}, not a regular file", kind=kind, path=self.path)
        #: Size, mtime, ctime and inode at the open: what every check compares with.
        self.identity = identity(self.stat)
        #: CRC-32 of each part, from :meth:`hashes` with ``part_size``.
        self.part_crcs: list[int] = []

    @property
    def size(self) -> int:
        """The size at the open."""
        return self.stat.st_size

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _changed(self, what: str) -> FileChangedError:
        return FileChangedError(f"{self.path!r} changed while it was read ({what})", path=self.path)

    def pread_exact(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; a short read means the file shrank: :class:`FileChangedError`."""
        parts: list[bytes] = []
        got = 0
        try:
            while got < length:
                chunk = os.pread(self.fd, length - got, offset + got)
                if not chunk:
                    raise self._changed(f"{got} of {length} bytes at offset {offset}")
                parts.append(chunk)
                got += len(chunk)
        except OSError as exc:
            raise LocalFileError(f"cannot read {self.path!r}: {exc.strerror}", path=self.path) from exc
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_all(self) -> bytes:
        """Every byte of the file as it was at the open (it must not have grown or shrunk)."""
        data = self.pread_exact(0, self.size)
        try:
            more = os.pread(self.fd, 1, self.size)
        except OSError as exc:
            raise LocalFileError(f"cannot read {self.path!r}: {exc.strerror}", path=self.path) from exc
        if more:
            raise self._changed("it grew")
        return data

    def hashes(
        self, *, md5: bool = True, progress: Callable[[], None] | None = None, part_size: int = 0
    ) -> FileHashes:
        """SHA-256 (and MD5) of exactly :attr:`size` bytes from the descriptor.

        With ``part_size``, also a CRC-32 of each part (:attr:`part_crcs`): a part read again to be
        sent must match it, or the bytes sent are not the bytes hashed (a writer through a shared
        mapping changes a file without moving its mtime or ctime).
        """
        sha = hashlib.sha256()
        m = hashlib.md5(usedforsecurity=False) if md5 else None
        crcs: list[int] = []
        offset = 0
        while offset < self.size:
            end = min(self.size, offset + _CHUNK)
            if part_size:
                end = min(end, (offset // part_size + 1) * part_size)
            chunk = self.pread_exact(offset, end - offset)
            sha.update(chunk)
            if m is not None:
                m.update(chunk)
            if part_size:
                if offset % part_size == 0:
                    crcs.append(0)
                crcs[-1] = zlib.crc32(chunk, crcs[-1])
            offset = end
            if progress is not None:
                progress()
        self.part_crcs = crcs
        return FileHashes(self.size, sha.hexdigest(), m.hexdigest() if m else "")

    def check_part(self, number: int, data: bytes) -> None:
        """Raise :class:`FileChangedError` unless part ``number`` (from 1) is the part that was hashed."""
        if zlib.crc32(data) != self.part_crcs[number - 1]:
            raise self._changed(f"part {number} differs from what was hashed")

    def check_unchanged(self) -> None:
        """Raise :class:`FileChangedError` unless the file is as it was at the open (size, mtime, ctime, inode)."""
        try:
            now = identity(os.fstat(self.fd))
        except OSError as exc:
            raise LocalFileError(f"cannot read {self.path!r}: {exc.strerror}", path=self.path) from exc
        if now != self.identity:
            raise self._changed("size, mtime or ctime differ")


def read_hashes(path: Path | str, *, md5: bool = True, root: Path | None = None) -> tuple[LocalStat, FileHashes]:
    """Hash a regular file safely (no symlink followed, no FIFO opened); its identity and hashes."""
    with SourceFile(path, root=root) as src:
        hashes = src.hashes(md5=md5)
        src.check_unchanged()
        return src.identity, hashes
