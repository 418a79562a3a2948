"""The awscrt request stack: each request goes through awscrt's ``S3Client``.

awscrt is AWS's Common Runtime, the native library behind boto3's own ``crt`` extra and the AWS
CLI v2's transfers. Its ``S3Client`` signs with the CRT's SigV4, keeps its own connection pool and
event loop outside the GIL, and follows ``HTTP(S)_PROXY`` / ``NO_PROXY`` from the environment.
This module builds the HTTP request of each S3 call and nothing else: retries run through
:class:`~s3sync._requests.Retrier` (botocore's standard mode; the CRT's own retries are off so the
two never multiply), and credentials come from botocore's chain (refreshed as botocore refreshes
them) through s3transfer's adapter.

Integrity stays ours: every PUT and UploadPart carries the Content-MD5 the transport computed,
which the server verifies; downloads are hashed by the transport as they stream to its sink.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from s3sync._requests import Reply, RequestFailed, RequestHook, Requests, Retrier, Sink, parse_listing

__all__ = ["CrtRequests", "host_header"]

#: Error names of awscrt that mean "no answer", by kind (checked as substrings of the name).
_TLS_ERRORS = ("TLS", "X509", "CERT")
_TIMEOUT_ERRORS = ("TIMEOUT", "TIMED_OUT")
_CONNECT_ERRORS = ("CONNECTION_REFUSED", "NO_ROUTE", "HOST_NOT_FOUND", "DNS", "NETWORK_DOWN", "ADDRESS")
_CREDENTIAL_ERRORS = ("AUTH_", "CREDENTIALS", "SIGNING")
#: Answers naming another region: the request is signed again for that region (as botocore does).
#: CRT errors that stand for an HTTP answer it did not pass on: (status, S3 error code).
_SERVER_ERRORS = {
    "AWS_ERROR_S3_SLOW_DOWN": (503, "SlowDown"),
    "AWS_ERROR_S3_INTERNAL_ERROR": (500, "InternalError"),
}
#: Bytes per second a request body is allowed to take on its way out before the request is given up.
_SLOWEST_SEND = 64 * 1024
#: The code given to an answer awscrt refuses to stream because it has no ETag.
_MISSING_ETAG = "s3sync.MissingETag"
#: How long a failed TLS handshake fails the requests that follow without trying (seconds).
_TLS_FAILURE_MEMORY = 30.0
_REGION_CODES = frozenset({"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException"})


def host_header(endpoint_url: str) -> tuple[str, str, str]:
    """(scheme, Host header, base path) of an endpoint, normalised as botocore signs it.

    The host is lower-cased, user info is dropped and a default port is left out.

    >>> host_header("http://LocalHost:80")
    ('http', 'localhost', '')
    >>> host_header("https://user:pw@S3.Example.com:8443/base/")
    ('https', 's3.example.com:8443', '/base')
    >>> host_header("http://[::1]:9000")
    ('http', '[::1]:9000', '')
    """
    url = urlsplit(endpoint_url)
    scheme = (url.scheme or "https").lower()
    host = (url.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        host = f"{host}:{port}"
    return scheme, host, url.path.rstrip("/")


class CrtRequests:
    """S3 requests on one bucket through awscrt (path-style addressing on a custom endpoint)."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        region: str,
        credentials: Any,
        retrier: Retrier,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        part_size: int,
        ca_file: str | None = None,
        fallback: Requests | None = None,
    ) -> None:
        from awscrt.io import ClientBootstrap, ClientTlsContext, TlsContextOptions
        from awscrt.s3 import S3Client, S3RequestTlsMode, S3RetryConfig, S3RetryMode

        self.hooks: list[RequestHook] = []
        #: Streams the GETs awscrt refuses to (answers without an ETag: the CRT needs one to keep
        #: the parts of a download consistent); set once such an answer was seen.
        self._fallback = fallback
        self._no_etags = False
        self._bucket = bucket
        self._credentials = credentials
        self._retrier = retrier
        self._read_timeout = read_timeout
        self._scheme, self._host, base = host_header(endpoint_url)
        self._prefix = f"{base}/{quote(bucket, safe='')}"
        self._region = region
        self._signing: dict[str, Any] = {}
        self._lock = threading.Lock()
        #: When a TLS handshake last failed, and how: the CRT (s2n) reports such a failure only after a
        #: deliberate 10-30 s delay (blinding), so the next requests for a while fail at once instead.
        self._tls_failure: tuple[float, RequestFailed] | None = None
        tls_options = None
        if self._scheme == "https":
            options = TlsContextOptions()
            if ca_file is not None:
                options.override_default_trust_store_from_path(None, ca_file)
            tls_options = ClientTlsContext(options).new_connection_options()
            tls_options.set_server_name(self._host.rpartition(":")[0] if self._host.count(":") == 1 else self._host)
        self._client = S3Client(
            bootstrap=ClientBootstrap.get_or_create_static_default(),
            region=region,
            tls_mode=S3RequestTlsMode.ENABLED if self._scheme == "https" else S3RequestTlsMode.DISABLED,
            tls_connection_options=tls_options,
            signing_config=self._signing_config(region),
            connect_timeout_ms=max(1, int(connect_timeout * 1000)),
            max_active_connections_override=max_connections,
            # A GET is split by the CRT only above this; the transport's own ranges are never larger.
            part_size=part_size,
            retry_config=S3RetryConfig(retry_mode=S3RetryMode.NONE),
        )

    # --- the operations ------------------------------------------------------------------------------
    def head(self, key: str) -> Reply:
        return self._call("HEAD", self._path(key), {}, None, "HeadObject", key)

    def list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        # Like botocore, asks for url-encoded keys (a key may hold characters XML cannot carry).
        query = {"list-type": "2", "max-keys": "1000", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        reply = self._call("GET", self._prefix + "?" + _query(query), {}, None, "ListObjectsV2", prefix)
        return parse_listing(reply.body)

    def get(self, key: str, byte_range: str | None, sink: Sink, *, small: bool = False) -> Reply:
        headers = {"Range": byte_range} if byte_range else {}
        if self._no_etags and self._fallback is not None:
            return self._fallback.get(key, byte_range, sink, small=small)
        if small and not byte_range:
            return self._call("GET", self._path(key), {}, None, "GetObject", key, sink=sink, whole=True)
        try:
            return self._call("GET", self._path(key), headers, None, "GetObject", key, sink=sink)
        except RequestFailed as exc:
            if exc.code == _MISSING_ETAG and self._fallback is not None:
                # A gateway that sends no ETags (JuiceFS by default): botocore streams its answers.
                self._no_etags = True
                return self._fallback.get(key, byte_range, sink, small=small)
            if byte_range or exc.code != "InvalidRange":
                raise
        # The CRT asks for a whole object by its first range, which an empty object does not have
        # (rclone answers 416): then it is fetched as one plain request (its body is held in memory,
        # and it is empty).
        return self._call("GET", self._path(key), {}, None, "GetObject", key, sink=sink, whole=True)

    def put(self, key: str, data: bytes, headers: Mapping[str, str]) -> Reply:
        return self._call("PUT", self._path(key), dict(headers), data, "PutObject", key)

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes, content_md5: str) -> Reply:
        path = self._path(key) + "?" + _query({"partNumber": str(number), "uploadId": upload_id})
        return self._call("PUT", path, {"Content-MD5": content_md5}, data, "UploadPart", key)

    def delete(self, key: str) -> Reply:
        return self._call("DELETE", self._path(key), {}, None, "DeleteObject", key)

    def close(self) -> None:
        """Nothing to do: the client's connections close when it is collected."""

    # --- one request -----------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self._prefix}/{quote(key, safe='/~')}"

    def _signing_config(self, region: str) -> Any:
        with self._lock:
            found = self._signing.get(region)
            if found is None:
                from awscrt.s3 import create_default_s3_signing_config

                found = create_default_s3_signing_config(region=region, credential_provider=self._credentials)
                self._signing[region] = found
            return found

    def _call(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        operation: str,
        key: str,
        *,
        sink: Sink | None = None,
        whole: bool = False,
    ) -> Reply:
        def attempt() -> Reply:
            failed = self._tls_failure
            if failed is not None and time.monotonic() - failed[0] < _TLS_FAILURE_MEMORY:
                raise RequestFailed("tls", str(failed[1]), operation=operation)
            for hook in self.hooks:
                hook(operation, key)
            region = self._region
            try:
                return self._send(method, path, headers, body, operation, region, sink, whole)
            except RequestFailed as exc:
                if exc.failure == "tls":
                    self._tls_failure = (time.monotonic(), exc)
                moved = exc.region if exc.failure == "http" and exc.code in _REGION_CODES else None
                if moved is None or moved == region:
                    raise
                # The bucket lives in another region (the server said which): sign for it from now on.
                self._region = moved
                return self._send(method, path, headers, body, operation, moved, sink, whole)

        return self._retrier.run(attempt)

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        operation: str,
        region: str,
        sink: Sink | None,
        whole: bool = False,
    ) -> Reply:
        from awscrt.http import HttpHeaders, HttpRequest
        from awscrt.s3 import S3RequestType

        fields = [("Host", self._host), *headers.items()]
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        request = HttpRequest(method, path, HttpHeaders(fields), io.BytesIO(body) if body is not None else None)
        answer = _Answer(sink, whole)
        # A GET streams in order to the sink; everything else is one exchange with a small answer.
        streamed = sink is not None and not whole
        try:
            pending = self._client.make_request(
                type=S3RequestType.GET_OBJECT if streamed else S3RequestType.DEFAULT,
                request=request,
                operation_name=None if streamed else operation,
                signing_config=self._signing_config(region),
                on_headers=answer.on_headers,
                on_body=answer.on_body,
                on_progress=answer.on_progress,
            )
        except Exception as exc:
            raise RequestFailed("closed", f"{operation}: {exc}", operation=operation) from exc
        answer.request = pending
        if answer.failed is not None:  # failed before the request was known: cancel it now
            pending.cancel()
        # Silence longer than S3_READ_TIMEOUT ends the request, as a socket timeout would; a body
        # being sent may take its time on a slow link (the CRT reports no progress for it), at
        # 64 KiB/s at least.
        idle = self._read_timeout + (len(body) / _SLOWEST_SEND if body else 0.0)
        try:
            return answer.wait(pending.finished_future, operation, idle)
        finally:
            # The request holds the answer's callbacks, and the answer (or a traceback through this
            # frame) the request: a cycle through a native object, which the garbage collector
            # cannot see (memory grew ~11 KB a request). Both links go.
            answer.request = None
            pending = None


