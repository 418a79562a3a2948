"""``s3sync events setup`` and ``s3sync events check``: wire a bucket to an SQS queue, prove it works.

Decide first, act afterwards. The pure half takes what the account holds now (the bucket's
notification configuration, the queue's and the topic's access policies, the topic's
subscriptions) and what is wanted, and returns the new values with a list of :class:`Change`
descriptions; nothing changes when the list is empty, so a second run is a no-op that says so.
The imperative half (:class:`EventSetup`, :class:`EventCheck`) reads the current values, asks the
pure half, prints the changes (``--dry-run`` stops there) and applies them in an order where
every permission exists before the configuration that needs it (S3 sends a test message to
each destination when the notification configuration is written).

Decisions the issue left open, taken here:

* **Merging**, never replacing: every other queue, topic, Lambda or EventBridge configuration
  of the bucket is kept as it is. S3 refuses two configurations that can match one key for
  one event type ("Configuration is ambiguously defined"), so an overlapping configuration to
  another destination is an error that says to fan out through an SNS topic instead.
* A configuration **is ours** when it has our Id (``s3sync-events-<queue or topic name>``) or
  sends to the same queue/topic: it is kept when it already covers what is wanted, else replaced.
* The configuration is filtered by ``S3_MIRROR_PREFIX`` (what this host mirrors; none when empty).
* **Raw message delivery on** for the topic -> queue subscription: the queue then holds the
  same S3 event JSON as with a direct bucket -> queue configuration (smaller, one shape; the
  consumer reads SNS-wrapped bodies too).
* The source account in the access policies' ``aws:SourceAccount`` is the queue's (or topic's)
  account unless ``--source-account`` says otherwise: the bucket is assumed to be in the same one.
* The check's marker is ``<S3_MIRROR_PREFIX>.s3sync-events-check/<uuid>``, which the mirror never
  mirrors (:func:`s3sync.plan.is_probe_key`).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote_plus

from s3sync.errors import ConfigurationError, EndpointError, NotFoundError, S3SyncError
from s3sync.events import ChangeKind, EventFormatError, parse_message
from s3sync.plan import EVENTS_CHECK_SEGMENT
from s3sync.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sts import STSClient

__all__ = [
    "EVENTS",
    "Arn",
    "Change",
    "CheckResult",
    "EventCheck",
    "EventSetup",
    "NotificationPlan",
    "OverlapError",
    "PolicyPlan",
    "SetupReport",
    "Wanted",
    "config_id",
    "events_overlap",
    "filters_overlap",
    "marker_key",
    "parse_arn",
    "plan_notifications",
    "plan_policy",
    "plan_subscription",
    "queue_statement",
    "topic_statement",
    "validate_queue_name",
]

#: The event types the mirror consumes.
EVENTS: tuple[str, ...] = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")

#: The bucket notification configuration's lists, by kind of destination, and the key naming it.
_KINDS: dict[str, str] = {
    "QueueConfigurations": "QueueArn",
    "TopicConfigurations": "TopicArn",
    "LambdaFunctionConfigurations": "LambdaFunctionArn",
}

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


# --- pure: names and ARNs -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Arn:
    """The parts of an ARN (``arn:partition:service:region:account:resource``)."""

    partition: str
    service: str
    region: str
    account: str
    resource: str

    def __str__(self) -> str:
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{self.resource}"


def parse_arn(text: str, *, service: str, what: str) -> Arn:
    """Parse an ARN of ``service``, or raise :class:`ConfigurationError` naming ``what``.

    >>> parse_arn("arn:aws:sns:eu-west-1:123456789012:art-changes", service="sns", what="--topic").resource
    'art-changes'
    """
    parts = text.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != service or not all(parts[1:6:2]) or not parts[5]:
        raise ConfigurationError(
            f"{what}: {text!r} is not an {service.upper()} ARN (arn:aws:{service}:REGION:ACCOUNT:NAME)"
        )
    if not parts[3] or not parts[4]:
        raise ConfigurationError(f"{what}: {text!r} lacks a region or an account")
    return Arn(*parts[1:])


def validate_queue_name(name: str) -> str:
    """An SQS standard queue name, or :class:`ConfigurationError` (S3 cannot send to FIFO queues).

    >>> validate_queue_name("s3sync-host-01")
    's3sync-host-01'
    """
    if name.endswith(".fifo"):
        raise ConfigurationError(f"--queue: {name!r} is a FIFO queue; S3 event notifications need a standard queue")
    if not _QUEUE_NAME.fullmatch(name):
        raise ConfigurationError(f"--queue: {name!r} is not a queue name (1 to 80 letters, digits, '-' or '_')")
    return name


def config_id(target: Arn) -> str:
    """The Id of the notification configuration s3sync writes for a queue or topic."""
    return f"s3sync-events-{target.resource}"


def marker_key(prefix: str, token: str) -> str:
    """The key of an ``events check`` marker under the mirror's prefix.

    >>> marker_key("art/", "0f3a")
    'art/.s3sync-events-check/0f3a'
    """
    return f"{prefix}{EVENTS_CHECK_SEGMENT}/{token}"


# --- pure: the bucket's notification configuration -----------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    """One change to make: ``verb`` (create, add, replace, subscribe, set) and what it applies to."""

    verb: str
    subject: str

    def describe(self, *, dry_run: bool) -> str:
        """``would add ...`` for a dry run, ``added ...`` once done."""
        return f"would {self.verb} {self.subject}" if dry_run else f"{_PAST.get(self.verb, self.verb)} {self.subject}"


_PAST = {"create": "created", "add": "added", "replace": "replaced", "subscribe": "subscribed"}


@dataclass(frozen=True, slots=True)
class Wanted:
    """What ``events setup`` wants the bucket to send, and where (a queue, or a topic)."""

    target: Arn
    prefix: str = ""
    events: tuple[str, ...] = EVENTS

    @property
    def kind(self) -> str:
        """``QueueConfigurations`` or ``TopicConfigurations``."""
        return "TopicConfigurations" if self.target.service == "sns" else "QueueConfigurations"

    def entry(self) -> dict[str, Any]:
        """The configuration entry, as S3's API takes it."""
        entry: dict[str, Any] = {"Id": config_id(self.target), _KINDS[self.kind]: str(self.target)}
        entry["Events"] = list(self.events)
        if self.prefix:
            entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": _encode_filter(self.prefix)}]}}
        return entry


