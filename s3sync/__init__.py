"""s3sync: keep a folder of graphics resources and an S3 bucket in step.

The library of the original django_s3 app, done properly:

* :class:`Resource` parses the naming convention ``<code><serial>_<rest><size>.<ext>``;
* :class:`Transport` uploads and downloads resources, with integrity checks;
* :class:`Browser` walks the bucket as a tree of :class:`FileTreeNode`.

Around it, ``s3sync run`` is a sync daemon (see :mod:`s3sync.service`).
"""

from __future__ import annotations

from s3sync._version import __version__
from s3sync.browser import Browser, FileTreeNode
from s3sync.errors import (
    AclNotSupportedError,
    ConfigurationError,
    DownloadError,
    EndpointError,
    EventFormatError,
    FileChangedError,
    IntegrityError,
    InvalidNameError,
    ListingError,
    LocalChangedError,
    LocalFileError,
    NotFoundError,
    NotRegularFileError,
    QueueUnreachableError,
    S3SyncError,
    StateCorruptError,
    StateError,
    StateLockedError,
    TransferError,
    UnsafeKeyError,
    UploadError,
    WriteConflictError,
)
from s3sync.resource import Resource
from s3sync.settings import Settings, load_settings
from s3sync.transport import DownloadResult, RemoteObject, Transport, UploadResult

__all__ = [
    "AclNotSupportedError",
    "Browser",
    "ConfigurationError",
    "DownloadError",
    "DownloadResult",
    "EndpointError",
    "EventFormatError",
    "FileChangedError",
    "FileTreeNode",
    "IntegrityError",
    "InvalidNameError",
    "ListingError",
    "LocalChangedError",
    "LocalFileError",
    "NotFoundError",
    "NotRegularFileError",
    "QueueUnreachableError",
    "RemoteObject",
    "Resource",
    "S3SyncError",
    "Settings",
    "StateCorruptError",
    "StateError",
    "StateLockedError",
    "TransferError",
    "Transport",
    "UnsafeKeyError",
    "UploadError",
    "UploadResult",
    "WriteConflictError",
    "__version__",
    "load_settings",
]
