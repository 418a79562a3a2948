"""The pure half of ``s3sync events setup/check``: current configuration + wanted -> new configuration and changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.errors import ConfigurationError
from s3sync.eventsetup import (
    EVENTS,
    Arn,
    Change,
    CheckResult,
    OverlapError,
    Wanted,
    config_id,
    events_overlap,
    filters_overlap,
    marker_key,
    parse_arn,
    plan_notifications,
    plan_policy,
    plan_subscription,
    queue_statement,
    topic_statement,
    validate_queue_name,
)
from s3sync.plan import MirrorAction, RemoteVersion, is_probe_key, plan_mirror

QUEUE = parse_arn("arn:aws:sqs:us-east-1:111122223333:host-a", service="sqs", what="queue")
OTHER_QUEUE = "arn:aws:sqs:us-east-1:111122223333:billing"
TOPIC = parse_arn("arn:aws:sns:us-east-1:111122223333:art", service="sns", what="--topic")
LAMBDA = "arn:aws:lambda:us-east-1:111122223333:function:thumbs"


def apply(current: dict[str, Any], wanted: Wanted) -> dict[str, Any]:
    """The configuration after the plan is applied (the current one when the plan changes nothing)."""
    plan = plan_notifications(current, wanted)
    return plan.config if plan.config is not None else current


def test_empty_configuration_gets_our_queue_entry():
    """A bucket with no configuration gets one queue entry for both event types, and one change says so."""
    plan = plan_notifications({}, Wanted(QUEUE))
    assert plan.config == {
        "QueueConfigurations": [{"Id": "s3sync-events-host-a", "QueueArn": str(QUEUE), "Events": list(EVENTS)}]
    }
    assert plan.changes == (
        Change("add", f"bucket notification 's3sync-events-host-a' ({', '.join(EVENTS)} -> {QUEUE})"),
    )
    assert plan.kept == 0


def test_second_plan_is_a_no_op():
    """Planning again over the result changes nothing (the response metadata of a GET is ignored)."""
    first = apply({"ResponseMetadata": {"HTTPStatusCode": 200}}, Wanted(QUEUE, "art/"))
    again = plan_notifications({**first, "ResponseMetadata": {}}, Wanted(QUEUE, "art/"))
    assert again.config is None
    assert again.changes == ()


def test_other_configurations_are_kept_in_place():
    """Another queue, a topic, a Lambda and EventBridge, on keys that do not overlap ours, are all kept."""
    others: dict[str, Any] = {
        "QueueConfigurations": [
            {
                "Id": "billing",
                "QueueArn": OTHER_QUEUE,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "logs/"}]}},
            }
        ],
        "TopicConfigurations": [{"Id": "restores", "TopicArn": str(TOPIC), "Events": ["s3:ObjectRestore:Completed"]}],
        "LambdaFunctionConfigurations": [
            {
                "Id": "thumbs",
                "LambdaFunctionArn": LAMBDA,
                "Events": ["s3:ObjectCreated:Put"],
                "Filter": {
                    "Key": {"FilterRules": [{"Name": "prefix", "Value": "psd/"}, {"Name": "suffix", "Value": ".psd"}]}
                },
            }
        ],
        "EventBridgeConfiguration": {},
    }
    plan = plan_notifications(others, Wanted(QUEUE, "art/"))
    assert plan.kept == 3
    assert plan.config is not None
    assert plan.config["QueueConfigurations"][0] == others["QueueConfigurations"][0]
    assert plan.config["QueueConfigurations"][1]["Id"] == "s3sync-events-host-a"
    for kind in ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration"):
        assert plan.config[kind] == others[kind]
    assert others["QueueConfigurations"][0]["Id"] == "billing"  # the input is not changed in place


def test_overlapping_destination_is_refused_before_anything():
    """Another queue receiving ObjectCreated for every key: S3 would refuse ours, so the plan says to fan out."""
    current = {"QueueConfigurations": [{"Id": "x", "QueueArn": OTHER_QUEUE, "Events": ["s3:ObjectCreated:Put"]}]}
    with pytest.raises(OverlapError, match="--topic"):
        plan_notifications(current, Wanted(QUEUE, "art/"))
    assert isinstance(OverlapError("m"), ConfigurationError)  # exit 2: the operator must decide


def test_ours_with_other_events_or_filter_is_replaced():
    """Our entry (same Id or same queue) that differs is replaced by what is wanted, once."""
    current = {"QueueConfigurations": [{"Id": "old-name", "QueueArn": str(QUEUE), "Events": ["s3:ObjectCreated:*"]}]}
    plan = plan_notifications(current, Wanted(QUEUE))
    assert plan.changes[0].verb == "replace"
    assert plan.config == {
        "QueueConfigurations": [{"Id": config_id(QUEUE), "QueueArn": str(QUEUE), "Events": list(EVENTS)}]
    }


def test_topic_mode_writes_a_topic_entry_with_an_encoded_prefix():
    """With --topic the bucket sends to the topic; a prefix with a space is URL-encoded as S3 wants."""
    plan = plan_notifications({}, Wanted(TOPIC, "my art/"))
    assert plan.config is not None
    entry = plan.config["TopicConfigurations"][0]
    assert entry["TopicArn"] == str(TOPIC)
    assert entry["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "my+art/"}]}}
    assert plan_notifications(plan.config, Wanted(TOPIC, "my art/")).changes == ()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["s3:ObjectCreated:*"], ["s3:ObjectCreated:Put"], True),
        (["s3:ObjectRemoved:Delete"], ["s3:ObjectRemoved:*"], True),
        (["s3:ObjectCreated:Put"], ["s3:ObjectCreated:Copy"], False),
        (["s3:ObjectRestore:*"], list(EVENTS), False),
    ],
)
def test_events_overlap_examples(a, b, expected):
    """A wildcard event type covers its specific ones; different types never overlap."""
    assert events_overlap(a, b) is expected
    assert events_overlap(b, a) is expected


SEG = st.text(alphabet="ab/.", max_size=4)


@given(pa=SEG, sa=SEG, pb=SEG, sb=SEG)
def test_filters_overlap_iff_some_key_matches_both(pa, sa, pb, sb):
    """Overlap means a key exists that both filters match: the longer prefix + the longer suffix is one."""
    overlap = filters_overlap((pa, sa), (pb, sb))
    assert overlap == filters_overlap((pb, sb), (pa, sa))
    key = max(pa, pb, key=len) + max(sa, sb, key=len)

    def matches(prefix: str, suffix: str) -> bool:
        return key.startswith(prefix) and key.endswith(suffix)

    if overlap:
        assert matches(pa, sa)
        assert matches(pb, sb)
    else:
        # No key of any length matches both (checked on every short key over the alphabet).
        assert not any(
            k.startswith(pa) and k.endswith(sa) and k.startswith(pb) and k.endswith(sb) for k in _keys("ab/.", 8)
        )


def _keys(alphabet: str, length: int) -> list[str]:
    keys = [""]
    frontier = [""]
    for _ in range(length):
        frontier = [k + c for k in frontier for c in alphabet]
        keys += frontier
    return keys


_EVENT_TYPES = st.sampled_from(
    [
        "s3:ObjectCreated:*",
        "s3:ObjectCreated:Put",
        "s3:ObjectRemoved:*",
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRestore:Completed",
        "s3:ReducedRedundancyLostObject",
    ]
)
_ENTRY = st.fixed_dictionaries(
    {
        "Id": st.text(alphabet="abc-", min_size=1, max_size=6),
        "Events": st.lists(_EVENT_TYPES, min_size=1, max_size=3, unique=True),
        "Prefix": st.sampled_from(["", "art/", "art/x/", "logs/", "my art/"]),
    }
)


def _to_entry(kind: str, n: int, e: dict[str, Any]) -> dict[str, Any]:
    key = {"QueueConfigurations": "QueueArn", "TopicConfigurations": "TopicArn"}.get(kind, "LambdaFunctionArn")
    entry: dict[str, Any] = {"Id": f"{e['Id']}{n}", key: f"arn:aws:x:us-east-1:1:dest{n}", "Events": e["Events"]}
    if e["Prefix"]:
        entry["Filter"] = {"Key": {"FilterRules": [{"Name": "Prefix", "Value": e["Prefix"]}]}}
    return entry


@settings(max_examples=200)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations"]), _ENTRY
        ),
        max_size=5,
    ),
    prefix=st.sampled_from(["", "art/", "art/y/"]),
    topic=st.booleans(),
)
def test_plan_keeps_every_other_entry_or_refuses(entries, prefix, topic):
    """Either the plan refuses (some entry overlaps ours) or every other entry survives and a replan is a no-op."""
    current: dict[str, Any] = {}
    for n, (kind, e) in enumerate(entries):
        current.setdefault(kind, []).append(_to_entry(kind, n, e))
    wanted = Wanted(TOPIC if topic else QUEUE, prefix)
    # The generated destinations and Ids are never ours: every entry is another's.
    refused = any(
        events_overlap(e["Events"], EVENTS) and filters_overlap((e["Prefix"], ""), (prefix, "")) for _, e in entries
    )
    if refused:
        with pytest.raises(OverlapError):
            plan_notifications(current, wanted)
        return
    plan = plan_notifications(current, wanted)
    assert plan.config is not None
    for kind, listed in current.items():
        for entry in listed:
            assert entry in plan.config[kind]
    assert plan.kept == sum(len(v) for v in current.values())
    assert plan_notifications(plan.config, wanted).changes == ()


# --- access policies -------------------------------------------------------------------------------
def test_queue_policy_for_the_bucket_is_added_once():
    """No policy yet: one statement letting the bucket (of our account) send; planning again changes nothing."""
    statement = queue_statement(QUEUE, "art-bucket", "111122223333")
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": "arn:aws:s3:::art-bucket"}
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "111122223333"}
    plan = plan_policy(None, statement, what="queue host-a access policy")
    assert plan.changes == (
        Change("add", "queue host-a access policy statement 's3sync-events-from-bucket-art-bucket'"),
    )
    assert plan.policy is not None
    assert json.loads(plan.policy)["Statement"] == [statement]
    assert plan_policy(plan.policy, statement, what="q").changes == ()


def test_queue_policy_for_a_topic_keeps_other_statements():
    """The topic's statement joins the policy's other statements; one with our Sid but other content is replaced."""
    ours = queue_statement(QUEUE, TOPIC, "111122223333")
    assert ours["Condition"] == {"ArnEquals": {"aws:SourceArn": str(TOPIC)}}
    other = {"Sid": "ops", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "sqs:*"}
    stale = {**ours, "Action": "sqs:*"}
    current = json.dumps({"Version": "2012-10-17", "Id": "p", "Statement": [other, stale]})
    plan = plan_policy(current, ours, what="q")
    assert plan.changes[0].verb == "replace"
    assert plan.policy is not None
    doc = json.loads(plan.policy)
    assert doc["Id"] == "p"
    assert doc["Statement"] == [other, ours]


def test_topic_policy_lets_the_bucket_publish():
    """The topic's statement allows SNS:Publish from the bucket of the given account."""
    statement = topic_statement(TOPIC, "art-bucket", "111122223333")
    assert statement["Action"] == "SNS:Publish"
    assert statement["Resource"] == str(TOPIC)


