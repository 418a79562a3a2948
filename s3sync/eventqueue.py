"""The event mirror's consumer: SQS messages -> change records -> the mirror's per-key apply path.

One batch at a time (:meth:`EventConsumer.poll_once`), on the mirror's thread, so that an event
and a full pass never work on the same key at once:

1. receive up to 10 messages, long polling (``S3_EVENTS_WAIT_SECONDS``, 20 by default);
2. parse each (:mod:`s3sync.events`); a body that is no S3 event is one ``events.malformed`` and
   stays in the queue, for its redrive policy to move to the dead-letter queue;
3. keep the newest change of each key, and only if it is newer than the sequencer the state holds
   (a duplicate or a late, older event is ignored);
4. apply the keys with :meth:`s3sync.mirror.Mirror.apply_keys` (HEAD, then the rules of a pass),
   extending the messages' visibility timeout while downloads make progress;
5. note the applied sequencers, then delete (in one batch) every message whose changes are
   durable locally. A message with a key that failed is not deleted: it comes back after its
   visibility timeout, one ``events.message_failed`` each time, until the queue's redrive policy
   moves it to its dead-letter queue.

The SQS client is built from the same settings (credentials, CA bundle, timeouts) as the S3
one; its endpoint and region come from the queue URL, which says where the queue lives (on a
local server such as moto, that is the S3 endpoint itself).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import botocore.exceptions
import structlog

from s3sync.errors import ConfigurationError, QueueUnreachableError
from s3sync.events import Change, EventFormatError, newest_per_key, parse_message, verdict
from s3sync.mirror import Mirror
from s3sync.plan import is_probe_key
from s3sync.settings import Settings
from s3sync.state import State

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "BatchReport",
    "EventConsumer",
    "EventsSchedule",
    "EventsSubscriber",
    "QueueMessage",
    "SqsQueue",
    "make_sqs_client",
    "queue_region",
]

log = structlog.get_logger("s3sync")

_BATCH = 10  # SQS's most per ReceiveMessage / DeleteMessageBatch
#: How long a received message stays invisible to other receives; extended while downloads progress.
VISIBILITY_TIMEOUT = 120
_SQS_HOST = re.compile(r"sqs\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?|([a-z0-9-]+)\.queue\.amazonaws\.com(\.cn)?")


@dataclass
class EventsSchedule:
    """When the event mirror reconciles, polls, or reads the queue: a value, no thread, no clock.

    A full listing at start and every ``reconcile_interval`` (sooner, at ``poll_interval``,
    when one could not be completed); the queue in between. While the queue is unreachable, a
    polling pass every ``poll_interval``, and the queue looked at again with backoff (1 s
    doubling, at most ``retry_cap`` and ``poll_interval``).

    >>> s = EventsSchedule(reconcile_interval=3600, poll_interval=60)
    >>> s.next_step(0.0)
    ('reconcile', 0.0)
    >>> s.reconciled(5.0, complete=True); s.next_step(6.0)
    ('receive', 0.0)
    >>> s.queue_failed(7.0), s.next_step(7.5), s.next_step(8.0)
    (True, ('wait', 0.5), ('receive', 0.0))
    >>> s.queue_failed(8.0), s.next_step(70.0)
    (False, ('poll', 0.0))
    """

    reconcile_interval: float
    poll_interval: float
    retry_cap: float = 30.0
    #: The queue cannot be reached: the bucket is polled.
    down: bool = False
    next_reconcile: float = 0.0
    next_poll: float = 0.0
    next_probe: float = 0.0
    backoff: float = 0.0

    def next_step(self, now: float) -> tuple[str, float]:
        """``(what, wait)``: ``reconcile``, ``poll`` or ``receive`` now, or ``wait`` that many seconds."""
        if now >= self.next_reconcile:
            return "reconcile", 0.0
        if not self.down:
            return "receive", 0.0
        if now >= self.next_poll:
            return "poll", 0.0
        if now >= self.next_probe:
            return "receive", 0.0
        return "wait", min(self.next_probe, self.next_poll, self.next_reconcile) - now

    def reconciled(self, now: float, *, complete: bool) -> None:
        """A full listing ended at ``now`` (``complete``: it listed everything)."""
        wait = self.reconcile_interval if complete else min(self.reconcile_interval, self.poll_interval)
        self.next_reconcile = now + wait
        self.next_poll = now + self.poll_interval

    def polled(self, now: float) -> None:
        """A polling pass ended at ``now``."""
        self.next_poll = now + self.poll_interval

    def queue_failed(self, now: float) -> bool:
        """The queue did not answer; True when it just went down (say so, once)."""
        self.backoff = min(self.retry_cap, self.poll_interval, max(1.0, self.backoff * 2))
        self.next_probe = now + self.backoff
        if self.down:
            return False
        self.down = True
        self.next_poll = now + self.poll_interval
        return True

    def queue_answered(self) -> bool:
        """The queue answered; True when it just came back."""
        self.backoff = 0.0
        back, self.down = self.down, False
        return back


def queue_region(url: str) -> str | None:
    """The AWS region an SQS queue URL names, or None (a local server's URL names none).

    >>> queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/mirror")
    'eu-west-1'
    >>> queue_region("http://127.0.0.1:5000/123456789012/mirror") is None
    True
    """
    host = urlsplit(url).hostname or ""
    match = _SQS_HOST.fullmatch(host)
    if match is None:
        return None
    return match.group(1) or match.group(3)


def make_sqs_client(settings: Settings) -> SQSClient:
    """The SQS client of ``S3_EVENTS_QUEUE_URL``: the S3 client's credentials, CAs and timeouts.

    Its read timeout outlasts a long poll. botocore is imported on first use, as for S3.
    """
    url = settings.events_queue_url
    if not url:
        raise ConfigurationError("S3_EVENTS_QUEUE_URL: not set", setting="S3_EVENTS_QUEUE_URL")
    import botocore.session
    from botocore.config import Config

    key = settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    parts = urlsplit(url)
    config = Config(
        max_pool_connections=4,
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=max(settings.read_timeout, settings.events_wait_seconds + 10.0),
        tcp_keepalive=True,
        user_agent_extra="s3sync",
    )
    try:
        client: SQSClient = botocore.session.Session().create_client(  # type: ignore[assignment]
            "sqs",
            region_name=queue_region(url) or settings.region or "us-east-1",
            endpoint_url=f"{parts.scheme}://{parts.netloc}",
            aws_access_key_id=key or None,
            aws_secret_access_key=secret or None,
            config=config,
            verify=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigurationError(f"SQS client: {type(exc).__name__}: {exc}") from None
    return client


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One received message: its body and what SQS says about it."""

    id: str
    receipt: str
    body: str
    #: When SQS received it (Unix time), or None when not said.
    sent_at: float | None = None
    #: How many times it was received, this time included (1: first delivery).
    receive_count: int = 1


def _unreachable(action: str, url: str, exc: Exception) -> QueueUnreachableError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        why = str(err.get("Code") or "error")
    else:
        why = type(exc).__name__
    return QueueUnreachableError(f"SQS {action} {url}: {why}", key=None)


class SqsQueue:
    """The few SQS calls the consumer makes, botocore's errors translated (thread-safe)."""

    def __init__(
        self,
        client: SQSClient,
        url: str,
        *,
        wait_seconds: int = 20,
        visibility_timeout: int = VISIBILITY_TIMEOUT,
    ) -> None:
        self.client = client
        self.url = url
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def receive(self) -> list[QueueMessage]:
        """Up to 10 messages, waiting up to ``wait_seconds`` for the first (raises QueueUnreachableError)."""
        try:
            resp = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=_BATCH,
                WaitTimeSeconds=self.wait_seconds,
                VisibilityTimeout=self.visibility_timeout,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise _unreachable("ReceiveMessage", self.url, exc) from exc
        return [_message(m) for m in resp.get("Messages", [])]

    def delete(self, messages: Sequence[QueueMessage]) -> list[str]:
        """Delete ``messages`` (10 per request); the ids that could not be deleted (they come back)."""
        failed: list[str] = []
        for i in range(0, len(messages), _BATCH):
            chunk = messages[i : i + _BATCH]
            entries = [{"Id": str(n), "ReceiptHandle": m.receipt} for n, m in enumerate(chunk)]
            try:
                resp = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)  # type: ignore[arg-type]
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
                log.warning("events.delete_failed", error=str(_unreachable("DeleteMessageBatch", self.url, exc)))
                failed.extend(m.id for m in chunk)
                continue
            failed.extend(chunk[int(f["Id"])].id for f in resp.get("Failed", []))
        return failed

    def extend(self, messages: Sequence[QueueMessage], seconds: int) -> None:
        """Keep ``messages`` invisible for ``seconds`` more (best effort: a failure is logged)."""
        for i in range(0, len(messages), _BATCH):
            chunk = messages[i : i + _BATCH]
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds} for n, m in enumerate(chunk)
            ]
            try:
                self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)  # type: ignore[arg-type]
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
                log.warning("events.extend_failed", error=str(_unreachable("ChangeMessageVisibility", self.url, exc)))


