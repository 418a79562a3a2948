"""A lean request path for the requests s3sync makes by the thousand: GET, PUT and LIST.

botocore is general: every call validates parameters, runs a dozen event handlers, resolves the
endpoint, builds and parses through service models. For a 64 KiB object on a fast local server
that is most of the CPU a transfer costs, and with the GIL the CPU is the limit (measured: about
3x the objects per second with this path). This module sends the same HTTP requests directly:
SigV4 signed (with the credentials botocore resolved, refreshed as botocore refreshes them), on
the keep-alive connections of :mod:`s3sync.wire`, and maps every failure to the botocore
exception botocore would have raised, so :func:`s3sync.transport.translate` and all callers
behave the same.

It is used only where its requests are fully known: a custom endpoint (``S3_ENDPOINT_URL``) with
path-style addressing. On AWS itself, botocore keeps the work (region redirects, virtual hosts).
Everything else (creating, completing, aborting and listing multipart uploads; deletes) goes
through botocore, whose client is then created on first use: a one-shot ``s3sync sync`` that only
lists, HEADs, GETs and PUTs never pays for importing botocore's session and loading its service
models (about half a second of start-up).
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import hmac
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

import botocore.exceptions

from s3sync import __version__, wire

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["FastPath", "FastResponse", "StaticKeys", "parse_iso_timestamp"]

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED = "UNSIGNED-PAYLOAD"
_META = "x-amz-meta-"

#: Observers of each request sent (operation name, key): tests count requests with it.
RequestHook = Callable[[str, str], None]


@dataclass
class FastResponse:
    """What a GET or PUT answered, in the shape of botocore's response dicts."""

    status: int
    headers: Mapping[str, str]
    body: _Body | None
    raw: bytes = b""  # the whole body of a request that was not streamed

    def as_get(self) -> dict[str, Any]:
        """``get_object``'s (or, without Body, ``head_object``'s) response: ContentLength, ETag, Metadata.

        LastModified is parsed for a HEAD only: a download has no use for it (and the date parser
        is a tenth of a small GET's CPU).
        """
        headers = self.headers  # names in lower case (s3sync.wire)
        return {
            "ContentLength": int(headers.get("content-length", "-1")),
            "ETag": headers.get("etag", ""),
            "Metadata": {k[len(_META) :]: v for k, v in headers.items() if k.startswith(_META)},
            "LastModified": _http_date(headers.get("last-modified")) if self.body is None else None,
            "ContentRange": headers.get("content-range"),
            "Body": self.body,
        }


class FrozenKeys(Protocol):
    """One consistent set of keys (botocore's ``ReadOnlyCredentials`` has this shape)."""

    @property
    def access_key(self) -> str: ...
    @property
    def secret_key(self) -> str: ...
    @property
    def token(self) -> str | None: ...


class CredentialSource(Protocol):
    """Where keys come from at each request: botocore's refreshing ``Credentials``, or :class:`StaticKeys`."""

    def get_frozen_credentials(self) -> FrozenKeys: ...


@dataclass(frozen=True, slots=True)
class StaticKeys:
    """Keys given in the settings: they never change while the process runs."""

    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)

    def get_frozen_credentials(self) -> StaticKeys:
        return self


