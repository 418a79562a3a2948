"""The transport's shared core: value types, the request stack, metadata and listings.

:class:`TransportCore` holds what uploads (:mod:`s3sync._upload`) and downloads
(:mod:`s3sync._download`) share: the settings, the botocore client (made on first use), the request
stack chosen once (:func:`s3sync._s3client.make_requests`), the part thread pool, HEAD and the
streamed listing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import mimetypes
import os
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, Self, TypeVar, runtime_checkable

import structlog

from s3sync import publish
from s3sync._requests import Reply, RequestFailed, Requests
from s3sync._s3client import make_client, make_requests, static_keys, translate
from s3sync.errors import ListingError, TransferError
from s3sync.paths import key_to_relpath
from s3sync.plan import LocalStat
from s3sync.resource import Resource
from s3sync.settings import Settings, default_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = structlog.get_logger("s3sync")

_T = TypeVar("_T")

#: Metadata key holding the SHA-256 of the whole object (hex).
META_SHA256: Final = "s3sync-sha256"
#: Prefix of the state's note for a multipart upload being created (its id not known yet).
PENDING_MULTIPART = "pending-"


class _Unknown:
    """Sentinel: the caller does not know whether the object exists (so we HEAD it)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """An object as seen in a listing or a HEAD; ``etag`` is unquoted and lower-case."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    sha256: str | None = None

    @property
    def etag_is_md5(self) -> bool:
        """True when the ETag is a plain MD5 of the content (single-part upload, no SSE-KMS)."""
        return _is_md5_etag(self.etag)

    def same_content(self, size: int, sha256: str | None, md5: str | None) -> bool:
        """Whether a local file of ``size`` with these hashes holds the same bytes."""
        if size != self.size:
            return False
        if self.sha256 and sha256:
            return self.sha256 == sha256
        return bool(md5) and self.etag_is_md5 and self.etag == md5


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What an upload did; ``skipped`` when the bucket already held the same content."""

    key: str
    path: Path
    bytes: int
    sha256: str
    etag: str
    skipped: bool
    multipart: bool
    duration_ms: int
    size: int = 0
    mtime_ns: int = 0
    #: The file as it was read (size, mtime, ctime, inode): the bytes sent are this file's.
    source: LocalStat | None = None


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What a download did; ``skipped`` when the local copy was already identical."""

    key: str
    path: Path
    bytes: int
    sha256: str | None
    etag: str
    skipped: bool
    duration_ms: int


def content_type_for(name: str) -> str:
    """Content-Type from the extension (``image/jpeg`` for ``.JPG``)."""
    ctype, _ = mimetypes.guess_type("x." + name.rpartition(".")[2].lower(), strict=False)
    return ctype or "application/octet-stream"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class MultipartTracker(Protocol):
    """Somewhere to note open multipart uploads, so a crash leaves none dangling (the state DB)."""

    def add_multipart(self, upload_id: str, key: str) -> None: ...
    def remove_multipart(self, upload_id: str) -> None: ...


@runtime_checkable
class ServerMemory(Protocol):
    """Where what was learnt of the server is kept across runs (the state DB's ``meta`` table)."""

    def get_meta(self, name: str) -> str | None: ...
    def set_meta(self, name: str, value: str) -> None: ...


class TransportCore:
    """Upload and download resources; ``Transport()`` reads settings from the environment.

    Thread-safe: one instance serves all the daemon's workers. ``close()`` releases the
    part thread pool (also a context manager).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: S3Client | None = None,
        tracker: MultipartTracker | None = None,
    ) -> None:
        self.settings = settings if settings is not None else default_settings()
        self.tracker = tracker
        self.bucket = self.settings.require_bucket()
        static_keys(self.settings)  # a half-set pair fails here, not at the first request
        self._client: S3Client | None = client
        # A file's name is parsed by the catch-up listing, the queue and the upload: once is enough.
        self._resources = functools.lru_cache(maxsize=4096)(self._make_resource)
        self._client_lock = threading.Lock()
        #: What carries HEAD, LIST, GET, PUT and UploadPart: chosen once (awscrt or botocore).
        self.requests: Requests = make_requests(self.settings, self.bucket, lambda: self.client)
        self._parts = ThreadPoolExecutor(
            max_workers=max(2, self.settings.max_concurrency), thread_name_prefix="s3sync-part"
        )
        self._closed = threading.Event()
        # Keys whose CreateMultipartUpload failed without a clear answer: the server may have
        # created an upload we never heard of. Swept before the next multipart upload of the key.
        self._orphan_suspects: set[str] = set()
        self._active_uploads: set[str] = set()
        self._lock = threading.Lock()
        #: Whether the server honours If-None-Match / If-Match (probed on the first upload; None: not yet).
        self._conditional: bool | None = None
        self._probe_lock = threading.Lock()
        #: ACL and Cache-Control of every object this transport writes (s3sync.publish).
        self._object_headers = publish.object_headers(self.settings)

    @property
    def client(self) -> S3Client:
        """The botocore S3 client, created on first use (thread-safe)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.settings)
                client = self._client
        return client

    # --- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the part pool (waiting for nothing: in-flight parts finish or fail on their own)."""
        self._closed.set()
        self._parts.shutdown(wait=False, cancel_futures=True)
        self.requests.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- naming --------------------------------------------------------------------------
    def resource(self, name: str) -> Resource:
        """A :class:`Resource` under this transport's settings (recent ones are reused: they are immutable)."""
        return self._resources(name)

    def _make_resource(self, name: str) -> Resource:
        return Resource(name, settings=self.settings)

    def _resolve_upload(self, item: Resource | str | os.PathLike[str]) -> tuple[Path, Resource]:
        if isinstance(item, Resource):
            return self.settings.upload_dir_path / item.name, item
        text = os.fspath(item)
        if isinstance(item, os.PathLike) or os.sep in text:
            path = Path(text)
            return path, self.resource(path.name)
        return self.settings.upload_dir_path / text, self.resource(text)

    def local_path(self, key: str) -> Path:
        """Where the mirror keeps ``key`` (raises :class:`UnsafeKeyError` for unsafe keys)."""
        return self.settings.local_path.joinpath(*key_to_relpath(key))

    # --- remote metadata -----------------------------------------------------------------
    def head(self, key: str) -> RemoteObject | None:
        """The object's size, ETag and stored SHA-256, or None if there is no such object."""
        try:
            reply = self.requests.head(key)
        except RequestFailed as exc:
            if exc.status == 404 or exc.code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise translate(exc, action="HEAD", bucket=self.bucket, key=key) from exc
        return RemoteObject(
            key=key,
            size=max(0, reply.length),
            etag=reply.etag,
            last_modified=reply.last_modified,
            sha256=_metadata_sha256(reply.metadata),
        )

    def list_pages(self, prefix: str = "") -> Iterator[list[RemoteObject]]:
        """Stream the bucket's objects under ``prefix`` one page (up to 1,000) at a time.

        Only a listing that can be whole ends normally: a page that says it is truncated but
        gives no continuation token, a key listed twice, keys out of order (S3 lists in UTF-8
        byte order, which is code point order), or a continuation token that comes back (the
        listing would never end) raise :class:`ListingError`, so that no caller concludes from
        it that an object is gone. A page that gives a token is followed, whatever its
        ``IsTruncated`` says (some gateways signal "more" only by the token).
        """
        token: str | None = None
        tokens: set[str] = set()
        last: str | None = None
        pages = 0
        while True:
            try:
                resp = self.requests.list_page(prefix, token)
            except RequestFailed as exc:
                raise translate(exc, action="LIST", bucket=self.bucket, key=prefix or None) from exc
            pages += 1
            page = [
                RemoteObject(
                    key=o["Key"],
                    size=int(o.get("Size", 0)),
                    etag=_unquote(o.get("ETag")),
                    last_modified=o.get("LastModified"),
                )
                for o in resp.get("Contents", [])
            ]
            for obj in page:
                if last is not None and obj.key <= last:
                    how = "twice" if obj.key == last else f"out of order (after {last!r})"
                    raise self._broken_listing(prefix, pages, f"key {obj.key!r} listed {how}")
                last = obj.key
            yield page
            token = resp.get("NextContinuationToken") or None
            if token is None:
                if resp.get("IsTruncated"):
                    raise self._broken_listing(prefix, pages, "the page is truncated but gives no continuation token")
                return
            if token in tokens:
                raise self._broken_listing(prefix, pages, "a continuation token came back (it would never end)")
            tokens.add(token)

    def _collect(self, futures: list[Future[_T]], key: str, kind: type[TransferError]) -> list[_T]:
        """Every future's result, in order; raises the first failure, or ``kind`` once the transport closes."""
        pending: set[Future[_T]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = None if fut.cancelled() else fut.exception()
                if exc is not None:
                    raise exc
            if self._closed.is_set() and pending:
                raise kind(f"transfer of {key} interrupted (shutting down)", key=key)
        return [f.result() for f in futures]

    def _broken_listing(self, prefix: str, page: int, why: str) -> ListingError:
        where = f"s3://{self.bucket}/{prefix}"
        return ListingError(f"LIST {where}: incomplete listing: {why} (page {page})", bucket=self.bucket, key=prefix)

    def confirm(self, key: str, size: int, sha256: str, etag: str) -> bool:
        """Check with a HEAD that ``key`` holds exactly this content (before moving/deleting the source)."""
        remote = self.head(key)
        if remote is None or remote.size != size:
            return False
        if remote.sha256:
            return remote.sha256 == sha256
        if etag and remote.etag:
            # Some servers forget metadata (rclone after a restart): fall back to the upload's ETag.
            return remote.etag == etag
        # Neither metadata nor ETags (the JuiceFS gateway by default): only the bytes can tell.
        return self._read_back_sha256(key) == sha256

    def _read_back_sha256(self, key: str) -> str | None:
        """The SHA-256 of the object as the server returns it now (None when it cannot be read)."""
        sink = _HashingSink()
        try:
            self.requests.get(key, None, sink)
        except (RequestFailed, OSError):
            return None
        return sink.digest.hexdigest()


class _HashingSink:
    """A GET's body hashed and dropped (a read-back that proves what the server holds)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def start(self, reply: Reply) -> None:
        self.digest = hashlib.sha256()  # again from nothing when an attempt is retried

    def write(self, chunk: memoryview, offset: int) -> None:
        self.digest.update(chunk)


def _is_md5_etag(etag: str) -> bool:
    """An (unquoted) ETag that is the plain MD5 of the content, not a multipart or SSE-KMS one."""
    return len(etag) == 32 and "-" not in etag


def _unquote(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


def _metadata_sha256(metadata: dict[str, str] | None) -> str | None:
    # rclone capitalises metadata keys; HTTP headers are case-insensitive anyway.
    for k, v in (metadata or {}).items():
        if k.lower() == META_SHA256:
            return v.strip().lower() or None
    return None
