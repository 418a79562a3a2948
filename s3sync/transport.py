"""Upload and download resources: the only module that talks to boto3/botocore.

Design, after s3transfer: one thread-safe client with a connection pool sized to the
concurrency, and a :class:`Transport` that owns the thread pool used for multipart parts.
Unlike ``upload_file``/``download_file`` it keeps integrity end to end on every server:

* every PUT and UploadPart carries ``Content-MD5`` (the server verifies it), and the
  returned ETag is checked against our own MD5;
* the object's SHA-256 is stored in its metadata (``x-amz-meta-s3sync-sha256``), so a
  change is detected even for multipart objects whose ETag is not an MD5;
* a download is streamed to a temp file beside the target, its size and hash are checked
  (SHA-256 from metadata, else a plain-MD5 ETag), then it is fsynced and renamed;
* botocore's own flexible checksums are set to ``when_required``: many S3-compatible
  servers (rclone, older MinIO/Ceph) reject the trailers botocore sends by default.

botocore exceptions are translated into :mod:`s3sync.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import math
import mimetypes
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import botocore.exceptions
import structlog

from s3sync import publish
from s3sync.errors import (
    ConfigurationError,
    DownloadError,
    EndpointError,
    FileChangedError,
    IntegrityError,
    ListingError,
    LocalFileError,
    NotFoundError,
    S3SyncError,
    TransferError,
    UploadError,
)
from s3sync.fastpath import FastPath, StaticKeys, parse_iso_timestamp
from s3sync.localfs import AtomicWriter, CommitGroup, Durable, Expected, OrderedHasher, hash_file, lstat_under
from s3sync.paths import key_to_relpath
from s3sync.plan import LocalStat, download_range_size
from s3sync.resource import Resource
from s3sync.settings import Settings, default_settings
from s3sync.sourcefile import SourceFile

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

log = structlog.get_logger("s3sync")

_T = TypeVar("_T")

#: Prefix of the state's note for a multipart upload being created (its id not known yet).
PENDING_MULTIPART = "pending-"

__all__ = [
    "META_SHA256",
    "DownloadResult",
    "RemoteObject",
    "Transport",
    "UploadResult",
    "make_client",
]

#: Metadata key holding the SHA-256 of the whole object (hex).
META_SHA256: Final = "s3sync-sha256"
_READ_CHUNK = 1024 * 1024
_MAX_PARTS = 10_000
_CHANGE_RETRIES = 5


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


def _client_config(settings: Settings) -> Config:
    from botocore.config import Config  # on first use, like the client

    return Config(
        max_pool_connections=max(10, settings.max_concurrency * 2),
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        # SigV4 for presigned URLs too (botocore's default presigns SigV2 URLs, which newer
        # regions and servers refuse); requests are SigV4 already.
        signature_version="s3v4",
        user_agent_extra="s3sync",
        # Every request's parameters are built here, not by users: validating them again costs
        # CPU on each of thousands of small requests (the transfer path is CPU-bound).
        parameter_validation=False,
    )


def static_keys(settings: Settings) -> StaticKeys | None:
    """The keys given in the settings, or None (boto3's default chain finds them).

    Raises :class:`ConfigurationError` when only one of the pair is set.
    """
    key = settings.aws_access_key_id.get_secret_value() if settings.aws_access_key_id else None
    secret = settings.aws_secret_access_key.get_secret_value() if settings.aws_secret_access_key else None
    if bool(key) != bool(secret):
        missing = "S3_AWS_SECRET_ACCESS_KEY" if key else "S3_AWS_ACCESS_KEY_ID"
        raise ConfigurationError(f"{missing}: must be set together with its pair", setting=missing)
    return StaticKeys(key, secret) if key and secret else None


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The CAs the fast path trusts: the ones botocore trusts for the same settings.

    ``S3_CA_BUNDLE`` (or botocore's ``AWS_CA_BUNDLE``) when set, else botocore's default bundle
    (certifi's, or the one botocore ships): one request path never trusts what the other refuses.
    """
    cafile: str | None
    if settings.ca_bundle is not None:
        cafile = str(settings.ca_bundle)
    else:
        from botocore.httpsession import get_cert_path  # only without a bundle: it imports urllib3

        cafile = get_cert_path(True)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigurationError(
            f"S3_CA_BUNDLE: cannot load CA certificates from {cafile!r} ({reason})", setting="S3_CA_BUNDLE"
        ) from None


def _region(settings: Settings) -> str | None:
    return settings.region or ("us-east-1" if settings.endpoint_url else None)


def make_client(settings: Settings) -> S3Client:
    """One S3 client for the whole process (botocore clients are thread-safe).

    Credentials come from the settings when set, else from botocore's default chain (the
    environment, ``~/.aws``, instance roles). botocore is imported here, on first use.
    """
    keys = static_keys(settings)
    import botocore.session  # here, not at the top: a fast-path sync never needs botocore

    try:
        session = botocore.session.Session()
        # A listing page carries 1,000 LastModified stamps; dateutil parsing them was a tenth of
        # a mirror pass's CPU. ISO 8601 goes through the C parser, anything else through botocore's.
        parsers = session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=_parse_timestamp)
        client: S3Client = session.create_client(  # type: ignore[assignment]
            "s3",
            region_name=_region(settings),
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=keys.access_key if keys else None,
            aws_secret_access_key=keys.secret_key if keys else None,
            config=_client_config(settings),
            verify=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigurationError(f"S3 client: {type(exc).__name__}: {exc}") from None
    return client


def _parse_timestamp(value: str) -> datetime:
    """botocore's timestamp parser, with a fast path for the ISO 8601 of XML bodies."""
    parsed = parse_iso_timestamp(value)
    if parsed is None:
        import botocore.utils  # loaded with the client anyway

        return botocore.utils.parse_timestamp(value)
    return parsed


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


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(err.get("Code", "")), int(status)


def translate(
    exc: Exception, *, action: str, bucket: str, key: str | None = None, kind: type[TransferError] = TransferError
) -> S3SyncError:
    """Map a botocore exception to an :class:`S3SyncError` with a one-line message."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    if isinstance(exc, S3SyncError):
        return exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return ConfigurationError(
            "S3_AWS_ACCESS_KEY_ID: no credentials found (set S3_AWS_ACCESS_KEY_ID and S3_AWS_SECRET_ACCESS_KEY, "
            "or configure boto3's credential chain)",
            setting="S3_AWS_ACCESS_KEY_ID",
        )
    if isinstance(exc, botocore.exceptions.SSLError):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            # OpenSSL's reason: "unable to get local issuer certificate", "Hostname mismatch...".
            reason = text.partition("certificate verify failed: ")[2].partition(" (_ssl.c")[0].strip()
            return EndpointError(
                f"{action} {where}: the endpoint's TLS certificate is not trusted ({reason or 'verify failed'}); "
                "for a private CA, set S3_CA_BUNDLE to its PEM file",
                bucket=bucket,
                key=key,
            )
        return EndpointError(f"{action} {where}: TLS handshake failed", bucket=bucket, key=key)
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ConnectionError,
    ):
        return EndpointError(f"{action} {where}: endpoint unreachable ({type(exc).__name__})", bucket=bucket, key=key)
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status = _error_code(exc)
        if code in {"NoSuchKey", "404", "NotFound"}:
            return NotFoundError(f"{action} {where}: no such object", bucket=bucket, key=key)
        if code == "NoSuchBucket":
            return NotFoundError(f"{action} {where}: bucket {bucket!r} does not exist", bucket=bucket, key=key)
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}:
            return EndpointError(f"{action} {where}: access denied ({code})", bucket=bucket, key=key, code=code)
        if code in {"RequestTimeTooSkewed", "RequestExpired"}:
            return EndpointError(
                f"{action} {where}: the server rejected our clock ({code}); check the system time",
                bucket=bucket,
                key=key,
                code=code,
            )
        if code == "AccessControlListNotSupported":  # S3_DEFAULT_ACL on a bucket with ACLs disabled
            return publish.acl_not_supported(bucket, key)
        if code in {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}:
            return IntegrityError(f"{action} {where}: the server saw corrupted bytes ({code})", bucket=bucket, key=key)
        return kind(f"{action} {where}: {code or 'error'} (HTTP {status})", bucket=bucket, key=key, code=code)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return kind(f"{action} {where}: {type(exc).__name__}", bucket=bucket, key=key)
    if isinstance(exc, OSError):
        return LocalFileError(f"{action} {where}: {exc.strerror or exc}", bucket=bucket, key=key)
    return kind(f"{action} {where}: {type(exc).__name__}: {exc}", bucket=bucket, key=key)


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


class Transport:
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
        keys = static_keys(self.settings)  # a half-set pair fails here, not at the first request
        self._client: S3Client | None = client
        # A file's name is parsed by the catch-up listing, the queue and the upload: once is enough.
        self._resources = functools.lru_cache(maxsize=4096)(self._make_resource)
        self._client_lock = threading.Lock()
        #: The lean GET/PUT/LIST path (custom endpoints with path-style addressing), or None: botocore.
        self.fast: FastPath | None = self._fast_path(keys) if self.settings.fast_path else None
        self._parts = ThreadPoolExecutor(
            max_workers=max(2, self.settings.max_concurrency), thread_name_prefix="s3sync-part"
        )
        self._closed = threading.Event()
        # Keys whose CreateMultipartUpload failed without a clear answer: the server may have
        # created an upload we never heard of. Swept before the next multipart upload of the key.
        self._orphan_suspects: set[str] = set()
        self._active_uploads: set[str] = set()
        self._lock = threading.Lock()
        self._buffers = threading.local()
        #: ACL and Cache-Control of every object this transport writes (s3sync.publish).
        self._object_headers = publish.object_headers(self.settings)

    def _fast_path(self, keys: StaticKeys | None) -> FastPath | None:
        """The fast path on a custom endpoint; None on AWS itself or with no credentials at all."""
        if not self.settings.endpoint_url:
            return None  # AWS itself: botocore (redirects, virtual hosts), its client made on first use
        options: dict[str, Any] = {
            "bucket": self.bucket,
            "max_connections": max(10, self.settings.max_concurrency * 2),
            "connect_timeout": self.settings.connect_timeout,
            "read_timeout": self.settings.read_timeout,
            "max_attempts": self.settings.max_attempts,
        }
        if self.settings.endpoint_url.startswith("https:"):
            options["ssl_context"] = _tls_context(self.settings)
        if self._client is None and keys is not None:
            region = _region(self.settings) or "us-east-1"
            return FastPath(endpoint_url=self.settings.endpoint_url, region=region, credentials=keys, **options)
        # A caller's client, or the default chain: botocore's (refreshing) credentials.
        try:
            return FastPath.for_client(self.client, **options)
        except botocore.exceptions.NoCredentialsError:
            return None  # anonymous access: botocore knows how to send unsigned requests

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
        if self.fast is not None:
            self.fast.close()

    def __enter__(self) -> Transport:
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

    # --- publishing (s3sync.publish) --------------------------------------------------------
    def presigned_url(self, item: Resource | str, *, expires: int = 3600) -> str:
        """A GET URL of a resource (by :class:`Resource` or name) for a private bucket, valid ``expires`` s."""
        key = item.key if isinstance(item, Resource) else self.resource(item).key
        return publish.presigned_url(self.client, self.bucket, key, expires=expires)

    async def aupload(self, item: Resource | str | os.PathLike[str]) -> UploadResult:
        """:meth:`upload` for async views: runs in a worker thread, the event loop goes on."""
        return await asyncio.to_thread(self.upload, item)

    async def adownload(self, item: Resource | str) -> Path:
        """:meth:`download` for async views: runs in a worker thread, the event loop goes on."""
        return await asyncio.to_thread(self.download, item)

    # --- remote metadata -----------------------------------------------------------------
    def head(self, key: str) -> RemoteObject | None:
        """The object's size, ETag and stored SHA-256, or None if there is no such object."""
        resp: Mapping[str, Any]
        try:
            if self.fast is not None:
                resp = self.fast.head_object(key)
            else:
                resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            code, status = _error_code(exc)
            if status == 404 or code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise translate(exc, action="HEAD", bucket=self.bucket, key=key) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise translate(exc, action="HEAD", bucket=self.bucket, key=key) from exc
        return RemoteObject(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            etag=_unquote(resp.get("ETag")),
            last_modified=resp.get("LastModified"),
            sha256=_metadata_sha256(resp.get("Metadata")),
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
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            resp: Mapping[str, Any]
            try:
                if self.fast is not None:
                    resp = self.fast.list_objects(prefix, token)
                else:
                    resp = self.client.list_objects_v2(**kwargs)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
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
        # Some servers forget metadata (rclone after a restart): fall back to the upload's ETag.
        return bool(etag) and remote.etag == etag

    # --- upload --------------------------------------------------------------------------
    def upload(
        self,
        item: Resource | str | os.PathLike[str],
        *,
        remote: RemoteObject | _Unknown | None = UNKNOWN,
        change_retries: int = _CHANGE_RETRIES,
        progress: Callable[[], None] | None = None,
    ) -> UploadResult:
        """Upload a resource (by :class:`Resource`, name in the upload folder, or path) to its key.

        Makes no PUT when the bucket already holds the same bytes (``result.skipped``). Pass
        ``remote`` (from a listing, or None for "absent") to save the HEAD. The file is opened
        once per attempt (a symlink is refused, a FIFO never blocks: :class:`NotRegularFileError`)
        and everything hashed and sent is read from that descriptor. If the file changes while it
        is read (size, mtime, ctime or inode; a short read), the attempt is discarded (a multipart
        upload is aborted before it completes) and redone, up to ``change_retries`` attempts in
        all; then :class:`FileChangedError`. ``progress`` is called as the file is read and sent.
        """
        path, res = self._resolve_upload(item)
        for _ in range(max(1, change_retries) - 1):
            try:
                return self._upload_once(path, res, remote, progress)
            except FileChangedError:
                remote = UNKNOWN
        return self._upload_once(path, res, remote, progress)

    def _upload_once(
        self,
        path: Path,
        res: Resource,
        remote: RemoteObject | _Unknown | None,
        progress: Callable[[], None] | None,
    ) -> UploadResult:
        started = time.monotonic()
        with SourceFile(path, root=self.settings.upload_dir_path) as src:
            if src.size < self.settings.multipart_threshold:
                result = self._put_small(src, path, res, remote)
            else:
                result = self._put_multipart(src, path, res, remote, progress)
        ms = int((time.monotonic() - started) * 1000)
        return UploadResult(
            key=result.key,
            path=path,
            bytes=result.bytes,
            sha256=result.sha256,
            etag=result.etag,
            skipped=result.skipped,
            multipart=result.multipart,
            duration_ms=ms,
            size=src.size,
            mtime_ns=src.identity.mtime_ns,
            source=src.identity,
        )

    def _remote(self, key: str, remote: RemoteObject | _Unknown | None) -> RemoteObject | None:
        return self.head(key) if isinstance(remote, _Unknown) else remote

    def _put_small(
        self, src: SourceFile, path: Path, res: Resource, remote: RemoteObject | _Unknown | None
    ) -> UploadResult:
        data = src.read_all()
        # Hashed and sent from these very bytes; the check says they are the file as it was opened.
        src.check_unchanged()
        md5 = hashlib.md5(data, usedforsecurity=False)
        sha = hashlib.sha256(data).hexdigest()
        known = self._remote(res.key, remote)
        if known is not None and known.size == len(data) and not known.sha256 and not known.etag_is_md5:
            known = self.head(res.key)  # listing said "same size" but cannot tell content: ask for metadata
        if known is not None and known.same_content(len(data), sha, md5.hexdigest()):
            return UploadResult(res.key, path, 0, sha, known.etag, True, False, 0)
        resp: Mapping[str, Any]
        try:
            if self.fast is not None:
                resp = self.fast.put_object(
                    res.key,
                    data,
                    sha256_hex=sha,
                    content_md5=_b64(md5.digest()),
                    content_type=content_type_for(res.name),
                    metadata={META_SHA256: sha},
                    extra_headers=self._object_headers,
                )
            else:
                resp = self.client.put_object(
                    Bucket=self.bucket,
                    Key=res.key,
                    Body=data,
                    ContentMD5=_b64(md5.digest()),
                    ContentType=content_type_for(res.name),
                    Metadata={META_SHA256: sha},
                    **publish.boto3_object_params(self._object_headers),  # type: ignore[arg-type]
                )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise translate(exc, action="PUT", bucket=self.bucket, key=res.key, kind=UploadError) from exc
        etag = _unquote(resp.get("ETag"))
        if _is_md5_etag(etag) and etag != md5.hexdigest():
            raise IntegrityError(
                f"PUT s3://{self.bucket}/{res.key}: stored ETag {etag} is not our MD5", bucket=self.bucket, key=res.key
            )
        return UploadResult(res.key, path, len(data), sha, etag, False, False, 0)

    def _put_multipart(
        self,
        src: SourceFile,
        path: Path,
        res: Resource,
        remote: RemoteObject | _Unknown | None,
        progress: Callable[[], None] | None,
    ) -> UploadResult:
        size = src.size
        if self._client is None:
            # CreateMultipartUpload needs botocore's client (about 0.4 s to import and build): let
            # a part thread build it while this one hashes the file (hashlib runs without the GIL).
            with contextlib.suppress(RuntimeError):  # the pool is shut down: the transport is closing
                self._parts.submit(lambda: self.client)
        chunk = max(self.settings.multipart_chunksize, math.ceil(size / _MAX_PARTS))
        sha = src.hashes(md5=False, progress=progress, part_size=chunk)
        src.check_unchanged()
        known = self._remote(res.key, remote)
        if known is not None and known.size == size and known.sha256 is None:
            known = self.head(res.key)
        if known is not None and known.same_content(size, sha.sha256, None):
            return UploadResult(res.key, path, 0, sha.sha256, known.etag, True, True, 0)
        nparts = max(1, math.ceil(size / chunk))
        if res.key in self._orphan_suspects:
            self._sweep_orphans(res.key)
        # Noted before the request: a crash between the server's answer and the note below would
        # otherwise leave an upload that nobody knows of. The next start sweeps the key.
        intent = f"{PENDING_MULTIPART}{secrets.token_hex(8)}"
        if self.tracker is not None:
            self.tracker.add_multipart(intent, res.key)
        try:
            mpu = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=res.key,
                ContentType=content_type_for(res.name),
                Metadata={META_SHA256: sha.sha256},
                **publish.boto3_object_params(self._object_headers),  # type: ignore[arg-type]
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            if isinstance(exc, botocore.exceptions.ClientError):
                if self.tracker is not None:  # a clear refusal: nothing was created
                    self.tracker.remove_multipart(intent)
            else:
                # No answer (reset, timeout): the upload may exist on the server all the same.
                with self._lock:
                    self._orphan_suspects.add(res.key)
                self._sweep_orphans(res.key)
            raise translate(
                exc, action="CreateMultipartUpload", bucket=self.bucket, key=res.key, kind=UploadError
            ) from exc
        upload_id = mpu["UploadId"]
        if self.tracker is not None:
            self.tracker.add_multipart(upload_id, res.key)
            if res.key not in self._orphan_suspects:
                self.tracker.remove_multipart(intent)
        with self._lock:
            self._active_uploads.add(upload_id)
        try:
            return self._send_parts(src, path, res, sha.sha256, size, chunk, nparts, upload_id, progress)
        finally:
            with self._lock:
                self._active_uploads.discard(upload_id)

    def abort_orphans(self, key: str) -> bool:
        """Abort multipart uploads of ``key`` this process does not own; True when none is left.

        They come from a CreateMultipartUpload whose answer was lost, or from a run killed before
        it could note the upload's id: s3sync is about to write ``key`` anyway.
        """
        return self._sweep_orphans(key)

    def _sweep_orphans(self, key: str) -> bool:
        try:
            resp: Mapping[str, Any] = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except botocore.exceptions.ClientError as exc:
            # rclone (gofakes3) answers a listing that finds nothing with NoSuchUpload.
            if _error_code(exc)[0] != "NoSuchUpload":
                return False  # still suspect: tried again before the next multipart upload of this key
            resp = {}
        except (botocore.exceptions.BotoCoreError, OSError):
            return False
        with self._lock:
            stale = [
                u["UploadId"]
                for u in resp.get("Uploads", [])
                if u.get("Key") == key and u.get("UploadId") not in self._active_uploads
            ]
        if not all(self._abort(key, upload_id) for upload_id in stale):
            return False
        with self._lock:
            self._orphan_suspects.discard(key)
        for upload_id in stale:
            log.info("upload.multipart_aborted", key=key, upload_id=upload_id, reason="orphaned")
        return True

    def _send_parts(
        self,
        src: SourceFile,
        path: Path,
        res: Resource,
        sha256: str,
        size: int,
        chunk: int,
        nparts: int,
        upload_id: str,
        progress: Callable[[], None] | None,
    ) -> UploadResult:
        def send_part(number: int) -> tuple[int, str, bytes]:
            if self._closed.is_set():
                raise UploadError("transport closed", key=res.key)
            offset = (number - 1) * chunk
            data = src.pread_exact(offset, min(chunk, size - offset))  # short: changed, the upload is aborted
            src.check_part(number, data)  # the bytes sent are the bytes the SHA-256 metadata was computed from
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            resp: Mapping[str, Any]
            if self.fast is not None:
                resp = self.fast.upload_part(res.key, upload_id, number, data, content_md5=_b64(digest))
            else:
                resp = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=res.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=_b64(digest),
                )
            etag = _unquote(resp.get("ETag"))
            if len(etag) == 32 and etag != digest.hex():
                raise IntegrityError(f"part {number} of {res.key}: ETag mismatch", key=res.key)
            if progress is not None:
                progress()
            return number, etag, digest

        futures: list[Future[tuple[int, str, bytes]]] = []
        try:
            futures.extend(self._parts.submit(send_part, n) for n in range(1, nparts + 1))
            parts = self._collect_parts(futures, res.key)
            # The SHA-256 in the metadata was computed before the parts were read: only a file
            # unchanged since the open (ctime included: cp -p) proves they are the same bytes.
            src.check_unchanged()
            resp = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=res.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{e}"'} for n, e, _ in parts]},
            )
        except BaseException as exc:
            for fut in futures:
                fut.cancel()
            # Only futures that started can be waited for: a cancelled one never wakes wait().
            wait([f for f in futures if not f.cancelled()], timeout=self.settings.read_timeout)
            self._abort(res.key, upload_id)
            if isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError | OSError):
                raise translate(exc, action="multipart PUT", bucket=self.bucket, key=res.key, kind=UploadError) from exc
            raise
        if self.tracker is not None:
            self.tracker.remove_multipart(upload_id)
        etag = _unquote(resp.get("ETag"))
        expected = hashlib.md5(b"".join(d for _, _, d in parts), usedforsecurity=False).hexdigest() + f"-{nparts}"
        if etag.endswith(f"-{nparts}") and etag != expected:
            raise IntegrityError(f"multipart {res.key}: ETag {etag} != expected {expected}", key=res.key)
        return UploadResult(res.key, path, size, sha256, etag, False, True, 0)

    def _collect_parts(self, futures: list[Future[tuple[int, str, bytes]]], key: str) -> list[tuple[int, str, bytes]]:
        """Wait for every part; stop at the first failure or when the transport is closed."""
        return sorted(self._collect(futures, key, UploadError))

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

    def _abort(self, key: str, upload_id: str) -> bool:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as exc:
            code, status = _error_code(exc)
            if status != 404 and code != "NoSuchUpload":
                return False  # still open: the tracker keeps it and the next start-up retries
        except (botocore.exceptions.BotoCoreError, OSError):
            return False
        if self.tracker is not None:
            self.tracker.remove_multipart(upload_id)
        return True

    def abort_multipart(self, key: str, upload_id: str) -> bool:
        """Abort one multipart upload (one a crashed run left open); True when it is gone."""
        return self._abort(key, upload_id)

    # --- download ------------------------------------------------------------------------
    def download(self, item: Resource | str) -> Path:
        """Download a resource (by :class:`Resource` or name) to ``S3_LOCAL_PATH/<key>``; return the path."""
        key = item.key if isinstance(item, Resource) else self.resource(item).key
        return self.download_key(key).path

    def download_key(
        self,
        key: str,
        *,
        remote: RemoteObject | _Unknown | None = UNKNOWN,
        progress: Callable[[int], None] | None = None,
        group: CommitGroup | None = None,
        on_durable: Durable | None = None,
        known_absent: bool = False,
        expect: Expected = None,
        on_version: Callable[[int, str], None] | None = None,
    ) -> DownloadResult:
        """Download ``key`` to its place under the mirror folder, atomically, unless already identical.

        ``remote`` (from a listing) saves a HEAD; the local copy is compared by size and hash.
        With a ``group``, the verified file is committed by the group, and ``on_durable(path,
        error)`` says when it is in place and on disk (not called for a skipped download).
        ``known_absent`` says the caller has just seen no file there: the local check is skipped.
        ``expect`` is what the caller saw there when it decided to download (see
        :class:`~s3sync.localfs.AtomicWriter`): anything else found there at the end is not
        replaced (:class:`~s3sync.errors.LocalChangedError`). ``on_version(size, etag)`` is told
        what the GET returned (which may be a newer version than the listing's) before the file
        is handed to the group.
        """
        started = time.monotonic()
        segments = key_to_relpath(key)
        root = self.settings.local_path
        existing = None if known_absent else lstat_under(root, segments)
        if existing is not None:
            target = root.joinpath(*segments)
            known = self._remote(key, remote)
            if known is None:
                raise NotFoundError(f"GET s3://{self.bucket}/{key}: no such object", bucket=self.bucket, key=key)
            if existing.st_size == known.size:
                if known.sha256 is None and not known.etag_is_md5:
                    known = self.head(key) or known
                local = hash_file(target, md5=not known.sha256)
                if known.same_content(local.size, local.sha256, local.md5 or None):
                    return DownloadResult(key, target, 0, local.sha256, known.etag, True, 0)
        size = remote.size if isinstance(remote, RemoteObject) else None
        job = _Fetch(key, segments, started, progress, group, on_durable, expect, on_version)
        if self.settings.max_concurrency > 1 and (size is None or size >= self.settings.multipart_threshold):
            return self._get_ranged(job, size)
        return self._get(job)

    def _request_get(self, key: str, byte_range: str | None = None) -> Mapping[str, Any]:
        """Send a GET (of a byte range, e.g. ``bytes=0-99``); failures become :class:`DownloadError`."""
        try:
            if self.fast is not None:
                return self.fast.get_object(key, byte_range=byte_range)
            if byte_range is not None:
                return self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)
            return self.client.get_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc

    def _get(self, job: _Fetch) -> DownloadResult:
        return self._stream(job, self._request_get(job.key))

    def _stream(self, job: _Fetch, resp: Mapping[str, Any]) -> DownloadResult:
        """Write a whole-object answer to its place, hashing as it streams."""
        key, progress = job.key, job.progress
        length = int(resp.get("ContentLength", -1))
        etag = _unquote(resp.get("ETag"))
        want_sha = _metadata_sha256(resp.get("Metadata"))
        md5 = hashlib.md5(usedforsecurity=False) if (not want_sha and _is_md5_etag(etag)) else None
        # Without our SHA-256 or a plain-MD5 ETag nothing else can later tell the mirror's own bytes
        # from a person's (after a chmod or touch): the SHA-256 of what lands is recorded.
        sha = hashlib.sha256() if (want_sha or md5 is None) else None
        body = resp["Body"]
        try:
            with _Landing(self, job) as landing:
                buf = self._buffer()
                try:
                    while got := _fill(body, buf):
                        chunk = buf[:got]
                        landing.writer.write(chunk)
                        if sha is not None:
                            sha.update(chunk)
                        if md5 is not None:
                            md5.update(chunk)
                        if progress is not None:
                            progress(got)
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc
                n = landing.writer.bytes_written
                sha_hex = sha.hexdigest() if sha else None
                self._verify(key, n, length, sha_hex, want_sha, md5.hexdigest() if md5 else None, etag)
                if job.on_version is not None:
                    job.on_version(n, etag)
                path = landing.finish()
        finally:
            body.close()
        ms = int((time.monotonic() - job.started) * 1000)
        return DownloadResult(key, path, n, sha_hex or want_sha, etag, False, ms)

    def _get_ranged(self, job: _Fetch, size: int | None) -> DownloadResult:
        """A large object as parallel ranged GETs written in place, hashed in file order as they land.

        One stream of a large object keeps one core waiting on the other; parts overlap the
        server's sending with our writing. Only for objects whose content can be verified (our
        SHA-256 in the metadata, or a plain-MD5 ETag): a mix of two versions must not pass.

        With ``size`` unknown (a download by name, no listing), the first range is
        ``S3_MULTIPART_CHUNKSIZE`` and its answer tells the size: a smaller object is all in it,
        and no HEAD was needed either way.
        """
        key = job.key
        chunk, workers = self.settings.multipart_chunksize, self.settings.max_concurrency
        first_len = chunk if size is None else download_range_size(size, chunk, workers)
        try:
            first = self._request_get(key, f"bytes=0-{first_len - 1}")
        except DownloadError as exc:
            if size is None and exc.context.get("code") == "InvalidRange":
                return self._get(job)  # an empty object has no byte 0 to ask for
            raise
        total = _range_total(first.get("ContentRange"))
        if total is None or total <= first_len:  # the server ignored the range, or it holds the whole object
            return self._stream(job, first)
        part = download_range_size(total, chunk, workers)  # the listing's size, unless the object changed since
        etag = _unquote(first.get("ETag"))
        want_sha = _metadata_sha256(first.get("Metadata"))
        if not want_sha and not _is_md5_etag(etag):
            first["Body"].close()
            return self._get(job)
        with _Landing(self, job) as landing:
            w = landing.writer
            try:
                hasher = OrderedHasher(w, sha256=bool(want_sha), md5=not want_sha)
            except OSError as exc:
                first["Body"].close()
                raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc
            try:
                # The other ranges start before the first one's body is read: all of them stream at once.
                futures = [
                    self._parts.submit(self._fetch_range, job, w, hasher, offset, min(part, total - offset))
                    for offset in range(first_len, total, part)
                ]
                try:
                    self._copy_range(job, first, w, hasher, 0, first_len)
                except BaseException:
                    _stop_all(futures)
                    raise
                self._wait_all(futures, key)  # every part landed and hashed, or all stopped and the error raised
            finally:
                hasher.close()
            sha_hex, md5_hex = hasher.digests()
            self._verify(key, hasher.hashed, total, sha_hex, want_sha, md5_hex, etag)
            if job.on_version is not None:
                job.on_version(total, etag)
            path = landing.finish()
        ms = int((time.monotonic() - job.started) * 1000)
        return DownloadResult(key, path, total, sha_hex or want_sha, etag, False, ms)

    def _fetch_range(self, job: _Fetch, w: AtomicWriter, hasher: OrderedHasher, offset: int, length: int) -> None:
        if self._closed.is_set():
            raise DownloadError("transport closed", key=job.key)
        resp = self._request_get(job.key, f"bytes={offset}-{offset + length - 1}")
        self._copy_range(job, resp, w, hasher, offset, length)

    def _copy_range(
        self, job: _Fetch, resp: Mapping[str, Any], w: AtomicWriter, hasher: OrderedHasher, offset: int, length: int
    ) -> None:
        """Write one ranged answer at ``offset`` (it must be exactly the range asked for), then hash in order."""
        key, progress = job.key, job.progress
        body = resp["Body"]
        try:
            start = _range_start(resp.get("ContentRange"))
            if start != offset:
                raise IntegrityError(
                    f"GET s3://{self.bucket}/{key}: asked for bytes from {offset}, got {resp.get('ContentRange')!r}",
                    bucket=self.bucket,
                    key=key,
                )
            pos = offset
            buf = self._buffer()
            try:
                while got := _fill(body, buf):
                    if pos + got > offset + length:
                        break  # more than asked for: caught by the length check below
                    w.write_at(buf[:got], pos)
                    pos += got
                    if progress is not None:
                        progress(got)
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc
            if pos != offset + length:
                raise IntegrityError(
                    f"GET s3://{self.bucket}/{key}: range at {offset} gave {pos - offset} bytes, expected {length}",
                    bucket=self.bucket,
                    key=key,
                )
        finally:
            body.close()
        try:
            hasher.landed(offset, length)
        except OSError as exc:
            raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc

    def _buffer(self) -> memoryview:
        """This thread's receive buffer: bodies are read into it and written from it, never copied."""
        buf: memoryview | None = getattr(self._buffers, "view", None)
        if buf is None:
            buf = self._buffers.view = memoryview(bytearray(_READ_CHUNK))
        return buf

    def _wait_all(self, futures: list[Future[None]], key: str) -> None:
        """Wait for every part; on the first failure stop the others and wait until none runs."""
        try:
            self._collect(futures, key, DownloadError)
        except BaseException:
            _stop_all(futures)
            raise

    def _verify(
        self,
        key: str,
        n: int,
        length: int,
        sha_hex: str | None,
        want_sha: str | None,
        md5_hex: str | None,
        etag: str,
    ) -> None:
        """Size, then SHA-256 (from metadata) or MD5 (a plain ETag): a mismatch is an IntegrityError."""
        where = f"GET s3://{self.bucket}/{key}"
        if length >= 0 and n != length:
            raise IntegrityError(f"{where}: got {n} bytes, expected {length}", bucket=self.bucket, key=key)
        if want_sha and sha_hex != want_sha:
            raise IntegrityError(f"{where}: SHA-256 mismatch (corrupted in transit)", bucket=self.bucket, key=key)
        if md5_hex and md5_hex != etag:
            raise IntegrityError(
                f"{where}: MD5 does not match the ETag (corrupted in transit)", bucket=self.bucket, key=key
            )