def _message(raw: Mapping[str, Any]) -> QueueMessage:
    attrs = raw.get("Attributes") or {}
    sent = attrs.get("SentTimestamp")
    count = attrs.get("ApproximateReceiveCount")
    return QueueMessage(
        id=str(raw.get("MessageId", "")),
        receipt=str(raw.get("ReceiptHandle", "")),
        body=str(raw.get("Body", "")),
        sent_at=int(sent) / 1000 if isinstance(sent, str) and sent.isdigit() else None,
        receive_count=int(count) if isinstance(count, str) and count.isdigit() else 1,
    )


@dataclass
class BatchReport:
    """What one receive did."""

    received: int = 0
    #: Keys brought in step with the bucket (downloaded, deleted, or found already in step).
    applied: int = 0
    #: Changes not applied: duplicates, older than the state's, superseded in the batch, test events,
    #: other buckets or kinds, keys outside the mirror prefix, ``events check`` markers.
    ignored: int = 0
    #: Keys that failed, plus malformed messages.
    failed: int = 0
    deleted: int = 0
    #: Age of the oldest message applied and deleted (seconds), or None.
    lag: float | None = None
    failed_keys: list[str] = field(default_factory=list)


class EventsSubscriber(Protocol):
    """Told what each batch did (the daemon's metrics)."""

    def events_done(self, report: BatchReport) -> None:
        """One receive was handled."""


