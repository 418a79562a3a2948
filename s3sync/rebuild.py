"""``s3sync state rebuild``: recreate the state database from the bucket and the folders.

The state is a cache of what the bucket and the folders say, so a lost or corrupted one is
rebuilt from one listing of the bucket and one scan of the upload folder, without uploading
again what the bucket already holds: an upload-folder file whose key is in the bucket with the
same size and the same content (the object's s3sync SHA-256, from a HEAD, or its plain-MD5
ETag, against a hash of the local file) is recorded as uploaded. Everything else is left for
the next ``sync`` or daemon start, which checks the bucket again before any PUT.

Mirror records are left empty: the mirror adopts a local file whose content matches its object
instead of downloading it again, so the scan of the mirror folder happens there, in its pass.

The new database is built beside the old one and moved into place only when complete; the old
file (with its ``-wal``/``-shm``) is moved aside as ``<name>.corrupt-<time>`` (or
``<name>.old-<time>`` when it was sound), never deleted. The caller holds the state's lock.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from s3sync.errors import InvalidNameError, LocalFileError, StateCorruptError
from s3sync.localfs import hash_file
from s3sync.plan import is_ignored_name
from s3sync.settings import Settings
from s3sync.state import State, StateNamespace, UploadRecord
from s3sync.transport import RemoteObject, Transport

__all__ = ["RebuildReport", "rebuild_state"]

log = structlog.get_logger("s3sync")

_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's companions of a database file


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild found."""

    scanned: int  # validly named files in the upload folder
    recorded: int  # already in the bucket with the same content: recorded as uploaded
    to_upload: int  # absent from the bucket, or different there: the next sync uploads them
    unverifiable: int  # same size in the bucket but nothing to compare content with: checked again at upload
    invalid: int  # names outside the convention: the daemon rejects them again
    moved_aside: Path | None  # where the previous state file went
    was_corrupt: bool


@dataclass(frozen=True, slots=True)
class _Local:
    rel: str
    path: Path
    key: str
    st: os.stat_result


@dataclass(frozen=True, slots=True)
class _Verdict:
    local: _Local
    sha256: str | None  # set when the bucket holds these bytes
    etag: str
    unverifiable: bool = False


def rebuild_state(
    settings: Settings, *, transport: Transport | None = None, clock: Callable[[], float] = time.time
) -> RebuildReport:
    """Rebuild ``settings.state_path`` (see the module docstring); the caller holds the lock."""
    own = transport is None
    tr = transport if transport is not None else Transport(settings)
    try:
        return _rebuild(settings, tr, clock)
    finally:
        if own:
            tr.close()


def _rebuild(settings: Settings, transport: Transport, clock: Callable[[], float]) -> RebuildReport:
    path = settings.state_path
    was_corrupt, multipart, kept = _inspect(path, settings)
    locals_, invalid = _scan(settings, transport)
    wanted = {item.key for item in locals_}
    remote: dict[str, RemoteObject] = {}
    for page in transport.list_pages(""):
        for obj in page:
            if obj.key in wanted:
                remote[obj.key] = obj
    same_size = [item for item in locals_ if (r := remote.get(item.key)) is not None and r.size == item.st.st_size]
    with ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="s3sync-rebuild") as pool:
        verdicts = list(pool.map(lambda item: _verify(transport, item, remote[item.key]), same_size))

    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    _remove_db(fresh)
    recorded = unverifiable = 0
    state = State(fresh, namespace=StateNamespace.of(settings))
    try:
        for v in verdicts:
            if v.sha256 is not None:
                st = v.local.st
                state.record_uploaded(
                    v.local.rel,
                    st.st_size,
                    st.st_mtime_ns,
                    v.sha256,
                    v.local.key,
                    v.etag,
                    ctime_ns=st.st_ctime_ns,  # the stat the hash was taken under (checked unchanged after it)
                    ino=st.st_ino,
                )
                recorded += 1
            elif v.unverifiable:
                unverifiable += 1
        for upload_id, key in multipart:  # uploads a crash left open: still to be aborted at the next start
            state.add_multipart(upload_id, key)
        # Which path owns a key, and which files were held back from it, cannot be read from the
        # bucket: a sound old state keeps telling it (else another path's file would take the key).
        found = {v.local.rel for v in verdicts if v.sha256 is not None}
        for rec in kept:
            if rec.path in found or rec.key is None:
                continue
            if rec.status == "conflict":
                state.record_conflict(
                    rec.path,
                    rec.size,
                    rec.mtime_ns,
                    rec.key,
                    rec.reason or "",
                    ctime_ns=rec.ctime_ns,
                    ino=rec.ino,
                    rules=rec.rules,
                    sha256=rec.sha256,
                )
            else:
                state.record_owner(rec.path, rec.key, rec.sha256, rec.etag)
    finally:
        state.close()

    moved = None if _no_state(path) else _move_aside(path, "corrupt" if was_corrupt else "old", clock())
    for suffix in _SIDE_FILES:  # normally none after a clean close; if any, they belong with it
        side = fresh.with_name(fresh.name + suffix)
        if side.exists():
            os.replace(side, path.with_name(path.name + suffix))
    os.replace(fresh, path)
    report = RebuildReport(
        scanned=len(locals_),
        recorded=recorded,
        to_upload=len(locals_) - recorded,
        unverifiable=unverifiable,
        invalid=invalid,
        moved_aside=moved,
        was_corrupt=was_corrupt,
    )
    log.info(
        "state.rebuilt",
        state=str(path),
        scanned=report.scanned,
        recorded=report.recorded,
        to_upload=report.to_upload,
        moved_aside=str(moved) if moved else None,
    )
    return report


