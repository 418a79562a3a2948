"""Pure publishing logic: the URL forms, upload headers, and the settings that drive them."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3sync.errors import ConfigurationError
from s3sync.publish import base_url, boto3_object_params, object_headers, object_url
from s3sync.resource import Resource
from s3sync.settings import Settings, load_settings

NAME = "CF0001_WHITE_320x320.jpg"
KEY = "CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg"


def _s(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_path_style_is_the_original_form() -> None:
    """Default: S3_AWS_BASE_URL + bucket + / + key, exactly what django_s3 rendered."""
    assert Resource(NAME, _s(bucket_name="pics")).url == f"https://s3.amazonaws.com/pics/{KEY}"


def test_virtual_hosted_form() -> None:
    """S3_URL_STYLE=virtual puts the bucket in the host name, keeping the base's scheme, port and path."""
    assert Resource(NAME, _s(bucket_name="pics", url_style="virtual")).url == f"https://pics.s3.amazonaws.com/{KEY}"
    regional = _s(bucket_name="pics", url_style="virtual", aws_base_url="https://s3.eu-west-1.amazonaws.com")
    assert Resource(NAME, regional).url == f"https://pics.s3.eu-west-1.amazonaws.com/{KEY}"
    custom = _s(bucket_name="pics", url_style="virtual", aws_base_url="http://s3.local:9000/")
    assert base_url(custom) == "http://pics.s3.local:9000/"


def test_cdn_root_replaces_bucket_and_base() -> None:
    """S3_PUBLIC_BASE_URL wins over both forms: CDN root + key, no bucket segment."""
    s = _s(bucket_name="pics", url_style="virtual", public_base_url="https://cdn.example.com")
    assert Resource(NAME, s).url == f"https://cdn.example.com/{KEY}"


def test_no_bucket_no_url() -> None:
    """Without a bucket or CDN root the URL is an error naming the setting, not a broken link."""
    res = Resource(NAME, _s())
    assert res.key == KEY  # parsing still works
    with pytest.raises(ConfigurationError) as info:
        _ = res.url
    assert info.value.setting == "S3_BUCKET_NAME"
    assert "S3_PUBLIC_BASE_URL" in str(info.value)


def test_urls_follow_a_custom_endpoint() -> None:
    """With S3_ENDPOINT_URL and no S3_AWS_BASE_URL, URLs point at that endpoint, not at AWS."""
    s = _s(bucket_name="pics", endpoint_url="http://127.0.0.1:9000")
    assert Resource(NAME, s).url == f"http://127.0.0.1:9000/pics/{KEY}"
    explicit = _s(bucket_name="pics", endpoint_url="http://127.0.0.1:9000", aws_base_url="https://img.example.com/")
    assert Resource(NAME, explicit).url == f"https://img.example.com/pics/{KEY}"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("S3_PUBLIC_BASE_URL", "cdn.example.com", "http:// or https://"),
        ("S3_PUBLIC_BASE_URL", "https://user:pw@cdn.example.com/", "no user:password@"),
        ("S3_PUBLIC_BASE_URL", "https://cdn.example.com/?v=1", "no ?query"),
        ("S3_URL_STYLE", "subdomain", "S3_URL_STYLE"),
        ("S3_DEFAULT_ACL", "public", "S3_DEFAULT_ACL"),
        ("S3_CACHE_CONTROL", "max-age=1\r\nX-Evil: 1", "printable ASCII"),
    ],
)
def test_bad_values_are_one_clear_line(name: str, value: str, fragment: str) -> None:
    """Each new setting refuses a bad value with one line that names it."""
    with pytest.raises(ConfigurationError) as info:
        load_settings(None, environ={}, **{name.removeprefix("S3_").lower(): value})
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert fragment in message
    assert "\n" not in message


def test_virtual_style_with_dotted_bucket_on_aws_https_is_refused() -> None:
    """A dotted bucket breaks TLS for *.s3.amazonaws.com: refused at start, not a broken link later."""
    with pytest.raises(ConfigurationError, match="dots"):
        load_settings(None, bucket_name="img.shop.example", url_style="virtual")
    assert base_url(_s(bucket_name="img.shop.example")) == "https://s3.amazonaws.com/img.shop.example/"


def test_object_headers() -> None:
    """ACL and Cache-Control become headers (and boto3 parameters); unset ones are absent."""
    assert object_headers(_s()) == {}
    headers = object_headers(_s(default_acl="public-read", cache_control="public, max-age=31536000, immutable"))
    assert headers == {"x-amz-acl": "public-read", "Cache-Control": "public, max-age=31536000, immutable"}
    assert boto3_object_params(headers) == {"ACL": "public-read", "CacheControl": "public, max-age=31536000, immutable"}
    assert object_headers(_s(default_acl="", cache_control=" ")) == {}


_KEY_CHARS = st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters="\x7f")
keys = st.lists(st.text(_KEY_CHARS, min_size=1, max_size=12), min_size=1, max_size=5).map("/".join)
bases = st.sampled_from(
    ["https://s3.amazonaws.com/pics/", "https://cdn.example.com/", "http://127.0.0.1:9000/b/", "https://x.y/p/q/"]
)


@given(base=bases, key=keys)
def test_object_url_round_trips(base: str, key: str) -> None:
    """Any key: the URL is the base + a percent-encoding that decodes back to the key, with no space or '?'/'#'."""
    url = object_url(base, key)
    assert url.startswith(base)
    tail = url[len(base) :]
    assert urllib.parse.unquote(tail) == key
    assert not any(ch in tail for ch in " ?#\n")
    assert tail.isascii()
    assert urllib.parse.urlsplit(url).path.endswith(urllib.parse.quote(key.split("/")[-1], safe=""))


bucket_names = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)


@given(bucket=bucket_names, style=st.sampled_from(["path", "virtual"]))
def test_every_form_ends_in_slash_and_names_the_bucket_once(bucket: str, style: str) -> None:
    """The base of either style ends in '/', and the bucket appears exactly once (host or path)."""
    base = base_url(_s(bucket_name=bucket, url_style=style))
    assert base.endswith("/")
    parts = urllib.parse.urlsplit(base)
    where = parts.netloc.split(".") if style == "virtual" else parts.path.strip("/").split("/")
    assert where.count(bucket) == 1
    assert parts.scheme == "https"


def test_acl_error_is_one_actionable_line() -> None:
    """AccessControlListNotSupported becomes an exported UploadError (exit 2) that names the way out."""
    import s3sync
    from s3sync.publish import acl_not_supported

    exc = acl_not_supported("shop", "CLIPPING-FLOWER/CF0001/x.jpg")
    assert isinstance(exc, s3sync.AclNotSupportedError)
    assert isinstance(exc, s3sync.UploadError)
    assert exc.exit_code == 2
    text = str(exc)
    assert text.startswith("PUT s3://shop/CLIPPING-FLOWER/CF0001/x.jpg: ")
    assert "bucket policy" in text
    assert "S3_PUBLIC_BASE_URL" in text
    assert "\n" not in text
