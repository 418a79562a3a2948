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
    "VERDICT_STATUSES",
    "WRITER_GRACE_SECONDS",
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
    """The parts of a file's stat that decide whether it changed.

    ``ctime_ns`` and ``ino`` are 0 where unknown (records written before they were kept): then
    only size and mtime are compared. ``cp -p`` restores size and mtime but not the ctime, so a
    rewritten file is told from an untouched one only with them.
    """

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    ino: int = 0

    def same_file(self, other: LocalStat) -> bool:
        """True when ``other`` is this very file, unchanged (fields unknown on either side are not compared)."""
        if (self.size, self.mtime_ns) != (other.size, other.mtime_ns):
            return False
        if self.ctime_ns and other.ctime_ns and self.ctime_ns != other.ctime_ns:
            return False
        return not (self.ino and other.ino and self.ino != other.ino)


class UploadAction(enum.Enum):
    """What to do with an upload-folder file."""

    UPLOAD = "upload"  # new, or changed since it was uploaded
    SKIP = "skip"  # uploaded before with this exact stat
    VERIFY = "verify"  # stat changed: hash it and compare with the uploaded hash
    IGNORE_REJECTED = "ignore-rejected"  # rejected (or in conflict) before, unchanged since, same rules


#: Record statuses that hold a verdict rather than an upload: re-examined when the file or the rules change.
VERDICT_STATUSES = frozenset({"rejected", "conflict"})


def plan_upload(
    local: LocalStat,
    record_status: str | None,
    record: LocalStat | None,
    *,
    record_rules: str | None = None,
    rules: str | None = None,
) -> UploadAction:
    """Decide for one file from its stat and its state record (None: never seen).

    ``rules`` is the fingerprint of the settings that decide a verdict (naming, rejected folder,
    conflict policy); a rejection or conflict recorded under other rules (``record_rules``) is
    looked at again. A record of a file that is gone (moved or deleted after its upload) never
    makes a new file at that path skip: the new file is uploaded.
    """
    if record_status is None or record is None or record_status == "gone":
        return UploadAction.UPLOAD
    same = local.same_file(record)
    if record_status in VERDICT_STATUSES:
        return UploadAction.IGNORE_REJECTED if same and record_rules == rules else UploadAction.UPLOAD
    if same:
        return UploadAction.SKIP
    return UploadAction.VERIFY if local.size == record.size else UploadAction.UPLOAD


#: A file seen written to but never closed is uploaded after this long unchanged all the same:
#: a close event the kernel dropped (inotify queue overflow) must not hold a file back for ever.
WRITER_GRACE_SECONDS = 3600.0


def ready_to_upload(
    *,
    hint: str,
    age_seconds: float,
    stable_seconds: float,
    settle_seconds: float,
    writing: bool = False,
    close_events: bool = False,
) -> bool:
    """Whether a file is complete enough to upload.

    ``closed`` (close after write) and ``moved`` (renamed into the folder) mean complete.
    Where close events are seen (``close_events``, inotify), a file seen created or written and
    not closed since (``writing``) is not complete, whatever its age: a writer may only be
    pausing (up to :data:`WRITER_GRACE_SECONDS` unchanged). Otherwise the file must have been
    unchanged for ``settle_seconds``: either its mtime is that old, or we watched its size,
    mtime and ctime stay put that long.
    """
    if hint in {"closed", "moved"} and not writing:
        return True
    unchanged = max(age_seconds, stable_seconds)
    if writing and close_events:
        return stable_seconds >= max(settle_seconds, WRITER_GRACE_SECONDS)
    return unchanged >= settle_seconds


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
