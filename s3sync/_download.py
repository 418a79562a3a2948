"""Downloads: one key to its place under the mirror folder, verified, atomic.

A GET's body is pushed by the request stack to a sink as it arrives (on awscrt's threads, or
read from botocore's stream): the sink writes it into a temp file beside the target and hashes
it. When the answer is complete its size and hash are checked (the SHA-256 from our metadata,
else a plain-MD5 ETag), then the file is fsynced and renamed over the target, directly or by a
:class:`~s3sync.localfs.CommitGroup`. A large object is fetched as parallel ranged GETs written in
place and hashed in file order as they land; only an object whose content can be verified is
split, so that a mix of two versions can never pass.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3sync._core import (
    UNKNOWN,
    DownloadResult,
    RemoteObject,
    TransportCore,
    _is_md5_etag,
    _metadata_sha256,
    _Unknown,
)
from s3sync._requests import Reply, RequestFailed
from s3sync._s3client import translate
from s3sync.errors import DownloadError, IntegrityError, NotFoundError
from s3sync.localfs import AtomicWriter, CommitGroup, Durable, Expected, OrderedHasher, hash_file, lstat_under
from s3sync.paths import key_to_relpath
from s3sync.plan import download_range_size
from s3sync.resource import Resource

__all__ = ["Downloads"]


class Downloads(TransportCore):
    """The download half of :class:`~s3sync.transport.Transport`."""

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
            known = self.head(key) if isinstance(remote, _Unknown) else remote
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

    def _request_get(self, key: str, byte_range: str | None, sink: _Sink, *, small: bool = False) -> Reply:
        """Send a GET (of a byte range, e.g. ``bytes=0-99``) to ``sink``; failures become :class:`DownloadError`."""
        try:
            return self.requests.get(key, byte_range, sink, small=small)
        except (RequestFailed, OSError) as exc:  # OSError: the sink's writes
            raise translate(exc, action="GET", bucket=self.bucket, key=key, kind=DownloadError) from exc

    def _get(self, job: _Fetch, *, small: bool = False) -> DownloadResult:
        """The whole object in one GET, streamed to its place and hashed on the way."""
        sink = _Whole(self, job)
        try:
            reply = self._request_get(job.key, None, sink, small=small)
            return sink.finish(reply)
        finally:
            sink.close()

    def _get_ranged(self, job: _Fetch, size: int | None) -> DownloadResult:
        """A large object as parallel ranged GETs written in place, hashed in file order as they land.

        One stream of a large object keeps one core waiting on the other; parts overlap the
        server's sending with our writing. Only for objects whose content can be verified (our
        SHA-256 in the metadata, or a plain-MD5 ETag): a mix of two versions must not pass.

        With ``size`` unknown (a download by name, no listing), the first range is
        ``S3_MULTIPART_CHUNKSIZE`` and its answer tells the size: a smaller object is all in it,
        and no HEAD was needed either way.
        """
        chunk, workers = self.settings.multipart_chunksize, self.settings.max_concurrency
        first_len = chunk if size is None else download_range_size(size, chunk, workers)
        sink = _FirstRange(self, job, first_len)
        try:
            try:
                reply = self._request_get(job.key, f"bytes=0-{first_len - 1}", sink)
            except _Restart:
                sink.close()
                return self._get(job)  # not verifiable in parts: one whole GET
            except DownloadError as exc:
                if size is None and exc.context.get("code") == "InvalidRange":
                    sink.close()
                    return self._get(job, small=True)  # an empty object has no byte 0 to ask for
                raise
            return sink.finish(reply)
        finally:
            sink.close()

    def _fetch_range(self, job: _Fetch, w: AtomicWriter, hasher: OrderedHasher, offset: int, length: int) -> None:
        if self._closed.is_set():
            raise DownloadError("transport closed", key=job.key)
        part = _Range(self, job, w, offset, length)
        self._request_get(job.key, f"bytes={offset}-{offset + length - 1}", part)
        part.check_complete()
        try:
            hasher.landed(offset, length)
        except OSError as exc:
            raise translate(exc, action="GET", bucket=self.bucket, key=job.key, kind=DownloadError) from exc

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


class _Sink:
    """Where a GET's body goes: ``start`` with the answer's headers, then ``write`` per chunk, in order."""

    def start(self, reply: Reply) -> None:
        """The answer's status and headers, before its first byte (again if an attempt is retried)."""

    def write(self, chunk: memoryview, offset: int) -> None:
        """``chunk`` of the body, at ``offset`` from the start of the object."""
        raise NotImplementedError


