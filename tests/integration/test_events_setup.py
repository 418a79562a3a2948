"""`s3sync events setup` and `events check` as subprocesses against moto_server (S3, SQS, SNS on one port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.servers import S3Server

ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def moto_bucket(moto_only_server: S3Server) -> str:
    """A fresh bucket on moto_server."""
    return moto_only_server.create_bucket(f"ev-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def aws(moto_only_server: S3Server) -> Callable[[str], Any]:
    """``aws("sqs")``: a boto3 client of moto_server for looking at what the command did."""
    made: list[Any] = []

    def client(service: str) -> Any:
        c = boto3.client(
            service,
            endpoint_url=moto_only_server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=moto_only_server.access_key,
            aws_secret_access_key=moto_only_server.secret_key,
        )
        made.append(c)
        return c

    yield client
    for c in made:
        c.close()


@pytest.fixture
def run(
    moto_only_server: S3Server, moto_bucket: str, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run("events", "setup", ..., S3_MIRROR_PREFIX=...)``: `python -m s3sync` with the bucket's settings."""

    def invoke(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
        env |= {
            "AWS_EC2_METADATA_DISABLED": "true",
            "S3_ENDPOINT_URL": moto_only_server.endpoint,
            "S3_BUCKET_NAME": moto_bucket,
            "S3_AWS_ACCESS_KEY_ID": moto_only_server.access_key,
            "S3_AWS_SECRET_ACCESS_KEY": moto_only_server.secret_key,
            "S3_REGION": "us-east-1",
            "S3_LOCAL_PATH": str(tmp_path / "mirror"),
            "S3_UPLOAD_DIR_PATH": str(tmp_path / "upload"),
            "S3_STATE_PATH": str(tmp_path / "state.db"),
            **extra,
        }
        return subprocess.run(
            [sys.executable, "-m", "s3sync", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    return invoke


def queue_url(name: str) -> str:
    return f"/{ACCOUNT}/{name}"


def notifications(aws: Callable[[str], Any], bucket: str) -> dict[str, Any]:
    config = aws("s3").get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    return config


def queue_names(aws: Callable[[str], Any]) -> set[str]:
    return {u.rsplit("/", 1)[1] for u in aws("sqs").list_queues().get("QueueUrls", [])}


def test_setup_wires_the_bucket_and_a_second_run_changes_nothing(run, aws, moto_bucket):
    """Setup creates the queue, its policy and the notification; the second run says nothing changed."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    first = run("events", "setup", "--queue", queue)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"created queue {queue} (arn:aws:sqs:us-east-1:{ACCOUNT}:{queue})")
    assert lines[1] == f"added queue {queue} access policy statement 's3sync-events-from-bucket-{moto_bucket}'"
    assert lines[2].startswith(f"added bucket notification 's3sync-events-{queue}'")
    assert lines[-1].startswith("S3_EVENTS_QUEUE_URL=http://")
    assert lines[-1].endswith(queue_url(queue))
    url = lines[-1].partition("=")[2]
    policy = json.loads(
        aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{moto_bucket}"
    config = notifications(aws, moto_bucket)
    (entry,) = config["QueueConfigurations"]
    assert entry["QueueArn"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}"
    assert sorted(entry["Events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]

    second = run("events", "setup", "--queue", queue)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[0].startswith("nothing to change")
    assert notifications(aws, moto_bucket) == config

    check = run("events", "check", "--timeout", "10", S3_EVENTS_QUEUE_URL=url)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("events check passed: ObjectCreated after ")
    assert aws("s3").list_objects_v2(Bucket=moto_bucket).get("KeyCount") == 0  # the marker is gone


def test_setup_keeps_an_existing_configuration(run, aws, moto_bucket):
    """Another queue's configuration on other keys stays as it was; ours is added beside it."""
    sqs = aws("sqs")
    other_url = sqs.create_queue(QueueName=f"other-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    other = {
        "Id": "billing",
        "QueueArn": other_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "logs/"}]}},
    }
    aws("s3").put_bucket_notification_configuration(
        Bucket=moto_bucket, NotificationConfiguration={"QueueConfigurations": [other]}
    )
    before = notifications(aws, moto_bucket)["QueueConfigurations"][0]
    queue = f"q-{uuid.uuid4().hex[:8]}"
    done = run("events", "setup", "--queue", queue, S3_MIRROR_PREFIX="art/")
    assert done.returncode == 0, done.stderr
    assert "kept 1 other notification configuration(s) of the bucket" in done.stdout
    entries = notifications(aws, moto_bucket)["QueueConfigurations"]
    assert entries[0] == before
    assert entries[1]["Id"] == f"s3sync-events-{queue}"
    (rule,) = entries[1]["Filter"]["Key"]["FilterRules"]
    assert (rule["Name"].lower(), rule["Value"]) == ("prefix", "art/")

    again = run("events", "setup", "--queue", queue, S3_MIRROR_PREFIX="art/")
    assert again.stdout.startswith("nothing to change"), again.stdout
    url = again.stdout.splitlines()[-1].partition("=")[2]
    check = run("events", "check", "--queue-url", url, "--timeout", "10", S3_MIRROR_PREFIX="art/")
    assert check.returncode == 0, check.stderr
    assert "(art/.s3sync-events-check/" in check.stdout


