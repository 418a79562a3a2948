"""The state's per-key event sequencers: added to an older state at open, kept across a removal, pruned."""

from __future__ import annotations

import sqlite3
import time

from s3sync.state import State, StateNamespace
from tests.unit.test_mirror_state import OLD_MIRROR


def test_an_older_state_gains_the_sequencer_table(tmp_path):
    """A state from before the event mirror reads no sequencer read-only, and gains the table when opened to write."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(OLD_MIRROR)
    db.commit()
    db.close()
    readonly = State(path, read_only=True)
    try:
        assert readonly.get_sequencers(["a"]) == {}
    finally:
        readonly.close()
    state = State(path)
    try:
        state.set_sequencers([("a", "0A"), ("b c", "0055AED6DCD90281E5")])
        assert state.get_sequencers(["a", "b c", "missing"]) == {"a": "0A", "b c": "0055AED6DCD90281E5"}
        assert state.get_mirror("VASE/F1/F1_A.jpg") is not None  # the old records stay
    finally:
        state.close()


def test_sequencers_outlive_the_mirror_record_and_are_pruned_by_age(tmp_path):
    """Forgetting a deleted key's record keeps its sequencer (a late, older create stays stale) until pruned."""
    state = State(tmp_path / "state.db")
    try:
        state.record_mirrored("k", 1, "e", 1, 1, 1)
        state.set_sequencers([("k", "0F")])
        state.forget_mirrored("k")
        assert state.get_sequencers(["k"]) == {"k": "0F"}
        assert state.prune_sequencers(time.time() - 60) == 0
        assert state.prune_sequencers(time.time() + 1) == 1
        assert state.get_sequencers(["k"]) == {}
        many = [(f"key-{i}", format(i, "X")) for i in range(1200)]  # more than one query's worth
        state.set_sequencers(many)
        assert state.get_sequencers([k for k, _ in many]) == dict(many)
    finally:
        state.close()


def test_another_bucket_drops_the_sequencers(tmp_path):
    """Sequencers belong to the mirror's bucket: opened for another, they go with the mirror records."""
    path = tmp_path / "state.db"
    first = StateNamespace("aws", "one", "{name}", "{}", "/u", "/m")
    state = State(path, namespace=first)
    state.set_sequencers([("k", "0F")])
    state.close()
    state = State(path, namespace=StateNamespace("aws", "two", "{name}", "{}", "/u", "/m"))
    try:
        assert state.get_sequencers(["k"]) == {}
    finally:
        state.close()