class _Landing:
    """Where a download lands: a temp file, then committed by the group or directly; removed on failure."""

    def __init__(self, transport: TransportCore, job: _Fetch) -> None:
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

    def close(self) -> None:
        if not self._handed_over:
            self.writer.close()


class _Whole(_Sink):
    """A whole-object answer: written in order to a temp file, hashed as it streams."""

    def __init__(self, transport: Downloads, job: _Fetch) -> None:
        self.transport = transport
        self.job = job
        self.landing: _Landing | None = None
        self.sha: Any = None
        self.md5: Any = None
        self.want_sha: str | None = None
        self.etag = ""
        self.length = -1

    def start(self, reply: Reply) -> None:
        self.close()  # a retried attempt starts again from nothing
        self.etag = reply.etag
        self.length = reply.length
        self.want_sha = _metadata_sha256(reply.metadata)
        self.md5 = hashlib.md5(usedforsecurity=False) if (not self.want_sha and _is_md5_etag(self.etag)) else None
        # Without our SHA-256 or a plain-MD5 ETag nothing else can later tell the mirror's own bytes
        # from a person's (after a chmod or touch): the SHA-256 of what lands is recorded.
        self.sha = hashlib.sha256() if (self.want_sha or self.md5 is None) else None
        self.landing = _Landing(self.transport, self.job)

    def write(self, chunk: memoryview, offset: int) -> None:
        assert self.landing is not None
        self.landing.writer.write(chunk)
        if self.sha is not None:
            self.sha.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        if self.job.progress is not None:
            self.job.progress(len(chunk))

    def finish(self, reply: Reply) -> DownloadResult:
        if self.landing is None:
            self.start(reply)  # an empty body: no chunk, and a stack that announced nothing
        assert self.landing is not None
        n = self.landing.writer.bytes_written
        sha_hex = self.sha.hexdigest() if self.sha else None
        md5_hex = self.md5.hexdigest() if self.md5 else None
        self.transport._verify(self.job.key, n, self.length, sha_hex, self.want_sha, md5_hex, self.etag)
        if self.job.on_version is not None:
            self.job.on_version(n, self.etag)
        path = self.landing.finish()
        ms = int((time.monotonic() - self.job.started) * 1000)
        return DownloadResult(self.job.key, path, n, sha_hex or self.want_sha, self.etag, False, ms)

    def close(self) -> None:
        if self.landing is not None:
            self.landing.close()
            self.landing = None


class _Restart(Exception):  # noqa: N818 - control flow: the first range says "fetch it whole instead"
    """The first range shows an object that cannot be verified in parts: stop and GET it whole."""


