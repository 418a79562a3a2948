"""Shared pieces of the upload race tests (issue 17): settings, keys, hashes, proxy matchers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from s3sync.resource import Resource
from s3sync.settings import Settings
from tests.integration.daemon_helpers import list_keys, object_bytes

#: A daemon that settles, retries and stops quickly, with no mirror and no periodic rescan.
FAST = {
    "settle_seconds": 0.5,
    "mirror_interval": 0,
    "retry_base": 0.1,
    "retry_cap": 0.5,
    "shutdown_timeout": 5,
    "rescan_interval": 3600,
}
MIB = 1024 * 1024
#: Files of 5 MiB and more go up in 5 MiB parts.
MULTIPART = {"multipart_threshold": 5 * MIB, "multipart_chunksize": 5 * MIB}

Matcher = Callable[[str, str, Mapping[str, str]], bool]


def key_of(settings: Settings, name: str) -> str:
    """The bucket key of a file named ``name``."""
    return Resource(name, settings=settings).key


def sha(data: bytes | None) -> str | None:
    """SHA-256 hex of ``data`` (None for None)."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def every_object(settings: Settings) -> dict[str, bytes]:
    """Every object of the bucket, by key."""
    return {k: object_bytes(settings, k) or b"" for k in list_keys(settings)}


def put_to(key: str) -> Matcher:
    """A proxy match for PUTs to ``key`` (part uploads included)."""

    def match(m: str, target: str, headers: Mapping[str, str]) -> bool:
        return m == "PUT" and key in target

    return match


def part_of(key: str, number: int) -> Matcher:
    """A proxy match for the upload of part ``number`` of ``key``."""

    def match(m: str, target: str, headers: Mapping[str, str]) -> bool:
        return m == "PUT" and key in target and f"partNumber={number}&" in target + "&"

    return match
