"""The event mirror on moto_server: bucket notifications -> SQS (directly or through SNS) -> the mirror folder.

moto serves S3, SQS and SNS on one port and delivers a bucket's notifications to a queue
(``ObjectCreated:Put`` / ``ObjectRemoved:Delete``, keys URL-encoded, one ``s3:TestEvent`` when
the configuration is set). Real files, the real daemon in a thread, no mocks.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from s3sync.eventqueue import EventConsumer, SqsQueue, make_sqs_client
from s3sync.mirror import Mirror
from s3sync.settings import Settings
from s3sync.state import State, StateNamespace
from s3sync.transport import Transport
from tests.integration.daemon_helpers import captured_events, counted_transport, events_named, running, wait_for
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.servers import S3Server

#: Polling effectively off: the full listing runs at start, then only after a day (or an outage).
EVENTS = {
    "mirror_interval": 3600,
    "mirror_reconcile_interval": 86400,
    "events_wait_seconds": 1,
    "mirror_delete": True,
    "shutdown_timeout": 10,
    "settle_seconds": 0.5,
}


class Aws:
    """boto3 clients for S3, SQS and SNS on the moto server."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        kw: dict[str, Any] = {
            "endpoint_url": server.endpoint,
            "region_name": server.region,
            "aws_access_key_id": server.access_key,
            "aws_secret_access_key": server.secret_key,
        }
        self.s3 = server.client()
        self.sqs = boto3.client("sqs", **kw)
        self.sns = boto3.client("sns", **kw)

    def queue(self, name: str | None = None) -> tuple[str, str]:
        """A new queue: (url, arn)."""
        url = self.sqs.create_queue(QueueName=name or f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def notify_queue(self, bucket: str, arn: str) -> None:
        self.s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
            },
        )

    def notify_nothing(self, bucket: str) -> None:
        self.s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})

    def close(self) -> None:
        self.s3.close()
        self.sqs.close()
        self.sns.close()


@pytest.fixture
def aws(moto_only_server: S3Server) -> Iterator[Aws]:
    clients = Aws(moto_only_server)
    yield clients
    clients.close()


@pytest.fixture
def moto_bucket(moto_only_server: S3Server) -> str:
    return moto_only_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def events_settings(moto_only_server: S3Server, moto_bucket: str, tmp_path: Path) -> Callable[..., Settings]:
    """``make(name="a", **overrides)``: settings for the moto bucket, with folders under ``tmp_path/name``."""

    def make(name: str = "a", **overrides: Any) -> Settings:
        root = tmp_path / name
        values: dict[str, Any] = {
            "bucket_name": moto_bucket,
            "endpoint_url": moto_only_server.endpoint,
            "aws_access_key_id": moto_only_server.access_key,
            "aws_secret_access_key": moto_only_server.secret_key,
            "region": moto_only_server.region,
            "local_path": root / "mirror",
            "upload_dir_path": root / "upload",
            "state_path": root / "state" / "state.db",
            "log_format": "json",
            **EVENTS,
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)
        settings.upload_dir_path.mkdir(parents=True, exist_ok=True)
        settings.local_path.mkdir(parents=True, exist_ok=True)
        return settings

    return make


def reconciled(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return events_named(events, "mirror.reconciled")


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def test_create_overwrite_and_delete_reach_the_mirror_through_the_queue(aws, moto_bucket, events_settings):
    """With polling effectively off, a PUT, a second PUT and a DELETE reach the mirror folder through SQS."""
    url, arn = aws.queue()
    aws.notify_queue(moto_bucket, arn)
    settings = events_settings(events_queue_url=url, metrics_addr="127.0.0.1:0")
    key = "BACKGROUND/red flower+1.jpg"  # arrives as "BACKGROUND%2Fred+flower%2B1.jpg"
    local = settings.local_path / "BACKGROUND" / "red flower+1.jpg"
    with captured_events() as events, running(settings) as service:
        wait_for(lambda: reconciled(events), timeout=20)
        assert reconciled(events)[0]["differences"] == 0
        started = time.monotonic()
        aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=b"first")
        wait_for(lambda: content(local) == b"first", timeout=15)
        create_s = time.monotonic() - started
        aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=b"second version")
        wait_for(lambda: content(local) == b"second version", timeout=15)
        aws.s3.delete_object(Bucket=moto_bucket, Key=key)
        wait_for(lambda: not local.exists(), timeout=15)
        assert service.state.get_mirror(key) is None
        assert service.status_snapshot()["mirror_mode"] == "events"
        healthy, details = service.health()
        assert healthy, details
        assert service.metrics_server is not None
        page = urllib.request.urlopen(f"http://{service.metrics_server.address}/metrics", timeout=5).read().decode()
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in page.splitlines() if line[:1] != "#"}
    assert metrics['s3sync_events_total{outcome="applied"}'] == 3
    assert metrics['s3sync_events_total{outcome="ignored"}'] >= 1  # the s3:TestEvent
    assert 0 <= metrics["s3sync_events_queue_lag_seconds"] < 10
    assert metrics["s3sync_events_queue_reachable"] == 1
    assert metrics["s3sync_last_reconcile_differences"] == 0
    # One full listing only (at start): every change came through the queue.
    assert len(reconciled(events)) == 1
    assert len(events_named(events, "mirror.completed")) == 1
    assert not events_named(events, "events.malformed")
    assert create_s < 5