class _FirstRange(_Sink):
    """The first range of a large object: its answer says how to go on.

    The whole object in it (the server ignored the range, or the object is small): it streams as
    a whole answer. More to come and verifiable: the other ranges start at once, in parallel,
    and this one is written in place. More to come and not verifiable: stop, GET it whole.
    """

    def __init__(self, transport: Downloads, job: _Fetch, first_len: int) -> None:
        self.transport = transport
        self.job = job
        self.first_len = first_len
        self.whole: _Whole | None = None
        self.part: _Range | None = None
        self.landing: _Landing | None = None
        self.hasher: OrderedHasher | None = None
        self.futures: list[Future[None]] = []
        self.total = 0
        self.etag = ""
        self.want_sha: str | None = None

    def start(self, reply: Reply) -> None:
        self.close()
        total = _range_total(reply.header("content-range"))
        if total is None or total <= self.first_len:
            self.whole = _Whole(self.transport, self.job)
            self.whole.start(reply)
            return
        self.etag = reply.etag
        self.want_sha = _metadata_sha256(reply.metadata)
        if not self.want_sha and not _is_md5_etag(self.etag):
            raise _Restart
        t = self.transport
        chunk, workers = t.settings.multipart_chunksize, t.settings.max_concurrency
        part = download_range_size(total, chunk, workers)  # the listing's size, unless the object changed since
        self.total = total
        self.landing = _Landing(t, self.job)
        w = self.landing.writer
        self.hasher = OrderedHasher(w, sha256=bool(self.want_sha), md5=not self.want_sha)
        self.part = _Range(t, self.job, w, 0, self.first_len)
        self.part.start(reply)
        # The other ranges start before the first one's body is read: all of them stream at once.
        self.futures = [
            t._parts.submit(t._fetch_range, self.job, w, self.hasher, offset, min(part, total - offset))
            for offset in range(self.first_len, total, part)
        ]

    def write(self, chunk: memoryview, offset: int) -> None:
        if self.whole is not None:
            self.whole.write(chunk, offset)
        elif self.part is not None:
            self.part.write(chunk, offset)

    def finish(self, reply: Reply) -> DownloadResult:
        t, key = self.transport, self.job.key
        if self.whole is not None or self.part is None:
            if self.whole is None:
                self.start(reply)
            assert self.whole is not None
            return self.whole.finish(reply)
        assert self.hasher is not None
        assert self.landing is not None
        try:
            self.part.check_complete()
            self.hasher.landed(0, self.first_len)
        except OSError as exc:
            raise translate(exc, action="GET", bucket=t.bucket, key=key, kind=DownloadError) from exc
        t._wait_all(self.futures, key)  # every part landed and hashed, or all stopped and the error raised
        self.hasher.close()
        sha_hex, md5_hex = self.hasher.digests()
        t._verify(key, self.hasher.hashed, self.total, sha_hex, self.want_sha, md5_hex, self.etag)
        if self.job.on_version is not None:
            self.job.on_version(self.total, self.etag)
        path = self.landing.finish()
        ms = int((time.monotonic() - self.job.started) * 1000)
        return DownloadResult(key, path, self.total, sha_hex or self.want_sha, self.etag, False, ms)

    def close(self) -> None:
        """Stop what runs and remove what landed (nothing once the file is handed over)."""
        if self.futures:
            _stop_all(self.futures)
            self.futures = []
        if self.hasher is not None:
            self.hasher.close()
            self.hasher = None
        if self.whole is not None:
            self.whole.close()
            self.whole = None
        if self.landing is not None:
            self.landing.close()
            self.landing = None
        self.part = None


class _Range(_Sink):
    """One ranged answer, written in place at its offset; it must be exactly the range asked for."""

    def __init__(self, transport: Downloads, job: _Fetch, writer: AtomicWriter, offset: int, length: int) -> None:
        self.transport = transport
        self.job = job
        self.writer = writer
        self.offset = offset
        self.length = length
        self.pos = offset

    def start(self, reply: Reply) -> None:
        start = _range_start(reply.header("content-range"))
        if start != self.offset:
            t = self.transport
            raise IntegrityError(
                f"GET s3://{t.bucket}/{self.job.key}: asked for bytes from {self.offset}, "
                f"got {reply.header('content-range')!r}",
                bucket=t.bucket,
                key=self.job.key,
            )
        self.pos = self.offset

    def write(self, chunk: memoryview, offset: int) -> None:
        if offset != self.pos or self.pos + len(chunk) > self.offset + self.length:
            self.pos = -1  # out of place, or more than asked for: caught by check_complete
            return
        self.writer.write_at(chunk, offset)
        self.pos += len(chunk)
        if self.job.progress is not None:
            self.job.progress(len(chunk))

    def check_complete(self) -> None:
        if self.pos != self.offset + self.length:
            t = self.transport
            got = "a misplaced chunk" if self.pos < 0 else f"{self.pos - self.offset} bytes"
            raise IntegrityError(
                f"GET s3://{t.bucket}/{self.job.key}: range at {self.offset} gave {got}, expected {self.length}",
                bucket=t.bucket,
                key=self.job.key,
            )


def _stop_all(futures: list[Future[None]]) -> None:
    """Cancel the parts not started and wait for the running ones to end.

    The parts write into a descriptor the caller closes next: none may still run then.
    """
    for fut in futures:
        fut.cancel()
    wait([f for f in futures if not f.cancelled()])


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
