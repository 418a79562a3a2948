"""PURE: S3 event notifications, as SQS delivers them, parsed into change records; and their order.

Three shapes reach a queue, and all give the same :class:`Change`:

* S3's own notification (``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {...}}]}``),
  sent to the queue directly or through SNS with raw message delivery;
* the same wrapped by SNS (``{"Type": "Notification", "Message": "<the JSON above>"}``);
* EventBridge's ``{"detail-type": "Object Created" | "Object Deleted", "detail": {...}}``.

Keys arrive URL-encoded with ``+`` for a space (moto also encodes ``/``): decoded with
``unquote_plus``. ``s3:TestEvent`` (sent when a configuration is set), records of another
bucket and event kinds other than created / removed are ignored, and said so. A body that is
none of these raises :class:`EventFormatError`: one event, and the message is left to the
queue's redrive policy.

Ordering: events arrive late, out of order and more than once. Each record of a PUT or DELETE
carries a ``sequencer``, a hex string whose value orders the events *of one key*; strings of
different length compare after left-padding with zeros. :func:`verdict` applies a change only
when it is newer than the last sequencer the state holds for its key, so a duplicated create is
applied once and a late create older than a delete never brings the file back.

>>> body = '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "pics"},'
>>> body += ' "object": {"key": "BACKGROUND/a+b%2B1.jpg", "size": 3, "sequencer": "0A"}}}]}'
>>> parsed = parse_message(body, "pics")
>>> parsed.changes[0].key, parsed.changes[0].kind
('BACKGROUND/a b+1.jpg', 'created')
>>> verdict(parsed.changes[0], "00B"), verdict(parsed.changes[0], "9")
('stale', 'apply')
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from s3sync.errors import EventFormatError

__all__ = [
    "Change",
    "ChangeKind",
    "EventFormatError",
    "ParsedMessage",
    "Verdict",
    "compare_sequencers",
    "newest_per_key",
    "parse_message",
    "verdict",
]

ChangeKind = Literal["created", "removed"]
#: ``apply``: newer than the state's; ``duplicate``: the same sequencer again; ``stale``: older.
Verdict = Literal["apply", "duplicate", "stale"]

_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")
#: S3 event names (``s3:`` dropped) that remove the current version of a key.
_REMOVED_PREFIXES = ("ObjectRemoved:", "LifecycleExpiration:")


@dataclass(frozen=True, slots=True)
class Change:
    """One object change: ``key`` (decoded) was created or removed in ``bucket``."""

    bucket: str
    key: str
    kind: ChangeKind
    #: Orders the events of this key (hex; compare with :func:`compare_sequencers`); None: not given.
    sequencer: str | None = None
    #: The event's own name (``ObjectCreated:Put``, ``Object Deleted``...), for the logs.
    name: str = ""
    size: int | None = None
    etag: str | None = None
    #: When S3 says the change happened (ISO 8601 as sent), or None.
    time: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What one message says: its changes for our bucket, and why other records were ignored."""

    changes: tuple[Change, ...] = ()
    #: One short reason per ignored record ("test event", "bucket other", "event ObjectRestore:Post").
    ignored: tuple[str, ...] = ()


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as sequencer ``a`` is older than, the same as, or newer than ``b`` (same key).

    >>> compare_sequencers("0A", "A"), compare_sequencers("FF", "100"), compare_sequencers("b", "A")
    (0, -1, 1)
    """
    width = max(len(a), len(b))
    pa, pb = a.upper().rjust(width, "0"), b.upper().rjust(width, "0")
    return (pa > pb) - (pa < pb)


def verdict(change: Change, last: str | None) -> Verdict:
    """Whether to apply ``change``, given the last sequencer applied for its key (None: none known).

    A change without a sequencer is applied: applying one looks at the bucket as it is now,
    so it cannot bring back an older state; it just costs a request.
    """
    if change.sequencer is None or last is None:
        return "apply"
    order = compare_sequencers(change.sequencer, last)
    if order > 0:
        return "apply"
    return "duplicate" if order == 0 else "stale"


def newest_per_key(changes: Iterable[Change]) -> dict[str, Change]:
    """The newest change of each key (by sequencer; a change without one wins over one with one,
    and among changes without one, the last seen wins: each means "look at the key now")."""
    out: dict[str, Change] = {}
    for change in changes:
        held = out.get(change.key)
        if held is None or _supersedes(change.sequencer, held.sequencer):
            out[change.key] = change
    return out


def _supersedes(new: str | None, held: str | None) -> bool:
    return new is None or held is None or compare_sequencers(new, held) > 0


def parse_message(body: str, bucket: str) -> ParsedMessage:
    """The changes a queue message body holds for ``bucket``; raises :class:`EventFormatError`."""
    data = _json(body, "the message body")
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        message = data["Message"]
        if not isinstance(message, str):
            raise EventFormatError("an SNS notification whose Message is not a string")
        data = _json(message, "the SNS message")
    if not isinstance(data, dict):
        raise EventFormatError("the message is not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return ParsedMessage(ignored=("test event",))
    if data.get("Type") == "SubscriptionConfirmation":
        return ParsedMessage(ignored=("SNS subscription confirmation",))
    if "Records" in data:
        return _s3_records(data["Records"], bucket)
    if "detail-type" in data and "detail" in data:
        return _eventbridge(data, bucket)
    raise EventFormatError("not an S3 event notification (no Records, no EventBridge detail)")


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        raise EventFormatError(f"{what} is not JSON") from None


def _s3_records(records: object, bucket: str) -> ParsedMessage:
    if not isinstance(records, list):
        raise EventFormatError("Records is not a list")
    changes: list[Change] = []
    ignored: list[str] = []
    for record in records:
        if not isinstance(record, dict):
            raise EventFormatError("a record is not a JSON object")
        name = record.get("eventName")
        s3 = record.get("s3")
        if not isinstance(name, str) or not isinstance(s3, dict):
            raise EventFormatError("a record without eventName or s3")
        short = name.removeprefix("s3:")
        if short.startswith("ObjectCreated:"):
            kind: ChangeKind = "created"
        elif short.startswith(_REMOVED_PREFIXES):
            kind = "removed"
        else:
            ignored.append(f"event {short[:40]}")
            continue
        rec_bucket = _field(s3, "bucket", "name")
        if rec_bucket != bucket:
            ignored.append("another bucket")
            continue
        obj = s3.get("object")
        if not isinstance(obj, dict):
            raise EventFormatError("a record without s3.object")
        changes.append(_change(bucket, obj, kind, name, etag=obj.get("eTag"), time=record.get("eventTime")))
    return ParsedMessage(tuple(changes), tuple(ignored))


def _eventbridge(data: Mapping[str, Any], bucket: str) -> ParsedMessage:
    kind_name = data.get("detail-type")
    detail = data.get("detail")
    if not isinstance(detail, dict):
        raise EventFormatError("an EventBridge event whose detail is not an object")
    if kind_name == "Object Created":
        kind: ChangeKind = "created"
    elif kind_name == "Object Deleted":
        kind = "removed"
    else:
        return ParsedMessage(ignored=(f"event {str(kind_name)[:40]}",))
    if _field(detail, "bucket", "name") != bucket:
        return ParsedMessage(ignored=("another bucket",))
    obj = detail.get("object")
    if not isinstance(obj, dict):
        raise EventFormatError("an EventBridge event without detail.object")
    change = _change(bucket, obj, kind, str(kind_name), etag=obj.get("etag"), time=data.get("time"))
    return ParsedMessage((change,))


def _field(data: Mapping[str, Any], outer: str, inner: str) -> str:
    part = data.get(outer)
    value = part.get(inner) if isinstance(part, dict) else None
    if not isinstance(value, str) or not value:
        raise EventFormatError(f"a record without {outer}.{inner}")
    return value


def _change(bucket: str, obj: Mapping[str, Any], kind: ChangeKind, name: str, *, etag: object, time: object) -> Change:
    raw = obj.get("key")
    if not isinstance(raw, str) or not raw:
        raise EventFormatError("a record without an object key")
    try:
        key = unquote_plus(raw, errors="strict")  # a key is UTF-8: bad escapes are a bad message
    except UnicodeDecodeError:
        raise EventFormatError(f"the key {raw[:80]!r} is not URL-encoded UTF-8") from None
    sequencer = obj.get("sequencer")
    if sequencer is not None and (not isinstance(sequencer, str) or not _HEX.fullmatch(sequencer)):
        raise EventFormatError(f"the sequencer of {key!r} is not a hex string")
    size = obj.get("size")
    return Change(
        bucket=bucket,
        key=key,
        kind=kind,
        sequencer=sequencer.upper() if sequencer else None,
        name=name,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        etag=etag.strip('"').lower() if isinstance(etag, str) and etag else None,
        time=time if isinstance(time, str) else None,
    )
