"""The resource naming convention, as a pure parser.

A resource name is ``<code><serial>_<rest><size>.<extension>``::

    CF0001-B0001_WHITE_320x320.jpg
    └┬┘└┬┘└──┬─┘ └─┬─┘ └──┬──┘ └┬┘
    code serial │  rest  size  extension
         └─folder─┘

* ``folder``: everything before the first ``_``: the code (1-4 upper-case letters, a key of
  ``S3_CATEGORY_MAP``), the serial (digits, leading zeros kept), then optionally ``-`` and
  more ``[A-Za-z0-9-]``.
* ``rest``: after the first ``_`` up to the extension, ``[A-Za-z0-9_-]+``; it may end in a
  size ``<width>x<height>`` after ``_`` or ``-``, or be the size alone.
* ``extension``: 3-4 letters/digits after the last dot, case-insensitive, in the allowed set.

Parsing touches no file, no network and no clock. A bad name raises
:class:`~s3sync.errors.InvalidNameError` whose ``reason`` says what is wrong.

>>> from s3sync.settings import Settings
>>> r = Resource("CF0001-B0001_WHITE_320x320.jpg", settings=Settings(_env_file=None, bucket_name="pics"))
>>> (r.code, r.serial, r.folder, r.size, r.category)
('CF', '0001', 'CF0001-B0001', (320, 320), 'CLIPPING-FLOWER')
>>> r.key
'CLIPPING-FLOWER/CF0001-B0001/CF0001-B0001_WHITE_320x320.jpg'
>>> r.url
'https://s3.amazonaws.com/pics/CLIPPING-FLOWER/CF0001-B0001/CF0001-B0001_WHITE_320x320.jpg'
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from s3sync.errors import ConfigurationError, InvalidNameError
from s3sync.publish import base_url, object_url

if TYPE_CHECKING:
    from s3sync.settings import Settings

__all__ = ["NamingRules", "ParsedName", "Resource", "parse_name"]

MAX_NAME_BYTES = 255

_FOLDER_RE = re.compile(r"(?P<code>[A-Z]{1,4})(?P<serial>[0-9]+)(?:-[A-Za-z0-9-]+)?")
_REST_RE = re.compile(r"[A-Za-z0-9_-]+")
_EXT_RE = re.compile(r"[A-Za-z0-9]{3,4}")
_SIZE_RE = re.compile(r"(?:^|[_-])(?P<w>[0-9]+)x(?P<h>[0-9]+)$")


class NamingRules(Protocol):
    """What the parser needs from settings (a :class:`~s3sync.settings.Settings` fits)."""

    @property
    def category_map(self) -> Mapping[str, str]: ...
    @property
    def allowed_extensions(self) -> Collection[str]: ...
    @property
    def key_template(self) -> str: ...
    @property
    def aws_base_url(self) -> str: ...
    @property
    def bucket_name(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ParsedName:
    """The fields of a valid name, before settings turn them into a key and URL."""

    name: str
    code: str
    serial: str
    folder: str
    rest: str
    size: tuple[int, int] | None
    extension: str
    stem: str


def _first_bad_character(name: str) -> str | None:
    if name.isascii() and name.isprintable() and " " not in name and "/" not in name and "\\" not in name:
        return None  # the common case, without a Python loop over the characters
    for ch in name:
        if ch in "/\\":
            return "contains a path separator"
        if ch == " ":
            return "contains a space"
        if ord(ch) < 32 or ord(ch) == 127:
            return "contains a control character"
        if ord(ch) > 127:
            return "contains a non-ASCII character"
    return None


def parse_name(
    name: str,
    category_codes: Collection[str],
    allowed_extensions: Collection[str],
) -> ParsedName:
    """Split ``name`` into its fields or raise :class:`InvalidNameError` with the reason.

    >>> parse_name("B0001_DEFAULT.JPG", {"B"}, {"jpg"}).size is None
    True
    """
    if not isinstance(name, str):
        raise InvalidNameError(repr(name), "a name must be a string")
    if not name:
        raise InvalidNameError(name, "is empty")
    bad = _first_bad_character(name)
    if bad:
        raise InvalidNameError(name, bad)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidNameError(name, f"is longer than {MAX_NAME_BYTES} bytes")
    if name[0].isdigit():
        raise InvalidNameError(name, "starts with a digit; it must start with a category code (A-Z)")
    if not ("A" <= name[0] <= "Z"):
        raise InvalidNameError(name, "must start with an upper-case category code (1-4 letters A-Z)")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        raise InvalidNameError(name, "has no extension (expected e.g. '.jpg')")
    if not _EXT_RE.fullmatch(ext):
        raise InvalidNameError(name, f"extension {ext!r} must be 3-4 letters or digits")
    if "_" not in stem:
        raise InvalidNameError(name, "has no '_' between the folder and the rest of the name")
    folder, _, rest = stem.partition("_")
    match = _FOLDER_RE.fullmatch(folder)
    if match is None:
        raise InvalidNameError(
            name,
            f"folder {folder!r} must be a code (1-4 upper-case letters), digits, then optionally '-' and "
            "letters/digits/'-'",
        )
    code, serial = match.group("code"), match.group("serial")
    if not rest:
        raise InvalidNameError(name, "nothing after the first '_'")
    if not _REST_RE.fullmatch(rest):
        bad_chars = sorted({c for c in rest if not (c.isascii() and (c.isalnum() or c in "_-"))})
        raise InvalidNameError(name, f"{''.join(bad_chars)!r} not allowed after the first '_' (A-Z a-z 0-9 _ -)")
    if code not in category_codes:
        known = ", ".join(sorted(category_codes))
        raise InvalidNameError(name, f"unknown category code {code!r} (known: {known})")
    extension = ext.lower()
    if extension not in allowed_extensions:
        raise InvalidNameError(
            name, f"extension {extension!r} not allowed (allowed: {', '.join(sorted(allowed_extensions))})"
        )
    size = None
    size_match = _SIZE_RE.search(rest)
    if size_match:
        width, height = int(size_match.group("w")), int(size_match.group("h"))
        if width > 0 and height > 0:
            size = (width, height)
    return ParsedName(name, code, serial, folder, rest, size, extension, stem)


def _render_key(parsed: ParsedName, category: str, template: str) -> str:
    key = template.format(
        category=category,
        code=parsed.code,
        serial=parsed.serial,
        folder=parsed.folder,
        rest=parsed.rest,
        name=parsed.name,
        extension=parsed.extension,
        stem=parsed.stem,
    )
    segments = key.split("/")
    if key.startswith("/") or any(seg in {"", ".", ".."} for seg in segments):
        raise InvalidNameError(parsed.name, f"S3_KEY_TEMPLATE renders an unsafe key {key!r}")
    return key


class Resource:
    """A graphics resource named by the convention; every attribute is computed at creation.

    ``Resource(name)`` reads settings from the environment, as the original django_s3 class did;
    ``Resource(name, settings=...)`` takes them explicitly. Instances are immutable and hashable.
    """

    __slots__ = (
        "_no_url",
        "_url",
        "category",
        "code",
        "extension",
        "folder",
        "key",
        "name",
        "rest",
        "serial",
        "size",
    )
    #: The public fields, in the order ``as_dict`` gives them.
    FIELDS = ("name", "code", "serial", "folder", "rest", "size", "extension", "category", "key", "url")

    name: str
    code: str
    serial: str
    folder: str
    rest: str
    size: tuple[int, int] | None
    extension: str
    category: str
    key: str
    _url: str | None
    _no_url: ConfigurationError | None

    def __init__(self, name: str, settings: NamingRules | Settings | None = None) -> None:
        if settings is None:
            # Compatibility with the original API: Resource('name.jpg') with the default settings
            # (the environment, or Django's settings under s3sync.contrib.django). Imported here so
            # this module stays free of I/O at import time.
            from s3sync.settings import default_settings

            settings = default_settings()
        parsed = parse_name(name, settings.category_map.keys(), settings.allowed_extensions)
        category = settings.category_map[parsed.code]
        key = _render_key(parsed, category, settings.key_template)
        url: str | None = None
        no_url: ConfigurationError | None = None
        try:
            url = object_url(base_url(settings), key)
        except ConfigurationError as exc:  # parsing still works; asking for the URL says why there is none
            no_url = exc
        values: dict[str, Any] = {
            "name": parsed.name,
            "code": parsed.code,
            "serial": parsed.serial,
            "folder": parsed.folder,
            "rest": parsed.rest,
            "size": parsed.size,
            "extension": parsed.extension,
            "category": category,
            "key": key,
            "_url": url,
            "_no_url": no_url,
        }
        for attr, value in values.items():
            object.__setattr__(self, attr, value)

    def __setattr__(self, attr: str, value: object) -> None:
        raise AttributeError(f"Resource is read-only: cannot set {attr!r}")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError(f"Resource is read-only: cannot delete {attr!r}")

    @property
    def url(self) -> str:
        """The public URL (see :mod:`s3sync.publish`); :class:`ConfigurationError` when it cannot point anywhere."""
        if self._url is None:
            raise self._no_url or ConfigurationError("S3_BUCKET_NAME: not set", setting="S3_BUCKET_NAME")
        return self._url

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return (self.key, self._url) == (other.key, other._url)

    def __hash__(self) -> int:
        return hash((self.key, self._url))

    def __repr__(self) -> str:
        return f"Resource({self.name!r}, key={self.key!r})"

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, object]:
        """The fields as plain data, e.g. for ``s3sync check --json`` (``url`` None when there is none)."""
        return {attr: getattr(self, attr) for attr in Resource.FIELDS if attr != "url"} | {
            "size": list(self.size) if self.size else None,
            "url": self._url,
        }
