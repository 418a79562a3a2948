"""The resource naming convention: examples from the issue and hypothesis properties."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3sync.errors import InvalidNameError
from s3sync.paths import key_to_relpath
from s3sync.resource import Resource
from s3sync.settings import DEFAULT_CATEGORY_MAP, Settings

SETTINGS = Settings(_env_file=None, bucket_name="pictures")


@pytest.mark.parametrize(
    ("name", "code", "folder", "size", "category"),
    [
        ("F0001-B0001_320x320.SVG", "F", "F0001-B0001", (320, 320), "VASE"),
        ("CR01-047_B0001_320x320.JPG", "CR", "CR01-047", (320, 320), "CATALOGUE-PRODUCT"),
        ("B0001_DEFAULT.JPG", "B", "B0001", None, "BACKGROUND"),
        ("PP0001_00000_0000.jpg", "PP", "PP0001", None, "PERSONALIZED-PRODUCT"),
        ("F001-1_WHITE_70x70.JPG", "F", "F001-1", (70, 70), "VASE"),
        ("CF0001-B0001_WHITE_320x320.jpg", "CF", "CF0001-B0001", (320, 320), "CLIPPING-FLOWER"),
    ],
)
def test_valid_examples(name, code, folder, size, category):
    """The issue's valid names parse into the expected fields."""
    r = Resource(name, settings=SETTINGS)
    assert (r.code, r.folder, r.size, r.category) == (code, folder, size, category)
    assert r.extension == name.rsplit(".", 1)[1].lower()
    assert r.key == f"{category}/{folder}/{name}"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("03323_12331-230x234.jpg", "starts with a digit"),
        (" F0001_X.jpg", "space"),
        ("_3323_1.jpg", "upper-case category code"),
        ("FF0332312331-230x234.jpg", "no '_'"),
        ("fF033_1.jpg", "upper-case category code"),
        ("FF03323_123:31-230x234.jpg", "':' not allowed"),
        ("CF0001_TRANSP_676x566", "no extension"),
        ("XY0001_A.jpg", "unknown category code 'XY'"),
        ("B0001_A.exe", "extension 'exe' not allowed"),
        ("B0001_A/B.jpg", "path separator"),
        ("B0001_\u00e9.jpg", "non-ASCII"),
        ("B0001_A\x07.jpg", "control character"),
        ("B" + "0" * 300 + "_A.jpg", "longer than 255 bytes"),
        ("B0001_.jpg", "nothing after the first '_'"),
    ],
)
def test_rejected_examples(name, reason):
    """Each invalid name raises InvalidNameError whose reason says what is wrong."""
    with pytest.raises(InvalidNameError) as info:
        Resource(name, settings=SETTINGS)
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_read_only_attributes():
    """Every attribute is computed at creation and cannot be set or deleted."""
    r = Resource("B0001_DEFAULT.JPG", settings=SETTINGS)
    for attr in ("name", "code", "serial", "folder", "rest", "size", "extension", "category", "key", "url"):
        with pytest.raises(AttributeError):
            setattr(r, attr, "x")
    with pytest.raises(AttributeError):
        del r.key


def test_url_quotes_key_and_uses_base():
    """url is S3_AWS_BASE_URL + bucket + '/' + the URL-quoted key."""
    s = Settings(
        _env_file=None,
        bucket_name="pics",
        aws_base_url="https://cdn.example.com",
        key_template="{category}/{folder} x/{name}",
    )
    r = Resource("CM0001_A_1x1.png", settings=s)
    assert r.url == "https://cdn.example.com/pics/COMPOSITION/CM0001%20x/CM0001_A_1x1.png"


def test_serial_keeps_leading_zeros_and_rest():
    """serial keeps its leading zeros; rest is everything after the first '_'."""
    r = Resource("CF0007-B0001_WHITE_320x320.jpg", settings=SETTINGS)
    assert r.serial == "0007"
    assert r.rest == "WHITE_320x320"


def test_resource_from_environment(monkeypatch, tmp_path):
    """Resource(name) reads settings from the environment, as the original did."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_BUCKET_NAME", "envbucket")
    monkeypatch.setenv("S3_CATEGORY_MAP", '{"ZZ": "ZEDS"}')
    monkeypatch.setenv("S3_KEY_TEMPLATE", "{category}/{name}")
    r = Resource("ZZ01_A.png")
    assert r.key == "ZEDS/ZZ01_A.png"
    assert r.url.endswith("/envbucket/ZEDS/ZZ01_A.png")


def test_equal_resources_hash_alike():
    """Two Resources of the same name and settings are equal and hash alike."""
    assert Resource("B0001_A.jpg", settings=SETTINGS) == Resource("B0001_A.jpg", settings=SETTINGS)
    assert len({Resource("B0001_A.jpg", settings=SETTINGS), Resource("B0001_A.jpg", settings=SETTINGS)}) == 1


# --- properties -------------------------------------------------------------------------------
codes = st.sampled_from(sorted(DEFAULT_CATEGORY_MAP))
alnum = string.ascii_letters + string.digits
extensions = st.sampled_from(sorted(SETTINGS.allowed_extensions)).flatmap(
    lambda e: st.sampled_from([e, e.upper(), e.capitalize()])
)


@st.composite
def valid_names(draw: st.DrawFn) -> tuple[str, str, str, tuple[int, int] | None]:
    code = draw(codes)
    serial = draw(st.text(string.digits, min_size=1, max_size=8))
    suffix = draw(st.one_of(st.just(""), st.text(alnum + "-", min_size=1, max_size=10).map(lambda s: "-" + s)))
    rest = draw(st.text(alnum + "_-", min_size=1, max_size=30))
    size = draw(st.one_of(st.none(), st.tuples(st.integers(1, 9999), st.integers(1, 9999))))
    if size is not None:
        rest = f"{rest}{draw(st.sampled_from('_-'))}{size[0]}x{size[1]}"
    ext = draw(extensions)
    return f"{code}{serial}{suffix}_{rest}.{ext}", code, f"{code}{serial}{suffix}", size


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_names())
def test_every_valid_name_parses(case):
    """No name built from the grammar is rejected; its fields come back as built."""
    name, code, folder, size = case
    r = Resource(name, settings=SETTINGS)
    assert r.code == code
    assert r.folder == folder
    if size is not None:
        assert r.size == size
    assert r.extension == name.rsplit(".", 1)[1].lower()


@settings(max_examples=300, deadline=None)
@given(valid_names())
def test_key_round_trips_and_stays_in_category(case):
    """The key's last segment parses back to the same key; keys are relative, '..'-free, under the category."""
    r = Resource(case[0], settings=SETTINGS)
    assert Resource(r.key.rsplit("/", 1)[1], settings=SETTINGS).key == r.key
    assert not r.key.startswith("/")
    assert ".." not in r.key.split("/")
    assert r.key.startswith(r.category + "/")
    key_to_relpath(r.key)  # a safe local path too


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_crashes(text):
    """Any text either parses into a safe key under its category, or raises InvalidNameError."""
    try:
        r = Resource(text, settings=SETTINGS)
    except InvalidNameError as exc:
        assert exc.reason
        return
    assert r.key.startswith(r.category + "/")
    key_to_relpath(r.key)