class _Body:
    """The response stream, raising botocore's exceptions (as botocore's StreamingBody does)."""

    def __init__(self, resp: wire.Response, url: str) -> None:
        self._resp = resp
        self._url = url

    def read(self, amt: int | None = None) -> bytes:
        try:
            return self._resp.read(amt)
        except wire.WireError as exc:
            raise self._error(exc) from exc

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill ``buffer`` with the next body bytes; how many, 0 at the end."""
        try:
            return self._resp.readinto(buffer)
        except wire.WireError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: wire.WireError) -> Exception:
        if isinstance(exc, wire.ReadTimeoutError):
            return botocore.exceptions.ReadTimeoutError(endpoint_url=self._url, error=exc)
        return botocore.exceptions.ResponseStreamingError(error=exc)

    def close(self) -> None:
        """Return the connection to the pool after a complete body; close it otherwise."""
        self._resp.close()


class FastPath:
    """LIST, HEAD, GET and PUT of single objects on keep-alive connections, signed like botocore signs them."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        bucket: str,
        credentials: CredentialSource,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int = 1,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_attempts = max(1, max_attempts)
        self._bucket = bucket
        # Read per request: botocore's credentials refresh themselves (roles, SSO).
        self._credentials = credentials
        self._region = region
        url = urlsplit(endpoint_url)
        self._scheme = url.scheme
        self._host = url.netloc
        self._base_path = url.path.rstrip("/")
        self._pool = wire.Pool(
            endpoint_url,
            maxsize=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            ssl_context=ssl_context,
            user_agent=f"s3sync/{__version__}",
        )
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.hooks: list[RequestHook] = []

    @classmethod
    def for_client(cls, client: S3Client, **options: Any) -> FastPath:
        """A fast path with the same endpoint, region and (refreshing) credentials as ``client``."""
        credentials = client._request_signer._credentials  # type: ignore[attr-defined]
        if credentials is None:
            raise botocore.exceptions.NoCredentialsError
        return cls(
            endpoint_url=client.meta.endpoint_url,
            region=client.meta.region_name or "us-east-1",
            credentials=credentials,
            **options,
        )

    # --- the operations --------------------------------------------------------------------------
    def get_object(self, key: str, *, byte_range: str | None = None) -> dict[str, Any]:
        """GET ``key`` (or a ``bytes=a-b`` range of it); the body is streamed. Raises what botocore raises."""
        headers = {"range": byte_range} if byte_range else {}
        resp = self._send("GET", key, b"", headers, _EMPTY_SHA256, stream=True, operation="GetObject")
        return resp.as_get()

    def head_object(self, key: str) -> dict[str, Any]:
        """HEAD ``key``: size, ETag, metadata. A missing key raises ClientError ``404``, as botocore's does."""
        resp = self._send("HEAD", key, b"", {}, _EMPTY_SHA256, stream=False, operation="HeadObject")
        return resp.as_get()

    def put_object(
        self,
        key: str,
        body: bytes,
        *,
        sha256_hex: str,
        content_md5: str,
        content_type: str,
        metadata: dict[str, str],
        extra_headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """PUT ``body`` at ``key`` (Content-MD5 checked by the server, payload hash signed).

        ``extra_headers``: the object's ACL and Cache-Control (:func:`s3sync.publish.object_headers`).
        """
        headers = {
            "content-md5": content_md5,
            "content-type": content_type,
            "content-length": str(len(body)),
            **{_META + k: v for k, v in metadata.items()},
            **{k.lower(): v for k, v in (extra_headers or {}).items()},
        }
        resp = self._send("PUT", key, body, headers, sha256_hex, stream=False, operation="PutObject")
        return {"ETag": resp.headers.get("etag", "")}

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes, *, content_md5: str) -> dict[str, Any]:
        """One part of a multipart upload: Content-MD5 checked by the server, payload not hashed again.

        ``UNSIGNED-PAYLOAD`` is what botocore itself sends over HTTPS when Content-MD5 is set;
        over plain HTTP botocore would SHA-256 every part only to sign it, on top of our MD5.
        """
        headers = {"content-md5": content_md5, "content-length": str(len(body))}
        query = {"partNumber": str(number), "uploadId": upload_id}
        resp = self._send("PUT", key, body, headers, _UNSIGNED, stream=False, operation="UploadPart", query=query)
        return {"ETag": resp.headers.get("etag", "")}

    def list_objects(self, prefix: str, token: str | None) -> dict[str, Any]:
        """One ListObjectsV2 page (up to 1,000 keys), in the shape of botocore's response.

        Like botocore, asks for ``encoding-type=url`` (a key may hold characters XML cannot
        carry) and decodes the keys when the server says it encoded them.
        """
        query = {"list-type": "2", "max-keys": "1000", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        resp = self._send("GET", None, b"", {}, _EMPTY_SHA256, stream=False, operation="ListObjectsV2", query=query)
        return _parse_listing(resp.raw)

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.close()

    # --- request, signing, errors ----------------------------------------------------------------
    def _send(
        self,
        method: str,
        key: str | None,
        body: bytes,
        headers: dict[str, str],
        payload_sha256: str,
        *,
        stream: bool,
        operation: str,
        query: Mapping[str, str] | None = None,
    ) -> FastResponse:
        path = f"{self._base_path}/{quote(self._bucket, safe='')}"
        if key is not None:
            path += f"/{quote(key, safe='/~')}"
        # SigV4's canonical query: every name and value percent-encoded (RFC 3986), sorted.
        qs = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted((query or {}).items()))
        target = path + (f"?{qs}" if qs else "")
        # Retried like botocore's standard mode: connection failures and throttling or 5xx answers,
        # up to S3_MAX_ATTEMPTS in all, with exponential backoff and full jitter. Each attempt is
        # signed anew (the signature carries the time).
        attempt = 1
        while True:
            for hook in self.hooks:
                hook(operation, key if key is not None else (query or {}).get("prefix", ""))
            signed = self._sign(method, path, qs, headers, payload_sha256)
            try:
                return self._request(method, target, signed, body, stream=stream, operation=operation)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                if attempt >= self._max_attempts or not _retryable(exc):
                    raise
            time.sleep(random.uniform(0, min(20.0, 0.05 * 2**attempt)))  # jitter, not security
            attempt += 1

    def _request(
        self, method: str, target: str, headers: dict[str, str], body: bytes, *, stream: bool, operation: str
    ) -> FastResponse:
        """One HTTP exchange; failures become the botocore exceptions botocore would raise."""
        url = f"{self._scheme}://{self._host}{target}"
        try:
            resp = self._pool.request(method, target, headers, body, preload=not stream)
        except wire.ConnectTimeoutError as exc:
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url=url, error=exc) from exc
        except wire.TLSError as exc:
            raise botocore.exceptions.SSLError(endpoint_url=url, error=exc) from exc
        except wire.ConnectError as exc:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url=url, error=exc) from exc
        except wire.ReadTimeoutError as exc:
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=url, error=exc) from exc
        except wire.WireError as exc:
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=url, error=exc) from exc
        if resp.status >= 300:
            try:
                raw = resp.read() if stream else resp.data
            except wire.WireError:
                raw = b""  # the status says enough
            resp.close()
            raise _client_error(resp.status, raw, operation, resp.headers)
        if stream:
            return FastResponse(resp.status, resp.headers, _Body(resp, url))
        return FastResponse(resp.status, resp.headers, None, resp.data)

    def _sign(self, method: str, path: str, qs: str, headers: dict[str, str], payload_sha256: str) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = amz_date[:8]
        all_headers = {
            **{k.lower(): v.strip() for k, v in headers.items()},
            "host": self._host,
            "x-amz-content-sha256": payload_sha256,
            "x-amz-date": amz_date,
        }
        if creds.token:
            all_headers["x-amz-security-token"] = creds.token
        names = sorted(all_headers)
        canonical = "\n".join(
            [
                method,
                path,
                qs,
                "".join(f"{n}:{all_headers[n]}\n" for n in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        all_headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        del all_headers["host"]  # the connection pool sends its own
        return all_headers

    def _signing_key(self, secret: str, day: str) -> bytes:
        cache_key = (secret, day)
        with self._lock:
            found = self._keys.get(cache_key)
        if found is not None:
            return found
        k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (self._region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        with self._lock:
            self._keys = {cache_key: k}  # one day, one secret: older keys are of no use
        return k


def _parse_listing(raw: bytes) -> dict[str, Any]:
    """A ListObjectsV2 answer (XML) as botocore would parse it: Contents, IsTruncated, NextContinuationToken."""
    # A listing never declares a DTD: refusing one rules out entity-expansion tricks, and what is
    # left is plain elements, which expat parses safely (this is botocore's parser too).
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise botocore.exceptions.ResponseStreamingError(error="ListObjectsV2: the answer declares a DTD")
    try:
        root = ElementTree.fromstring(raw)  # noqa: S314 - DTDs refused above
    except ElementTree.ParseError as exc:
        raise botocore.exceptions.ResponseStreamingError(error=f"ListObjectsV2: unreadable XML ({exc})") from exc
    fields: dict[str, str] = {}
    contents: list[dict[str, Any]] = []
    for child in root:
        tag = child.tag.rpartition("}")[2]
        if tag == "Contents":
            entry = {c.tag.rpartition("}")[2]: c.text or "" for c in child}
            contents.append(entry)
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
    """An XML timestamp (``2026-11-27T14:31:55.000Z``) as an aware datetime; None when absent or unreadable."""
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


def _client_error(
    status: int, raw: bytes, operation: str, headers: Mapping[str, str]
) -> botocore.exceptions.ClientError:
    """The ClientError botocore would raise for this answer (code from the XML body, else the status)."""
    code, message = str(status), ""
    text = raw.decode("utf-8", "replace")
    start, end = text.find("<Code>"), text.find("</Code>")
    if 0 <= start < end:
        code = text[start + 6 : end].strip()
        m_start, m_end = text.find("<Message>"), text.find("</Message>")
        if 0 <= m_start < m_end:
            message = text[m_start + 9 : m_end].strip()
    elif status == 404 and operation != "HeadObject":
        code = "NoSuchKey"  # a HEAD has no body: botocore's code is then the status itself
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)},
    }
    return botocore.exceptions.ClientError(response, operation)


_RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


def _retryable(exc: Exception) -> bool:
    """What botocore's standard retry mode retries: transient connection errors, throttling, 5xx."""
    if isinstance(exc, botocore.exceptions.ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status in {429, 500, 502, 503, 504} or code in _RETRY_CODES
    return isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    )
