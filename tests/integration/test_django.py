"""s3sync.contrib.django: the django_s3 API configured by Django settings, its checks and its command.

Django is configured once for the session with ``tests.django_project.settings`` (Django cannot
be un-configured); each test sets its ``S3_*`` names with ``override_settings``. Server tests run
against every real local server of ``tests/conftest.py`` (moto_server and rclone serve s3).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings
from pydantic import SecretStr

from s3sync.contrib.django import (
    Browser,
    FileTreeNode,
    Resource,
    Transport,
    clear_settings_cache,
    settings_from_django,
)
from s3sync.settings import Settings, set_default_settings_factory

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "tests.django_project.settings"
NAME = "CF0001_WHITE_320x320.jpg"
KEY = "CLIPPING-FLOWER/CF0001/CF0001_WHITE_320x320.jpg"
BAD_MAP = {"cf": "CLIPPING-FLOWER"}
BAD_MAP_MESSAGE = "S3_CATEGORY_MAP: code 'cf' must be 1-4 upper-case letters"


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    """Django set up with the test project (once: later modules see it configured too).

    The app's ``ready()`` makes Django's settings the library's default; other test modules
    must not inherit that, so the default is put back when this module is done.
    """
    if not django_settings.configured:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
            django.setup()
    from django.apps import apps

    assert apps.is_installed("s3sync.contrib.django"), "Django was configured elsewhere without the s3sync app"
    set_default_settings_factory(settings_from_django)
    yield
    set_default_settings_factory(None)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """No test sees settings cached from another test's environment."""
    clear_settings_cache()
    yield
    clear_settings_cache()


