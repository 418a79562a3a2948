"""`s3sync check` and `s3sync publish-check`, run as real subprocesses (80 columns, a real moto_server)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from s3sync.settings import Settings
from s3sync.transport import Transport
from tests.integration.test_cli import env_for, s3sync
from tests.support.servers import S3Server

LONG = "CF0001-B0001-VERYLONGNAME_WHITE_EXTRA_LONG_320x320.jpg"


def test_check_wraps_the_whole_url_at_80_columns(tmp_path: Path) -> None:
    """In 80 columns `check` folds a long URL over several rows: every character is there, no '…'."""
    bucket = "a-very-long-bucket-name-for-the-shop-images"
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")} | {
        "COLUMNS": "80",
        "S3_BUCKET_NAME": bucket,
    }
    r = s3sync("check", LONG, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in r.stdout
    start = next(i for i, line in enumerate(lines) if line.split("│")[1:2] == [" url       "])
    pieces = []
    for line in lines[start:]:
        cells = line.split("│")
        if len(cells) < 3 or (pieces and cells[1].strip()):
            break
        pieces.append(cells[2].strip())
    expected = f"https://s3.amazonaws.com/{bucket}/CLIPPING-FLOWER/CF0001-B0001-VERYLONGNAME/{LONG}"
    assert "".join(pieces) == expected
    assert len(pieces) > 1  # it did have to wrap


def test_check_without_bucket_says_why_there_is_no_url(tmp_path: Path) -> None:
    """`check` still parses names with no bucket set, and says what would give them a URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")} | {"COLUMNS": "80"}
    r = s3sync("check", "CF0001_A.jpg", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "set S3_BUCKET_NAME, or S3_PUBLIC_BASE_URL" in r.stdout
    as_json = s3sync("check", "--json", "CF0001_A.jpg", env=env, cwd=tmp_path)
    assert json.loads(as_json.stdout)[0]["url"] is None


def test_publish_check_tells_public_from_private(moto_only_server: S3Server, tmp_path: Path) -> None:
    """publish-check: exit 0 for a public-read object, 1 with 'private' and the way out for a private one."""
    bucket = moto_only_server.create_bucket(f"pc-{uuid.uuid4().hex[:12]}")
    settings = Settings(
        _env_file=None,
        bucket_name=bucket,
        endpoint_url=moto_only_server.endpoint,
        aws_access_key_id=moto_only_server.access_key,
        aws_secret_access_key=moto_only_server.secret_key,
        region=moto_only_server.region,
        local_path=tmp_path / "mirror",
        upload_dir_path=tmp_path / "upload",
        state_path=tmp_path / "state.db",
    )
    settings.upload_dir_path.mkdir()
    (settings.upload_dir_path / "CF0001_PUBLIC.jpg").write_bytes(b"public bytes")
    (settings.upload_dir_path / "CF0001_PRIVATE.jpg").write_bytes(b"private bytes")
    with Transport(settings.model_copy(update={"default_acl": "public-read"})) as transport:
        transport.upload("CF0001_PUBLIC.jpg")
    with Transport(settings) as transport:
        transport.upload("CF0001_PRIVATE.jpg")
    env = env_for(settings)
    ok = s3sync("publish-check", "CF0001_PUBLIC.jpg", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("CF0001_PUBLIC.jpg: public: HTTP 206")
    assert f"{moto_only_server.endpoint}/{bucket}/CLIPPING-FLOWER/CF0001/CF0001_PUBLIC.jpg" in ok.stdout
    names = ("CF0001_PUBLIC.jpg", "CF0001_PRIVATE.jpg", "nope.jpg")
    bad = s3sync("publish-check", "--json", *names, env=env, cwd=tmp_path)
    assert bad.returncode == 1
    public, private, invalid = json.loads(bad.stdout)
    assert (public["public"], public["status"]) == (True, 206)
    assert (private["public"], private["status"]) == (False, 403)
    assert "bucket policy" in private["verdict"]
    assert invalid["url"] is None
