"""The narrow request interface the transport speaks: one HTTP exchange per call, no policy.

A :class:`Requests` sends one S3 request (HEAD, a LIST page, a GET or ranged GET streamed to a
sink, a PUT, an UploadPart) and answers a :class:`Reply` or raises :class:`RequestFailed`. Two
stacks implement it, chosen once when the transport is built (:mod:`s3sync._s3client`):

* :mod:`s3sync._crt`: awscrt's ``S3Client`` (AWS's Common Runtime, boto3's own ``crt`` extra):
  native SigV4, connection pooling and I/O outside the GIL;
* :mod:`s3sync._boto`: botocore's client, for AWS itself and wherever awscrt is not wanted.

Neither retries on its own terms: every stack runs its attempts through :class:`Retrier`, which is
botocore's standard retry mode (its conditions, its backoff with ``x-amz-retry-after``, its quota)
driven from here, so all requests retry exactly as boto3's own calls do.

Only this module and the two stacks know HTTP; :func:`s3sync._s3client.translate` turns a
:class:`RequestFailed` into the project's errors.
"""

from __future__ import annotations

import email.utils
import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import unquote_plus
from xml.etree import ElementTree

__all__ = [
    "Failure",
    "Reply",
    "RequestFailed",
    "RequestHook",
    "Requests",
    "Retrier",
    "Sink",
    "error_code",
    "parse_iso_timestamp",
    "parse_listing",
]

#: What went wrong: an HTTP answer, or no usable answer at all.
Failure = Literal["http", "connect", "timeout", "tls", "closed", "credentials", "cancelled"]


#: Observers of each request sent (operation name, key or prefix): tests count requests with it.
RequestHook = Callable[[str, str], None]

_META: Final = "x-amz-meta-"


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: status, headers (names in lower case) and, unless streamed, the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        """One header's value (``name`` in lower case)."""
        return self.headers.get(name, default)

    @property
    def etag(self) -> str:
        """The ETag, unquoted and in lower case ('' when the server sent none)."""
        return self.headers.get("etag", "").strip().strip('"').lower()

    @property
    def metadata(self) -> dict[str, str]:
        """User metadata (``x-amz-meta-*``), names in lower case without the prefix."""
        return {k[len(_META) :]: v for k, v in self.headers.items() if k.startswith(_META)}

    @property
    def length(self) -> int:
        """Content-Length, or -1 when absent."""
        value = self.headers.get("content-length", "").strip()
        return int(value) if value.isdigit() else -1

    @property
    def last_modified(self) -> datetime | None:
        """Last-Modified as an aware datetime (None when absent or unreadable)."""
        return _http_date(self.headers.get("last-modified"))


class RequestFailed(Exception):  # noqa: N818 - it reads as what happened ("the request failed")
    """A request that got no successful answer, after the retries the policy allows.

    ``failure`` says how (an HTTP error answer, or no answer: connect, timeout, TLS, connection
    closed, no credentials); for an HTTP answer ``status`` and ``code`` (the XML error code, else
    the status as text) and the answer's headers and body are kept. ``body_started`` is True when
    part of a streamed body had already reached the sink (such a request is never retried).
    """

    def __init__(
        self,
        failure: Failure,
        message: str,
        *,
        operation: str,
        status: int = 0,
        code: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        body_started: bool = False,
    ) -> None:
        super().__init__(message)
        self.failure: Failure = failure
        self.operation = operation
        self.status = status
        self.code = code
        self.headers: Mapping[str, str] = headers or {}
        self.body = body
        self.body_started = body_started

    @classmethod
    def from_answer(
        cls, operation: str, status: int, headers: Mapping[str, str], body: bytes, *, body_started: bool = False
    ) -> RequestFailed:
        """The failure for an HTTP error answer (its code read from the XML body)."""
        code, message = error_code(status, body, operation)
        return cls(
            "http",
            message or f"HTTP {status}",
            operation=operation,
            status=status,
            code=code,
            headers=headers,
            body=body,
            body_started=body_started,
        )

    @property
    def region(self) -> str | None:
        """The region the server says the bucket is in (a region mismatch answer), if any."""
        if self.headers.get("x-amz-bucket-region"):
            return self.headers["x-amz-bucket-region"].strip() or None
        text = self.body.decode("utf-8", "replace")
        start, end = text.find("<Region>"), text.find("</Region>")
        if 0 <= start < end:
            return text[start + 8 : end].strip() or None
        return None