class _NoSubscriber:
    def events_done(self, report: BatchReport) -> None:
        return


class EventConsumer:
    """Apply a queue's bucket events to the mirror folder, one batch per :meth:`poll_once`."""

    def __init__(
        self,
        settings: Settings,
        mirror: Mirror,
        state: State,
        queue: SqsQueue,
        *,
        subscriber: EventsSubscriber | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bucket = settings.require_bucket()
        self.mirror = mirror
        self.state = state
        self.queue = queue
        self.subscriber: EventsSubscriber = subscriber or _NoSubscriber()
        self._now = now

    def poll_once(self) -> BatchReport:
        """Receive one batch (waiting up to the long-poll time) and apply it; raises QueueUnreachableError."""
        messages = self.queue.receive()
        report = BatchReport(received=len(messages))
        if messages:
            self._handle(messages, report)
        self.subscriber.events_done(report)
        return report

    def _handle(self, messages: list[QueueMessage], report: BatchReport) -> None:
        parsed = self._parse(messages, report)
        todo = self._choose(parsed, report)
        outcomes = self._apply(todo, [m for m in messages if m.id in parsed])
        failed = {key for key, ok in outcomes.items() if not ok}
        report.failed_keys = sorted(failed)
        report.failed += len(failed)
        report.applied += len(outcomes) - len(failed)
        applied: list[tuple[str, str]] = []
        for key, change in todo.items():
            if key not in failed and change.sequencer is not None:
                applied.append((key, change.sequencer))
        if applied:
            self.state.set_sequencers(applied)
        self._settle(messages, parsed, failed, report)
        log.debug(
            "events.batch",
            received=report.received,
            applied=report.applied,
            ignored=report.ignored,
            failed=report.failed,
            deleted=report.deleted,
        )

    def _parse(self, messages: list[QueueMessage], report: BatchReport) -> dict[str, tuple[Change, ...]]:
        """Each message's changes by message id; a malformed one is left out (and left in the queue)."""
        parsed: dict[str, tuple[Change, ...]] = {}
        for message in messages:
            try:
                result = parse_message(message.body, self.bucket)
            except EventFormatError as exc:
                report.failed += 1
                log.error(
                    "events.malformed",
                    message_id=message.id,
                    receive_count=message.receive_count,
                    error=str(exc),
                    action="left in the queue for its redrive policy",
                )
                continue
            report.ignored += len(result.ignored)
            parsed[message.id] = result.changes
        return parsed

    def _choose(self, parsed: Mapping[str, tuple[Change, ...]], report: BatchReport) -> dict[str, Change]:
        """The newest change of each key, if newer than the state's and the mirror's to apply."""
        changes = [c for message_changes in parsed.values() for c in message_changes]
        newest = newest_per_key(changes)
        stored = self.state.get_sequencers(list(newest))
        todo: dict[str, Change] = {}
        for key, change in newest.items():
            why = verdict(change, stored.get(key))
            if why == "apply" and key.startswith(self.settings.mirror_prefix) and not is_probe_key(key):
                todo[key] = change
            else:
                log.debug("events.ignored", key=key, reason=why, sequencer=change.sequencer, held=stored.get(key))
        report.ignored += len(changes) - len(todo)
        return todo

    def _settle(
        self,
        messages: list[QueueMessage],
        parsed: Mapping[str, tuple[Change, ...]],
        failed: set[str],
        report: BatchReport,
    ) -> None:
        """Delete the messages whose changes are all done; leave the others, one event each."""
        finished: list[QueueMessage] = []
        for message in messages:
            if message.id not in parsed:
                continue
            bad = sorted({c.key for c in parsed[message.id]} & failed)
            if bad:
                log.error(
                    "events.message_failed",
                    message_id=message.id,
                    receive_count=message.receive_count,
                    keys=bad[:10],
                    action="left in the queue: retried after its visibility timeout, then its redrive policy",
                )
                continue
            finished.append(message)
        undeleted = set(self.queue.delete(finished))
        report.deleted = len(finished) - len(undeleted)
        sent = [m.sent_at for m in finished if m.sent_at is not None and m.id not in undeleted]
        if sent:
            report.lag = max(0.0, self._now() - min(sent))

    def _apply(self, todo: Mapping[str, Change], messages: list[QueueMessage]) -> dict[str, bool]:
        """Apply the keys (True: done), keeping the messages invisible while downloads progress."""
        if not todo:
            return {}
        with _VisibilityKeeper(self.queue, messages, self.mirror):
            reports = self.mirror.apply_keys(list(todo))
        return {key: reports[key].failed == 0 for key in todo}


class _VisibilityKeeper:
    """While a batch is applied, extend its messages' visibility every third of the timeout,
    as long as the mirror made progress within the last timeout (a hung download lets them go)."""

    def __init__(self, queue: SqsQueue, messages: list[QueueMessage], mirror: Mirror) -> None:
        self.queue = queue
        self.messages = messages
        self.mirror = mirror
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3sync-visibility", daemon=True)

    def __enter__(self) -> _VisibilityKeeper:
        if self.messages:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        timeout = self.queue.visibility_timeout
        while not self._stop.wait(max(1.0, timeout / 3)):
            if time.monotonic() - self.mirror.heartbeat < timeout:
                self.queue.extend(self.messages, timeout)
                log.debug("events.visibility_extended", messages=len(self.messages), seconds=timeout)
