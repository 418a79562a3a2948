"""SIGKILL the daemon at random moments, restart it, and check that nothing is lost or duplicated."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from s3sync.paths import TEMP_PREFIX
from s3sync.plan import is_probe_key
from s3sync.resource import Resource
from s3sync.transport import make_client
from tests.integration.daemon_helpers import wait_for
from tests.integration.test_cli import env_for

SEED = 20261124
MIB = 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(420)  # 20 restarts and 304 files: about 30 s alone, several times that beside the suite
def test_sigkill_loop_loses_nothing(make_settings, tmp_path):
    """300+ files (some multipart), 20 SIGKILLs at random moments: every file ends in the bucket once, intact."""
    rng = random.Random(SEED)
    settings = make_settings(
        after_upload="delete",
        mirror_interval=1,
        settle_seconds=0.2,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
        retry_base=0.1,
        retry_cap=0.5,
    )
    env = env_for(settings, S3_LOG_FORMAT="json", S3_LOG_LEVEL="warning")
    expected: dict[str, bytes] = {}
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"B{i:05d}_CRASH_{i % 7 + 1}x{i % 5 + 1}.jpg" for i in range(300)]
    names += [f"PP{i:03d}_LARGE.png" for i in range(4)]
    for name in names:
        size = 11 * MIB + rng.randrange(1000) if name.startswith("PP") else rng.randrange(0, 40_000)
        data = rng.randbytes(size)
        expected[Resource(name, settings=settings).key] = hashlib.sha256(data).digest()
        (staging / name).write_bytes(data)
    pending = list(names)
    checked: set[str] = set()
    kills = 0
    while kills < 20:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3sync", "run"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Feed a few files in while it runs, so kills land mid-upload as well as mid-mirror.
            batch, pending = pending[:20], pending[20:]
            for name in batch:
                os.replace(staging / name, settings.upload_dir_path / name)
            time.sleep(rng.uniform(0.3, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        kills += 1
        # The delete policy may only have removed files whose objects are confirmed intact.
        check_deleted_files_are_in_bucket(settings, expected, names, staging, checked)
    for name in pending:
        os.replace(staging / name, settings.upload_dir_path / name)
    final_env = {**env, "S3_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3sync", "run"],
        env=final_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    # Read the daemon's log all along: a full pipe would block its logging, and with it the daemon.
    tail: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stderr or ():
            tail.append(line)
            if '"daemon.ready"' in line:
                ready.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout=60), "the daemon never became ready"  # its signal handlers are installed
        try:
            wait_for(lambda: not any(settings.upload_dir_path.iterdir()), timeout=240, interval=0.5)
        except AssertionError:
            left = sorted(str(p.relative_to(settings.upload_dir_path)) for p in settings.upload_dir_path.rglob("*"))
            raise AssertionError(f"left in the upload folder: {left[:20]}; log: {''.join(tail[-30:])}") from None
        wait_for(lambda: mirror_complete(settings, expected), timeout=120, interval=0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stderr.close()
    assert proc.returncode == 0, "".join(tail[-20:])
    found = bucket_hashes(settings)
    # A kill inside the conditional-writes probe may leave its empty probe object (swept by a
    # later probe once an hour old); it is s3sync's own, under a prefix no mirror copies.
    probes = {k for k in found if is_probe_key(k)}
    assert len(probes) <= 1, sorted(probes)
    assert {k: v for k, v in found.items() if k not in probes} == expected
    client = make_client(settings)
    assert client.list_multipart_uploads(Bucket=settings.require_bucket()).get("Uploads", []) == []
    db = sqlite3.connect(settings.state_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        left = db.execute("SELECT * FROM multipart").fetchall()
        assert left == [], "".join(line for line in tail if "multipart" in line)[-3000:]
    finally:
        db.close()
    leftovers = [p for p in settings.local_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []


def bucket_hashes(settings) -> dict[str, bytes]:
    """SHA-256 of every object in the bucket."""
    client = make_client(settings)
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.require_bucket()):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=settings.require_bucket(), Key=o["Key"])["Body"].read()
            out[o["Key"]] = hashlib.sha256(body).digest()
    return out


def check_deleted_files_are_in_bucket(settings, expected, names, staging, checked: set[str]) -> None:
    """Every file that left the upload folder (deleted by the policy) is in the bucket with its bytes.

    Files in ``checked`` were found deleted and intact after an earlier kill: nothing uploads
    them again, so they are not fetched again (each later check fetches only the newly gone).
    """
    present = {p.name for p in settings.upload_dir_path.iterdir()}
    gone = set(names) - set(os.listdir(staging)) - present - checked
    checked.update(gone)
    client = make_client(settings)
    for name in sorted(gone):
        key = Resource(name, settings=settings).key
        body = client.get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == expected[key], f"{name} deleted but its object differs"


def mirror_complete(settings, expected) -> bool:
    """The mirror folder holds every object, complete."""
    for key, digest in expected.items():
        path = settings.local_path / key
        try:
            if hashlib.sha256(path.read_bytes()).digest() != digest:
                return False
        except FileNotFoundError:
            return False
    return True
