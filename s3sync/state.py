"""Persistent state in SQLite: what was uploaded, what the mirror wrote, and a few counters.

The database is the daemon's memory across restarts: an upload folder file whose
``(size, mtime_ns)`` matches its ``uploaded`` row is not uploaded again; a mirrored key whose
``(etag, size)`` and local stat match its row costs no request. WAL mode with
``synchronous=NORMAL`` survives SIGKILL (a committed transaction is never lost by a process
crash), and every write is its own short transaction.

One connection, shared by threads behind a lock: SQLite serialises writers anyway and our
transactions are tiny.

A state belongs to one :class:`StateNamespace` (endpoint, bucket, key naming, folders),
recorded in the ``meta`` table. Opened for other settings, the records that would lie are
dropped, once, with one ``state.namespace_changed`` event: upload records when the endpoint,
bucket, key naming or upload folder differ (another bucket never reuses this one's "already
uploaded"), mirror records when the endpoint, bucket or mirror folder differ (the mirror then
adopts local files whose content matches their objects, so nothing is downloaded again).

At open, a file that is not SQLite, or fails ``PRAGMA quick_check``, raises
:class:`StateCorruptError` (one line that names ``s3sync state rebuild``), never a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from s3sync.errors import StateCorruptError, StateError

if TYPE_CHECKING:
    from s3sync.settings import Settings

__all__ = ["MirrorRecord", "State", "StateNamespace", "UploadRecord", "namespace_changes"]

log = structlog.get_logger("s3sync")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_CORRUPT = 11  # primary result codes: the file is damaged / is not a database
_SQLITE_NOTADB = 26
_NAMESPACE = "namespace"  # the meta row that says what this state belongs to
_RECOVER = "run `s3sync state rebuild` to set it aside and recreate the state from the bucket and the folders"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path      TEXT PRIMARY KEY,  -- relative to the upload folder
    status    TEXT NOT NULL,     -- 'uploaded' | 'rejected' | 'conflict' | 'gone' (moved or deleted after upload)
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT,
    key       TEXT,
    etag      TEXT,
    reason    TEXT,
    updated   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mirror (
    key             TEXT PRIMARY KEY,
    size            INTEGER NOT NULL,
    etag            TEXT NOT NULL,
    local_size      INTEGER NOT NULL,
    local_mtime_ns  INTEGER NOT NULL,
    seen_pass       INTEGER NOT NULL DEFAULT 0,
    updated         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS multipart (
    upload_id TEXT PRIMARY KEY,
    key       TEXT NOT NULL,
    started   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The newest bucket event applied per key (its S3 sequencer, upper-case hex), kept after a
-- removal too: a late create older than the delete must not bring the file back. Added with the
-- event mirror; an older state gains it at open (CREATE IF NOT EXISTS), a read-only one reads none.
CREATE TABLE IF NOT EXISTS event_seq (
    key       TEXT PRIMARY KEY,
    sequencer TEXT NOT NULL,
    updated   REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StateNamespace:
    """What a state database belongs to: its records are true only for these settings."""

    endpoint: str
    bucket: str
    key_template: str
    category_map: str  # canonical JSON (sorted keys)
    upload_dir: str
    local_dir: str

    #: The fields an upload record depends on (the key it went to, in which bucket, from which folder).
    UPLOADS = ("endpoint", "bucket", "key_template", "category_map", "upload_dir")
    #: The fields a mirror record depends on.
    MIRROR = ("endpoint", "bucket", "local_dir")

    @classmethod
    def of(cls, settings: Settings) -> StateNamespace:
        """The namespace of ``settings``. The embedded demo server counts as one endpoint, whatever its port."""
        endpoint = "local-server" if settings.local_server else (settings.endpoint_url or "aws").rstrip("/")
        return cls(
            endpoint=endpoint,
            bucket=settings.bucket_name or "",
            key_template=settings.key_template,
            category_map=json.dumps(settings.category_map, sort_keys=True, separators=(",", ":")),
            upload_dir=os.path.realpath(settings.upload_dir_path),
            local_dir=os.path.realpath(settings.local_path),
        )

    def to_json(self) -> str:
        """The value stored in the ``meta`` table."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StateNamespace | None:
        """Parse a stored namespace; None for none, or for one this version cannot read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(**{f.name: str(data[f.name]) for f in fields(cls)})
        except (ValueError, KeyError, TypeError):
            return None


def namespace_changes(old: StateNamespace | None, new: StateNamespace) -> tuple[bool, bool, list[str]]:
    """``(uploads_stale, mirror_stale, changed_fields)`` when a state of ``old`` is opened for ``new``.

    No recorded namespace (a state from before namespacing, or unreadable) makes every record
    stale: nothing says which bucket it described.

    >>> a = StateNamespace("aws", "staging", "{name}", "{}", "/u", "/m")
    >>> namespace_changes(a, StateNamespace("aws", "production", "{name}", "{}", "/u", "/m"))
    (True, True, ['bucket'])
    >>> namespace_changes(a, StateNamespace("aws", "staging", "{name}", "{}", "/u", "/other"))
    (False, True, ['local_dir'])
    """
    if old is None:
        return True, True, ["unrecorded"]
    changed = [f.name for f in fields(StateNamespace) if getattr(old, f.name) != getattr(new, f.name)]
    uploads = any(name in StateNamespace.UPLOADS for name in changed)
    mirror = any(name in StateNamespace.MIRROR for name in changed)
    return uploads, mirror, changed


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in {_SQLITE_CORRUPT, _SQLITE_NOTADB}


def _corrupt(path: Path, detail: str) -> StateCorruptError:
    detail = " ".join(detail.split())[:160]
    return StateCorruptError(
        f"S3_STATE_PATH: the state database {str(path)!r} is corrupted ({detail}); {_RECOVER}", path=str(path)
    )


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite before SQLite touches it (an empty file is a new database)."""
    try:
        # Non-blocking: a FIFO planted at the path must be refused, not wait for a writer for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"S3_STATE_PATH: cannot read {str(path)!r}: {exc.strerror}", path=str(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateCorruptError(f"S3_STATE_PATH: {str(path)!r} is not a regular file", path=str(path))
        head = os.pread(fd, len(_SQLITE_MAGIC), 0)
    except OSError as exc:
        raise StateError(f"S3_STATE_PATH: cannot read {str(path)!r}: {exc.strerror}", path=str(path)) from None
    finally:
        os.close(fd)
    if head and head != _SQLITE_MAGIC:
        raise StateCorruptError(
            f"S3_STATE_PATH: {str(path)!r} is not an s3sync state database (not a SQLite file); {_RECOVER}",
            path=str(path),
        )


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """The last outcome for one upload-folder file."""

    path: str
    status: str
    size: int
    mtime_ns: int
    sha256: str | None
    key: str | None
    etag: str | None
    reason: str | None
    ctime_ns: int = 0
    ino: int = 0
    #: For a rejection or conflict: the fingerprint of the settings that decided it.
    rules: str | None = None


