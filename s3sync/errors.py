"""The one exception hierarchy of s3sync.

Every error the library raises on purpose is an :class:`S3SyncError`; each class
knows the exit code the command line maps it to (``1``: an item failed,
``2``: usage or configuration error)::

    S3SyncError                      exit 1
    ├── ConfigurationError           exit 2   a setting is missing or invalid
    ├── InvalidNameError             exit 1   a file name breaks the naming convention (also ValueError)
    ├── UnsafeKeyError               exit 1   a bucket key cannot be a safe local path (also ValueError)
    ├── NotFoundError                exit 1   an object or prefix is not in the bucket
    ├── EndpointError                exit 1   the S3 endpoint cannot be reached or refuses us
    │   └── QueueUnreachableError             the events queue (SQS) cannot be reached or refuses us
    ├── EventFormatError             exit 1   a queue message is no S3 event notification (also ValueError)
    ├── ListingError                 exit 1   a listing cannot be complete (truncated without a token, a key twice...)
    ├── TransferError                exit 1   an upload or download failed
    │   ├── UploadError
    │   │   ├── AclNotSupportedError exit 2   the bucket refuses ACLs (S3_DEFAULT_ACL): use a bucket policy
    │   │   └── WriteConflictError            another writer changed the key between our look and our write
    │   ├── DownloadError
    │   └── IntegrityError                    bytes on one side differ from the other
    ├── LocalFileError               exit 1   a local file vanished, is unreadable, or cannot be written
    │   ├── FileChangedError                  the file changed while it was read (the attempt is discarded)
    │   ├── LocalChangedError                 a person changed the mirror's file while it downloaded (kept)
    │   └── NotRegularFileError               a symlink, FIFO, socket or device where a file was expected
    └── StateError                   exit 1   the state database is unusable
        ├── StateCorruptError        exit 2   not a SQLite database, or it fails its integrity check
        └── StateLockedError         exit 2   another s3sync process holds the state's lock

Messages are single readable lines and never contain a secret: errors coming
from botocore are translated inside :mod:`s3sync.transport` only, with the
original kept as ``__cause__`` for ``--debug``.
"""

from __future__ import annotations

__all__ = [
    "AclNotSupportedError",
    "ConfigurationError",
    "DownloadError",
    "EndpointError",
    "EventFormatError",
    "FileChangedError",
    "IntegrityError",
    "InvalidNameError",
    "ListingError",
    "LocalChangedError",
    "LocalFileError",
    "NotFoundError",
    "NotRegularFileError",
    "QueueUnreachableError",
    "S3SyncError",
    "StateCorruptError",
    "StateError",
    "StateLockedError",
    "TransferError",
    "UnsafeKeyError",
    "UploadError",
    "WriteConflictError",
]


class S3SyncError(Exception):
    """Base of every error s3sync raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        #: Structured context (``key``, ``bucket``, ``path``...) for log events.
        self.context = context

    def __str__(self) -> str:
        return self.message


class ConfigurationError(S3SyncError):
    """A setting is missing or invalid; the message names the setting.

    When several settings are invalid at once, ``problems`` holds one ``(setting, message)`` per
    setting (``manage.py check`` reports each) and the message joins them with ``; ``.
    """

    exit_code = 2

    def __init__(self, message: str, *, setting: str | None = None, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message, setting=setting)
        self.setting = setting
        self.problems = problems or ((setting or "settings", message),)


class InvalidNameError(S3SyncError, ValueError):
    """A name does not follow ``<code><serial>_<rest><size>.<ext>``; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid resource name {name!r}: {reason}", name=name, reason=reason)
        self.name = name
        self.reason = reason


class UnsafeKeyError(S3SyncError, ValueError):
    """A bucket key would escape the local folder or is not a valid local path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"unsafe key {key!r}: {reason}", key=key, reason=reason)
        self.key = key
        self.reason = reason


class NotFoundError(S3SyncError):
    """An object or prefix does not exist in the bucket."""


class EndpointError(S3SyncError):
    """The endpoint cannot be reached, times out, or rejects our credentials."""


class QueueUnreachableError(EndpointError):
    """The events queue (``S3_EVENTS_QUEUE_URL``) cannot be reached or refuses us: the mirror polls meanwhile."""


class EventFormatError(S3SyncError, ValueError):
    """A queue message that is not an S3 event notification in any shape s3sync knows (raw, SNS, EventBridge)."""


class ListingError(S3SyncError):
    """A listing answer that cannot belong to a complete listing: nothing may be concluded from it.

    ``IsTruncated`` without a continuation token, a key listed twice, or keys out of order: a
    mirror that took such a listing as complete would delete files whose objects still exist.
    """


class TransferError(S3SyncError):
    """An upload or download did not complete."""


class UploadError(TransferError):
    """An upload did not complete."""


class WriteConflictError(UploadError):
    """A conditional write was refused (412): another writer created or changed the key meanwhile.

    The upload sent ``If-None-Match: *`` (the key was absent) or ``If-Match: <ETag>`` (the version
    we saw); the server had something else by then. Nothing was overwritten.
    """


class AclNotSupportedError(UploadError):
    """The bucket has ACLs disabled (``AccessControlListNotSupported``) but ``S3_DEFAULT_ACL`` asks for one.

    Retrying cannot help, so it is a configuration-like error (exit 2): the message says to unset
    ``S3_DEFAULT_ACL`` and use a bucket policy.
    """

    exit_code = 2


class DownloadError(TransferError):
    """A download did not complete."""


class IntegrityError(TransferError):
    """The bytes received or stored differ from the bytes sent (size or hash mismatch)."""


class LocalFileError(S3SyncError):
    """A local file vanished, is unreadable, or the target cannot be written."""


class FileChangedError(LocalFileError):
    """The file changed (or was replaced) while it was read: what was read is discarded."""


class LocalChangedError(LocalFileError):
    """The target path no longer holds what was planned (a person saved or edited a file there): not replaced."""


class NotRegularFileError(LocalFileError):
    """The path names a symlink, FIFO, socket, device or folder, not a regular file; ``kind`` says which."""

    def __init__(self, message: str, *, kind: str, path: str) -> None:
        super().__init__(message, path=path, kind=kind)
        self.kind = kind


class StateError(S3SyncError):
    """The state database cannot be opened or is corrupt."""


class StateCorruptError(StateError):
    """The state file is not a SQLite database, or fails ``PRAGMA quick_check``.

    A configuration-like error (exit 2): nothing works until an operator acts, and the message
    says how (``s3sync state rebuild``).
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)
        self.path = path


class StateLockedError(StateError):
    """Another s3sync process (``pid``, when known) holds the exclusive lock of the state database."""

    exit_code = 2

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message, path=path, pid=pid)
        self.path = path
        self.pid = pid
