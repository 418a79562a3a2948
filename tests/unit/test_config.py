"""Settings: names, defaults, validation as one readable line, secrets, and a hypothesis fuzz."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import s3sync
from s3sync.errors import ConfigurationError, S3SyncError
from s3sync.settings import DEFAULT_CATEGORY_MAP, Settings, load_settings

SECRET = "TopSecretValue-0123456789abcdef"


def test_defaults(monkeypatch, tmp_path):
    """Defaults follow the issue: base URL, category map, key template, extensions, the user's folders."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    s = load_settings()
    assert s.aws_base_url == "https://s3.amazonaws.com/"
    assert s.category_map == dict(DEFAULT_CATEGORY_MAP)
    assert s.key_template == "{category}/{folder}/{name}"
    assert s.allowed_extensions == {"jpg", "jpeg", "png", "gif", "svg", "webp", "tif", "tiff", "bmp"}
    assert s.upload_dir_path == home / ".local/share/s3sync/upload"
    assert s.local_path == home / ".local/share/s3sync/mirror"
    assert s.state_path == home / ".local/state/s3sync/state.db"
    assert s.upload_dir_path != s.local_path
    assert s.bucket_name is None
    assert s.aws_access_key_id is None


def test_environment_names(monkeypatch, tmp_path):
    """The original S3_* names are read from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_BUCKET_NAME", "my-bucket")
    monkeypatch.setenv("S3_CATEGORY_MAP", '{"AB": "ABC"}')
    monkeypatch.setenv("S3_ALLOWED_EXTENSIONS", "jpg,PNG")
    monkeypatch.setenv("S3_LOCAL_PATH", str(tmp_path / "m"))
    monkeypatch.setenv("S3_UPLOAD_DIR_PATH", str(tmp_path / "u"))
    s = load_settings()
    assert s.bucket_name == "my-bucket"
    assert s.category_map == {"AB": "ABC"}
    assert s.allowed_extensions == {"jpg", "png"}


def test_env_file_and_override(tmp_path, monkeypatch):
    """A .env file is read; the environment wins over it."""
    env = tmp_path / "x.env"
    env.write_text("S3_BUCKET_NAME=from-file\nS3_REGION=eu-west-1\n")
    monkeypatch.setenv("S3_REGION", "us-west-2")
    s = load_settings(env)
    assert s.bucket_name == "from-file"
    assert s.region == "us-west-2"


def test_missing_env_file_is_error(tmp_path):
    """--env-file pointing at nothing is a configuration error."""
    with pytest.raises(ConfigurationError, match="--env-file"):
        load_settings(tmp_path / "missing.env")


def test_credentials_directory(tmp_path, monkeypatch):
    """With $CREDENTIALS_DIRECTORY (systemd LoadCredential=), the keys are read from files there."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "S3_AWS_ACCESS_KEY_ID").write_text("AKIAFROMCREDENTIALS\n")
    (creds / "S3_AWS_SECRET_ACCESS_KEY").write_text(SECRET + "\n")
    s = load_settings(None, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert s.aws_access_key_id is not None
    assert s.aws_access_key_id.get_secret_value() == "AKIAFROMCREDENTIALS"
    assert s.aws_secret_access_key is not None
    assert s.aws_secret_access_key.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"S3_CATEGORY_MAP": "{bad"}, "S3_CATEGORY_MAP"),
        ({"S3_CATEGORY_MAP": "[1, 2]"}, "S3_CATEGORY_MAP"),
        ({"S3_CATEGORY_MAP": '{"b": "x"}'}, "S3_CATEGORY_MAP"),
        ({"S3_CATEGORY_MAP": '{"B": "../etc"}'}, "S3_CATEGORY_MAP"),
        ({"S3_MAX_CONCURRENCY": "lots"}, "S3_MAX_CONCURRENCY"),
        ({"S3_MAX_CONCURRENCY": "100000"}, "S3_MAX_CONCURRENCY"),
        ({"S3_LOCAL_PATH": "relative/path"}, "S3_LOCAL_PATH"),
        ({"S3_KEY_TEMPLATE": "{nope}/{name}"}, "S3_KEY_TEMPLATE"),
        ({"S3_KEY_TEMPLATE": "../{name}"}, "S3_KEY_TEMPLATE"),
        ({"S3_ALLOWED_EXTENSIONS": "j"}, "S3_ALLOWED_EXTENSIONS"),
        ({"S3_BUCKET_NAME": "Bad_Bucket"}, "S3_BUCKET_NAME"),
        ({"S3_ENDPOINT_URL": "ftp://x"}, "S3_ENDPOINT_URL"),
        ({"S3_AFTER_UPLOAD": "move"}, "S3_AFTER_UPLOAD"),
        ({"S3_WATCH_MODE": "magic"}, "S3_WATCH_MODE"),
        ({"S3_METRICS_ADDR": "nowhere"}, "S3_METRICS_ADDR"),
        ({"S3_CA_BUNDLE": "/nonexistent/ca.pem"}, "S3_CA_BUNDLE"),
        ({"S3_CA_BUNDLE": "relative/ca.pem"}, "S3_CA_BUNDLE"),
        ({"AWS_CA_BUNDLE": "/nonexistent/ca.pem"}, "AWS_CA_BUNDLE"),
    ],
)
def test_invalid_setting_is_one_line_naming_it(monkeypatch, tmp_path, env, setting):
    """Every invalid setting is a ConfigurationError (exit 2) whose one-line message names it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_AWS_SECRET_ACCESS_KEY", SECRET)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert setting in message
    assert "\n" not in message
    assert info.value.exit_code == 2
    assert SECRET not in message


def test_ca_bundle_from_s3_name_else_botocore_name(monkeypatch, tmp_path):
    """S3_CA_BUNDLE names the CAs for an https endpoint; botocore's AWS_CA_BUNDLE counts when it is unset."""
    monkeypatch.chdir(tmp_path)
    ours, botos = tmp_path / "ours.pem", tmp_path / "boto.pem"
    ours.write_text("x")
    botos.write_text("x")
    assert load_settings().ca_bundle is None
    monkeypatch.setenv("AWS_CA_BUNDLE", str(botos))
    assert load_settings().ca_bundle == botos
    monkeypatch.setenv("S3_CA_BUNDLE", str(ours))
    assert load_settings().ca_bundle == ours
    assert load_settings(ca_bundle=botos).ca_bundle == botos  # by field name, as Django passes it
    assert load_settings().masked()["S3_CA_BUNDLE"] == str(ours)