#: Columns added to ``uploads`` after its first release: (name, declaration).
_UPLOAD_COLUMNS_ADDED = (
    ("ctime_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("ino", "INTEGER NOT NULL DEFAULT 0"),
    ("rules", "TEXT"),
)
_UPLOAD_SELECT = "SELECT path, status, size, mtime_ns, sha256, key, etag, reason, ctime_ns, ino, rules FROM uploads"
_UPLOAD_SELECT_OLD = "SELECT path, status, size, mtime_ns, sha256, key, etag, reason, 0, 0, NULL FROM uploads"


def _migrate_uploads(db: sqlite3.Connection) -> None:
    """Add the columns a state written by an older s3sync lacks, and the index of keys."""
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(uploads)")}
    for name, decl in _UPLOAD_COLUMNS_ADDED:
        if name not in have:
            db.execute(f"ALTER TABLE uploads ADD COLUMN {name} {decl}")
    db.execute("CREATE INDEX IF NOT EXISTS uploads_key ON uploads(key)")


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    """A mirrored key: the object it came from and the stat of the local file at its path.

    ``owned`` says who the local file belongs to: s3sync wrote it (``True``; its bytes are
    ``sha256`` when known, else those of the object whose MD5 ETag is ``etag``), or a person
    changed or created it and the mirror keeps it (``False``; the stat is theirs, noted so that
    the file is not hashed again while it stays as it is). Only an owned file whose stat (or
    content) is still what s3sync wrote may be replaced or deleted.

    ``adopted``: the file already held the object's bytes when the mirror first met it (a
    person's identical copy, or a state rebuilt from the folder). The mirror keeps it up to
    date like its own, but never deletes it: it did not write it.
    """

    key: str
    size: int
    etag: str
    local_size: int
    local_mtime_ns: int
    seen_pass: int
    local_ino: int = 0
    local_ctime_ns: int = 0
    sha256: str | None = None
    #: The object's LastModified, in microseconds since the epoch (None: not known).
    last_modified_us: int | None = None
    owned: bool = True
    adopted: bool = False


#: Columns added to ``mirror`` after its first version: (name, declaration, value for an old read-only state).
_MIRROR_ADDED = (
    ("local_ino", "INTEGER NOT NULL DEFAULT 0", "0"),
    ("local_ctime_ns", "INTEGER NOT NULL DEFAULT 0", "0"),
    ("sha256", "TEXT", "NULL"),
    ("last_modified_us", "INTEGER", "NULL"),
    ("owned", "INTEGER NOT NULL DEFAULT 1", "1"),
    ("adopted", "INTEGER NOT NULL DEFAULT 0", "0"),
)
_MIRROR_BASE = "key, size, etag, local_size, local_mtime_ns, seen_pass"


def _mirror_columns(db: sqlite3.Connection) -> str:
    """Add the newer ``mirror`` columns to an older state; the SELECT list for a MirrorRecord.

    A state opened read-only keeps its old table: the missing columns read as their defaults.
    """
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(mirror)")}
    columns = [_MIRROR_BASE]
    for name, declaration, default in _MIRROR_ADDED:
        if name not in have:
            try:
                with db:
                    db.execute(f"ALTER TABLE mirror ADD COLUMN {name} {declaration}")
            except sqlite3.OperationalError:  # read-only
                columns.append(f"{default} AS {name}")
                continue
        columns.append(name)
    return ", ".join(columns)


def _mirror_record(row: tuple[object, ...]) -> MirrorRecord:
    *fields_, owned, adopted = row
    return MirrorRecord(*fields_, owned=bool(owned), adopted=bool(adopted))  # type: ignore[arg-type,misc]


class State:
    """The state database at ``path`` (created with its folder when missing).

    With ``namespace``, records of another namespace are dropped (read-only: hidden) at open.
    """

    def __init__(self, path: Path | str, *, read_only: bool = False, namespace: StateNamespace | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._foreign_uploads = False  # read-only and another namespace's uploads: none apply
        _check_header(self.path)
        try:
            if read_only:
                uri = f"file:{self.path}?mode=ro" if self.path.exists() else "file::memory:"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                self._db.close()
                raise _corrupt(self.path, "; ".join(problems[:3]))
            if not read_only or not self.path.exists():
                self._db.executescript(_SCHEMA)
                if not read_only:
                    with self._db:
                        _migrate_uploads(self._db)
            have = {str(row[1]) for row in self._db.execute("PRAGMA table_info(uploads)")}
            #: How upload records are read (a read-only look at an older state lacks the new columns).
            self._upload_select = _UPLOAD_SELECT if "rules" in have else _UPLOAD_SELECT_OLD
            self._db.execute("SELECT count(*) FROM uploads").fetchone()
            self._mirror_select = _mirror_columns(self._db)
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                raise _corrupt(self.path, str(exc)) from None
            raise StateError(f"S3_STATE_PATH: cannot use {str(self.path)!r}: {exc}") from None
        except OSError as exc:
            raise StateError(f"S3_STATE_PATH: cannot create {str(self.path)!r}: {exc.strerror}") from None
        if namespace is not None:
            self._adopt(namespace, read_only=read_only)

    def _adopt(self, new: StateNamespace, *, read_only: bool) -> None:
        """Make the state belong to ``new``: drop the records another namespace left (see the module doc)."""
        old = StateNamespace.from_json(self.get_meta(_NAMESPACE))
        uploads_stale, mirror_stale, changed = namespace_changes(old, new)
        if read_only:  # a dry run changes nothing: it just does not believe the other namespace
            self._foreign_uploads = uploads_stale and (old is not None or self.count_uploads("uploaded") > 0)
            return
        if old == new:
            return
        with self._lock:
            try:
                with self._db:
                    db = self._db
                    uploads = db.execute("SELECT count(*) FROM uploads").fetchone()[0] if uploads_stale else 0
                    mirror = db.execute("SELECT count(*) FROM mirror").fetchone()[0] if mirror_stale else 0
                    if uploads_stale and old is not None and (old.endpoint, old.bucket) == (new.endpoint, new.bucket):
                        # Same bucket, other naming or folder: no "already uploaded" holds any more,
                        # but which path's bytes are at a key still does (a key's owner must not be
                        # forgotten because a category was added); conflicts are looked at again.
                        db.execute("UPDATE uploads SET status = 'gone' WHERE status = 'uploaded'")
                        uploads = db.execute("SELECT count(*) FROM uploads WHERE status = 'gone'").fetchone()[0]
                    elif uploads_stale:
                        db.execute("DELETE FROM uploads")
                    if mirror_stale:
                        db.execute("DELETE FROM mirror")
                        db.execute("DELETE FROM event_seq")
                        db.execute("DELETE FROM meta WHERE name = 'last_mirror_ok'")
                    # Multipart ids belong to the old bucket: aborting them in the new one would hit
                    # nothing (or someone else's upload). Open ones there are left to its lifecycle rules.
                    multipart = 0
                    if old is None or (old.endpoint, old.bucket) != (new.endpoint, new.bucket):
                        multipart = db.execute("SELECT count(*) FROM multipart").fetchone()[0]
                        db.execute("DELETE FROM multipart")
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_NAMESPACE, new.to_json()))
            except sqlite3.Error as exc:
                raise self._error(exc) from None
        if old is not None or uploads or mirror or multipart:
            log.info(
                "state.namespace_changed",
                state=str(self.path),
                changed=changed,
                bucket=new.bucket,
                endpoint=new.endpoint,
                uploads_dropped=uploads,
                mirror_dropped=mirror,
                multipart_dropped=multipart,
            )

    def _error(self, exc: sqlite3.Error) -> StateError:
        if _is_corruption(exc):
            return _corrupt(self.path, str(exc))
        return StateError(f"state database {str(self.path)!r}: {exc}")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                with self._db:
                    self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    # --- uploads ---------------------------------------------------------------------------
    def get_upload(self, path: str) -> UploadRecord | None:
        """The record for an upload-folder path (relative), if any."""
        if self._foreign_uploads:
            return None
        rows = self._read(f"{self._upload_select} WHERE path = ?", (path,))
        return UploadRecord(*rows[0]) if rows else None  # type: ignore[arg-type]

    def get_uploads(self, paths: list[str]) -> dict[str, UploadRecord]:
        """Records for many paths at once (one query per 500): the rescan's fast path."""
        out: dict[str, UploadRecord] = {}
        if self._foreign_uploads:
            return out
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"{self._upload_select} WHERE path IN ({marks})",
                tuple(chunk),
            )
            for row in rows:
                rec = UploadRecord(*row)  # type: ignore[arg-type]
                out[rec.path] = rec
        return out

    def _record(
        self,
        path: str,
        status: str,
        size: int,
        mtime_ns: int,
        *,
        sha256: str | None = None,
        key: str | None = None,
        etag: str | None = None,
        reason: str | None = None,
        ctime_ns: int = 0,
        ino: int = 0,
        rules: str | None = None,
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO uploads (path, status, size, mtime_ns, sha256, key, etag, reason, updated,"
            " ctime_ns, ino, rules) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, status, size, mtime_ns, sha256, key, etag, reason, time.time(), ctime_ns, ino, rules),
        )

    def record_uploaded(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        sha256: str,
        key: str,
        etag: str,
        *,
        ctime_ns: int = 0,
        ino: int = 0,
    ) -> None:
        """Remember that ``path`` with this stat (ctime and inode too, when known) is in the bucket at ``key``."""
        self._record(path, "uploaded", size, mtime_ns, sha256=sha256, key=key, etag=etag, ctime_ns=ctime_ns, ino=ino)

    def record_rejected(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        reason: str,
        *,
        ctime_ns: int = 0,
        ino: int = 0,
        rules: str | None = None,
    ) -> None:
        """Remember that ``path`` with this stat was rejected under ``rules`` (looked at again when either changes)."""
        self._record(path, "rejected", size, mtime_ns, reason=reason, ctime_ns=ctime_ns, ino=ino, rules=rules)

    def record_conflict(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        key: str,
        reason: str,
        *,
        ctime_ns: int = 0,
        ino: int = 0,
        rules: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Remember that ``path`` (with these bytes) maps to ``key``, which another path owns: kept, not uploaded."""
        self._record(
            path,
            "conflict",
            size,
            mtime_ns,
            key=key,
            reason=reason,
            ctime_ns=ctime_ns,
            ino=ino,
            rules=rules,
            sha256=sha256,
        )

    def record_gone(self, path: str) -> None:
        """``path`` was moved or deleted after its upload: keep which key it owns, forget its stat."""
        self._write("UPDATE uploads SET status = 'gone', updated = ? WHERE path = ?", (time.time(), path))

    def key_records(self, key: str, *, other_than: str) -> list[UploadRecord]:
        """Records of paths other than ``other_than`` for ``key``: owners (status ``uploaded`` or
        ``gone``: their content is, or was, at the key) and conflict verdicts (held back from it)."""
        if self._foreign_uploads:
            return []
        rows = self._read(
            f"{self._upload_select} WHERE key = ? AND path != ? AND status IN ('uploaded', 'gone', 'conflict')",
            (key, other_than),
        )
        return [UploadRecord(*r) for r in rows]  # type: ignore[arg-type]

    def uploads_with(self, *statuses: str) -> list[UploadRecord]:
        """Every upload record with one of ``statuses`` (for ``state rebuild``)."""
        if self._foreign_uploads or not statuses:
            return []
        marks = ",".join("?" * len(statuses))
        rows = self._read(f"{self._upload_select} WHERE status IN ({marks})", statuses)
        return [UploadRecord(*r) for r in rows]  # type: ignore[arg-type]

    def record_owner(self, path: str, key: str, sha256: str | None, etag: str | None) -> None:
        """Remember that ``path``'s bytes went to ``key`` though the file is gone (see :meth:`record_gone`)."""
        self._record(path, "gone", 0, 0, sha256=sha256, key=key, etag=etag)

    def clear_verdicts(self) -> int:
        """Forget every rejection and conflict (``sync --retry-rejected``); return how many."""
        n = self.count_uploads("rejected") + self.count_uploads("conflict")
        self._write("DELETE FROM uploads WHERE status IN ('rejected', 'conflict')", ())
        return n

    def forget_upload(self, path: str) -> None:
        """Drop the record of ``path``."""
        self._write("DELETE FROM uploads WHERE path = ?", (path,))

    def count_uploads(self, status: str) -> int:
        """How many upload records have ``status``."""
        if self._foreign_uploads:
            return 0
        value = self._read("SELECT count(*) FROM uploads WHERE status = ?", (status,))[0][0]
        return value if isinstance(value, int) else 0

    # --- multipart uploads in flight (aborted at start-up after a crash) --------------------
    def add_multipart(self, upload_id: str, key: str) -> None:
        """Note an open multipart upload."""
        self._write("INSERT OR REPLACE INTO multipart VALUES (?, ?, ?)", (upload_id, key, time.time()))

    def remove_multipart(self, upload_id: str) -> None:
        """Forget a multipart upload that was completed or aborted."""
        self._write("DELETE FROM multipart WHERE upload_id = ?", (upload_id,))

    def open_multipart(self) -> list[tuple[str, str]]:
        """``(upload_id, key)`` of multipart uploads a previous run left open."""
        return [(str(u), str(k)) for u, k in self._read("SELECT upload_id, key FROM multipart")]

    # --- mirror ----------------------------------------------------------------------------
    def get_mirror(self, key: str) -> MirrorRecord | None:
        """The record of a mirrored key, if any."""
        rows = self._read(f"SELECT {self._mirror_select} FROM mirror WHERE key = ?", (key,))  # noqa: S608 - fixed column list
        return _mirror_record(rows[0]) if rows else None

    def get_mirrors(self, keys: list[str]) -> dict[str, MirrorRecord]:
        """Records for many keys at once (one query per 500): a listing page at a time."""
        out: dict[str, MirrorRecord] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {self._mirror_select} FROM mirror WHERE key IN ({marks})",  # noqa: S608 - only placeholders and a fixed column list
                tuple(chunk),
            )
            for row in rows:
                rec = _mirror_record(row)
                out[rec.key] = rec
        return out

    def record_mirrored(
        self,
        key: str,
        size: int,
        etag: str,
        local_size: int,
        local_mtime_ns: int,
        seen_pass: int,
        *,
        local_ino: int = 0,
        local_ctime_ns: int = 0,
        sha256: str | None = None,
        last_modified_us: int | None = None,
        owned: bool = True,
        adopted: bool = False,
    ) -> None:
        """Remember what is at ``key``'s local path: what the mirror wrote (``owned``), or a person's file it keeps.

        ``adopted``: a file found already holding the object's bytes (kept up to date, never deleted).
        """
        self._write(
            "INSERT OR REPLACE INTO mirror (key, size, etag, local_size, local_mtime_ns, seen_pass, updated, "
            "local_ino, local_ctime_ns, sha256, last_modified_us, owned, adopted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                size,
                etag,
                local_size,
                local_mtime_ns,
                seen_pass,
                time.time(),
                local_ino,
                local_ctime_ns,
                sha256,
                last_modified_us,
                int(owned),
                int(adopted),
            ),
        )

    def set_mirror_sha256(self, key: str, sha256: str, local_ino: int, local_mtime_ns: int) -> None:
        """Add the SHA-256 of what the mirror wrote, learnt after its record (only if that file is still the one)."""
        self._write(
            "UPDATE mirror SET sha256 = ? WHERE key = ? AND owned = 1 AND local_ino = ? AND local_mtime_ns = ?",
            (sha256, key, local_ino, local_mtime_ns),
        )

    def mark_seen(self, keys: list[str], seen_pass: int) -> None:
        """Mark mirrored keys as present in the listing of pass ``seen_pass``."""
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "UPDATE mirror SET seen_pass = ? WHERE key = ?", [(seen_pass, k) for k in keys]
                    )
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def unseen_mirrored(self, seen_pass: int, prefix: str, limit: int) -> list[MirrorRecord]:
        """Mirrored keys under ``prefix`` that pass ``seen_pass`` did not list (deletion candidates)."""
        rows = self._read(
            f"SELECT {self._mirror_select} FROM mirror "  # noqa: S608 - fixed column list
            "WHERE seen_pass < ? AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
            (seen_pass, len(prefix), prefix, limit),
        )
        return [_mirror_record(r) for r in rows]

    def forget_mirrored(self, key: str) -> None:
        """Drop a mirror record (its file was deleted, or is no longer the mirror's)."""
        self._write("DELETE FROM mirror WHERE key = ?", (key,))

    def iter_mirrored(self) -> Iterator[MirrorRecord]:
        """Every mirror record (for consistency checks)."""
        for r in self._read(f"SELECT {self._mirror_select} FROM mirror"):  # noqa: S608 - fixed column list
            yield _mirror_record(r)

    def count_kept_local(self) -> int:
        """How many mirror paths hold a person's file that the mirror keeps instead of its object."""
        if "AS owned" in self._mirror_select:  # an old state, read-only: it knows of none
            return 0
        value = self._read("SELECT count(*) FROM mirror WHERE owned = 0")[0][0]
        return value if isinstance(value, int) else 0

    # --- bucket events ---------------------------------------------------------------------
    def get_sequencers(self, keys: list[str]) -> dict[str, str]:
        """The last applied event sequencer of each key that has one (see :mod:`s3sync.events`)."""
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._read(f"SELECT key, sequencer FROM event_seq WHERE key IN ({marks})", tuple(chunk))  # noqa: S608 - placeholders only
            except StateError:
                if self._has_table("event_seq"):
                    raise
                return {}  # an older state opened read-only: no event applied yet
            out.update((str(k), str(v)) for k, v in rows)
        return out

    def set_sequencers(self, items: list[tuple[str, str]]) -> None:
        """Remember ``(key, sequencer)`` pairs as applied, in one transaction (callers pass newer ones only)."""
        now = time.time()
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO event_seq (key, sequencer, updated) VALUES (?, ?, ?)",
                        [(k, v, now) for k, v in items],
                    )
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def prune_sequencers(self, older_than: float) -> int:
        """Forget sequencers noted before ``older_than`` (Unix time): no queue keeps a message that long."""
        with self._lock:
            try:
                with self._db:
                    return self._db.execute("DELETE FROM event_seq WHERE updated < ?", (older_than,)).rowcount
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _has_table(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    # --- meta ------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        """A small named value (last mirror time, pass number...)."""
        rows = self._read("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        """Set a small named value."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def namespace(self) -> StateNamespace | None:
        """The namespace this state belongs to (None: not recorded yet)."""
        return StateNamespace.from_json(self.get_meta(_NAMESPACE))

    def next_pass(self) -> int:
        """A new mirror pass number (monotonic across restarts)."""
        n = int(self.get_meta("mirror_pass") or 0) + 1
        self.set_meta("mirror_pass", str(n))
        return n
