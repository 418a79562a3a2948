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
    "EVENTS_CHECK_SEGMENT",
    "IGNORED_PATTERNS",
    "LOCAL_CHANGE_POLICIES",
    "PROBE_SEGMENT",
    "VERDICT_STATUSES",
    "WRITER_GRACE_SECONDS",
    "LocalContent",
    "LocalStat",
    "MirrorAction",
    "MirrorDecision",
    "MirrorWritten",
    "RemoteVersion",
    "UploadAction",
    "aside_name",
    "backoff_delay",
    "download_range_size",
    "holds_object",
    "is_ignored_name",
    "is_md5_etag",
    "is_probe_key",
    "plan_checked",
    "plan_mirror",
    "plan_upload",
    "ready_to_upload",
    "remote_changed",
    "usable_etag",
]

#: Names the watcher never uploads: hidden files, partial downloads, editor backups.
IGNORED_PATTERNS = (".*", "*.part", "*.tmp", "*.crdownload", "*~", "*.swp", f"{TEMP_PREFIX}*")


_IGNORED = re.compile("|".join(fnmatch.translate(pat) for pat in IGNORED_PATTERNS))


#: Folder of the probe objects s3sync writes and deletes again (conditional writes): never mirrored.
PROBE_SEGMENT = ".s3sync-probe"


def is_ignored_name(name: str) -> bool:
    """True for hidden and temporary file names (never uploaded, never rejected)."""
    return _IGNORED.match(name) is not None


#: Folder of the marker objects ``s3sync events check`` writes and deletes again: never mirrored.
EVENTS_CHECK_SEGMENT = ".s3sync-events-check"


def is_probe_key(key: str) -> bool:
    """An object s3sync writes only to probe and deletes again, never content: a marker of
    ``s3sync events check`` (under any prefix), or a conditional-writes probe.

    >>> is_probe_key(".s3sync-events-check/0f3a"), is_probe_key("art/.s3sync-events-check/0f3a")
    (True, True)
    >>> is_probe_key(".s3sync-probe/conditional-0f3a"), is_probe_key("art/.s3sync-events-checkout/a.jpg")
    (True, False)
    """
    wrapped = f"/{key}"
    return f"/{EVENTS_CHECK_SEGMENT}/" in wrapped or f"/{PROBE_SEGMENT}/" in wrapped


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

    SKIP = "skip"  # the local file is the mirror's copy of this very version (re-note its stat if it moved)
    DOWNLOAD = "download"  # nothing there, or the mirror's own copy of an older version
    UNSAFE = "unsafe"
    MARKER = "marker"
    CHECK = "check"  # a file the state does not know as the mirror's, as it is: compare contents first
    ADOPT = "adopt"  # the local file already holds the object's bytes: note it as the mirror's, no GET
    KEEP_LOCAL = "keep-local"  # a person's file: left alone, the key is skipped
    MOVE_ASIDE = "move-aside"  # a person's file: renamed to a ``.local-<time>`` sibling, then download


#: ``S3_MIRROR_ON_LOCAL_CHANGE``: what the mirror does with a file a person changed or created.
LOCAL_CHANGE_POLICIES = ("keep", "keep-both", "overwrite")


@dataclass(frozen=True, slots=True)
class MirrorDecision:
    """A mirror action and, for unsafe keys, the reason."""

    action: MirrorAction
    reason: str = ""
    segments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RemoteVersion:
    """What a listing says of one object version: enough to tell whether it changed."""

    size: int
    etag: str
    #: LastModified in microseconds since the epoch (None: the server did not say).
    last_modified_us: int | None = None


@dataclass(frozen=True, slots=True)
class MirrorWritten:
    """The state's record of one mirror path: the version written, the file's stat then, its SHA-256.

    ``owned=False``: the file is a person's (changed or created by them), kept as it was last seen.
    """

    remote: RemoteVersion
    local: LocalStat
    sha256: str | None = None
    owned: bool = True


@dataclass(frozen=True, slots=True)
class LocalContent:
    """Size and hashes of the local file, read when its stat alone cannot say whose it is."""

    size: int
    sha256: str
    md5: str


def usable_etag(etag: str) -> bool:
    """An ETag that can tell versions apart: not empty, not a placeholder of zeros.

    >>> usable_etag(""), usable_etag("0" * 32), usable_etag("9a0364b9e99bb480dd25e1f0284c8555")
    (False, False, True)
    """
    return bool(etag.strip("0-"))


def is_md5_etag(etag: str) -> bool:
    """A plain MD5 of the content (single-part upload), not a multipart or placeholder ETag."""
    return len(etag) == 32 and usable_etag(etag) and all(c in "0123456789abcdef" for c in etag)


