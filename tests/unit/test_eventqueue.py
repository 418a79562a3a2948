"""The event consumer's small parts that need no server: the SQS client's address, the visibility keeper."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from s3sync.eventqueue import EventsSchedule, QueueMessage, _VisibilityKeeper, make_sqs_client, queue_region
from s3sync.settings import Settings


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
