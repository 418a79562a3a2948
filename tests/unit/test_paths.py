"""Pure logic: which bucket keys may become local paths (format characters, conflicts)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.errors import UnsafeKeyError
from s3sync.paths import PathClaims, key_to_relpath


@pytest.mark.parametrize(
    "char",
    ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200b", "\u200e", "\u200f", "\ufeff", "\u00ad"],
)
def test_format_characters_make_a_key_unsafe(char):
    """A bidirectional override, isolate, mark, zero-width space, BOM or soft hyphen makes the key unsafe."""
    with pytest.raises(UnsafeKeyError) as info:
        key_to_relpath(f"VASE/F0001/F0001_{char}gpj.exe")
    assert "format character" in info.value.reason
    assert f"U+{ord(char):04X}" in info.value.reason


@pytest.mark.parametrize("char", ["\u3164", "\u115f", "\u1160", "\uffa0"])
def test_invisible_fillers_make_a_key_unsafe(char):
    """Hangul fillers are letters that display as nothing: 'a\u3164.jpg' looks like 'a.jpg'."""
    with pytest.raises(UnsafeKeyError) as info:
        key_to_relpath(f"VASE/F0001/F0001_A{char}.jpg")
    assert f"U+{ord(char):04X}" in info.value.reason


def test_other_non_ascii_keys_stay_safe():
    """Accented letters, CJK and emoji are ordinary names."""
    for key in ("VASE/é/café.jpg", "写真/花.png", "a/🌸.jpg"):
        assert key_to_relpath(key) == tuple(key.split("/"))


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_no_safe_key_holds_a_format_or_control_character(key):
    """For any key: either UnsafeKeyError, or no character of category Cc, Cf or Cs in its segments."""
    try:
        segments = key_to_relpath(key)
    except UnsafeKeyError:
        return
    assert all(unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"} for seg in segments for ch in seg)


def test_claims_first_listed_key_wins():
    """'a' then 'a/b': the file keeps the path; 'a/b' then 'a': the folder keeps it."""
    claims = PathClaims()
    assert claims.claim(("a",)) is None
    assert claims.claim(("a", "b")) is not None
    other = PathClaims()
    assert other.claim(("a", "b")) is None
    assert other.claim(("a",)) is not None
    assert other.claim(("a", "c")) is None