@pytest.fixture
def consumer_for() -> Iterator[Callable[..., tuple[EventConsumer, State, SqsQueue]]]:
    """``consumer_for(settings)``: a consumer over a real mirror, state and queue (no daemon), closed after the test."""

    def make(settings: Settings, *, wait: int = 1) -> tuple[EventConsumer, State, SqsQueue]:
        state = State(settings.state_path, namespace=StateNamespace.of(settings))
        transport = Transport(settings, tracker=state)
        mirror = Mirror(settings, transport, state)
        assert settings.events_queue_url is not None
        client = make_sqs_client(settings)
        queue = SqsQueue(client, settings.events_queue_url, wait_seconds=wait, visibility_timeout=2)
        consumer = EventConsumer(settings, mirror, state, queue)
        opened.append(consumer)
        return consumer, state, queue

    opened: list[EventConsumer] = []
    yield make
    for consumer in opened:
        consumer.queue.close()
        consumer.mirror.transport.close()
        consumer.state.close()


def crafted(bucket: str, key: str, kind: str, sequencer: str) -> str:
    """An S3 notification body as AWS writes it (moto sends no sequencer)."""
    from urllib.parse import quote_plus

    name = "ObjectCreated:Put" if kind == "created" else "ObjectRemoved:Delete"
    obj = {"key": quote_plus(key), "sequencer": sequencer}
    return json.dumps({"Records": [{"eventName": name, "s3": {"bucket": {"name": bucket}, "object": obj}}]})


def drain(consumer: EventConsumer, rounds: int = 3) -> list[Any]:
    """Poll until a receive comes back empty (at most ``rounds`` non-empty batches)."""
    reports = []
    for _ in range(rounds + 1):
        report = consumer.poll_once()
        if report.received == 0:
            break
        reports.append(report)
    return reports


def test_duplicate_and_out_of_order_messages(aws, moto_bucket, events_settings, consumer_for):
    """A duplicated create is applied once; a late create older than the delete never brings the file back."""
    url, _ = aws.queue()
    settings = events_settings(events_queue_url=url)
    consumer, state, _queue = consumer_for(settings)
    counted, counter = counted_transport(settings)
    consumer.mirror.transport.close()
    consumer.mirror.transport = counted  # closed by the fixture: it closes the consumer's transport
    key = "CLIPPING-FLOWER/rose.jpg"
    local = settings.local_path / "CLIPPING-FLOWER" / "rose.jpg"
    send = aws.sqs.send_message

    aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=b"v1")
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "0055AED6DCD90281E5"))
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "0055AED6DCD90281E5"))  # duplicate
    reports = drain(consumer)
    assert content(local) == b"v1"
    assert counter.count("HeadObject", key) == 1  # the duplicate, in the same batch or the next, is not looked at
    assert sum(r.applied for r in reports) == 1
    assert sum(r.ignored for r in reports) == 1
    assert state.get_sequencers([key]) == {key: "0055AED6DCD90281E5"}

    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "55AED6DCD90281E5"))  # same, unpadded
    assert drain(consumer)[0].ignored == 1
    assert counter.count("HeadObject", key) == 1

    aws.s3.delete_object(Bucket=moto_bucket, Key=key)
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "removed", "0055AED6DCD90281F0"))
    drain(consumer)
    assert not local.exists()

    # The object is back (a PUT whose event is still on its way), and a late create *older* than
    # the delete arrives: it is stale, so it is not applied, whatever the bucket holds now.
    aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=b"v2")
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "0055AED6DCD90281E9"))
    report = drain(consumer)[0]
    assert (report.applied, report.ignored, report.deleted) == (0, 1, 1)
    assert not local.exists()
    # The new PUT's own event is newer: it is.
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "0055AED6DCD90281F1"))
    drain(consumer)
    assert content(local) == b"v2"
    # Out of order within one batch: the newest (a removal) wins, the older create is not applied.
    aws.s3.delete_object(Bucket=moto_bucket, Key=key)
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "removed", "0055AED6DCD90281F5"))
    send(QueueUrl=url, MessageBody=crafted(moto_bucket, key, "created", "0055AED6DCD90281F3"))
    drain(consumer)
    assert not local.exists()
    assert state.get_sequencers([key]) == {key: "0055AED6DCD90281F5"}


