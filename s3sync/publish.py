"""Publishing for the web: the URLs a shop serves, presigned URLs, and the headers objects carry.

Three URL forms, chosen by the settings (pure: no network, no clock)::

    S3_PUBLIC_BASE_URL=https://cdn.example.com/   https://cdn.example.com/<key>       (a CDN or custom domain)
    S3_URL_STYLE=path       (default)             <S3_AWS_BASE_URL><bucket>/<key>     (the original django_s3 form)
    S3_URL_STYLE=virtual                          https://<bucket>.<host of S3_AWS_BASE_URL>/<key>

A URL needs somewhere to point: with neither ``S3_PUBLIC_BASE_URL`` nor ``S3_BUCKET_NAME``,
asking for one raises :class:`~s3sync.errors.ConfigurationError` instead of returning a link
that cannot work.

>>> from s3sync.settings import Settings
>>> s = Settings(_env_file=None, bucket_name="pics", url_style="virtual")
>>> object_url(base_url(s), "CLIPPING-FLOWER/CF0001/CF0001_A 1.jpg")
'https://pics.s3.amazonaws.com/CLIPPING-FLOWER/CF0001/CF0001_A%201.jpg'

Uploads carry :func:`object_headers` (``x-amz-acl`` from ``S3_DEFAULT_ACL``, ``Cache-Control``
from ``S3_CACHE_CONTROL``). A bucket whose ACLs are disabled (S3 Object Ownership "bucket owner
enforced", the default for new AWS buckets since April 2023) refuses an ACL with
``AccessControlListNotSupported``: :func:`acl_not_supported` is the one error for it, which
points to the bucket-policy route. :func:`check_public` fetches a URL anonymously to tell
whether the world can read it.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from s3sync.errors import AclNotSupportedError, ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "CANNED_ACLS",
    "MAX_PRESIGN_SECONDS",
    "URL_STYLES",
    "PublicCheck",
    "UrlRules",
    "acl_not_supported",
    "base_url",
    "boto3_object_params",
    "check_public",
    "object_headers",
    "object_url",
    "presigned_url",
]

#: The canned ACLs S3 accepts on PutObject (``x-amz-acl``).
CANNED_ACLS: Final = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
URL_STYLES: Final = ("path", "virtual")
#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS: Final = 7 * 24 * 3600

#: The HTTP header -> boto3 parameter names of :func:`object_headers`.
_BOTO3_NAMES: Final = {"x-amz-acl": "ACL", "Cache-Control": "CacheControl"}


class UrlRules(Protocol):
    """What URL building needs from settings (a :class:`~s3sync.settings.Settings` fits)."""

    @property
    def aws_base_url(self) -> str: ...
    @property
    def bucket_name(self) -> str | None: ...


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def base_url(rules: UrlRules) -> str:
    """The root every public URL starts with (ends in ``/``); a key is appended to it.

    Raises :class:`ConfigurationError` when there is nothing to point at (no CDN root, no bucket).

    >>> from s3sync.settings import Settings
    >>> base_url(Settings(_env_file=None, bucket_name="pics"))
    'https://s3.amazonaws.com/pics/'
    >>> base_url(Settings(_env_file=None, public_base_url="https://cdn.example.com"))
    'https://cdn.example.com/'
    """
    public = getattr(rules, "public_base_url", None)
    if public:
        return _slash(public)
    bucket = rules.bucket_name
    if not bucket:
        raise ConfigurationError(
            "S3_BUCKET_NAME: not set, so a resource has no URL (set S3_BUCKET_NAME, or S3_PUBLIC_BASE_URL "
            "for a CDN or custom domain)",
            setting="S3_BUCKET_NAME",
        )
    base = _slash(rules.aws_base_url)
    if getattr(rules, "url_style", "path") == "virtual":
        parts = urllib.parse.urlsplit(base)
        return urllib.parse.urlunsplit((parts.scheme, f"{bucket}.{parts.netloc}", parts.path, "", ""))
    return f"{base}{urllib.parse.quote(bucket, safe='')}/"


def object_url(base: str, key: str) -> str:
    """``base`` + the key, percent-encoded except for ``/`` (``a b.jpg`` -> ``a%20b.jpg``)."""
    return base + urllib.parse.quote(key, safe="/")


# --- upload headers ---------------------------------------------------------------------------
class ObjectRules(Protocol):
    """What upload headers need from settings."""

    @property
    def default_acl(self) -> str | None: ...
    @property
    def cache_control(self) -> str | None: ...


def object_headers(rules: ObjectRules) -> dict[str, str]:
    """The HTTP headers every PutObject and CreateMultipartUpload carries (may be empty).

    >>> from s3sync.settings import Settings
    >>> object_headers(Settings(_env_file=None, default_acl="public-read", cache_control="max-age=86400"))
    {'x-amz-acl': 'public-read', 'Cache-Control': 'max-age=86400'}
    """
    headers: dict[str, str] = {}
    if rules.default_acl:
        headers["x-amz-acl"] = rules.default_acl
    if rules.cache_control:
        headers["Cache-Control"] = rules.cache_control
    return headers


def boto3_object_params(headers: Mapping[str, str]) -> dict[str, str]:
    """:func:`object_headers` as boto3 parameters (``ACL``, ``CacheControl``)."""
    return {_BOTO3_NAMES[name]: value for name, value in headers.items()}


def acl_not_supported(bucket: str, key: str | None) -> AclNotSupportedError:
    """The one error for a bucket that refuses ACLs, with the way out."""
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    return AclNotSupportedError(
        f"PUT {where}: the bucket does not accept ACLs (AccessControlListNotSupported: its Object Ownership is "
        "'bucket owner enforced'), so S3_DEFAULT_ACL cannot apply; unset S3_DEFAULT_ACL and make the "
        "objects public with a bucket policy (s3:GetObject for Principal '*', and Block Public Access off for "
        "policies), or serve them through a CDN with S3_PUBLIC_BASE_URL",
        bucket=bucket,
        key=key,
        code="AccessControlListNotSupported",
    )


# --- presigned URLs ----------------------------------------------------------------------------
def presigned_url(client: S3Client, bucket: str, key: str, *, expires: int = 3600) -> str:
    """A GET URL for a private object, valid ``expires`` seconds (1 s to 7 days), signed by boto3."""
    if isinstance(expires, bool) or not isinstance(expires, int) or not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires must be whole seconds from 1 to {MAX_PRESIGN_SECONDS} (7 days), not {expires!r}")
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires, HttpMethod="GET"
    )
    return url


# --- the anonymous check -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublicCheck:
    """What an anonymous GET of a public URL answered."""

    url: str
    status: int | None
    error: str | None = None
    content_type: str | None = None
    cache_control: str | None = None

    @property
    def public(self) -> bool:
        """True when anyone can read the object (2xx without credentials)."""
        return self.status is not None and 200 <= self.status < 300

    def explain(self) -> str:
        """One line: whether the world can read it, and why not."""
        if self.public:
            return f"public: HTTP {self.status} for anyone"
        if self.status is None:
            return f"unknown: {self.error}"
        if self.status == 403:
            return (
                "private: HTTP 403 for anyone (set S3_DEFAULT_ACL=public-read before uploading, or a bucket policy "
                "granting s3:GetObject to everyone)"
            )
        if self.status == 404:
            return "missing: HTTP 404 (no such object at this URL; check S3_PUBLIC_BASE_URL / S3_URL_STYLE)"
        return f"not readable: HTTP {self.status}"


def check_public(url: str, *, timeout: float = 10.0, context: Any = None) -> PublicCheck:
    """GET ``url`` with no credentials (only the first byte is asked for) and report the answer.

    Redirects are not followed: a CDN or S3 answering 301/307 is reported as is.
    """
    parts = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target or "/", headers={"Range": "bytes=0-0", "User-Agent": "s3sync publish-check"})
        resp = conn.getresponse()
        resp.read()
        return PublicCheck(url, resp.status, None, resp.getheader("Content-Type"), resp.getheader("Cache-Control"))
    except (OSError, http.client.HTTPException) as exc:
        return PublicCheck(url, None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
