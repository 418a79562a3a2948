"""Pure logic of the event mirror: queue messages -> change records, and which change of a key wins."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.events import (
    Change,
    EventFormatError,
    compare_sequencers,
    newest_per_key,
    parse_message,
    verdict,
)

BUCKET = "pictures"


def s3_record(key: str, name: str = "ObjectCreated:Put", bucket: str = BUCKET, **obj: Any) -> dict[str, Any]:
    """One record as S3 writes it (the key already URL-encoded by the caller)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventTime": "2026-12-06T22:08:09.735Z",
        "eventName": name,
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": {"key": key, **obj}},
    }


def s3_body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns_body(inner: str) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:x:1:t", "Message": inner})


def eventbridge_body(key: str, detail_type: str = "Object Created", bucket: str = BUCKET, **obj: Any) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": detail_type,
            "source": "aws.s3",
            "time": "2021-11-12T00:00:00Z",
            "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key, **obj}},
        }
    )


def test_raw_s3_created_and_removed():
    """ObjectCreated:* is a create and ObjectRemoved:* a removal; size, ETag, sequencer and time are kept."""
    body = s3_body(
        s3_record("a/b.jpg", size=3, eTag='"ABC"', sequencer="0055aed6dcd90281e5"),
        s3_record("a/c.jpg", name="ObjectRemoved:Delete", sequencer="0055AED6DCD90281E6"),
        s3_record("a/d.jpg", name="ObjectCreated:CompleteMultipartUpload"),
        s3_record("a/e.jpg", name="ObjectRemoved:DeleteMarkerCreated"),
    )
    parsed = parse_message(body, BUCKET)
    assert [(c.key, c.kind) for c in parsed.changes] == [
        ("a/b.jpg", "created"),
        ("a/c.jpg", "removed"),
        ("a/d.jpg", "created"),
        ("a/e.jpg", "removed"),
    ]
    first = parsed.changes[0]
    assert (first.size, first.etag, first.sequencer, first.time) == (
        3,
        "abc",
        "0055AED6DCD90281E5",
        "2026-12-06T22:08:09.735Z",
    )
    assert parsed.ignored == ()


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("red+flower.jpg", "red flower.jpg"),
        ("a+b%2Fc%2Bd.jpg", "a b/c+d.jpg"),  # moto encodes "/" too
        ("BACKGROUND/caf%C3%A9.jpg", "BACKGROUND/café.jpg"),
        ("x%25y.jpg", "x%y.jpg"),
    ],
)
def test_keys_are_url_decoded(encoded: str, key: str):
    """Keys arrive URL-encoded with '+' for a space: unquote_plus gives the real key."""
    assert parse_message(s3_body(s3_record(encoded)), BUCKET).changes[0].key == key


def test_sns_wrapped_and_eventbridge_shapes():
    """An SNS notification wraps the S3 JSON; EventBridge's Object Created / Object Deleted give the same changes."""
    inner = s3_body(s3_record("k+1.jpg", sequencer="0A"))
    assert parse_message(sns_body(inner), BUCKET).changes == parse_message(inner, BUCKET).changes
    created = parse_message(eventbridge_body("k+1.jpg", size=5, etag="B19", sequencer="617f08299329d189"), BUCKET)
    assert [(c.key, c.kind, c.size, c.etag, c.sequencer) for c in created.changes] == [
        ("k 1.jpg", "created", 5, "b19", "617F08299329D189")
    ]
    deleted = parse_message(eventbridge_body("k.jpg", "Object Deleted", sequencer="617f0829932a0000"), BUCKET)
    assert deleted.changes[0].kind == "removed"
    restored = parse_message(eventbridge_body("k.jpg", "Object Restore Completed"), BUCKET)
    assert restored.changes == ()
    assert restored.ignored == ("event Object Restore Completed",)


def test_test_event_other_buckets_and_other_kinds_are_ignored():
    """s3:TestEvent, records of another bucket and event kinds other than create/remove are ignored, with a reason."""
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    assert parse_message(test_event, BUCKET).ignored == ("test event",)
    assert parse_message(sns_body(test_event), BUCKET).ignored == ("test event",)
    body = s3_body(
        s3_record("a.jpg", bucket="someone-else"),
        s3_record("b.jpg", name="ObjectRestore:Post"),
        s3_record("c.jpg"),
    )
    parsed = parse_message(body, BUCKET)
    assert [c.key for c in parsed.changes] == ["c.jpg"]
    assert parsed.ignored == ("another bucket", "event ObjectRestore:Post")
    assert parse_message(eventbridge_body("a.jpg", bucket="someone-else"), BUCKET).ignored == ("another bucket",)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[1, 2]",
        '{"hello": "world"}',
        '{"Records": {}}',
        '{"Records": [1]}',
        '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
        s3_body(s3_record("")),
        s3_body(s3_record("a.jpg", sequencer="xyz")),
        s3_body(s3_record("bad%FF.jpg")),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "a"}}}]}),
        json.dumps({"Type": "Notification", "Message": 5}),
        json.dumps({"Type": "Notification", "Message": "{not json"}),
        json.dumps({"detail-type": "Object Created", "detail": "x"}),
        json.dumps({"detail-type": "Object Created", "detail": {"bucket": {"name": BUCKET}}}),
    ],
)
def test_malformed_bodies_raise_a_typed_error(body: str):
    """A body that is no S3 event in any known shape raises EventFormatError (a value error of s3sync)."""
    with pytest.raises(EventFormatError):
        parse_message(body, BUCKET)