class _Answer:
    """Collects one request's answer from the CRT's threads; waits for it with an idle timeout."""

    def __init__(self, sink: Sink | None, whole: bool = False) -> None:
        self.sink = sink
        self.whole = whole
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.started = False
        self.failed: BaseException | None = None
        self.request: Any = None
        self.last_activity = time.monotonic()

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.last_activity = time.monotonic()
        self.status = status_code
        self.headers = {name.lower(): value for name, value in headers}
        if self.sink is not None and 200 <= status_code < 300 and self.failed is None:
            try:
                self.sink.start(Reply(status_code, self.headers))
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread, after the request stops
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed = exc
        if self.request is not None:
            self.request.cancel()

    def on_body(self, chunk: bytes, offset: int, **_: Any) -> None:
        self.last_activity = time.monotonic()
        if self.failed is not None:
            return
        if self.sink is None or self.whole:
            self.chunks.append(bytes(chunk))
            return
        self.started = True
        try:
            self.sink.write(memoryview(chunk), offset)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread, after the request stops
            self._fail(exc)

    def on_progress(self, progress: int, **_: Any) -> None:
        self.last_activity = time.monotonic()

    def wait(self, future: Any, operation: str, idle_timeout: float) -> Reply:
        from awscrt.exceptions import AwsCrtError
        from awscrt.s3 import S3ResponseError

        while True:
            try:
                future.result(timeout=min(idle_timeout, 1.0))
                break
            except TimeoutError:
                if time.monotonic() - self.last_activity > idle_timeout:
                    self.request.cancel()
                    with contextlib.suppress(Exception):  # cancelled: the timeout is the error we report
                        future.result()
                    raise RequestFailed(
                        "timeout", f"{operation}: no answer for {idle_timeout:g} s", operation=operation
                    ) from None
            except S3ResponseError as exc:
                headers = {name.lower(): value for name, value in exc.headers or []}
                raise RequestFailed.from_answer(
                    operation, exc.status_code, headers, bytes(exc.body or b""), body_started=self.started
                ) from None
            except AwsCrtError as exc:
                if self.failed is not None:
                    raise self.failed from None
                raise _no_answer(exc, operation, self.started) from None
        if self.failed is not None:
            raise self.failed
        body = b"".join(self.chunks)
        if self.sink is not None and body:  # a plain request's body, held until the end
            self.sink.write(memoryview(body), 0)
        return Reply(self.status or 200, self.headers, b"" if self.sink is not None else body)


