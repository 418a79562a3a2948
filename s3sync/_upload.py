"""Uploads: one file to its key, as one PUT or a multipart upload, with integrity end to end.

* the file is opened once per attempt (:class:`~s3sync.sourcefile.SourceFile`): everything hashed
  and sent is read from that descriptor, and a file that changes while it is read is sent again;
* every PUT and UploadPart carries ``Content-MD5`` (the server verifies it), and the returned
  ETag is checked against our own MD5;
* the object's SHA-256 is stored in its metadata (``x-amz-meta-s3sync-sha256``), so a change is
  detected even for multipart objects whose ETag is not an MD5;
* a multipart upload is noted (the tracker) before it is created, and aborted on any failure.

The bytes travel on the transport's request stack; CreateMultipartUpload, Complete, Abort and
the listing of uploads go through botocore's client.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import botocore.exceptions

from s3sync import publish
from s3sync._core import (
    META_SHA256,
    PENDING_MULTIPART,
    UNKNOWN,
    RemoteObject,
    ServerMemory,
    TransportCore,
    UploadResult,
    _b64,
    _is_md5_etag,
    _Unknown,
    _unquote,
    content_type_for,
    log,
)
from s3sync._requests import RequestFailed
from s3sync._s3client import error_code, translate
from s3sync.errors import FileChangedError, IntegrityError, S3SyncError, UploadError, WriteConflictError
from s3sync.plan import PROBE_SEGMENT, is_probe_key
from s3sync.resource import Resource
from s3sync.sourcefile import SourceFile

__all__ = ["Uploads"]

_T = TypeVar("_T")
#: The state's note of a conditional-writes probe under way (its key; empty when none).
PROBE_PENDING = "conditional_writes_probe"
_MAX_PARTS = 10_000
_CHANGE_RETRIES = 5
#: Failures of a request, whichever stack or client sent it.
_REQUEST_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, RequestFailed, OSError)


class Uploads(TransportCore):
    """The upload half of :class:`~s3sync.transport.Transport`."""

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

    # --- conditional writes: no writer overwrites another's new version unseen ----------------
    def _conditions(self, known: RemoteObject | None) -> dict[str, str]:
        """``If-None-Match: *`` when the key was absent, ``If-Match: <ETag>`` for the version we saw.

        Nothing when the server ignores conditions (probed once), when S3_CONDITIONAL_WRITES=off,
        or with S3_UPLOAD_ON_CONFLICT=overwrite (the last writer wins, on purpose).
        """
        if self.settings.upload_on_conflict == "overwrite" or not self.conditional_writes():
            return {}
        if known is None:
            return {"If-None-Match": "*"}
        return {"If-Match": f'"{known.etag}"'} if known.etag else {}

    def conditional_writes(self) -> bool:
        """Whether uploads carry conditions: S3_CONDITIONAL_WRITES, or (auto) what the probe found.

        The answer is kept in the state (per endpoint and bucket, for a day): a daemon that
        restarts does not probe again.
        """
        mode = self.settings.conditional_writes
        if mode != "auto":
            return mode == "on"
        with self._probe_lock:  # one probe at a time: the other workers wait for its answer
            if self._conditional is not None:
                return self._conditional
            memory = self.tracker if isinstance(self.tracker, ServerMemory) else None
            name = f"conditional_writes {self.settings.endpoint_url or 'aws'} {self.bucket}"
            stored = _recalled(memory.get_meta(name) if memory is not None else None, time.time())
            if stored is not None:
                self._conditional = stored
                return stored
            key = f"{PROBE_SEGMENT}/conditional-{secrets.token_hex(8)}"
            if memory is not None:
                # Noted first: a run killed mid-probe, or a probe request that lands after its
                # delete (a fault), leaves an object the next start deletes (Service.prepare).
                memory.set_meta(PROBE_PENDING, key)
            found = self._probe_conditional_writes(key)
            if found is None:
                return False  # the probe could not finish: tried again at the next upload
            self._conditional = found
            if memory is not None:
                memory.set_meta(name, f"{'yes' if found else 'no'} {int(time.time())}")
                memory.set_meta(PROBE_PENDING, "")
        if not found:
            log.warning(
                "upload.conditional_writes_unsupported",
                bucket=self.bucket,
                reason="the server ignores If-None-Match: uploads from several hosts to one key are last-writer-wins",
            )
        return found

    def delete_probe(self, key: str) -> bool:
        """Delete a probe object a run left (its key noted in the state); True when it is gone."""
        if not is_probe_key(key):
            return True  # never anything else
        try:
            self.requests.delete(key)
        except _REQUEST_ERRORS as exc:
            return error_code(exc)[1] == 404
        return True

    def _probe_conditional_writes(self, key: str) -> bool | None:
        """Create a probe object twice with ``If-None-Match: *``: a server that honours it refuses the second.

        True: honoured; False: ignored or not implemented; None: the probe could not tell (the
        endpoint failed). The probe lives under a reserved prefix no mirror copies and is deleted;
        one left by a run killed mid-probe is swept by a later probe once it is an hour old.
        """
        self._sweep_probes()
        headers = {"Content-MD5": _b64(hashlib.md5(b"", usedforsecurity=False).digest()), "If-None-Match": "*"}
        try:
            self.requests.put(key, b"", headers)
        except RequestFailed as exc:
            return False if exc.status in {400, 501} else None
        try:
            self.requests.put(key, b"", headers)
        except RequestFailed as exc:
            return True if _precondition_failed(exc) else (False if exc.status in {400, 501} else None)
        else:
            return False  # created twice: the condition was ignored
        finally:
            with contextlib.suppress(*_REQUEST_ERRORS):
                self.requests.delete(key)

    def _sweep_probes(self) -> None:
        """Delete probe objects older than an hour (another host's may be under way: younger ones stay)."""
        cutoff = datetime.now(UTC) - timedelta(hours=1)
        with contextlib.suppress(*_REQUEST_ERRORS, S3SyncError):
            for page in self.list_pages(f"{PROBE_SEGMENT}/"):
                for obj in page:
                    if obj.last_modified is not None and obj.last_modified < cutoff:
                        self.requests.delete(obj.key)
                return  # one page is plenty: probes are few

    def _written_meanwhile(
        self, res: Resource, path: Path, size: int, sha256: str, md5: str | None, *, multipart: bool
    ) -> UploadResult:
        """A refused condition: the same bytes are there already (fine), or another writer's (a conflict)."""
        now = self.head(res.key)
        if now is not None and now.same_content(size, sha256, md5):
            return UploadResult(res.key, path, 0, sha256, now.etag, True, multipart, 0)
        raise WriteConflictError(
            f"PUT s3://{self.bucket}/{res.key}: another writer created or changed the key while this file was "
            "uploaded; nothing was overwritten",
            bucket=self.bucket,
            key=res.key,
            code="PreconditionFailed",
        )

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
        conditions = self._conditions(known)
        headers = {
            "Content-MD5": _b64(md5.digest()),
            "Content-Type": content_type_for(res.name),
            f"x-amz-meta-{META_SHA256}": sha,
            **self._object_headers,
            **conditions,
        }
        try:
            reply = self.requests.put(res.key, data, headers)
        except _REQUEST_ERRORS as exc:
            if conditions and _precondition_failed(exc):
                return self._written_meanwhile(res, path, len(data), sha, md5.hexdigest(), multipart=False)
            raise translate(exc, action="PUT", bucket=self.bucket, key=res.key, kind=UploadError) from exc
        etag = reply.etag
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
        except _REQUEST_ERRORS as exc:
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
            return self._send_parts(
                src, path, res, sha.sha256, size, chunk, nparts, upload_id, progress, self._conditions(known)
            )
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
            if error_code(exc)[0] != "NoSuchUpload":
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
        conditions: Mapping[str, str] | None = None,
    ) -> UploadResult:
        def send_part(number: int) -> tuple[int, str, bytes]:
            if self._closed.is_set():
                raise UploadError("transport closed", key=res.key)
            offset = (number - 1) * chunk
            data = src.pread_exact(offset, min(chunk, size - offset))  # short: changed, the upload is aborted
            src.check_part(number, data)  # the bytes sent are the bytes the SHA-256 metadata was computed from
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            etag = self.requests.upload_part(res.key, upload_id, number, data, _b64(digest)).etag
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
                **_complete_params(conditions or {}),  # type: ignore[arg-type]
            )
        except BaseException as exc:
            for fut in futures:
                fut.cancel()
            # Only futures that started can be waited for: a cancelled one never wakes wait().
            wait([f for f in futures if not f.cancelled()], timeout=self.settings.read_timeout)
            self._abort(res.key, upload_id)
            if conditions and isinstance(exc, _REQUEST_ERRORS) and _precondition_failed(exc):
                return self._written_meanwhile(res, path, size, sha256, None, multipart=True)
            if isinstance(exc, _REQUEST_ERRORS):
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

    def _abort(self, key: str, upload_id: str) -> bool:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except botocore.exceptions.ClientError as exc:
            code, status = error_code(exc)
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


def _precondition_failed(exc: BaseException) -> bool:
    """A 412: the server refused a conditional write (If-None-Match / If-Match)."""
    code, status = error_code(exc) if isinstance(exc, Exception) else ("", 0)
    return status == 412 or code == "PreconditionFailed"


def _complete_params(conditions: Mapping[str, str]) -> dict[str, str]:
    """Upload conditions as CompleteMultipartUpload's parameters (IfNoneMatch / IfMatch)."""
    names = {"if-none-match": "IfNoneMatch", "if-match": "IfMatch"}
    return {names[k.lower()]: v for k, v in conditions.items() if k.lower() in names}


def _recalled(stored: str | None, now: float) -> bool | None:
    """A kept probe answer (``"yes 1765000000"``) while it is less than a day old, else None.

    >>> _recalled("yes 1000", 2000.0), _recalled("no 1000", 2000.0), _recalled("yes 1000", 1000.0 + 86400 * 2)
    (True, False, None)
    >>> _recalled(None, 0.0), _recalled("garbage", 0.0)
    (None, None)
    """
    answer, _, stamp = (stored or "").partition(" ")
    if answer not in {"yes", "no"} or not stamp.isdigit() or now - int(stamp) > 86400:
        return None
    return answer == "yes"
