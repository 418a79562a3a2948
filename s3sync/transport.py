"""Upload and download resources: the facade users see.

Design, after s3transfer: one thread-safe client with a connection pool sized to the
concurrency, and a :class:`Transport` that owns the thread pool used for multipart parts and
ranged downloads. Each job lives in its own module:

* :mod:`s3sync._s3client`: client construction (endpoint, region, credentials, CAs resolved as
  botocore resolves them), the choice of request stack, and error translation;
* :mod:`s3sync._requests`: the narrow request interface and botocore's retry policy over it;
  :mod:`s3sync._crt` (awscrt) and :mod:`s3sync._boto` (botocore) implement it;
* :mod:`s3sync._core`: value types, HEAD and the streamed listing;
* :mod:`s3sync._upload` and :mod:`s3sync._download`: one operation each.

Integrity is kept end to end on every server: Content-MD5 on every PUT and part (the server
verifies it), the object's SHA-256 in its metadata, and downloads verified before they are
renamed into place. botocore's own flexible checksums are set to ``when_required``: many
S3-compatible servers (rclone, older MinIO/Ceph) reject the trailers botocore sends by default.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from s3sync import publish
from s3sync._core import (
    META_SHA256,
    PENDING_MULTIPART,
    UNKNOWN,
    DownloadResult,
    MultipartTracker,
    RemoteObject,
    UploadResult,
    content_type_for,
)
from s3sync._download import Downloads
from s3sync._s3client import make_client, static_keys, translate
from s3sync._upload import Uploads
from s3sync.resource import Resource

__all__ = [
    "META_SHA256",
    "PENDING_MULTIPART",
    "UNKNOWN",
    "DownloadResult",
    "MultipartTracker",
    "RemoteObject",
    "Transport",
    "UploadResult",
    "content_type_for",
    "make_client",
    "static_keys",
    "translate",
]


class Transport(Uploads, Downloads):
    """Upload and download resources; ``Transport()`` reads settings from the environment.

    Thread-safe: one instance serves all the daemon's workers. ``close()`` releases the
    part thread pool and the request stack (also a context manager).
    """

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
