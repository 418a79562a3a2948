"""The event consumer's small parts that need no server: the SQS client's address, the visibility keeper."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3sync.eventqueue import (
    EventConsumer,
    EventsSchedule,
    QueueMessage,
    _VisibilityKeeper,
    make_sqs_client,
    queue_region,
)
from s3sync.mirror import MirrorReport
from s3sync.settings import Settings
from s3sync.state import State


def test_the_queue_url_says_where_the_queue_is():
    """The SQS client talks to the queue URL's host, in its region (a local server's: the settings' region)."""
    aws = Settings(_env_file=None, events_queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/mirror")
    client = make_sqs_client(aws)
    assert client.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
    assert client.meta.region_name == "eu-west-1"
    local = Settings(_env_file=None, events_queue_url="http://127.0.0.1:5000/123456789012/q", region="eu-north-1")
    client = make_sqs_client(local)
    assert (client.meta.endpoint_url, client.meta.region_name) == ("http://127.0.0.1:5000", "eu-north-1")
    assert queue_region("https://eu-west-2.queue.amazonaws.com/1/q") == "eu-west-2"


@dataclass
class FakeQueue:
    """Records visibility extensions (the keeper's only call)."""

    visibility_timeout: int = 3
    extended: list[tuple[int, int]] = field(default_factory=list)

    def extend(self, messages: list[QueueMessage], seconds: int) -> None:
        self.extended.append((len(messages), seconds))


@dataclass
class FakeMirror:
    heartbeat: float = 0.0


def test_visibility_is_extended_while_downloads_progress():
    """Every third of the timeout the batch's messages stay invisible longer, while the mirror makes progress."""
    queue, mirror = FakeQueue(), FakeMirror(heartbeat=time.monotonic())
    messages = [QueueMessage("1", "r1", "{}"), QueueMessage("2", "r2", "{}")]
    with _VisibilityKeeper(queue, messages, mirror):  # type: ignore[arg-type]
        deadline = time.monotonic() + 2.6
        while time.monotonic() < deadline:
            mirror.heartbeat = time.monotonic()  # bytes keep arriving
            time.sleep(0.1)
    assert queue.extended[:2] == [(2, 3), (2, 3)]


def test_a_hung_download_lets_the_messages_go():
    """No progress for a whole timeout: no extension, the messages become visible again (and are retried)."""
    queue, mirror = FakeQueue(), FakeMirror(heartbeat=time.monotonic() - 60)
    with _VisibilityKeeper(queue, [QueueMessage("1", "r1", "{}")], mirror):  # type: ignore[arg-type]
        time.sleep(1.5)
    assert queue.extended == []


def test_schedule_reconciles_at_start_and_polls_only_while_the_queue_is_down():
    """A listing at start and every reconcile interval; passes at the poll interval only during an outage."""
    s = EventsSchedule(reconcile_interval=100.0, poll_interval=10.0, retry_cap=30.0)
    steps = []
    now = 0.0
    down = (20.0, 50.0)  # the queue does not answer between these times
    while now < 130.0:
        step, wait = s.next_step(now)
        steps.append((now, step))
        if step == "reconcile":
            s.reconciled(now, complete=True)
        elif step == "poll":
            s.polled(now)
        elif step == "receive":
            if down[0] <= now < down[1]:
                s.queue_failed(now)
            else:
                s.queue_answered()
            now += 1.0  # a long poll
        else:
            assert wait > 0
            now += wait
    polls = [t for t, step in steps if step == "poll"]
    reconciles = [t for t, step in steps if step == "reconcile"]
    assert reconciles == [0.0, 100.0]
    assert polls
    assert all(down[0] + 10.0 <= t <= down[1] + 10.0 for t in polls)
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(polls))
    assert not s.down


def test_an_incomplete_listing_is_tried_again_at_the_poll_interval():
    """A reconciliation whose listing failed does not wait six hours for the next one."""
    s = EventsSchedule(reconcile_interval=21600.0, poll_interval=60.0)
    s.reconciled(0.0, complete=False)
    assert s.next_step(59.0) == ("receive", 0.0)
    assert s.next_step(60.0) == ("reconcile", 0.0)