def test_policy_that_is_not_json_is_a_configuration_error():
    """A broken current policy is reported, never overwritten."""
    with pytest.raises(ConfigurationError, match="not JSON"):
        plan_policy("{broken", queue_statement(QUEUE, "b", "1"), what="q")


@given(
    others=st.lists(
        st.fixed_dictionaries({"Sid": st.text(max_size=8), "Effect": st.sampled_from(["Allow", "Deny"])}), max_size=4
    )
)
def test_policy_plan_keeps_others_and_is_idempotent(others):
    """Whatever other statements a policy holds, they are kept, ours appears once, and a replan changes nothing."""
    ours = queue_statement(QUEUE, "b", "1")
    others = [s for s in others if s["Sid"] != ours["Sid"]]
    plan = plan_policy(json.dumps({"Statement": others}), ours, what="q")
    assert plan.policy is not None
    statements = json.loads(plan.policy)["Statement"]
    assert statements == [*others, ours]
    assert plan_policy(plan.policy, ours, what="q").policy is None


# --- subscription ------------------------------------------------------------------------------------
def test_subscription_plans():
    """No subscription: subscribe (raw); one without raw delivery: switch it on; one with raw: nothing."""
    assert plan_subscription([], QUEUE, {}, TOPIC).action == "subscribe"
    sub = {"Protocol": "sqs", "Endpoint": str(QUEUE), "SubscriptionArn": "arn:aws:sns:us-east-1:1:art:abc"}
    assert plan_subscription([sub], QUEUE, {sub["SubscriptionArn"]: False}, TOPIC).action == "set-raw"
    done = plan_subscription([sub], QUEUE, {sub["SubscriptionArn"]: True}, TOPIC)
    assert done.action is None
    assert done.changes == ()
    pending = {**sub, "SubscriptionArn": "PendingConfirmation"}
    assert plan_subscription([pending], QUEUE, {}, TOPIC).action == "subscribe"
    other = {**sub, "Endpoint": OTHER_QUEUE}
    assert plan_subscription([other], QUEUE, {}, TOPIC).action == "subscribe"


