"""`s3sync sync --dry-run` counts bytes, and only what the real pass then does (a real subprocess and server)."""

from __future__ import annotations

from tests.integration.test_cli import env_for, s3sync


def _summary(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_dry_run_counts_bytes_and_matches_the_real_pass(make_settings, s3_server, tmp_path):
    """Three new files: 'would upload 3 (N bytes)'; bytes already in the bucket, or in the mirror, are not counted."""
    settings = make_settings()
    env = env_for(settings, S3_LOG_FORMAT="json")
    sizes = {"B0001_A_1x1.jpg": 100, "B0002_A_1x1.jpg": 2_000, "B0003_A_1x1.jpg": 30_000}
    for name, size in sizes.items():
        (settings.upload_dir_path / name).write_bytes(b"u" * size)
    # Already in the bucket with the same bytes, but unknown to the state: the real pass skips it.
    (settings.upload_dir_path / "B0004_A_1x1.jpg").write_bytes(b"same bytes")
    client = s3_server.client()
    client.put_object(Bucket=settings.bucket_name, Key="BACKGROUND/B0004/B0004_A_1x1.jpg", Body=b"same bytes")
    # In the bucket, and already in the mirror folder with the same bytes: adopted, not downloaded.
    client.put_object(Bucket=settings.bucket_name, Key="BACKGROUND/B0005/B0005_A_1x1.jpg", Body=b"mirrored")
    (settings.local_path / "BACKGROUND/B0005").mkdir(parents=True)
    (settings.local_path / "BACKGROUND/B0005/B0005_A_1x1.jpg").write_bytes(b"mirrored")
    # In the bucket only: real downloads (B0004 too: it is not in the mirror folder yet).
    client.put_object(Bucket=settings.bucket_name, Key="BACKGROUND/B0006/B0006_A_1x1.jpg", Body=b"d" * 777)

    dry = s3sync("sync", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    line = _summary(dry.stderr)
    assert f"would upload 3 ({sum(sizes.values())} bytes)" in line
    assert "unchanged 1" in line
    assert "would download 2 (787 bytes)" in line  # B0004 and B0006; B0005 is adopted

    real = s3sync("sync", env=env, cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    done = _summary(real.stderr)
    assert f"uploaded 3 ({sum(sizes.values())} bytes)" in done
    assert "unchanged 1" in done
    # The real mirror pass fetches those two, and the three objects this very pass uploaded.
    assert f"downloaded 5 ({787 + sum(sizes.values())} bytes)" in done
