"""The state database's namespace (what its records belong to) and its integrity check at open."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
import structlog

from s3sync.errors import StateCorruptError
from s3sync.rebuild import _move_aside
from s3sync.settings import Settings
from s3sync.state import State, StateNamespace, namespace_changes

NS = StateNamespace("http://127.0.0.1:9000", "staging", "{category}/{name}", '{"B":"BACKGROUND"}', "/u", "/m")


def _with(**changes: str) -> StateNamespace:
    values = {name: getattr(NS, name) for name in ("endpoint", "bucket", "key_template", "category_map")}
    values |= {"upload_dir": NS.upload_dir, "local_dir": NS.local_dir} | changes
    return StateNamespace(**values)


@pytest.mark.parametrize(
    ("changes", "uploads", "mirror"),
    [
        ({}, False, False),
        ({"bucket": "production"}, True, True),
        ({"endpoint": "aws"}, True, True),
        ({"key_template": "{name}"}, True, False),
        ({"category_map": "{}"}, True, False),
        ({"upload_dir": "/other"}, True, False),
        ({"local_dir": "/other"}, False, True),
    ],
)
def test_which_records_a_change_makes_stale(changes, uploads, mirror):
    """Uploads depend on endpoint, bucket, key naming and upload folder; the mirror on endpoint, bucket, folder."""
    up, mi, changed = namespace_changes(NS, _with(**changes))
    assert (up, mi) == (uploads, mirror)
    assert changed == sorted(changes, key=list(StateNamespace.__dataclass_fields__).index)


def test_no_recorded_namespace_makes_everything_stale():
    """A state from before namespacing says nothing about its bucket: none of its records is trusted."""
    assert namespace_changes(None, NS) == (True, True, ["unrecorded"])


def test_namespace_round_trips_and_rejects_garbage():
    """The stored JSON reads back equal; unreadable JSON reads as 'no namespace'."""
    assert StateNamespace.from_json(NS.to_json()) == NS
    assert StateNamespace.from_json("{not json") is None
    assert StateNamespace.from_json(json.dumps({"bucket": "x"})) is None


def test_namespace_of_settings(tmp_path):
    """Built from settings: endpoint without trailing slash, canonical category map, real folder paths."""
    s = Settings(
        _env_file=None,
        bucket_name="pics",
        endpoint_url="http://127.0.0.1:9000/",
        category_map={"CF": "C", "B": "BG"},
        upload_dir_path=tmp_path / "u",
        local_path=tmp_path / "m",
        state_path=tmp_path / "s.db",
    )
    ns = StateNamespace.of(s)
    assert ns.endpoint == "http://127.0.0.1:9000"
    assert ns.category_map == '{"B":"BG","CF":"C"}'
    assert ns.upload_dir == os.path.realpath(tmp_path / "u")
    assert StateNamespace.of(s.model_copy(update={"local_server": True})).endpoint == "local-server"


def _fill(state: State) -> None:
    state.record_uploaded("a.jpg", 1, 1, "s" * 64, "K/a.jpg", "e" * 32)
    state.record_mirrored("K/b.jpg", 2, "e" * 32, 2, 2, 1)
    state.add_multipart("upload-1", "K/c.jpg")
    state.set_meta("last_mirror_ok", "123")


def test_same_namespace_keeps_every_record(tmp_path):
    """Reopened for the same settings, nothing is dropped and no event is logged."""
    path = tmp_path / "s.db"
    State(path, namespace=NS).close()
    st = State(path, namespace=NS)
    _fill(st)
    st.close()
    with structlog.testing.capture_logs() as events:
        st = State(path, namespace=NS)
    assert st.get_upload("a.jpg") is not None
    assert st.get_mirror("K/b.jpg") is not None
    assert st.open_multipart() == [("upload-1", "K/c.jpg")]
    assert not events
    st.close()


def test_bucket_switch_drops_uploads_mirror_and_multipart_with_one_event(tmp_path):
    """staging -> production on one state: no 'already uploaded' survives; one state.namespace_changed."""
    path = tmp_path / "s.db"
    st = State(path, namespace=NS)
    _fill(st)
    st.close()
    with structlog.testing.capture_logs() as events:
        st = State(path, namespace=_with(bucket="production"))
    assert st.get_upload("a.jpg") is None
    assert st.count_uploads("uploaded") == 0
    assert st.get_mirror("K/b.jpg") is None
    assert st.open_multipart() == []
    assert st.get_meta("last_mirror_ok") is None
    assert st.namespace() == _with(bucket="production")
    assert [e["event"] for e in events] == ["state.namespace_changed"]
    assert events[0]["changed"] == ["bucket"]
    assert (events[0]["uploads_dropped"], events[0]["mirror_dropped"], events[0]["multipart_dropped"]) == (1, 1, 1)
    st.close()


def test_mirror_folder_change_keeps_upload_records(tmp_path):
    """Another mirror folder drops only the mirror rows; uploads to the same bucket still count."""
    path = tmp_path / "s.db"
    st = State(path, namespace=NS)
    _fill(st)
    st.close()
    st = State(path, namespace=_with(local_dir="/elsewhere"))
    assert st.get_upload("a.jpg") is not None
    assert st.get_mirror("K/b.jpg") is None
    assert st.open_multipart() == [("upload-1", "K/c.jpg")]
    st.close()


def test_legacy_state_without_namespace_is_not_trusted(tmp_path):
    """Rows written before namespacing are dropped at the first namespaced open (one event)."""
    path = tmp_path / "s.db"
    st = State(path)
    _fill(st)
    st.close()
    with structlog.testing.capture_logs() as events:
        st = State(path, namespace=NS)
    assert st.count_uploads("uploaded") == 0
    assert [e["event"] for e in events] == ["state.namespace_changed"]
    st.close()


def test_dry_run_ignores_another_namespace_without_writing(tmp_path):
    """Read-only (a dry run) for another bucket: the records are hidden, the file is unchanged."""
    path = tmp_path / "s.db"
    st = State(path, namespace=NS)
    _fill(st)
    st.close()
    ro = State(path, read_only=True, namespace=_with(bucket="production"))
    assert ro.get_upload("a.jpg") is None
    assert ro.get_uploads(["a.jpg"]) == {}
    ro.close()
    st = State(path, namespace=NS)
    assert st.get_upload("a.jpg") is not None
    st.close()


def test_not_sqlite_is_one_corrupt_error(tmp_path):
    """Garbage bytes: StateCorruptError (exit 2) whose one line names the rebuild command."""
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database\n" * 50)
    with pytest.raises(StateCorruptError) as info:
        State(path)
    assert info.value.exit_code == 2
    assert "not a SQLite file" in str(info.value)
    assert "s3sync state rebuild" in str(info.value)
    assert "\n" not in str(info.value)


def test_damaged_page_is_one_corrupt_error(tmp_path):
    """A real database with bytes overwritten in the middle: caught at open by quick_check."""
    path = tmp_path / "s.db"
    st = State(path)
    for i in range(400):
        st.record_uploaded(f"dir/file-{i:04d}.jpg", i, i, "a" * 64, f"KEY/{i}", "b" * 32)
    st.close()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2 // 4096 * 4096)  # the start of a page in the middle of the file
        f.write(b"\xff" * 64)
    with pytest.raises(StateCorruptError, match=r"is corrupted.*s3sync state rebuild"):
        State(path)
    with pytest.raises(StateCorruptError):
        State(path, read_only=True)


def test_empty_file_is_a_new_database(tmp_path):
    """A zero-byte file is what SQLite makes of a new database: accepted."""
    path = tmp_path / "s.db"
    path.touch()
    State(path).close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_move_aside_takes_the_companion_files(tmp_path):
    """The database and its -wal/-shm move together to <name>.<label>-<time>, never overwriting."""
    path = tmp_path / "state.db"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).write_text(name)
    first = _move_aside(path, "corrupt", 0.0)
    assert re.fullmatch(r"state\.db\.corrupt-\d{8}T\d{6}", first.name)
    assert (first.with_name(first.name + "-wal")).read_text() == "state.db-wal"
    assert not path.exists()
    assert not (tmp_path / "state.db-wal").exists()
    path.write_text("again")
    second = _move_aside(path, "corrupt", 0.0)
    assert second != first
    assert second.read_text() == "again"
    assert first.read_text() == "state.db"
    assert Path(first).exists()
