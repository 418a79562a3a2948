"""Bucket keys <-> safe relative local paths. Pure: no file system access.

A bucket key is attacker-controlled text: anyone who can write to the bucket chooses it.
``os.path.join(root, "/etc/passwd")`` is ``/etc/passwd`` and ``root/a/../../x`` escapes, so
every key is checked *segment by segment* before it becomes a path, instead of normalising
and hoping (aws-cli's parent-folder guard had holes exactly there).

>>> key_to_relpath("VASE/F0001/F0001_A.jpg")
('VASE', 'F0001', 'F0001_A.jpg')
>>> key_to_relpath("a/../../etc/passwd")
Traceback (most recent call last):
...
s3sync.errors.UnsafeKeyError: unsafe key 'a/../../etc/passwd': has a '..' segment
"""

from __future__ import annotations

import unicodedata

from s3sync.errors import UnsafeKeyError

__all__ = ["MAX_PATH_BYTES", "MAX_SEGMENT_BYTES", "TEMP_PREFIX", "is_directory_marker", "key_to_relpath"]

#: Linux NAME_MAX and a conservative PATH_MAX budget for the part below the root.
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 3072

#: Prefix of s3sync's temporary files; such names are reserved, swept at start-up, never mirrored.
TEMP_PREFIX = ".s3sync-tmp-"


def is_directory_marker(key: str) -> bool:
    """A zero-length ``folder/`` object made by consoles: nothing to mirror."""
    return key.endswith("/")


def key_to_relpath(key: str) -> tuple[str, ...]:
    """Return the path segments under the mirror root for ``key``, or raise :class:`UnsafeKeyError`."""
    if not key:
        raise UnsafeKeyError(key, "is empty")
    if key.startswith("/"):
        raise UnsafeKeyError(key, "is absolute (starts with '/')")
    if "\\" in key:
        raise UnsafeKeyError(key, "contains a backslash")
    for ch in key:
        if ch == "\x00":
            raise UnsafeKeyError(key, "contains a NUL character")
        if unicodedata.category(ch) in {"Cc", "Cs"}:
            raise UnsafeKeyError(key, "contains a control character")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafeKeyError(key, "is not valid UTF-8") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafeKeyError(key, f"is longer than {MAX_PATH_BYTES} bytes")
    segments = tuple(key.split("/"))
    for seg in segments:
        if seg == "":
            raise UnsafeKeyError(key, "has an empty segment ('//' or a trailing '/')")
        if seg == "..":
            raise UnsafeKeyError(key, "has a '..' segment")
        if seg == ".":
            raise UnsafeKeyError(key, "has a '.' segment")
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise UnsafeKeyError(key, f"has a segment longer than {MAX_SEGMENT_BYTES} bytes")
        if seg.startswith(TEMP_PREFIX):
            raise UnsafeKeyError(key, f"uses the reserved prefix {TEMP_PREFIX!r}")
    return segments