def _no_state(path: Path) -> bool:
    """No state to read or keep: no file, or the empty one the lock creates to hold the database's inode."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def _inspect(path: Path, settings: Settings) -> tuple[bool, list[tuple[str, str]], list[UploadRecord]]:
    """``(corrupt, open multipart uploads, key ownership records)`` of the current state file.

    A sound one keeps its multipart notes and, for the same endpoint and bucket, which paths own
    which keys and which files were held back as conflicts.
    """
    if _no_state(path):
        return False, [], []
    try:
        old = State(path, read_only=True)
    except StateCorruptError:
        return True, [], []
    try:
        recorded = StateNamespace.from_json(old.get_meta("namespace"))
        now = StateNamespace.of(settings)
        same_bucket = recorded is not None and (recorded.endpoint, recorded.bucket) == (now.endpoint, now.bucket)
        kept = old.uploads_with("uploaded", "gone", "conflict") if same_bucket else []
        return False, old.open_multipart(), kept
    finally:
        old.close()


def _scan(settings: Settings, transport: Transport) -> tuple[list[_Local], int]:
    """Every validly named regular file of the upload folder, with its key; and how many names are invalid."""
    root = settings.upload_dir_path
    own = (settings.done_dir, settings.rejected_dir, settings.state_path.parent)
    excluded = {p for p in own if p is not None and root in p.parents}
    found: list[_Local] = []
    invalid = 0
    for path, st in _walk(root, excluded):
        try:
            key = transport.resource(path.name).key
        except InvalidNameError:
            invalid += 1
            continue
        found.append(_Local(str(path.relative_to(root)), path, key, st))
    return found, invalid


def _walk(root: Path, excluded: set[Path]) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under ``root`` as the daemon sees them: no hidden or temporary names, no symlinks."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith(".") or is_ignored_name(entry.name):
                        continue
                    p = Path(entry.path)
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if p not in excluded:
                            stack.append(p)
                    elif stat.S_ISREG(st.st_mode):
                        yield p, st
        except OSError:
            continue


def _verify(transport: Transport, item: _Local, obj: RemoteObject) -> _Verdict:
    """Whether the bucket's object at ``item.key`` holds the local file's bytes (one hash, a HEAD if needed)."""
    sha256 = obj.sha256
    if sha256 is None and not obj.etag_is_md5:
        head = transport.head(item.key)  # a listing carries no metadata: our SHA-256 is in the HEAD
        if head is None or head.size != item.st.st_size:
            return _Verdict(item, None, "")
        sha256 = head.sha256
        if sha256 is None and not head.etag_is_md5:
            return _Verdict(item, None, "", unverifiable=True)
    try:
        local = hash_file(item.path, md5=sha256 is None)
        after = item.path.lstat()
    except (LocalFileError, OSError):
        return _Verdict(item, None, "")
    if _identity(after) != _identity(item.st):  # changed while hashed: let the next sync decide
        return _Verdict(item, None, "")
    same = local.sha256 == sha256 if sha256 is not None else local.md5 == obj.etag
    return _Verdict(item, local.sha256 if same else None, obj.etag)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _move_aside(path: Path, label: str, now: float) -> Path:
    """Rename the database and its companion files to ``<name>.<label>-<time>``; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    target = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
    # Companions first: a -wal left beside the new database would be replayed into it.
    for suffix in _SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    os.replace(path, target)
    return target


def _remove_db(path: Path) -> None:
    for p in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
