"""The mirror table of the state: what the mirror wrote, added to a state written by an older s3sync."""

from __future__ import annotations

import sqlite3

from s3sync.state import State

#: The state as s3sync created it before the mirror recorded inode, ctime, SHA-256 and ownership.
OLD_MIRROR = """
CREATE TABLE uploads (
    path TEXT PRIMARY KEY, status TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT, key TEXT, etag TEXT, reason TEXT, updated REAL NOT NULL
);
CREATE TABLE multipart (upload_id TEXT PRIMARY KEY, key TEXT NOT NULL, started REAL NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE mirror (
    key             TEXT PRIMARY KEY,
    size            INTEGER NOT NULL,
    etag            TEXT NOT NULL,
    local_size      INTEGER NOT NULL,
    local_mtime_ns  INTEGER NOT NULL,
    seen_pass       INTEGER NOT NULL DEFAULT 0,
    updated         REAL NOT NULL
);
INSERT INTO mirror VALUES ('VASE/F1/F1_A.jpg', 3, 'e', 3, 42, 7, 0);
"""


def test_old_state_gains_the_new_columns_and_keeps_its_records(tmp_path):
    """An older state opens: its records read with unknown inode/ctime/SHA-256, owned; new records keep all fields."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_MIRROR)
    db.commit()
    db.close()
    readonly = State(path, read_only=True)
    try:
        old = readonly.get_mirror("VASE/F1/F1_A.jpg")
    finally:
        readonly.close()
    assert old is not None
    assert (old.local_size, old.local_mtime_ns, old.local_ino, old.local_ctime_ns, old.sha256) == (3, 42, 0, 0, None)
    assert old.owned
    state = State(path)
    try:
        assert state.get_mirror("VASE/F1/F1_A.jpg") == old
        state.record_mirrored(
            "VASE/F2/F2_B.jpg", 5, "", 5, 9, 8, local_ino=11, local_ctime_ns=12, last_modified_us=13, owned=False
        )
        state.record_mirrored("VASE/F3/F3_C.jpg", 1, "m", 1, 2, 8, local_ino=4, local_ctime_ns=5)
        state.set_mirror_sha256("VASE/F3/F3_C.jpg", "ab" * 32, 4, 2)
        state.set_mirror_sha256("VASE/F3/F3_C.jpg", "cd" * 32, 99, 2)  # another file by now: ignored
        kept = state.get_mirror("VASE/F2/F2_B.jpg")
        written = state.get_mirror("VASE/F3/F3_C.jpg")
        assert state.count_kept_local() == 1
        assert [r.key for r in state.unseen_mirrored(8, "VASE/", 10)] == ["VASE/F1/F1_A.jpg"]
    finally:
        state.close()
    assert kept is not None
    assert (kept.local_ino, kept.local_ctime_ns, kept.last_modified_us, kept.owned) == (11, 12, 13, False)
    assert written is not None
    assert written.sha256 == "ab" * 32