@pytest.mark.parametrize("nested", ["same", "upload-in-mirror", "mirror-in-upload"])
def test_folders_must_not_overlap(tmp_path, nested):
    """The upload and mirror folders may not be the same or nested: a configuration error."""
    up = tmp_path / "a"
    mirror = {"same": up, "upload-in-mirror": tmp_path, "mirror-in-upload": up / "m"}[nested]
    with pytest.raises(ConfigurationError, match="S3_UPLOAD_DIR_PATH and S3_LOCAL_PATH"):
        load_settings(None, upload_dir_path=up, local_path=mirror)


def test_require_bucket():
    """A missing bucket is a configuration error naming S3_BUCKET_NAME."""
    with pytest.raises(ConfigurationError, match="S3_BUCKET_NAME"):
        Settings(_env_file=None).require_bucket()


def test_masked_hides_secrets():
    """masked() shows every setting, with the credentials as stars."""
    s = Settings(_env_file=None, aws_access_key_id="AKIAX", aws_secret_access_key=SECRET)
    values = s.masked()
    assert values["S3_AWS_SECRET_ACCESS_KEY"] == "********"
    assert SECRET not in json.dumps(values)
    assert SECRET not in repr(s)


def test_public_api():
    """__all__ is sorted, importable, and the exit codes are as documented."""
    assert list(s3sync.__all__) == sorted(s3sync.__all__)
    for name in s3sync.__all__:
        assert hasattr(s3sync, name)
    assert s3sync.ConfigurationError("x").exit_code == 2
    assert s3sync.NotFoundError("x").exit_code == 1
    assert issubclass(s3sync.UnsafeKeyError, ValueError)
    assert issubclass(s3sync.InvalidNameError, ValueError)
    for cls in (s3sync.UploadError, s3sync.DownloadError, s3sync.IntegrityError):
        assert issubclass(cls, s3sync.TransferError)
        assert issubclass(cls, s3sync.S3SyncError)
    for cls in (s3sync.FileChangedError, s3sync.NotRegularFileError, s3sync.LocalChangedError):
        assert issubclass(cls, s3sync.LocalFileError)
    assert s3sync.StateCorruptError.exit_code == 2
    assert s3sync.StateLockedError.exit_code == 2
    assert s3sync.ListingError("x").exit_code == 1


names = st.sampled_from(
    [
        "S3_BUCKET_NAME",
        "S3_CATEGORY_MAP",
        "S3_LOCAL_PATH",
        "S3_UPLOAD_DIR_PATH",
        "S3_MAX_CONCURRENCY",
        "S3_KEY_TEMPLATE",
        "S3_ALLOWED_EXTENSIONS",
        "S3_SETTLE_SECONDS",
        "S3_MIRROR_INTERVAL",
        "S3_ENDPOINT_URL",
        "S3_AFTER_UPLOAD",
        "S3_MULTIPART_THRESHOLD",
        "S3_MIRROR_DELETE",
        "S3_METRICS_ADDR",
        "S3_STATE_PATH",
        "S3_CA_BUNDLE",
    ]
)
values = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.dictionaries(st.text(max_size=6), st.text(max_size=10), max_size=3).map(json.dumps),
    st.just("{"),
    st.just("/tmp/s3sync-fuzz/x"),
    st.just("relative/dir"),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=5))
def test_settings_fuzz_clean_errors(env):
    """Random settings either load or raise one clean ConfigurationError; never a traceback, never the secret."""
    environ = {k: v.replace("\x00", "") for k, v in env.items()}
    with pytest.MonkeyPatch.context() as mp:
        for k in list(environ):
            mp.setenv(k, environ[k])
        mp.setenv("S3_AWS_SECRET_ACCESS_KEY", SECRET)
        try:
            load_settings(None)
        except S3SyncError as exc:
            assert isinstance(exc, ConfigurationError)
            assert exc.exit_code == 2
            assert "\n" not in str(exc)
            assert SECRET not in str(exc)
            assert str(exc).startswith(("S3_", "settings", "--env-file"))