def test_sequencers_compare_after_left_padding():
    """Sequencers of different lengths compare as hex numbers: left-padded with zeros, case-insensitive."""
    assert compare_sequencers("0055AED6DCD90281E5", "55aed6dcd90281e5") == 0
    assert compare_sequencers("FF", "0100") == -1
    assert compare_sequencers("1000", "FFF") == 1


def change(kind: str, seq: str | None, key: str = "k") -> Change:
    return Change(BUCKET, key, kind, seq)  # type: ignore[arg-type]


def test_verdicts():
    """A duplicate create is applied once; a late create older than a delete is stale; no sequencer: apply."""
    assert verdict(change("created", "0A"), None) == "apply"
    assert verdict(change("created", "0A"), "A") == "duplicate"
    assert verdict(change("created", "09"), "0A") == "stale"
    assert verdict(change("removed", "0B"), "0A") == "apply"
    assert verdict(change("created", None), "0A") == "apply"


def test_newest_per_key():
    """Within a batch only the newest change of each key needs applying."""
    batch = [change("created", "01", "a"), change("removed", "03", "a"), change("created", "02", "a")]
    batch.append(change("created", "05", "b"))
    newest = newest_per_key(batch)
    assert newest["a"] == change("removed", "03", "a")
    assert newest["b"].sequencer == "05"


sequencers = st.integers(min_value=0, max_value=2**72).map(lambda n: format(n, "X"))


@st.composite
def key_histories(draw: st.DrawFn) -> list[Change]:
    """A key's events with distinct sequencers, as S3 gives them (created/removed, any order)."""
    values = draw(st.lists(st.integers(min_value=0, max_value=2**72), min_size=1, max_size=12, unique=True))
    return [
        change(draw(st.sampled_from(["created", "removed"])), format(v, "X").rjust(draw(st.integers(1, 20)), "0"))
        for v in values
    ]


@settings(max_examples=300, deadline=None)
@given(history=key_histories(), data=st.data())
def test_any_delivery_order_converges_to_the_newest(history: list[Change], data: st.DataObject):
    """Any permutation and duplication of a key's events, folded through verdict, applies the newest last."""
    deliveries = data.draw(st.lists(st.sampled_from(history), min_size=0, max_size=20))
    delivered = data.draw(st.permutations(history + deliveries))
    newest = max(history, key=lambda c: int(c.sequencer or "0", 16))
    last: str | None = None
    applied: list[Change] = []
    for c in delivered:
        if verdict(c, last) == "apply":
            applied.append(c)
            last = c.sequencer
    assert applied[-1] == newest
    assert last == newest.sequencer
    # Each change is applied at most once, and never one older than an applied one.
    assert len(applied) == len(set(applied))
    assert all(int(a.sequencer or "0", 16) < int(b.sequencer or "0", 16) for a, b in itertools.pairwise(applied))
    assert newest_per_key(delivered)["k"] == newest


@settings(max_examples=300, deadline=None)
@given(a=sequencers, b=sequencers, pad_a=st.integers(0, 6), pad_b=st.integers(0, 6))
def test_compare_matches_hex_value(a: str, b: str, pad_a: int, pad_b: int):
    """Padding and case never change the order: it is the order of the hex values."""
    pa, pb = "0" * pad_a + a.lower(), "0" * pad_b + b
    expected = (int(a, 16) > int(b, 16)) - (int(a, 16) < int(b, 16))
    assert compare_sequencers(pa, pb) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_value_or_a_typed_error(body: str):
    """Whatever a queue delivers, the parser returns a value or raises EventFormatError, nothing else."""
    try:
        parsed = parse_message(body, BUCKET)
    except EventFormatError:
        return
    assert all(c.bucket == BUCKET for c in parsed.changes)


@settings(max_examples=200, deadline=None)
@given(key=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60))
def test_any_key_round_trips_through_url_encoding(key: str):
    """A key encoded as S3 encodes it (quote_plus) comes back exactly, whatever its characters."""
    from urllib.parse import quote_plus

    parsed = parse_message(s3_body(s3_record(quote_plus(key, safe=""))), BUCKET)
    assert parsed.changes[0].key == key