@dataclass
class ListQueue:
    """An in-memory queue: a message not deleted after a receive comes back (its visibility timeout ran out)."""

    waiting: list[QueueMessage]
    batch_sizes: list[int]
    visibility_timeout: int = 60
    deleted: list[str] = field(default_factory=list)
    _out: list[QueueMessage] = field(default_factory=list)

    def receive(self) -> list[QueueMessage]:
        self.waiting.extend(
            QueueMessage(m.id, m.receipt, m.body, m.sent_at, m.receive_count + 1)
            for m in self._out
            if m.id not in self.deleted
        )
        n = self.batch_sizes.pop(0) if self.batch_sizes else 10
        self._out, self.waiting = self.waiting[:n], self.waiting[n:]
        return list(self._out)

    def delete(self, messages: list[QueueMessage]) -> list[str]:
        self.deleted.extend(m.id for m in messages)
        return []

    def extend(self, messages: list[QueueMessage], seconds: int) -> None:
        return


@dataclass
class RecordingMirror:
    """Applies nothing; records which keys it was asked to apply, and fails each key in ``flaky`` once."""

    flaky: set[str]
    heartbeat: float = field(default_factory=time.monotonic)
    calls: list[str] = field(default_factory=list)

    def apply_keys(self, keys: list[str]) -> dict[str, MirrorReport]:
        self.calls.extend(keys)
        reports = {}
        for key in keys:
            report = MirrorReport(complete=True)
            if key in self.flaky:
                self.flaky.discard(key)
                report.failed = 1
            reports[key] = report
        return reports


def _body(key: str, kind: str, seq: int) -> str:
    name = "ObjectCreated:Put" if kind == "created" else "ObjectRemoved:Delete"
    obj = {"key": key.replace(" ", "+"), "sequencer": format(seq, "X").rjust(16, "0")}
    return json.dumps({"Records": [{"eventName": name, "s3": {"bucket": {"name": "pictures"}, "object": obj}}]})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_delivery_converges_and_every_message_is_deleted(tmp_path, data: st.DataObject):
    """Duplicated, reordered events in batches of any size, with failures retried: each key ends at its newest
    change, no older change is applied after a newer one, and every message ends up deleted."""
    history = {
        key: data.draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=5, unique=True), label=key)
        for key in ("a.jpg", "b c.jpg", "d/e.jpg")
    }
    events = [
        (key, data.draw(st.sampled_from(["created", "removed"])), s) for key, seqs in history.items() for s in seqs
    ]
    events += data.draw(st.lists(st.sampled_from(events), max_size=6), label="duplicates")
    events = data.draw(st.permutations(events), label="order")
    messages = [QueueMessage(f"m{i}", f"r{i}", _body(*e)) for i, e in enumerate(events)]
    queue = ListQueue(list(messages), data.draw(st.lists(st.integers(1, 10), max_size=30), label="batches"))
    mirror = RecordingMirror(set(data.draw(st.lists(st.sampled_from(sorted(history)), max_size=2), label="flaky")))
    settings_ = Settings(_env_file=None, bucket_name="pictures", state_path=tmp_path / f"{uuid.uuid4().hex}.db")
    state = State(settings_.state_path)
    try:
        consumer = EventConsumer(settings_, mirror, state, queue)  # type: ignore[arg-type]
        held: dict[str, int] = {}
        for _ in range(200):
            if consumer.poll_once().received == 0 and not queue.waiting:
                break
            for key, seq in state.get_sequencers(list(history)).items():
                assert int(seq, 16) >= held.get(key, 0)  # never back to an older change
                held[key] = int(seq, 16)
        assert sorted(queue.deleted) == sorted(m.id for m in messages)
        assert {k: int(v, 16) for k, v in state.get_sequencers(list(history)).items()} == {
            key: max(seqs) for key, seqs in history.items()
        }
        for key, seqs in history.items():
            assert 1 <= mirror.calls.count(key) <= len(seqs) + 1  # +1: a failed attempt is tried again
    finally:
        state.close()