class OverlapError(ConfigurationError):
    """Another destination already receives these events for overlapping keys: S3 would refuse ours."""


@dataclass(frozen=True, slots=True)
class NotificationPlan:
    """The configuration to write (None: keep the current one), the changes, how many others were kept."""

    config: dict[str, Any] | None
    changes: tuple[Change, ...]
    kept: int


def _encode_filter(prefix: str) -> str:
    # S3 wants filter values URL-encoded, a space as '+' (its own key encoding in events).
    from urllib.parse import quote_plus

    return quote_plus(prefix, safe="/")


def _filter(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(prefix, suffix) of a configuration entry, decoded; ``("", "")`` matches every key."""
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    values = {str(r.get("Name", "")).lower(): unquote_plus(str(r.get("Value", ""))) for r in rules}
    return values.get("prefix", ""), values.get("suffix", "")


def events_overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether one event of ``a`` and one of ``b`` can be the same event (``s3:ObjectCreated:*`` covers ``...:Put``).

    >>> events_overlap(["s3:ObjectCreated:*"], ["s3:ObjectCreated:Put"])
    True
    >>> events_overlap(["s3:ObjectCreated:*"], ["s3:ObjectRestore:*"])
    False
    """

    def same(x: str, y: str) -> bool:
        if x.endswith("*"):
            return y.startswith(x[:-1])
        return x == y

    return any(same(x, y) or same(y, x) for x in a for y in b)


def filters_overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether some key matches both (prefix, suffix) filters: prefixes nest and suffixes nest.

    >>> filters_overlap(("", ""), ("art/", ".jpg")), filters_overlap(("art/", ""), ("logs/", ""))
    (True, False)
    """
    (pa, sa), (pb, sb) = a, b
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def _covers(entry: Mapping[str, Any], wanted: Wanted) -> bool:
    """Whether an entry of ours already sends every wanted event for every wanted key (and only those)."""
    return sorted(entry.get("Events", [])) == sorted(wanted.events) and _filter(entry) == (wanted.prefix, "")


def plan_notifications(current: Mapping[str, Any], wanted: Wanted) -> NotificationPlan:
    """From the bucket's current notification configuration to one that also sends ``wanted``.

    Every other configuration is kept untouched, in its place. Ours (same Id, or same
    destination) is kept when it is exactly what is wanted, else replaced. Raises
    :class:`OverlapError` when another destination receives an overlapping event for an
    overlapping key filter (S3 refuses such a configuration).
    """
    target_key = _KINDS[wanted.kind]
    ours_id = config_id(wanted.target)
    config: dict[str, Any] = {k: [dict(e) for e in v] if isinstance(v, list) else v for k, v in current.items()}
    config.pop("ResponseMetadata", None)
    entries = config.get(wanted.kind, [])
    ours = [e for e in entries if e.get("Id") == ours_id or e.get(target_key) == str(wanted.target)]
    others = [(kind, e) for kind in _KINDS for e in config.get(kind, []) if not any(e is o for o in ours)]
    for kind, entry in others:
        if events_overlap(entry.get("Events", []), wanted.events) and filters_overlap(
            _filter(entry), (wanted.prefix, "")
        ):
            destination = entry.get(_KINDS[kind], "?")
            raise OverlapError(
                f"the bucket already sends {', '.join(entry.get('Events', []))} for overlapping keys to {destination} "
                f"(configuration {entry.get('Id', '?')!r}); S3 refuses a second destination for the same event: "
                "fan out through one SNS topic instead (s3sync events setup --topic ARN on every host)"
            )
    if len(ours) == 1 and _covers(ours[0], wanted) and ours[0].get(target_key) == str(wanted.target):
        return NotificationPlan(None, (), len(others))
    what = f"{', '.join(wanted.events)}" + (f" under {wanted.prefix!r}" if wanted.prefix else "")
    subject = f"bucket notification {ours_id!r} ({what} -> {wanted.target})"
    change = Change("replace" if ours else "add", subject)
    config[wanted.kind] = [e for e in entries if not any(e is o for o in ours)] + [wanted.entry()]
    return NotificationPlan(config, (change,), len(others))


# --- pure: access policies ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PolicyPlan:
    """The policy document to write (None: keep the current one) and the change."""

    policy: str | None
    changes: tuple[Change, ...]


def queue_statement(queue: Arn, source: Arn | str, account: str) -> dict[str, Any]:
    """Allow the bucket (``source``: its name) or the SNS topic (an :class:`Arn`) to send to the queue."""
    if isinstance(source, Arn):
        return {
            "Sid": f"s3sync-events-from-topic-{source.resource}",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": str(queue),
            "Condition": {"ArnEquals": {"aws:SourceArn": str(source)}},
        }
    return {
        "Sid": f"s3sync-events-from-bucket-{source}",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": str(queue),
        "Condition": {
            "ArnLike": {"aws:SourceArn": f"arn:{queue.partition}:s3:::{source}"},
            "StringEquals": {"aws:SourceAccount": account},
        },
    }


def topic_statement(topic: Arn, bucket: str, account: str) -> dict[str, Any]:
    """Allow the bucket to publish to the topic."""
    return {
        "Sid": f"s3sync-events-from-bucket-{bucket}",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "SNS:Publish",
        "Resource": str(topic),
        "Condition": {
            "ArnLike": {"aws:SourceArn": f"arn:{topic.partition}:s3:::{bucket}"},
            "StringEquals": {"aws:SourceAccount": account},
        },
    }


def plan_policy(current: str | None, statement: Mapping[str, Any], *, what: str) -> PolicyPlan:
    """Add ``statement`` to the policy document ``current`` (JSON, or None/empty for none).

    Every other statement is kept; a statement with the same Sid is replaced when it differs.
    Raises :class:`ConfigurationError` when ``current`` is not a policy document.
    """
    doc: dict[str, Any]
    if not current:
        doc = {"Version": "2012-10-17", "Statement": []}
    else:
        try:
            doc = json.loads(current)
        except ValueError:
            raise ConfigurationError(f"{what}: the current access policy is not JSON") from None
        if not isinstance(doc, dict):
            raise ConfigurationError(f"{what}: the current access policy is not a JSON object")
    statements = doc.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else list(statements)
    sid = statement["Sid"]
    same_sid = [s for s in statements if isinstance(s, dict) and s.get("Sid") == sid]
    if same_sid == [dict(statement)]:
        return PolicyPlan(None, ())
    kept = [s for s in statements if not (isinstance(s, dict) and s.get("Sid") == sid)]
    doc["Statement"] = [*kept, dict(statement)]
    verb = "replace" if same_sid else "add"
    return PolicyPlan(json.dumps(doc, sort_keys=True), (Change(verb, f"{what} statement {sid!r}"),))


# --- pure: the topic -> queue subscription --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SubscriptionPlan:
    """``subscribe`` (none yet), ``set-raw`` (the subscription ``arn`` delivers wrapped), or nothing."""

    action: Literal["subscribe", "set-raw"] | None
    arn: str | None
    changes: tuple[Change, ...]


def plan_subscription(
    subscriptions: Sequence[Mapping[str, Any]], queue: Arn, raw: Mapping[str, bool], topic: Arn
) -> SubscriptionPlan:
    """Whether the queue must be subscribed to the topic, or its subscription switched to raw delivery.

    ``subscriptions`` are the topic's (``Protocol``, ``Endpoint``, ``SubscriptionArn``);
    ``raw`` says, per subscription ARN, whether it has raw message delivery on.
    """
    mine = [s for s in subscriptions if s.get("Protocol") == "sqs" and s.get("Endpoint") == str(queue)]
    confirmed = [s for s in mine if str(s.get("SubscriptionArn", "")).startswith("arn:")]
    if not confirmed:
        return SubscriptionPlan(
            "subscribe", None, (Change("subscribe", f"queue {queue.resource} to topic {topic} (raw delivery)"),)
        )
    arn = str(confirmed[0]["SubscriptionArn"])
    if raw.get(arn, False):
        return SubscriptionPlan(None, arn, ())
    return SubscriptionPlan("set-raw", arn, (Change("set", f"raw message delivery on subscription {arn}"),))


# --- the imperative shell ------------------------------------------------------------------------
def _error_code(exc: BaseException) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")), " ".join(str(error.get("Message", "")).split())


_NOT_FOUND = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NotFound",
    "NotFoundException",
    "NoSuchBucket",
}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "AuthorizationError",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}


@contextlib.contextmanager
def _calling(action: str) -> Iterator[None]:
    """Turn a botocore error of an S3/SQS/SNS/STS call into one s3sync error line naming ``action``.

    Here and not in :mod:`s3sync.transport`: these are the account's wiring calls, not
    transfers, and their errors (a missing topic, a refused policy) need their own words.
    """
    import botocore.exceptions

    try:
        yield
    except S3SyncError:
        raise
    except botocore.exceptions.NoCredentialsError:
        raise ConfigurationError(
            "S3_AWS_ACCESS_KEY_ID: no credentials found (set S3_AWS_ACCESS_KEY_ID and S3_AWS_SECRET_ACCESS_KEY, "
            "or configure boto3's credential chain)",
            setting="S3_AWS_ACCESS_KEY_ID",
        ) from None
    except botocore.exceptions.NoRegionError:
        raise ConfigurationError("S3_REGION: SQS and SNS need a region; set S3_REGION", setting="S3_REGION") from None
    except botocore.exceptions.ClientError as exc:
        code, message = _error_code(exc)
        detail = f"{code}: {message}" if message else code or "error"
        if code in _NOT_FOUND:
            raise NotFoundError(f"{action}: not found ({detail})") from exc
        if code in _DENIED:
            raise EndpointError(f"{action}: access denied ({detail})", code=code) from exc
        raise S3SyncError(f"{action}: {detail}", code=code) from exc
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError) as exc:
        raise EndpointError(f"{action}: endpoint unreachable ({type(exc).__name__})") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise S3SyncError(f"{action}: {type(exc).__name__}: {exc}") from exc


def make_client(settings: Settings, service: str, *, region: str | None = None) -> Any:
    """A botocore client for SQS, SNS or STS with the settings' endpoint, keys and timeouts.

    ``S3_ENDPOINT_URL`` is used for these services too when set (a local emulator such as
    moto_server answers them all on one port); AWS's own endpoints otherwise.
    """
    import botocore.session
    from botocore.config import Config

    from s3sync.transport import static_keys

    keys = static_keys(settings)
    config = Config(
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=max(settings.read_timeout, 30.0),  # above a long poll's 20 s
        user_agent_extra="s3sync",
    )
    with _calling(f"{service} client"):
        return botocore.session.Session().create_client(
            service,
            region_name=region or settings.region or ("us-east-1" if settings.endpoint_url else None),
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=keys.access_key if keys else None,
            aws_secret_access_key=keys.secret_key if keys else None,
            config=config,
            verify=str(settings.ca_bundle) if settings.ca_bundle else None,
        )


@dataclass
class SetupReport:
    """What ``events setup`` changed (or would change) and the queue's URL (None: not created yet)."""

    changes: list[Change] = field(default_factory=list)
    queue_url: str | None = None
    kept: int = 0


class EventSetup:
    """Reads the account's current wiring, plans with the pure functions above, then applies."""

    def __init__(
        self,
        settings: Settings,
        *,
        s3: S3Client,
        sqs: SQSClient,
        sns: SNSClient | None = None,
        sts: STSClient | None = None,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.settings = settings
        self.bucket = settings.require_bucket()
        self.s3, self.sqs, self.sns, self.sts = s3, sqs, sns, sts
        self.say = say

    def run(
        self, queue: str, *, topic: str | None = None, dry_run: bool = False, source_account: str | None = None
    ) -> SetupReport:
        """Plan and apply (``dry_run``: only plan); every change is passed to ``say`` as it is made."""
        name = validate_queue_name(queue)
        topic_arn = parse_arn(topic, service="sns", what="--topic") if topic is not None else None
        report = SetupReport()

        def do(changes: Sequence[Change], apply: Callable[[], object]) -> None:
            if changes and not dry_run:
                apply()
            for change in changes:
                report.changes.append(change)
                self.say(change.describe(dry_run=dry_run))

        with _calling(f"read the notification configuration of s3://{self.bucket}"):
            current = self.s3.get_bucket_notification_configuration(Bucket=self.bucket)
        if topic_arn is not None:
            self._topic_exists(topic_arn)
        url, queue_arn = self._queue(name)
        # Planned before anything changes: a configuration S3 would refuse stops the run here.
        plan_notifications(current, Wanted(topic_arn or queue_arn, self.settings.mirror_prefix))
        if url is None:
            if not dry_run:
                url, queue_arn = self._queue(name, create=True)
            do([Change("create", f"queue {name} ({queue_arn})")], lambda: None)
        report.queue_url = url
        account = source_account or queue_arn.account
        policy = self._queue_policy(url) if url is not None else None
        source: Arn | str = topic_arn if topic_arn is not None else self.bucket
        plan = plan_policy(policy, queue_statement(queue_arn, source, account), what=f"queue {name} access policy")
        do(plan.changes, lambda: self._set_queue_policy(cast(str, report.queue_url), cast(str, plan.policy)))
        if topic_arn is not None:
            self._wire_topic(topic_arn, queue_arn, source_account or topic_arn.account, do)
        # Last: S3 checks that it may send to the destination when the configuration is written.
        notes = plan_notifications(current, Wanted(topic_arn or queue_arn, self.settings.mirror_prefix))
        report.kept = notes.kept
        do(notes.changes, lambda: self._put_notifications(cast(dict[str, Any], notes.config)))
        return report

    # --- reads and writes, one call each -----------------------------------------------------
    def _topic_exists(self, topic: Arn) -> None:
        if self.sns is None:
            raise ConfigurationError("--topic: no SNS client")
        with _calling(f"look up topic {topic}"):
            self.sns.get_topic_attributes(TopicArn=str(topic))

    def _queue(self, name: str, *, create: bool = False) -> tuple[str | None, Arn]:
        """The queue's URL (None: it does not exist) and ARN (planned from the account when it does not)."""
        import botocore.exceptions

        with _calling(f"{'create' if create else 'look up'} queue {name}"):
            try:
                url = (
                    self.sqs.create_queue(QueueName=name)["QueueUrl"]
                    if create
                    else self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                )
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc)[0] not in _NOT_FOUND:
                    raise
                return None, self._planned_queue_arn(name)
            attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        return url, parse_arn(attrs["QueueArn"], service="sqs", what=f"queue {name}")

    def _planned_queue_arn(self, name: str) -> Arn:
        """The ARN a queue not created yet will have (a dry run prints it)."""
        region = self.sqs.meta.region_name
        account = "<account>"
        if self.sts is not None:
            with contextlib.suppress(S3SyncError), _calling("get the caller's account"):
                account = self.sts.get_caller_identity()["Account"]
        partition = "aws-cn" if region.startswith("cn-") else "aws"
        return Arn(partition, "sqs", region, account, name)

    def _queue_policy(self, url: str) -> str | None:
        with _calling(f"read the access policy of {url}"):
            attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
        return attrs.get("Policy")

    def _set_queue_policy(self, url: str, policy: str) -> None:
        with _calling(f"set the access policy of {url}"):
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})

    def _wire_topic(
        self, topic: Arn, queue: Arn, account: str, do: Callable[[Sequence[Change], Callable[[], object]], None]
    ) -> None:
        sns = cast("SNSClient", self.sns)
        with _calling(f"read topic {topic}"):
            policy = sns.get_topic_attributes(TopicArn=str(topic))["Attributes"].get("Policy")
            subs: list[Mapping[str, Any]] = []
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=str(topic)):
                subs.extend(cast(list[Mapping[str, Any]], page.get("Subscriptions", [])))
            raw: dict[str, bool] = {}
            for s in subs:
                arn = str(s.get("SubscriptionArn", ""))
                if s.get("Protocol") == "sqs" and s.get("Endpoint") == str(queue) and arn.startswith("arn:"):
                    attrs = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
                    raw[arn] = attrs.get("RawMessageDelivery", "false").lower() == "true"
        topic_plan = plan_policy(
            policy, topic_statement(topic, self.bucket, account), what=f"topic {topic.resource} access policy"
        )

        def set_topic_policy() -> None:
            with _calling(f"set the access policy of topic {topic}"):
                sns.set_topic_attributes(
                    TopicArn=str(topic), AttributeName="Policy", AttributeValue=cast(str, topic_plan.policy)
                )

        do(topic_plan.changes, set_topic_policy)
        sub = plan_subscription(subs, queue, raw, topic)

        def subscribe() -> None:
            with _calling(f"subscribe queue {queue.resource} to topic {topic}"):
                if sub.action == "subscribe":
                    sns.subscribe(
                        TopicArn=str(topic),
                        Protocol="sqs",
                        Endpoint=str(queue),
                        Attributes={"RawMessageDelivery": "true"},
                        ReturnSubscriptionArn=True,
                    )
                else:
                    sns.set_subscription_attributes(
                        SubscriptionArn=cast(str, sub.arn), AttributeName="RawMessageDelivery", AttributeValue="true"
                    )

        do(sub.changes, subscribe)

    def _put_notifications(self, config: dict[str, Any]) -> None:
        with _calling(f"write the notification configuration of s3://{self.bucket}"):
            self.s3.put_bucket_notification_configuration(
                Bucket=self.bucket, NotificationConfiguration=cast(Any, config)
            )


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of ``events check``: latencies in seconds (None: no such event arrived in time)."""

    key: str
    created_s: float | None
    removed_s: float | None
    timeout_s: float

    @property
    def passed(self) -> bool:
        """Both the create and the delete of the marker arrived on the queue."""
        return self.created_s is not None and self.removed_s is not None

    def line(self) -> str:
        """One line for the terminal."""
        if self.passed:
            return (
                f"events check passed: ObjectCreated after {self.created_s:.2f} s, "
                f"ObjectRemoved after {self.removed_s:.2f} s ({self.key})"
            )
        if self.created_s is None:
            return (
                f"events check failed: no ObjectCreated event for {self.key} within {self.timeout_s:g} s "
                "(wire the bucket with `s3sync events setup`; a daemon reading this queue may have taken it: "
                "stop it and check again)"
            )
        return (
            f"events check failed: ObjectCreated arrived after {self.created_s:.2f} s, but no ObjectRemoved "
            f"within {self.timeout_s:g} s ({self.key}; is s3:ObjectRemoved:* configured?)"
        )


class EventCheck:
    """Put a marker object, wait for its events on the queue, delete the marker and its events.

    Other messages are not consumed: each one received is held invisible only while the check
    runs (so receiving moves on through the queue) and made visible again at the end.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        s3: S3Client,
        sqs: SQSClient,
        clock: Callable[[], float] = time.monotonic,
        token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.settings = settings
        self.bucket = settings.require_bucket()
        self.s3, self.sqs = s3, sqs
        self.clock = clock
        self.token = token

    def run(self, queue_url: str, *, timeout: float = 20.0) -> CheckResult:
        """Run the check; raises only when a call fails (an absent event is a failed :class:`CheckResult`)."""
        key = marker_key(self.settings.mirror_prefix, self.token())
        held: dict[str, str] = {}  # message id -> receipt handle of messages not ours
        hold = int(timeout) + 30
        removed: float | None = None
        try:
            with _calling(f"look up queue {queue_url}"):
                self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
            started = self.clock()
            with _calling(f"put s3://{self.bucket}/{key}"):
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=b"s3sync events check\n")
            created = self._wait(queue_url, key, "created", started, timeout, held, hold)
            deleted_at = self.clock()
            with _calling(f"delete s3://{self.bucket}/{key}"):
                self.s3.delete_object(Bucket=self.bucket, Key=key)
            if created is not None:
                removed = self._wait(queue_url, key, "removed", deleted_at, timeout, held, hold)
        finally:
            self._release(queue_url, held)
        return CheckResult(key, created, removed, timeout)

    def _wait(
        self, url: str, key: str, kind: ChangeKind, since: float, timeout: float, held: dict[str, str], hold: int
    ) -> float | None:
        """Seconds from ``since`` until a ``kind`` event of ``key`` arrived (read by :mod:`s3sync.events`; deleted)."""
        deadline = since + timeout
        while (left := deadline - self.clock()) > 0:
            with _calling(f"receive from {url}"):
                got = self.sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=max(0, min(5, int(left))),
                    VisibilityTimeout=hold,
                ).get("Messages", [])
            found = False
            for message in got:
                try:
                    mine = [c for c in parse_message(message.get("Body", ""), self.bucket).changes if c.key == key]
                except EventFormatError:
                    mine = []
                if mine:
                    with _calling(f"delete the marker's event from {url}"):
                        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    found = found or any(c.kind == kind for c in mine)
                else:
                    held[message["MessageId"]] = message["ReceiptHandle"]
            if found:
                return self.clock() - since
        return None

    def _release(self, url: str, held: dict[str, str]) -> None:
        """Make the messages received but not ours visible again at once."""
        items = list(held.items())
        for start in range(0, len(items), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, (_mid, handle) in enumerate(items[start : start + 10])
            ]
            with _calling(f"release messages on {url}"):
                self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=cast(Any, entries))