def test_malformed_and_failing_messages_stay_in_the_queue(
    aws, moto_bucket, events_settings, consumer_for, moto_only_server
):
    """A body that is no S3 event, and a change that fails, are not deleted: one event each time they come back."""
    url, _ = aws.queue()
    proxy = FaultProxy("127.0.0.1", moto_only_server.port, seed=5, timeout=10).start()
    try:
        # S3 through a proxy that fails every GET of the key: its download fails, whatever the retries.
        proxy.set_faults([Fault("status", match=lambda m, p, h: m == "GET" and "x.jpg" in p, status=500)])
        settings = events_settings(events_queue_url=url, endpoint_url=proxy.endpoint, max_attempts=1)
        consumer, _state, _queue = consumer_for(settings)
        aws.s3.put_object(Bucket=moto_bucket, Key="BACKGROUND/x.jpg", Body=b"x")
        aws.sqs.send_message(QueueUrl=url, MessageBody="this is not an event")
        aws.sqs.send_message(QueueUrl=url, MessageBody=crafted(moto_bucket, "BACKGROUND/x.jpg", "created", "0A"))
        with captured_events() as events:
            first = consumer.poll_once()
            if first.received < 2:  # SQS may hand out a batch in parts
                first.received += consumer.poll_once().received
            assert first.received == 2
            assert first.deleted == 0
            time.sleep(2.5)  # the visibility timeout (2 s) lets them come back
            again = consumer.poll_once()
            if again.received < 2:
                again.received += consumer.poll_once().received
            assert again.received == 2
        assert len(events_named(events, "events.malformed")) == 2
        failed = events_named(events, "events.message_failed")
        assert [e["receive_count"] for e in failed] == [1, 2]
        proxy.clear_faults()
        time.sleep(2.5)
        drain(consumer)
        assert (settings.local_path / "BACKGROUND" / "x.jpg").read_bytes() == b"x"
    finally:
        proxy.stop()


def test_a_lost_event_is_caught_by_reconciliation(aws, moto_bucket, events_settings):
    """An object whose event never reached the queue arrives with the next full listing, which counts it."""
    url, arn = aws.queue()
    aws.notify_queue(moto_bucket, arn)
    settings = events_settings(events_queue_url=url, mirror_reconcile_interval=4)
    with captured_events() as events, running(settings):
        aws.s3.put_object(Bucket=moto_bucket, Key="VASE/with-event.jpg", Body=b"a")
        wait_for(lambda: (settings.local_path / "VASE" / "with-event.jpg").exists(), timeout=15)
        # A pass under way now may have fetched it first: the one after it is wholly after the event.
        seen = len(reconciled(events))
        wait_for(lambda: len(reconciled(events)) > seen + 1, timeout=20)
        assert reconciled(events)[-1]["differences"] == 0  # events work: nothing to catch up
        aws.notify_nothing(moto_bucket)  # the queue loses the next change
        seen = len(reconciled(events))
        aws.s3.put_object(Bucket=moto_bucket, Key="VASE/lost.jpg", Body=b"b")
        wait_for(lambda: (settings.local_path / "VASE" / "lost.jpg").exists(), timeout=20)
        wait_for(lambda: sum(e["differences"] for e in reconciled(events)[seen:]) >= 1, timeout=10)
        assert sum(e["differences"] for e in reconciled(events)[seen:]) == 1
        assert (settings.local_path / "VASE" / "lost.jpg").read_bytes() == b"b"


def test_two_daemons_with_a_queue_each_behind_an_sns_topic(aws, moto_bucket, events_settings):
    """Bucket -> SNS topic -> one queue per host -> daemon: a change reaches both mirrors."""
    topic = aws.sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    urls = []
    for _ in range(2):
        url, arn = aws.queue()
        aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        urls.append(url)
    aws.s3.put_bucket_notification_configuration(
        Bucket=moto_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        },
    )
    one = events_settings("host1", events_queue_url=urls[0])
    two = events_settings("host2", events_queue_url=urls[1])
    key = "COMPOSITION/shared.png"
    with captured_events() as events, running(one), running(two):
        wait_for(lambda: len(reconciled(events)) >= 2, timeout=20)
        aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=b"for everyone")
        for settings in (one, two):
            wait_for(lambda s=settings: content(s.local_path / key) == b"for everyone", timeout=15)
        aws.s3.delete_object(Bucket=moto_bucket, Key=key)
        for settings in (one, two):
            wait_for(lambda s=settings: not (s.local_path / key).exists(), timeout=15)
    assert len(reconciled(events)) == 2


