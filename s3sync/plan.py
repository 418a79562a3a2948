"""Decide what to do, as values: pure functions with no I/O (like aws-cli's Comparator).

The upload side compares a local file's stat with its state record; the mirror side
compares a listed object with its mirror record and the local file's stat. The imperative
shell (:mod:`s3sync.uploader`, :mod:`s3sync.mirror`) then acts on the decision.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import random
import re
from dataclasses import dataclass

from s3sync.errors import UnsafeKeyError
from s3sync.paths import TEMP_PREFIX, is_directory_marker, key_to_relpath

__all__ = [
    "IGNORED_PATTERNS",
    "LocalStat",
    "MirrorAction",
    "MirrorDecision",
    "UploadAction",
    "backoff_delay",
    "download_range_size",
    "is_ignored_name",
    "plan_mirror",
    "plan_upload",
    "ready_to_upload",
]

#: Names the watcher never uploads: hidden files, partial downloads, editor backups.
IGNORED_PATTERNS = (".*", "*.part", "*.tmp", "*.crdownload", "*~", "*.swp", f"{TEMP_PREFIX}*")


_IGNORED = re.compile("|".join(fnmatch.translate(pat) for pat in IGNORED_PATTERNS))


def is_ignored_name(name: str) -> bool:
    """True for hidden and temporary file names (never uploaded, never rejected)."""
    return _IGNORED.match(name) is not None


@dataclass(frozen=True, slots=True)
class LocalStat:
    """The parts of a file's stat that decide whether it changed."""

    size: int
    mtime_ns: int


class UploadAction(enum.Enum):
    """What to do with an upload-folder file."""

    UPLOAD = "upload"  # new, or changed since it was uploaded
    SKIP = "skip"  # uploaded before with this exact stat
    VERIFY = "verify"  # stat changed: hash it and compare with the uploaded hash
    IGNORE_REJECTED = "ignore-rejected"  # rejected before and unchanged since


def plan_upload(
    local: LocalStat,
    record_status: str | None,
    record: LocalStat | None,
) -> UploadAction:
    """Decide for one file from its stat and its state record (None: never seen)."""
    if record_status is None or record is None:
        return UploadAction.UPLOAD
    same = local == record
    if record_status == "rejected":
        return UploadAction.IGNORE_REJECTED if same else UploadAction.UPLOAD
    if same:
        return UploadAction.SKIP
    return UploadAction.VERIFY if local.size == record.size else UploadAction.UPLOAD


def ready_to_upload(
    *,
    hint: str,
    age_seconds: float,
    stable_seconds: float,
    settle_seconds: float,
) -> bool:
    """Whether a file is complete enough to upload.

    ``closed`` (close after write) and ``moved`` (renamed into the folder) mean complete.
    Otherwise the file must have been unchanged for ``settle_seconds``: either its mtime is
    that old, or we watched its size and mtime stay put that long.
    """
    if hint in {"closed", "moved"}:
        return True
    return max(age_seconds, stable_seconds) >= settle_seconds


class MirrorAction(enum.Enum):
    """What to do with one listed object."""

    SKIP = "skip"
    DOWNLOAD = "download"
    UNSAFE = "unsafe"
    MARKER = "marker"


@dataclass(frozen=True, slots=True)
class MirrorDecision:
    """A mirror action and, for unsafe keys, the reason."""

    action: MirrorAction
    reason: str = ""
    segments: tuple[str, ...] = ()


def plan_mirror(
    key: str,
    size: int,
    etag: str,
    record: tuple[int, str, int, int] | None,
    local: LocalStat | None,
) -> MirrorDecision:
    """Decide for one listed object.

    ``record`` is ``(size, etag, local_size, local_mtime_ns)`` from the state database;
    ``local`` is the stat of the file at the object's local path (None when absent).
    Unchanged objects with an untouched local copy are skipped: no HEAD, no GET.
    """
    if is_directory_marker(key) and size == 0:
        return MirrorDecision(MirrorAction.MARKER)
    try:
        segments = key_to_relpath(key)
    except UnsafeKeyError as exc:
        return MirrorDecision(MirrorAction.UNSAFE, exc.reason)
    if record is not None and local is not None:
        r_size, r_etag, r_local_size, r_local_mtime = record
        if (r_size, r_etag) == (size, etag) and (local.size, local.mtime_ns) == (r_local_size, r_local_mtime):
            return MirrorDecision(MirrorAction.SKIP, segments=segments)
    return MirrorDecision(MirrorAction.DOWNLOAD, segments=segments)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": between half and all of ``min(cap, base * 2**(attempt-1))``."""
    exp = min(cap, base * math.pow(2, max(0, min(attempt - 1, 60))))
    r = (rng or random).random()
    return exp / 2 + r * exp / 2


_MIB = 1024 * 1024
#: Bytes in one ranged GET at most, unless ``S3_MULTIPART_CHUNKSIZE`` asks for more.
MAX_DOWNLOAD_RANGE = 64 * _MIB


#: Ranged GETs of one object at most (each is a future held until the download ends).
MAX_DOWNLOAD_RANGES = 10_000


def download_range_size(size: int, chunksize: int, workers: int) -> int:
    """Bytes per ranged GET of a ``size``-byte object: about two ranges per worker, whole MiB.

    Every range is a request, and servers pay per request: ``rclone serve s3`` reads ahead on
    each, and its CPU for a 512 MiB download fell from 1.0 s with 8 MiB ranges to 0.65 s with
    32 MiB ones. Two ranges per worker still keep every worker busy when one range is slower
    than the rest. Never below ``chunksize`` (``S3_MULTIPART_CHUNKSIZE``), never above
    :data:`MAX_DOWNLOAD_RANGE` unless ``chunksize`` is larger or the object would need more
    than :data:`MAX_DOWNLOAD_RANGES` ranges.
    """
    per_worker = -(-size // (2 * max(1, workers)))  # ceiling division
    fewest = -(-size // MAX_DOWNLOAD_RANGES)
    return max(chunksize, fewest, min(MAX_DOWNLOAD_RANGE, -(-per_worker // _MIB) * _MIB))