# --- names, ARNs, events -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["q.fifo", "", "a b", "x" * 81, "ü"])
def test_bad_queue_names_are_refused(name):
    """FIFO queues (S3 cannot send to them) and names SQS refuses are configuration errors."""
    with pytest.raises(ConfigurationError, match="--queue"):
        validate_queue_name(name)


@pytest.mark.parametrize(
    "text", ["art", "arn:aws:sqs:us-east-1:1:q", "arn:aws:sns:us-east-1::art", "arn:aws:sns:::art", "arn:aws:sns:r:1:"]
)
def test_bad_topic_arns_are_refused(text):
    """Anything but a complete SNS ARN is a configuration error naming --topic."""
    with pytest.raises(ConfigurationError, match="--topic"):
        parse_arn(text, service="sns", what="--topic")


def test_arn_round_trip():
    """An ARN prints as it was parsed."""
    assert str(TOPIC) == "arn:aws:sns:us-east-1:111122223333:art"
    assert Arn("aws", "sns", "us-east-1", "111122223333", "art") == TOPIC


def test_marker_is_never_mirrored():
    """The check's marker, under any mirror prefix, is a marker for the mirror: never downloaded."""
    key = marker_key("art/", "0f3a")
    assert is_probe_key(key)
    assert plan_mirror(key, RemoteVersion(20, "e" * 32), None, None).action is MirrorAction.MARKER
    assert not is_probe_key("art/.s3sync-events-checks/a.jpg")
    assert plan_mirror("art/x.s3sync-events-check/a", RemoteVersion(1, "e" * 32), None, None).action is (
        MirrorAction.DOWNLOAD
    )


def test_change_and_result_lines():
    """A change reads as done or as a dry run's intent; a check result is one line saying pass or why not."""
    change = Change("add", "thing")
    assert change.describe(dry_run=True) == "would add thing"
    assert change.describe(dry_run=False) == "added thing"
    assert "passed" in CheckResult("k", 0.1, 0.2, 20).line()
    assert "no ObjectCreated event for k within 20 s" in CheckResult("k", None, None, 20).line()
    assert "no ObjectRemoved" in CheckResult("k", 0.1, None, 20).line()
    assert not CheckResult("k", 0.1, None, 20).passed
