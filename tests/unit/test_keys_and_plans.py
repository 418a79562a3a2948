"""Pure logic: bucket keys to safe local paths, and the upload/mirror decisions."""

from __future__ import annotations

import fnmatch
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3sync.errors import UnsafeKeyError
from s3sync.paths import TEMP_PREFIX, key_to_relpath
from s3sync.plan import (
    IGNORED_PATTERNS,
    MAX_DOWNLOAD_RANGE,
    MAX_DOWNLOAD_RANGES,
    LocalStat,
    UploadAction,
    backoff_delay,
    download_range_size,
    is_ignored_name,
    plan_upload,
    ready_to_upload,
)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x.jpg",
        "a/../../x.jpg",
        "a/./b.jpg",
        "a//b.jpg",
        "a/",
        "a\\b.jpg",
        "a/\x00b.jpg",
        "a/\x1fb.jpg",
        "a/" + "x" * 256,
        "/".join(["d" * 200] * 20),
        f"a/{TEMP_PREFIX}123",
    ],
)
def test_unsafe_keys_rejected(key):
    """Keys that could escape the root or are not valid local paths raise UnsafeKeyError with a reason."""
    with pytest.raises(UnsafeKeyError) as info:
        key_to_relpath(key)
    assert info.value.reason


def test_safe_key_segments():
    """A normal key becomes its segments."""
    assert key_to_relpath("VASE/F0001/F0001_A.jpg") == ("VASE", "F0001", "F0001_A.jpg")


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200))
def test_no_key_escapes_the_root(key):
    """For any key: either UnsafeKeyError, or a path that stays strictly under the root."""
    try:
        segments = key_to_relpath(key)
    except UnsafeKeyError:
        return
    joined = os.path.normpath(os.path.join("/root", *segments))
    assert joined.startswith("/root/")
    assert ".." not in joined.split("/")
    assert "\x00" not in joined


def test_plan_upload_truth_table():
    """New -> upload; same stat -> skip; same size new mtime -> verify by hash; rejected unchanged -> ignore."""
    a, b = LocalStat(10, 1), LocalStat(10, 2)
    assert plan_upload(a, None, None) is UploadAction.UPLOAD
    assert plan_upload(a, "uploaded", a) is UploadAction.SKIP
    assert plan_upload(b, "uploaded", a) is UploadAction.VERIFY
    assert plan_upload(LocalStat(11, 1), "uploaded", a) is UploadAction.UPLOAD
    assert plan_upload(a, "rejected", a) is UploadAction.IGNORE_REJECTED
    assert plan_upload(b, "rejected", a) is UploadAction.UPLOAD


def test_ready_to_upload():
    """closed/moved are ready at once; other hints wait until unchanged for the settle time."""
    assert ready_to_upload(hint="closed", age_seconds=0, stable_seconds=0, settle_seconds=2)
    assert ready_to_upload(hint="moved", age_seconds=0, stable_seconds=0, settle_seconds=2)
    assert not ready_to_upload(hint="modified", age_seconds=1, stable_seconds=1.9, settle_seconds=2)
    assert ready_to_upload(hint="modified", age_seconds=0.1, stable_seconds=2.0, settle_seconds=2)
    assert ready_to_upload(hint="scan", age_seconds=3, stable_seconds=0, settle_seconds=2)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200), st.floats(0.01, 10), st.floats(0.1, 1000), st.integers(0, 2**32))
def test_backoff_bounds(attempt, base, cap, seed):
    """Each delay is between half and all of min(cap, base * 2**(attempt-1)), never above the cap."""
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    exp = min(cap, base * 2 ** min(attempt - 1, 60))
    assert exp / 2 - 1e-9 <= delay <= exp + 1e-9
    assert delay <= cap + 1e-9


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        (".hidden.jpg", True),
        ("B0001_A.jpg.part", True),
        ("x.tmp", True),
        ("x.crdownload", True),
        ("B0001_A.jpg~", True),
        ("x.swp", True),
        (f"{TEMP_PREFIX}abc", True),
        ("B0001_A.jpg", False),
    ],
)
def test_ignored_names(name, ignored):
    """Hidden and temporary names are ignored by the watcher."""
    assert is_ignored_name(name) is ignored


@given(
    st.text(alphabet=st.sampled_from("ab._~-\n" + TEMP_PREFIX), max_size=12)
    | st.builds(lambda a, b: a + b, st.text(max_size=6), st.sampled_from([".part", ".tmp", ".swp", "~", ".crdownload"]))
    | st.text()
)
def test_ignored_names_match_the_glob_patterns(name):
    """The compiled check says exactly what the documented glob patterns say, for any name."""
    expected = any(fnmatch.fnmatchcase(name, pat) for pat in IGNORED_PATTERNS)
    assert is_ignored_name(name) is expected


MIB = 1024 * 1024


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 5 * 1024**4), st.integers(5, 5 * 1024).map(lambda m: m * MIB), st.integers(1, 128))
def test_download_ranges_are_whole_mebibytes_between_the_chunk_size_and_the_cap(size, chunksize, workers):
    """A range is never below S3_MULTIPART_CHUNKSIZE, never above the cap unless the chunk size is."""
    r = download_range_size(size, chunksize, workers)
    assert r >= chunksize
    assert -(-size // r) <= MAX_DOWNLOAD_RANGES  # a bounded number of requests and futures
    if size <= MAX_DOWNLOAD_RANGES * MAX_DOWNLOAD_RANGE:
        assert r <= max(chunksize, MAX_DOWNLOAD_RANGE)
        assert r % MIB == 0
    if chunksize < r < MAX_DOWNLOAD_RANGE:
        # between the bounds: at most two ranges per worker, and every worker has one
        assert workers <= -(-size // r) <= 2 * workers


@pytest.mark.parametrize(
    ("size", "chunksize", "workers", "expected"),
    [
        (512 * MIB, 8 * MIB, 8, 32 * MIB),  # the benchmark's object: 16 ranges for 8 workers
        (512 * MIB, 8 * MIB, 4, 64 * MIB),
        (64 * MIB, 8 * MIB, 8, 8 * MIB),  # small objects keep the configured chunk size
        (50 * 1024 * MIB, 8 * MIB, 8, MAX_DOWNLOAD_RANGE),  # capped: a failed range costs little to fetch again
        (512 * MIB, 100 * MIB, 8, 100 * MIB),  # a larger S3_MULTIPART_CHUNKSIZE wins
        (5 * 1024**4, 8 * MIB, 8, -(-5 * 1024**4 // 10_000)),  # 5 TiB: 10,000 ranges, not 81,920
    ],
)
def test_download_range_examples(size, chunksize, workers, expected):
    assert download_range_size(size, chunksize, workers) == expected
