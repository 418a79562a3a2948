"""The `s3sync` command, run as a real subprocess against a real S3 server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from s3sync.settings import Settings
from tests.integration.daemon_helpers import list_keys, object_bytes, wait_for

SECRET = "Sup3rSecretValue-do-not-print-0123456789"


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The S3_* environment that makes the CLI use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    for name, value in settings.masked().items():
        if value and "********" not in value:
            env[name] = value
    assert settings.aws_access_key_id
    assert settings.aws_secret_access_key
    env["S3_AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id.get_secret_value()
    env["S3_AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key.get_secret_value()
    env.update(extra)
    return env


def s3sync(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m s3sync ARGS`."""
    return subprocess.run(
        [sys.executable, "-m", "s3sync", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_check_valid_and_invalid_names(tmp_path):
    """`check` prints fields for valid names, the reason for invalid ones, and exits 1 if any is invalid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    ok = s3sync("check", "--json", "CR01-047_B0001_320x320.JPG", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    fields = json.loads(ok.stdout)[0]
    assert fields["code"] == "CR"
    assert fields["category"] == "CATALOGUE-PRODUCT"
    assert fields["size"] == [320, 320]
    bad = s3sync("check", "--json", "B0001_DEFAULT.JPG", "XY0001_A.jpg", env=env, cwd=tmp_path)
    assert bad.returncode == 1
    results = json.loads(bad.stdout)
    assert results[0]["valid"]
    assert not results[1]["valid"]
    assert "unknown category code" in results[1]["reason"]


def test_bad_setting_is_one_line_exit_2(tmp_path):
    """An invalid setting gives one line naming it (no JSON event besides), exit code 2, no secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    env.update({"S3_CATEGORY_MAP": "{not json", "S3_AWS_SECRET_ACCESS_KEY": SECRET})
    for args in (["config"], ["sync"], ["run"], ["download", "B0001_A.jpg"]):
        r = s3sync(*args, env=env, cwd=tmp_path)
        assert r.returncode == 2, args
        assert r.stderr.splitlines() == ["s3sync: error: S3_CATEGORY_MAP: could not be parsed (expected JSON)"], args
        assert SECRET not in r.stderr + r.stdout


def test_config_without_bucket_exits_2_and_still_prints(tmp_path):
    """`config` validates like `run`: no bucket is exit 2 and one line, after every setting it can print."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    env |= {"S3_LOCAL_PATH": str(tmp_path / "m"), "S3_UPLOAD_DIR_PATH": str(tmp_path / "u")}
    r = s3sync("config", env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert f"S3_LOCAL_PATH={tmp_path / 'm'}" in r.stdout.splitlines()
    assert "S3_BUCKET_NAME=" in r.stdout.splitlines()
    assert len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("s3sync: error: S3_BUCKET_NAME: not set")
    assert not (tmp_path / "m").exists()  # config creates nothing
    proc = tmp_path / "proc-folder.env"
    proc.write_text("S3_BUCKET_NAME=pictures\nS3_UPLOAD_DIR_PATH=/proc/s3sync-upload\n")
    plain = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    r = s3sync("--env-file", str(proc), "config", env=plain, cwd=tmp_path)
    assert r.returncode == 2
    unusable = "S3_UPLOAD_DIR_PATH: '/proc/s3sync-upload' is not a usable folder (No such file or directory)"
    assert r.stderr.splitlines() == [f"s3sync: error: {unusable}"]


def test_missing_bucket_is_configuration_error(tmp_path):
    """Commands that need a bucket fail with exit 2 and say S3_BUCKET_NAME is not set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    r = s3sync("download", "B0001_A.jpg", env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert "S3_BUCKET_NAME" in r.stderr
    assert "Traceback" not in r.stderr


def test_sync_against_a_missing_bucket_says_why_on_its_summary_line(make_settings, tmp_path):
    """Exit 1 with every count at 0 is not a summary: the line names the listing that failed."""
    settings = make_settings(bucket_name="no-such-bucket-here")
    r = s3sync("sync", "--mirror-only", env=env_for(settings, S3_LOG_FORMAT="json"), cwd=tmp_path)
    assert r.returncode == 1
    summary = r.stderr.strip().splitlines()[-1]
    assert summary.startswith("mirror: listed 0,")  # no upload counts: there was no upload pass
    assert "mirror incomplete: LIST s3://no-such-bucket-here: bucket 'no-such-bucket-here' does not exist" in summary
    assert "Traceback" not in r.stderr


def test_config_masks_secrets(make_settings, tmp_path):
    """`config` shows the effective settings with the credentials masked."""
    settings = make_settings()
    env = env_for(settings, S3_AWS_SECRET_ACCESS_KEY=SECRET)
    r = s3sync("config", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"S3_BUCKET_NAME={settings.bucket_name}" in r.stdout
    assert "S3_AWS_SECRET_ACCESS_KEY=********" in r.stdout
    assert SECRET not in r.stdout + r.stderr


def test_env_file_option(make_settings, tmp_path):
    """--env-file reads settings from the given file; a missing file is exit 2."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("S3_BUCKET_NAME=from-env-file\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    r = s3sync("--env-file", str(env_file), "config", "--json", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["S3_BUCKET_NAME"] == "from-env-file"
    missing = s3sync("--env-file", str(tmp_path / "nope.env"), "config", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "--env-file" in missing.stderr


def test_upload_download_tree(make_settings, tmp_path):
    """upload prints keys, download prints local paths, tree --json shows the bucket."""
    settings = make_settings()
    env = env_for(settings)
    src = tmp_path / "src"
    src.mkdir()
    f = src / "WF0001_RED_70x70.png"
    f.write_bytes(b"png-bytes")
    up = s3sync("upload", str(f), env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "WRAPPING-FLOWER/WF0001/WF0001_RED_70x70.png" in up.stdout
    down = s3sync("download", "WF0001_RED_70x70.png", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert Path(down.stdout.strip()).read_bytes() == b"png-bytes"
    tree = s3sync("tree", "--json", env=env, cwd=tmp_path)
    assert tree.returncode == 0, tree.stderr
    data = json.loads(tree.stdout)
    assert data["children"][0]["name"] == "WRAPPING-FLOWER"
    missing = s3sync("tree", "NOPE", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no such folder" in missing.stderr
    bad = s3sync("upload", str(src / "bad name.jpg"), env=env, cwd=tmp_path)
    assert bad.returncode == 1
    assert "invalid resource name" in bad.stderr


def test_sync_then_dry_run(make_settings, tmp_path):
    """`sync` uploads and mirrors; `sync --dry-run` afterwards reports and changes nothing."""
    settings = make_settings()
    env = env_for(settings, S3_LOG_FORMAT="json")
    (settings.upload_dir_path / "B0001_SYNC_1x1.jpg").write_bytes(b"sync")
    r = s3sync("sync", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (settings.local_path / "BACKGROUND/B0001/B0001_SYNC_1x1.jpg").read_bytes() == b"sync"
    (settings.upload_dir_path / "B0002_SYNC_1x1.jpg").write_bytes(b"new")
    dry = s3sync("sync", "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would upload 1" in dry.stderr
    assert list_keys(settings) == ["BACKGROUND/B0001/B0001_SYNC_1x1.jpg"]


def test_run_stops_on_sigterm(make_settings, tmp_path):
    """`s3sync run` uploads a dropped file and exits 0 on SIGTERM, logging JSON events."""
    settings = make_settings(mirror_interval=0)
    env = env_for(settings, S3_LOG_FORMAT="json", S3_SETTLE_SECONDS="0.5")
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3sync", "run"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.5)
        (settings.upload_dir_path / "CM0001_RUN_1x1.gif").write_bytes(b"GIF89a")
        wait_for(lambda: object_bytes(settings, "COMPOSITION/CM0001/CM0001_RUN_1x1.gif") == b"GIF89a", timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events[0] == "daemon.started"
    assert events[-1] == "daemon.stopped"
    assert "upload.succeeded" in events


def test_sigterm_during_large_upload_aborts_cleanly(make_settings, tmp_path):
    """SIGTERM mid-multipart with no grace time: exit 0, no multipart upload left open, resumed next start."""
    mib = 1024 * 1024
    settings = make_settings(mirror_interval=0, multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
    env = env_for(settings, S3_LOG_FORMAT="json", S3_SHUTDOWN_TIMEOUT="0", S3_MAX_CONCURRENCY="1")
    big = tmp_path / "B0001_HUGE.tif"
    big.write_bytes(os.urandom(150 * mib))
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3sync", "run"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    try:
        time.sleep(1.0)
        os.replace(big, settings.upload_dir_path / big.name)
        for line in proc.stderr:
            if '"upload.started"' in line:
                break
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    from s3sync.transport import make_client

    client = make_client(settings)
    assert client.list_multipart_uploads(Bucket=settings.require_bucket()).get("Uploads", []) == []
    # The next start uploads the file completely.
    r = s3sync("sync", "--upload-only", env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    head = client.head_object(Bucket=settings.require_bucket(), Key="BACKGROUND/B0001/B0001_HUGE.tif")
    assert head["ContentLength"] == 150 * mib