def _no_answer(exc: Any, operation: str, started: bool) -> RequestFailed:
    """The failure for a CRT error that is not an S3ResponseError (connect, TLS, timeout, closed, 5xx...)."""
    name = str(getattr(exc, "name", "")).upper()
    text = f"{operation}: {getattr(exc, 'message', '') or name}"
    if name == "AWS_ERROR_S3_MISSING_ETAG":
        return RequestFailed("http", text, operation=operation, status=200, code=_MISSING_ETAG)
    if name in _SERVER_ERRORS:
        # The CRT keeps neither the headers nor the body of a 5xx/429 answer, only its class: the
        # retry policy sees botocore's codes for them (throttling, or a transient server error).
        status, code = _SERVER_ERRORS[name]
        return RequestFailed("http", text, operation=operation, status=status, code=code, body_started=started)
    if any(part in name for part in _CREDENTIAL_ERRORS):
        return RequestFailed("credentials", text, operation=operation)
    if any(part in name for part in _TLS_ERRORS):
        return RequestFailed("tls", text, operation=operation)
    if any(part in name for part in _TIMEOUT_ERRORS):
        return RequestFailed("timeout", text, operation=operation, body_started=started)
    if "CANCEL" in name:
        return RequestFailed("cancelled", text, operation=operation)
    if any(part in name for part in _CONNECT_ERRORS):
        return RequestFailed("connect", text, operation=operation)
    return RequestFailed("closed", text, operation=operation, body_started=started)


def _query(params: Mapping[str, str]) -> str:
    """A query string, every name and value percent-encoded (RFC 3986) and sorted, as SigV4 wants it."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