@dataclass(frozen=True, slots=True)
class _Fetch:
    """One download under way: the key, where it lands, and whom it tells."""

    key: str
    segments: tuple[str, ...]
    started: float
    progress: Callable[[int], None] | None
    group: CommitGroup | None
    on_durable: Durable | None
    expect: Expected = None
    #: Told (size, ETag) of what the GET returned, before the file is committed.
    on_version: Callable[[int, str], None] | None = None


class _Landing:
    """Where a download lands: a temp file, then committed by the group or directly; removed on failure."""

    def __init__(self, transport: Transport, job: _Fetch) -> None:
        self.writer = AtomicWriter(transport.settings.local_path, job.segments, expect=job.expect)
        self._group = job.group
        self._on_durable = job.on_durable
        self._handed_over = False

    def finish(self) -> Path:
        """Commit (or hand to the group, which commits and calls ``on_durable``); the final path."""
        path = self.writer.path
        if self._group is not None and self._on_durable is not None:
            self._group.submit(self.writer, self._on_durable)
            self._handed_over = True
        else:
            self.writer.commit()
        return path

    def __enter__(self) -> _Landing:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._handed_over:
            self.writer.close()


def _stop_all(futures: list[Future[None]]) -> None:
    """Cancel the parts not started and wait for the running ones to end.

    The parts write into a descriptor the caller closes next: none may still run then.
    """
    for fut in futures:
        fut.cancel()
    wait([f for f in futures if not f.cancelled()])


def _fill(body: Any, buf: memoryview) -> int:
    """Read from a response stream until ``buf`` is full or the body ends; how many bytes."""
    got = 0
    while got < len(buf):
        n = body.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _range_total(content_range: str | None) -> int | None:
    """The total size from ``bytes 0-99/1234``; None when absent or unreadable (or ``*``)."""
    if not content_range:
        return None
    _, _, total = content_range.rpartition("/")
    return int(total) if total.strip().isdigit() else None


def _range_start(content_range: str | None) -> int | None:
    """The first byte from ``bytes 0-99/1234``; None when absent or unreadable."""
    if not content_range:
        return None
    spec = content_range.strip().removeprefix("bytes").strip()
    start = spec.partition("-")[0]
    return int(start) if start.isdigit() else None