def test_an_unreachable_queue_falls_back_to_polling_and_comes_back(aws, moto_bucket, events_settings, moto_only_server):
    """Queue down: one event, polling at S3_MIRROR_INTERVAL, /healthz red after S3_LOOP_STALL_SECONDS; back: events."""
    url, arn = aws.queue()
    aws.notify_queue(moto_bucket, arn)
    proxy = FaultProxy("127.0.0.1", moto_only_server.port, seed=3, timeout=10).start()
    try:
        via_proxy = url.replace(moto_only_server.endpoint, proxy.endpoint)
        settings = events_settings(events_queue_url=via_proxy, mirror_interval=2, loop_stall_seconds=3)
        with captured_events() as events, running(settings) as service:
            wait_for(lambda: reconciled(events), timeout=20)
            proxy.pause()
            wait_for(lambda: events_named(events, "events.queue_unreachable"), timeout=15)
            assert service.status_snapshot()["mirror_mode"] == "polling (events queue unreachable)"
            aws.notify_nothing(moto_bucket)  # only polling can see this one
            aws.s3.put_object(Bucket=moto_bucket, Key="VASE/polled.jpg", Body=b"p")
            wait_for(lambda: (settings.local_path / "VASE" / "polled.jpg").exists(), timeout=15)
            wait_for(lambda: not service.health()[0], timeout=15)
            assert any("events queue" in r for r in service.health()[1]["reasons"])  # type: ignore[union-attr]
            aws.notify_queue(moto_bucket, arn)
            proxy.resume()
            wait_for(lambda: events_named(events, "events.queue_back"), timeout=20)
            aws.s3.put_object(Bucket=moto_bucket, Key="VASE/evented.jpg", Body=b"e")
            wait_for(lambda: (settings.local_path / "VASE" / "evented.jpg").exists(), timeout=15)
            assert service.status_snapshot()["mirror_mode"] == "events"
            wait_for(lambda: service.health()[0], timeout=10)
        assert len(events_named(events, "events.queue_unreachable")) == 1
        assert len(events_named(events, "events.queue_back")) == 1
    finally:
        proxy.stop()


def test_removal_events_delete_at_most_the_max_per_interval(aws, moto_bucket, events_settings, consumer_for):
    """A bucket emptied by mistake: S3_MIRROR_MAX_DELETE files go per S3_MIRROR_INTERVAL, the rest await a listing."""
    url, arn = aws.queue()
    aws.notify_queue(moto_bucket, arn)
    settings = events_settings(events_queue_url=url, mirror_max_delete=1)
    consumer, _state, _queue = consumer_for(settings)
    keys = [f"VASE/v{i}.jpg" for i in range(3)]
    for key in keys:
        aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=key.encode())
    drain(consumer)
    assert all((settings.local_path / key).exists() for key in keys)
    for key in keys:
        aws.s3.delete_object(Bucket=moto_bucket, Key=key)
    with captured_events() as events:
        drain(consumer)
    assert sum((settings.local_path / key).exists() for key in keys) == 2
    assert len(events_named(events, "mirror.delete_refused")) == 1
    assert consumer.poll_once().received == 0  # the refused removals are done with, not retried for ever
    # The next full listing applies its own limit: 2 files to delete > 1, so it deletes none.
    report = consumer.mirror.run_pass()
    assert (report.complete, report.deleted) == (True, 0)


def test_sns_wrapped_and_eventbridge_messages_are_applied(aws, moto_bucket, events_settings, consumer_for):
    """The consumer takes the three shapes a queue can hold: raw S3, SNS-wrapped, EventBridge."""
    url, _ = aws.queue()
    settings = events_settings(events_queue_url=url)
    consumer, _state, _queue = consumer_for(settings)
    for key in ("a/raw.jpg", "a/sns wrapped.jpg", "a/bridge.jpg"):
        aws.s3.put_object(Bucket=moto_bucket, Key=key, Body=key.encode())
    raw = crafted(moto_bucket, "a/raw.jpg", "created", "01")
    sns = json.dumps({"Type": "Notification", "Message": crafted(moto_bucket, "a/sns wrapped.jpg", "created", "01")})
    bridge = json.dumps(
        {
            "version": "0",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "detail": {"bucket": {"name": moto_bucket}, "object": {"key": "a/bridge.jpg", "sequencer": "01"}},
        }
    )
    for body in (raw, sns, bridge):
        aws.sqs.send_message(QueueUrl=url, MessageBody=body)
    reports = drain(consumer)
    assert sum(r.applied for r in reports) == 3
    for key in ("a/raw.jpg", "a/sns wrapped.jpg", "a/bridge.jpg"):
        assert (settings.local_path / key).read_bytes() == key.encode()