def django_names(settings: Settings) -> dict[str, Any]:
    """The ``S3_*`` lines a settings.py would hold for ``settings``: plain strings, Paths, dicts."""
    names: dict[str, Any] = {}
    for field in settings.model_fields_set:
        value = getattr(settings, field)
        names["S3_" + field.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return names


@pytest.fixture
def project(make_settings) -> Iterator[Settings]:
    """Django settings for the current server's fresh bucket; yields the equivalent Settings."""
    settings = make_settings()
    with override_settings(**django_names(settings)):
        yield settings


def run(*args: str, **options: Any) -> tuple[str, str]:
    """``call_command("s3sync", *args)``; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("s3sync", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment without S3_*/AWS_* names, able to import the test project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "DJANGO_"))}
    env |= {"PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "AWS_EC2_METADATA_DISABLED": "true"}
    return env | extra


def python(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` (``-m django ...``, ``-m s3sync ...``) and capture its output."""
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# --- the documented calls ----------------------------------------------------------------------


def test_upload_then_download_round_trip(project):
    """`Transport().upload(Resource(name))` then `Transport().download(Resource(name))` gives the same bytes."""
    data = os.urandom(70_000)
    (project.upload_dir_path / NAME).write_bytes(data)
    resource = Resource(NAME)
    result = Transport().upload(resource)
    assert (result.key, result.bytes, result.skipped) == (KEY, len(data), False)
    path = Transport().download(Resource(NAME))
    assert path == project.local_path / KEY
    assert path.read_bytes() == data


def test_download_by_name(project, s3_server):
    """`Transport().download('name.jpg')` fetches an object another client put into the bucket."""
    data = b"\xff\xd8 not really a jpeg \xff\xd9"
    s3_server.client().put_object(Bucket=project.bucket_name, Key=KEY, Body=data)
    path = Transport().download(NAME)
    assert path == project.local_path / KEY
    assert path.read_bytes() == data


def test_browser_walk_and_node_types(project):
    """`Browser().walk(path)` returns the bucket's folders as DIR nodes and its objects as FILE nodes."""
    for name in (NAME, "CF0001_BLACK_320x320.jpg", "B0001_DEFAULT.png"):
        (project.upload_dir_path / name).write_bytes(name.encode())
        Transport().upload(name)
    node = Browser().walk("CLIPPING-FLOWER")
    assert node.type == FileTreeNode.DIR
    folder = node["CF0001"]
    assert folder.type == FileTreeNode.DIR
    assert [child.name for child in folder] == ["CF0001_BLACK_320x320.jpg", NAME]
    assert all(child.type == FileTreeNode.FILE == FileTreeNode.File for child in folder)
    assert sorted(child.name for child in Browser().walk()) == ["BACKGROUND", "CLIPPING-FLOWER"]


def test_plain_names_use_django_settings(project):
    """Inside Django, `from s3sync import Transport, Resource, Browser` read the Django settings too."""
    from s3sync import Browser as PlainBrowser
    from s3sync import Resource as PlainResource
    from s3sync import Transport as PlainTransport

    (project.upload_dir_path / NAME).write_bytes(b"plain")
    assert PlainTransport().upload(PlainResource(NAME)).key == KEY
    assert PlainBrowser().walk("CLIPPING-FLOWER/CF0001")[NAME].type == FileTreeNode.FILE


# --- settings ------------------------------------------------------------------------------------


def test_settings_come_from_django_then_the_environment(monkeypatch, tmp_path):
    """Django's S3_* values (dicts, Paths, str, lists) win; names unset or None there come from the environment."""
    monkeypatch.setenv("S3_BUCKET_NAME", "from-environment")
    monkeypatch.setenv("S3_REGION", "eu-west-1")
    monkeypatch.setenv("S3_MAX_CONCURRENCY", "3")
    with override_settings(
        S3_BUCKET_NAME="from-django",
        S3_CATEGORY_MAP={"ZZ": "ZEBRA", "CF": "CLIPPING-FLOWER"},
        S3_LOCAL_PATH=tmp_path / "mirror",
        S3_UPLOAD_DIR_PATH=str(tmp_path / "upload"),
        S3_ALLOWED_EXTENSIONS=["JPG", "png"],
        S3_KEY_TEMPLATE="{folder}/{name}",
        S3_REGION=None,
        S3_MIRROR_DELETE=True,
    ):
        settings = settings_from_django()
    assert settings.bucket_name == "from-django"
    assert settings.category_map == {"ZZ": "ZEBRA", "CF": "CLIPPING-FLOWER"}
    assert (settings.local_path, settings.upload_dir_path) == (tmp_path / "mirror", tmp_path / "upload")
    assert settings.allowed_extensions == frozenset({"jpg", "png"})
    assert (settings.region, settings.max_concurrency, settings.mirror_delete) == ("eu-west-1", 3, True)
    assert Resource("ZZ0007_A.png", settings).key == "ZZ0007/ZZ0007_A.png"


def test_cache_follows_override_settings():
    """Settings and the S3 client are built once, and rebuilt when override_settings changes an S3_* name."""
    with override_settings(S3_BUCKET_NAME="first-bucket", S3_ENDPOINT_URL="http://127.0.0.1:9"):
        first = settings_from_django()
        assert settings_from_django() is first
        assert Transport().client is Transport().client
        with override_settings(S3_BUCKET_NAME="second-bucket"):
            assert Transport().bucket == "second-bucket"
        assert Transport().bucket == "first-bucket"
        assert Resource(NAME).url == f"http://127.0.0.1:9/first-bucket/{KEY}"  # URLs follow the endpoint


# --- system checks ---------------------------------------------------------------------------------


def test_bad_category_map_fails_the_system_check_with_the_cli_message(tmp_path):
    """A bad S3_CATEGORY_MAP is check error s3sync.E001 whose text is the line the s3sync command prints."""
    with override_settings(S3_CATEGORY_MAP=BAD_MAP, S3_BUCKET_NAME="pictures"):
        errors = [m for m in run_checks() if m.id and m.id.startswith("s3sync.")]
        with pytest.raises(SystemCheckError, match=r"s3sync\.E001"):
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert [(m.id, m.msg) for m in errors] == [("s3sync.E001", BAD_MAP_MESSAGE)]
    cli = python("-m", "s3sync", "config", env=subprocess_env(S3_CATEGORY_MAP=json.dumps(BAD_MAP)), cwd=tmp_path)
    assert cli.returncode == 2
    assert f"s3sync: error: {BAD_MAP_MESSAGE}" in cli.stderr.splitlines()


def test_check_warnings_for_missing_bucket_and_unknown_names():
    """No bucket is warning s3sync.W001; an S3_* name s3sync does not know is W002 with a suggestion."""
    with override_settings(S3_BUCKET="pictures", S3_AWS_BASE_URL="https://cdn.example.com/"):
        messages = {m.id: m for m in run_checks() if m.id and m.id.startswith("s3sync.")}
    assert set(messages) == {"s3sync.W001", "s3sync.W002"}
    assert messages["s3sync.W001"].msg.startswith("S3_BUCKET_NAME: not set")
    assert messages["s3sync.W002"].hint == "Did you mean S3_BUCKET_NAME?"


def test_credential_without_its_pair_fails_the_system_check():
    """An access key without its secret is check error s3sync.E002, with the message Transport() would raise."""
    with override_settings(S3_BUCKET_NAME="pictures", S3_AWS_ACCESS_KEY_ID="AKIAEXAMPLE"):
        errors = [(m.id, m.msg) for m in run_checks() if m.id == "s3sync.E002"]
    assert errors == [("s3sync.E002", "S3_AWS_SECRET_ACCESS_KEY: must be set together with its pair")]


# --- the management command ------------------------------------------------------------------------


def test_command_check_parses_with_the_django_category_map():
    """`manage.py s3sync check NAME` runs the CLI's check with the Django settings; bad names exit 1."""
    out, _ = run("check", "CF0001_A_1x1.jpg")
    assert "CF0001_A_1x1.jpg" in out
    assert "CLIPPING-FLOWER" in out
    with override_settings(S3_CATEGORY_MAP={"ZZ": "ZEBRA"}):
        out, _ = run("check", "--json", "ZZ0001_A_1x1.jpg")
        assert json.loads(out)[0]["key"] == "ZEBRA/ZZ0001/ZZ0001_A_1x1.jpg"
        with pytest.raises(CommandError) as failed:
            run("check", "CF0001_A_1x1.jpg")
    assert failed.value.returncode == 1


def test_command_configuration_error_exits_2_and_leaves_no_environment():
    """A bad setting gives the CLI's one line and exit status 2; no S3_* name is left in os.environ."""
    err = io.StringIO()
    with override_settings(S3_CATEGORY_MAP=BAD_MAP), pytest.raises(CommandError) as failed:
        call_command("s3sync", "config", stdout=io.StringIO(), stderr=err)
    assert failed.value.returncode == 2
    assert f"s3sync: error: {BAD_MAP_MESSAGE}" in err.getvalue().splitlines()
    assert [name for name in os.environ if name.startswith("S3_")] == []


def test_command_config_shows_the_project_settings(project):
    """`manage.py s3sync config --json` prints exactly the settings the project's Transport() uses."""
    out, _ = run("config", "--json")
    shown = json.loads(out)
    resolved = shown.pop("resolved")
    assert shown == settings_from_django().masked()
    assert resolved == {"S3_LOCAL_PATH": str(project.local_path), "S3_UPLOAD_DIR_PATH": str(project.upload_dir_path)}
    assert shown["S3_BUCKET_NAME"] == project.bucket_name
    assert shown["S3_AWS_SECRET_ACCESS_KEY"] == "********"
    assert [name for name in os.environ if name.startswith("S3_")] == []


def test_command_tree(project):
    """`manage.py s3sync tree` shows the bucket the Django settings name."""
    (project.upload_dir_path / NAME).write_bytes(b"tree")
    Transport().upload(NAME)
    out, _ = run("tree", "--json")
    assert json.loads(out)["children"][0]["children"][0]["children"][0]["path"] == KEY
    out, _ = run("tree", "CLIPPING-FLOWER")
    assert NAME in out


def test_command_sync_upload_only(project):
    """`manage.py s3sync sync --upload-only` uploads the Django project's upload folder into its bucket."""
    (project.upload_dir_path / NAME).write_bytes(b"sync me")
    _, err = run("sync", "--upload-only")
    assert "uploaded 1 (7 bytes)" in err
    remote = Transport().head(KEY)
    assert remote is not None
    assert remote.size == 7
    assert not (project.local_path / KEY).exists()


def test_manage_py_exit_codes(tmp_path):
    """`python -m django s3sync ...` exits with the s3sync command's status: 0, 1, 2."""
    env = subprocess_env()
    ok = python("-m", "django", "s3sync", "check", "CF0001_A_1x1.jpg", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    invalid = python("-m", "django", "s3sync", "check", "XX0001_A.jpg", env=env, cwd=tmp_path)
    assert invalid.returncode == 1
    assert "unknown category code 'XX'" in invalid.stdout
    bad_env = subprocess_env(S3_CATEGORY_MAP=json.dumps(BAD_MAP))
    config = python("-m", "django", "s3sync", "config", env=bad_env, cwd=tmp_path)
    assert config.returncode == 2
    assert config.stderr.splitlines() == [f"s3sync: error: {BAD_MAP_MESSAGE}"]  # one line, not three
    check = python("-m", "django", "check", env=bad_env, cwd=tmp_path)
    assert check.returncode == 1
    assert f"(s3sync.E001) {BAD_MAP_MESSAGE}" in check.stderr