def test_overlapping_configuration_is_refused_before_any_change(run, aws, moto_bucket):
    """Another destination for the same events on every key: exit 2, one line, no queue created."""
    sqs = aws("sqs")
    other_url = sqs.create_queue(QueueName=f"other-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws("s3").put_bucket_notification_configuration(
        Bucket=moto_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": other_arn, "Events": ["s3:ObjectCreated:Put"]}]
        },
    )
    queue = f"q-{uuid.uuid4().hex[:8]}"
    refused = run("events", "setup", "--queue", queue)
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("s3sync: error: the bucket already sends s3:ObjectCreated:Put")
    assert "--topic" in refused.stderr
    assert queue not in queue_names(aws)


def test_dry_run_changes_nothing(run, aws, moto_bucket):
    """--dry-run prints what it would do and creates no queue, no policy, no notification."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    dry = run("events", "setup", "--queue", queue, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == f"would create queue {queue} (arn:aws:sqs:us-east-1:{ACCOUNT}:{queue})"
    assert lines[1].startswith(f"would add queue {queue} access policy statement")
    assert lines[2].startswith(f"would add bucket notification 's3sync-events-{queue}'")
    assert "dry run: nothing was changed" in lines
    assert queue not in queue_names(aws)
    assert notifications(aws, moto_bucket) == {}


def test_topic_fan_out_to_two_queues(run, aws, moto_bucket):
    """With --topic, two hosts' queues are subscribed (raw delivery) and both see one PutObject as raw S3 JSON."""
    topic = aws("sns").create_topic(Name=f"art-{uuid.uuid4().hex[:8]}")["TopicArn"]
    urls = []
    for host in ("a", "b"):
        queue = f"h{host}-{uuid.uuid4().hex[:8]}"
        done = run("events", "setup", "--queue", queue, "--topic", topic)
        assert done.returncode == 0, done.stderr
        assert f"subscribed queue {queue} to topic {topic} (raw delivery)" in done.stdout
        urls.append(done.stdout.splitlines()[-1].partition("=")[2])
    first, second = (run("events", "setup", "--queue", u.rsplit("/", 1)[1], "--topic", topic) for u in urls)
    assert first.stdout.startswith("nothing to change"), first.stdout
    assert second.stdout.startswith("nothing to change"), second.stdout
    (entry,) = notifications(aws, moto_bucket)["TopicConfigurations"]
    assert entry["TopicArn"] == topic
    subs = aws("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert len(subs) == 2
    for sub in subs:
        attrs = aws("sns").get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
        assert attrs["RawMessageDelivery"] == "true"
    topic_policy = json.loads(aws("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
    assert any(s.get("Sid") == f"s3sync-events-from-bucket-{moto_bucket}" for s in topic_policy["Statement"])

    sqs = aws("sqs")
    for url in urls:  # the test events of the configuration, out of the way
        sqs.purge_queue(QueueUrl=url)
    aws("s3").put_object(Bucket=moto_bucket, Key="art/a b.jpg", Body=b"x")
    for url in urls:
        messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=10)["Messages"]
        body = json.loads(messages[0]["Body"])
        assert body["Records"][0]["eventName"] == "ObjectCreated:Put"  # raw: no SNS envelope
    for url in urls:
        check = run("events", "check", "--queue-url", url, "--timeout", "10")
        assert check.returncode == 0, check.stderr


def test_check_fails_in_one_line_on_an_unwired_bucket(run, aws, moto_bucket):
    """A queue the bucket does not send to: exit 1, one line saying so, the marker deleted anyway."""
    url = aws("sqs").create_queue(QueueName=f"lonely-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    failed = run("events", "check", "--queue-url", url, "--timeout", "2")
    assert failed.returncode == 1
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith("s3sync: events check failed: no ObjectCreated event for .s3sync-events-check/")
    assert "within 2 s" in failed.stderr
    assert aws("s3").list_objects_v2(Bucket=moto_bucket).get("KeyCount") == 0


def test_check_without_a_queue_url_or_with_a_missing_queue(run):
    """No S3_EVENTS_QUEUE_URL and no --queue-url: exit 2 naming the setting; a missing queue: exit 1, one line."""
    unset = run("events", "check")
    assert unset.returncode == 2
    assert unset.stderr.splitlines() == ["s3sync: error: S3_EVENTS_QUEUE_URL: not set (or give --queue-url)"]
    missing = run("events", "check", "--queue-url", f"http://127.0.0.1:1/{ACCOUNT}/nope", "--timeout", "2")
    assert missing.returncode == 1
    assert len(missing.stderr.splitlines()) == 1, missing.stderr


def test_check_leaves_other_messages_on_the_queue(run, aws):
    """A message that is not the marker's is visible again right after the check (not consumed, not delayed)."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    done = run("events", "setup", "--queue", queue)
    url = done.stdout.splitlines()[-1].partition("=")[2]
    sqs = aws("sqs")
    sqs.purge_queue(QueueUrl=url)
    sqs.send_message(QueueUrl=url, MessageBody='{"not": "the marker"}')
    check = run("events", "check", "--queue-url", url, "--timeout", "10")
    assert check.returncode == 0, check.stderr
    left = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    assert [m["Body"] for m in left] == ['{"not": "the marker"}']
