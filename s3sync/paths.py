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

Control characters and Unicode format characters (category Cf: bidirectional overrides such as
U+202E, zero-width spaces, BOMs) are refused too: a file named with them displays as another name.
So are the line and paragraph separators U+2028/U+2029 (categories Zl, Zp: they break a name
in two as a newline does) and the Hangul fillers, letters that display as nothing.
"""

from __future__ import annotations

import unicodedata

from s3sync.errors import UnsafeKeyError

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "TEMP_PREFIX",
    "PathClaims",
    "is_directory_marker",
    "key_to_relpath",
]

#: Linux NAME_MAX and a conservative PATH_MAX budget for the part below the root.
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 3072

#: Letters (category Lo) that display as nothing: a name holding one looks like another name.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")

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
    # Printable ASCII holds no control character: most keys skip the per-character check.
    for ch in () if key.isascii() and key.isprintable() else key:
        if ch == "\x00":
            raise UnsafeKeyError(key, "contains a NUL character")
        category = unicodedata.category(ch)
        if category in {"Cc", "Cs", "Zl", "Zp"}:
            raise UnsafeKeyError(key, "contains a control character or line break")
        if category == "Cf":
            # U+202E turns "gpj.exe" into what reads as "exe.jpg"; U+200B hides in plain sight.
            raise UnsafeKeyError(key, f"contains an invisible or bidirectional format character (U+{ord(ch):04X})")
        if ch in _INVISIBLE_LETTERS:
            raise UnsafeKeyError(key, f"contains an invisible filler character (U+{ord(ch):04X})")
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


class PathClaims:
    """Which local paths one mirror pass has given to which key: file-vs-prefix conflicts, decided in order.

    S3 allows both ``a`` and ``a/b``; a file system cannot hold a file and a folder under one
    name. Keys are claimed in listing order (lexicographic, so ``a`` before ``a/b``), and the
    first claim wins: a later key that needs an earlier file as its folder, or an earlier
    key's folder as its file, is a conflict. Deciding here, before any download starts, makes
    the outcome the same on every pass instead of depending on which download finishes first.

    >>> claims = PathClaims()
    >>> claims.claim(("a",)) is None
    True
    >>> claims.claim(("a", "b"))
    "its parent 'a' is the file of another key"
    """

    def __init__(self) -> None:
        self._files: set[str] = set()
        self._dirs: set[str] = set()

    def claim(self, segments: tuple[str, ...]) -> str | None:
        """Claim the path of one key; return None when it is free, else why it conflicts."""
        path = "/".join(segments)
        if path in self._dirs:
            return f"{path!r} is the folder of another key"
        parents = ["/".join(segments[:i]) for i in range(1, len(segments))]
        for parent in parents:
            if parent in self._files:
                return f"its parent {parent!r} is the file of another key"
        self._files.add(path)
        self._dirs.update(parents)
        return None