def remote_changed(written: RemoteVersion, listed: RemoteVersion) -> bool:
    """Whether the listed version differs from the one the mirror wrote.

    By (size, ETag) when both ETags are usable; else by (size, LastModified): some gateways
    send no ETag at all, and a same-size change must still reach the mirror. With neither,
    nothing tells versions apart: fetch (the download compares contents before it writes).
    """
    if listed.size != written.size:
        return True
    if usable_etag(listed.etag) and usable_etag(written.etag):
        return listed.etag != written.etag
    if listed.last_modified_us is not None and written.last_modified_us is not None:
        return listed.last_modified_us != written.last_modified_us
    return True


def plan_mirror(
    key: str,
    remote: RemoteVersion,
    written: MirrorWritten | None,
    local: LocalStat | None,
) -> MirrorDecision:
    """Decide for one listed object, from its version, the state's record and the local file's stat.

    The mirror owns only what it wrote: a local file is replaced only when its stat is still
    the one the mirror recorded. Any other file there (no record, or changed since) is
    ``CHECK``: its content decides (:func:`plan_checked`). An unchanged object with an
    untouched copy is skipped: no HEAD, no GET.
    """
    if (is_directory_marker(key) and remote.size == 0) or is_probe_key(key):
        return MirrorDecision(MirrorAction.MARKER)
    try:
        segments = key_to_relpath(key)
    except UnsafeKeyError as exc:
        return MirrorDecision(MirrorAction.UNSAFE, exc.reason)
    if local is None:
        return MirrorDecision(MirrorAction.DOWNLOAD, segments=segments)
    if written is None:
        return MirrorDecision(MirrorAction.CHECK, "not written by the mirror", segments)
    if not local.same_file(written.local):
        return MirrorDecision(MirrorAction.CHECK, "changed since the mirror wrote it", segments)
    if not written.owned:
        return MirrorDecision(MirrorAction.KEEP_LOCAL, "changed or created locally", segments)
    if remote_changed(written.remote, remote):
        return MirrorDecision(MirrorAction.DOWNLOAD, segments=segments)
    return MirrorDecision(MirrorAction.SKIP, segments=segments)


def holds_object(content: LocalContent, size: int, etag: str, sha256: str | None) -> bool:
    """Whether the local bytes are the object's: same size and same SHA-256 (our metadata) or MD5 (a plain ETag)."""
    if content.size != size:
        return False
    if sha256:
        return content.sha256 == sha256
    return is_md5_etag(etag) and content.md5 == etag


def plan_checked(
    content: LocalContent,
    remote: RemoteVersion,
    remote_sha256: str | None,
    written: MirrorWritten | None,
    policy: str,
) -> MirrorDecision:
    """After ``CHECK``: decide from the local file's content whose it is, then what to do.

    * it holds the object's bytes: ``ADOPT`` (noted as the mirror's, nothing downloaded; this
      is also how a lost state is rebuilt);
    * it holds what the mirror wrote (only its stat changed: ``touch``, ``chmod``, a restore):
      the mirror's own file, ``SKIP`` or ``DOWNLOAD`` as for an untouched copy;
    * anything else is a person's work, and ``policy`` decides: ``keep`` (``KEEP_LOCAL``),
      ``keep-both`` (``MOVE_ASIDE``, then download) or ``overwrite`` (``DOWNLOAD``).
    """
    if holds_object(content, remote.size, remote.etag, remote_sha256):
        return MirrorDecision(MirrorAction.ADOPT, "already holds the object's bytes")
    if written is not None and written.owned:
        ours = holds_object(content, written.local.size, written.remote.etag, written.sha256)
        if ours:
            changed = remote_changed(written.remote, remote)
            return MirrorDecision(MirrorAction.DOWNLOAD if changed else MirrorAction.SKIP, "only its stat changed")
    reason = "created locally" if written is None else "changed locally"
    if policy == "overwrite":
        return MirrorDecision(MirrorAction.DOWNLOAD, reason)
    if policy == "keep-both":
        return MirrorDecision(MirrorAction.MOVE_ASIDE, reason)
    return MirrorDecision(MirrorAction.KEEP_LOCAL, reason)


def aside_name(name: str, stamp: str, attempt: int = 0) -> str:
    """The sibling a person's file is moved to: ``photo.local-<stamp>.jpg`` (``-2``, ``-3``... if taken).

    Never longer than 255 bytes (the stem is shortened), never hidden unless the name was.

    >>> aside_name("F0001_A.jpg", "20261202T103000")
    'F0001_A.local-20261202T103000.jpg'
    >>> aside_name("README", "20261202T103000", 1)
    'README.local-20261202T103000-2'
    """
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    if len(ext.encode()) > 16:  # not an extension: a dotted name
        stem, ext = name, ""
    tag = f".local-{stamp}" + (f"-{attempt + 1}" if attempt else "")
    budget = 255 - len(tag.encode()) - len(ext.encode())
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    return stem + tag + ext


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
