"""Persistent state in SQLite: what was uploaded, what the mirror wrote, and a few counters.

The database is the daemon's memory across restarts: an upload folder file whose
``(size, mtime_ns)`` matches its ``uploaded`` row is not uploaded again; a mirrored key whose
``(etag, size)`` and local stat match its row costs no request. WAL mode with
``synchronous=NORMAL`` survives SIGKILL (a committed transaction is never lost by a process
crash), and every write is its own short transaction.

One connection, shared by threads behind a lock: SQLite serialises writers anyway and our
transactions are tiny.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s3sync.errors import StateError

__all__ = ["MirrorRecord", "State", "UploadRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path      TEXT PRIMARY KEY,  -- relative to the upload folder
    status    TEXT NOT NULL,     -- 'uploaded' | 'rejected'
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
"""


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


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    """A file the mirror wrote: the object it came from and the local file's stat."""

    key: str
    size: int
    etag: str
    local_size: int
    local_mtime_ns: int
    seen_pass: int


class State:
    """The state database at ``path`` (created with its folder when missing)."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if read_only:
                uri = f"file:{self.path}?mode=ro" if self.path.exists() else "file::memory:"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            if not read_only or not self.path.exists():
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM uploads").fetchone()
        except sqlite3.Error as exc:
            raise StateError(f"S3_STATE_PATH: cannot use {str(self.path)!r}: {exc}") from None
        except OSError as exc:
            raise StateError(f"S3_STATE_PATH: cannot create {str(self.path)!r}: {exc.strerror}") from None

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
                raise StateError(f"state database {str(self.path)!r}: {exc}") from None

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StateError(f"state database {str(self.path)!r}: {exc}") from None

    # --- uploads ---------------------------------------------------------------------------
    def get_upload(self, path: str) -> UploadRecord | None:
        """The record for an upload-folder path (relative), if any."""
        rows = self._read(
            "SELECT path, status, size, mtime_ns, sha256, key, etag, reason FROM uploads WHERE path = ?", (path,)
        )
        return UploadRecord(*rows[0]) if rows else None  # type: ignore[arg-type]

    def get_uploads(self, paths: list[str]) -> dict[str, UploadRecord]:
        """Records for many paths at once (one query per 500): the rescan's fast path."""
        out: dict[str, UploadRecord] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT path, status, size, mtime_ns, sha256, key, etag, reason FROM uploads WHERE path IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                tuple(chunk),
            )
            for row in rows:
                rec = UploadRecord(*row)  # type: ignore[arg-type]
                out[rec.path] = rec
        return out

    def record_uploaded(self, path: str, size: int, mtime_ns: int, sha256: str, key: str, etag: str) -> None:
        """Remember that ``path`` with this stat is in the bucket at ``key``."""
        self._write(
            "INSERT OR REPLACE INTO uploads VALUES (?, 'uploaded', ?, ?, ?, ?, ?, NULL, ?)",
            (path, size, mtime_ns, sha256, key, etag, time.time()),
        )

    def record_rejected(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        """Remember that ``path`` with this stat was rejected (not retried until it changes)."""
        self._write(
            "INSERT OR REPLACE INTO uploads VALUES (?, 'rejected', ?, ?, NULL, NULL, NULL, ?, ?)",
            (path, size, mtime_ns, reason, time.time()),
        )

    def forget_upload(self, path: str) -> None:
        """Drop the record of ``path``."""
        self._write("DELETE FROM uploads WHERE path = ?", (path,))

    def count_uploads(self, status: str) -> int:
        """How many upload records have ``status``."""
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
        """The record of a mirrored key, if the mirror wrote it."""
        rows = self._read(
            "SELECT key, size, etag, local_size, local_mtime_ns, seen_pass FROM mirror WHERE key = ?", (key,)
        )
        return MirrorRecord(*rows[0]) if rows else None  # type: ignore[arg-type]

    def get_mirrors(self, keys: list[str]) -> dict[str, MirrorRecord]:
        """Records for many keys at once (one query per 500): a listing page at a time."""
        out: dict[str, MirrorRecord] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT key, size, etag, local_size, local_mtime_ns, seen_pass FROM mirror WHERE key IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                tuple(chunk),
            )
            for row in rows:
                rec = MirrorRecord(*row)  # type: ignore[arg-type]
                out[rec.key] = rec
        return out

    def record_mirrored(
        self, key: str, size: int, etag: str, local_size: int, local_mtime_ns: int, seen_pass: int
    ) -> None:
        """Remember that the mirror wrote ``key``'s content to its local path."""
        self._write(
            "INSERT OR REPLACE INTO mirror VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, size, etag, local_size, local_mtime_ns, seen_pass, time.time()),
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
                raise StateError(f"state database {str(self.path)!r}: {exc}") from None

    def unseen_mirrored(self, seen_pass: int, prefix: str, limit: int) -> list[MirrorRecord]:
        """Mirrored keys under ``prefix`` that pass ``seen_pass`` did not list (deletion candidates)."""
        rows = self._read(
            "SELECT key, size, etag, local_size, local_mtime_ns, seen_pass FROM mirror "
            "WHERE seen_pass < ? AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
            (seen_pass, len(prefix), prefix, limit),
        )
        return [MirrorRecord(*r) for r in rows]  # type: ignore[arg-type]

    def forget_mirrored(self, key: str) -> None:
        """Drop a mirror record (its file was deleted)."""
        self._write("DELETE FROM mirror WHERE key = ?", (key,))

    def iter_mirrored(self) -> Iterator[MirrorRecord]:
        """Every mirror record (for consistency checks)."""
        for r in self._read("SELECT key, size, etag, local_size, local_mtime_ns, seen_pass FROM mirror"):
            yield MirrorRecord(*r)  # type: ignore[arg-type]

    # --- meta ------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        """A small named value (last mirror time, pass number...)."""
        rows = self._read("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        """Set a small named value."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def next_pass(self) -> int:
        """A new mirror pass number (monotonic across restarts)."""
        n = int(self.get_meta("mirror_pass") or 0) + 1
        self.set_meta("mirror_pass", str(n))
        return n