class Sink(Protocol):
    """Where a GET's body goes: ``start`` with the answer's headers, then ``write`` per chunk, in order.

    ``start`` may be called again when an attempt is retried (before any ``write``): the sink then
    starts from nothing. What either raises stops the request and is raised to the caller.
    """

    def start(self, reply: Reply) -> None:
        """The answer's status and headers (a 2xx), before its first byte."""
        ...

    def write(self, chunk: memoryview, offset: int) -> None:
        """``chunk`` of the body, at ``offset`` from the start of the object."""
        ...


class Requests(Protocol):
    """One S3 request per call on one bucket; every stack implements exactly this."""

    #: Called with (operation, key or prefix) before each attempt is sent.
    hooks: list[RequestHook]

    def head(self, key: str) -> Reply:
        """HEAD ``key`` (a missing key raises :class:`RequestFailed` with status 404)."""
        ...

    def list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        """One ListObjectsV2 page (up to 1,000 keys, decoded), in the shape :func:`parse_listing` gives."""
        ...

    def get(self, key: str, byte_range: str | None, sink: Sink, *, small: bool = False) -> Reply:
        """GET ``key`` (or a ``bytes=a-b`` range), streaming the body to ``sink``; the reply has no body.

        ``small``: the caller knows the object is tiny (empty): one plain request is enough.
        """
        ...

    def put(self, key: str, data: bytes, headers: Mapping[str, str]) -> Reply:
        """PutObject ``data`` with these headers (Content-MD5, Content-Type, metadata...)."""
        ...

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> Reply:
        """UploadPart ``number`` of ``upload_id`` (Content-MD5 checked by the server)."""
        ...

    def delete(self, key: str) -> Reply:
        """DeleteObject ``key`` (s3sync deletes only its own probe objects)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


# --- retries: botocore's standard mode, driven from here -------------------------------------------
@functools.cache
def _operation_model(name: str) -> Any:
    """botocore's model of an S3 operation (what its retry checkers read); loaded on the first retry."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3")
    return model.operation_model(name) if name in model.operation_names else None


@dataclass
class _HttpAnswer:
    """What botocore's retry checkers read of a response: ``status_code`` and ``headers``."""

    status_code: int
    headers: Mapping[str, str]


@dataclass
class Retrier:
    """Attempts of one request under botocore's standard retry mode.

    The decisions are botocore's own objects, assembled as ``register_retry_handler`` assembles
    them for a client (:mod:`botocore.retries.standard`): which answers are transient or
    throttling, the truncated exponential backoff with full jitter (1 s base for throttling, 50 ms
    otherwise, ``x-amz-retry-after`` honoured), and the retry quota shared by every request of the
    process, so that a failing endpoint is not hammered. A failure with no answer (connection
    refused or reset, timeout) is retried as botocore retries its connection errors. ``sleep``
    waits between attempts.
    """

    max_attempts: int
    sleep: Callable[[float], None] = time.sleep
    _policy: Any = field(init=False, repr=False)
    _quota: Any = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        from botocore.retries import quota, standard

        throttling = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
        self._policy = standard.RetryPolicy(
            retry_checker=standard.StandardRetryConditions(max_attempts=self.max_attempts),
            retry_backoff=standard.ExponentialBackoff(service_name="s3", throttling_detector=throttling),
        )
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota(), throttling)

    def delay(self, attempt: int, failure: RequestFailed, request_context: dict[str, Any]) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when this failure is final."""
        from botocore.retries import standard

        if failure.body_started or failure.failure in {"credentials", "cancelled", "tls"}:
            return None
        if failure.failure == "http":
            context = standard.RetryContext(
                attempt_number=attempt,
                operation_model=_operation_model(failure.operation),
                parsed_response={"Error": {"Code": failure.code}, "ResponseMetadata": {}},
                http_response=_HttpAnswer(failure.status, failure.headers),
                request_context=request_context,
            )
            retry = bool(self._policy.should_retry(context))
        else:
            # No answer at all: botocore retries its connection errors (refused, reset, timed out).
            context = standard.RetryContext(
                attempt_number=attempt,
                operation_model=_operation_model(failure.operation),
                request_context=request_context,
            )
            retry = attempt < self.max_attempts
        if not retry:
            return None
        with self._lock:
            if not self._quota.acquire_retry_quota(context):
                return None
        return float(self._policy.compute_retry_delay(context))

    def run(self, attempt_once: Callable[[], Reply]) -> Reply:
        """Call ``attempt_once`` until it answers, or the policy says a failure is final (raised)."""
        attempt = 1
        request_context: dict[str, Any] = {}
        while True:
            try:
                reply = attempt_once()
            except RequestFailed as exc:
                wait = self.delay(attempt, exc, request_context)
                if wait is None:
                    raise
                self.sleep(wait)
                attempt += 1
                continue
            with self._lock:
                self._quota.release_retry_quota(request_context, _HttpAnswer(reply.status, reply.headers))
            return reply


# --- parsing answers --------------------------------------------------------------------------------
def error_code(status: int, body: bytes, operation: str) -> tuple[str, str]:
    """The S3 error code and message of an error answer (from its XML body, else the status).

    >>> error_code(503, b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>", "PutObject")
    ('SlowDown', 'Reduce your rate')
    >>> error_code(404, b"", "HeadObject")
    ('404', '')
    >>> error_code(404, b"", "GetObject")
    ('NoSuchKey', '')
    """
    text = body.decode("utf-8", "replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    if 0 <= start < end:
        message = ""
        m_start, m_end = text.find("<Message>"), text.find("</Message>")
        if 0 <= m_start < m_end:
            message = text[m_start + 9 : m_end].strip()
        return text[start + 6 : end].strip(), message
    if status == 404 and operation != "HeadObject":
        return "NoSuchKey", ""  # a HEAD has no body: its code is the status itself, as in botocore
    return str(status), ""


def parse_listing(raw: bytes) -> dict[str, Any]:
    """A ListObjectsV2 answer (XML): Contents (Key, Size, ETag, LastModified), IsTruncated, NextContinuationToken.

    Keys are decoded when the server says it URL-encoded them (``EncodingType=url``).

    >>> page = parse_listing(b'<ListBucketResult><IsTruncated>false</IsTruncated>'
    ...     b'<Contents><Key>a%20b.jpg</Key><Size>3</Size><ETag>"x"</ETag></Contents>'
    ...     b'<EncodingType>url</EncodingType></ListBucketResult>')
    >>> page["Contents"][0]["Key"], page["Contents"][0]["Size"], page["IsTruncated"]
    ('a b.jpg', 3, False)
    """
    # A listing never declares a DTD: refusing one rules out entity-expansion tricks, and what is
    # left is plain elements, which expat parses safely (botocore's parser is expat too).
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise RequestFailed("closed", "ListObjectsV2: the answer declares a DTD", operation="ListObjectsV2")
    try:
        root = ElementTree.fromstring(raw)  # noqa: S314 - DTDs refused above
    except ElementTree.ParseError as exc:
        raise RequestFailed("closed", f"ListObjectsV2: unreadable XML ({exc})", operation="ListObjectsV2") from exc
    fields: dict[str, str] = {}
    contents: list[dict[str, str]] = []
    for child in root:
        tag = child.tag.rpartition("}")[2]
        if tag == "Contents":
            contents.append({c.tag.rpartition("}")[2]: c.text or "" for c in child})
        else:
            fields[tag] = child.text or ""
    decode = fields.get("EncodingType", "").lower() == "url"
    return {
        "Contents": [
            {
                "Key": unquote_plus(o.get("Key", "")) if decode else o.get("Key", ""),
                "Size": int(o.get("Size") or 0),
                "ETag": o.get("ETag", ""),
                "LastModified": parse_iso_timestamp(o.get("LastModified")),
            }
            for o in contents
        ],
        "IsTruncated": fields.get("IsTruncated", "").strip().lower() == "true",
        # A blank token is no token: the caller then refuses a truncated page instead of looping.
        "NextContinuationToken": fields.get("NextContinuationToken", "").strip() or None,
    }


def parse_iso_timestamp(value: str | None) -> datetime | None:
    """An XML timestamp (``2026-11-27T14:31:55.000Z``) as an aware datetime; None when absent or unreadable.

    >>> parse_iso_timestamp("2026-11-27T14:31:55.000Z").isoformat()
    '2026-11-27T14:31:55+00:00'
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date header (``Fri, 27 Nov 2026 14:31:55 GMT``); None when absent or unreadable."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
