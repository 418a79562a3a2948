"""The Django side of publishing: template tags, signals from the in-process daemon, the command's options.

Same set-up as ``test_django.py`` (its fixtures are imported): Django configured once with the test
project, which has a URLconf of shop-like views (``tests/django_project/urls.py``) for the test client.
"""

from __future__ import annotations

import html
import io
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.template import engines
from django.test import Client, override_settings

from s3sync.contrib.django import Transport
from s3sync.contrib.django.command import split_django_options
from s3sync.contrib.django.signals import resource_downloaded, resource_rejected, resource_uploaded
from s3sync.errors import ConfigurationError
from s3sync.settings import Settings
from tests.integration import test_django as _base
from tests.integration.test_django import KEY, NAME, django_names, python, subprocess_env
from tests.support.servers import S3Server

# The module's Django set-up and cache reset, shared with test_django.py.
_django = _base._django
_fresh_cache = _base._fresh_cache


@pytest.fixture
def project(make_settings) -> Iterator[Settings]:
    """Django settings for the current server's fresh bucket; yields the equivalent Settings."""
    settings = make_settings()
    with override_settings(**django_names(settings)):
        yield settings


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- template tags -------------------------------------------------------------------------------


def test_s3_url_tag_renders_the_public_url():
    """`{% s3_url name %}` renders Resource(name).url in each configured form, through the test client."""
    client = Client()
    with override_settings(S3_BUCKET_NAME="shop-images"):
        page = client.get(f"/img/{NAME}")
        assert page.status_code == 200
        assert page.content.decode() == f'<img src="https://s3.amazonaws.com/shop-images/{KEY}">'
        with override_settings(S3_URL_STYLE="virtual"):
            assert f'src="https://shop-images.s3.amazonaws.com/{KEY}"' in client.get(f"/img/{NAME}").content.decode()
        with override_settings(S3_PUBLIC_BASE_URL="https://cdn.example.com/"):
            assert f'src="https://cdn.example.com/{KEY}"' in client.get(f"/img/{NAME}").content.decode()


def test_s3_url_tag_without_bucket_is_an_error_not_a_broken_link():
    """With no bucket and no CDN root, the tag raises the ConfigurationError instead of rendering a dead link."""
    template = engines["django"].from_string('{% load s3sync %}{% s3_url "CF0001_WHITE_320x320.jpg" %}')
    with pytest.raises(ConfigurationError, match="S3_BUCKET_NAME: not set"):
        template.render({})


def test_s3_presigned_url_tag_gives_a_working_link(project: Settings):
    """`{% s3_presigned_url name 3600 %}` renders a link that fetches the private object (HTML-escaped '&')."""
    (project.upload_dir_path / NAME).write_bytes(b"private picture")
    Transport().upload(NAME)
    page = Client().get(f"/private/{NAME}")
    assert page.status_code == 200
    body = page.content.decode()
    assert "&amp;X-Amz-Signature=" in body or "&amp;Signature=" in body
    link = html.unescape(body.split('href="', 1)[1].split('"', 1)[0])
    assert "X-Amz-Expires=3600" in link
    assert _get(link) == (200, b"private picture")


def test_async_view_downloads_with_adownload(project: Settings, s3_server: S3Server):
    """An async view awaiting Transport().adownload(name) serves the object's bytes through the test client."""
    s3_server.client().put_object(Bucket=project.bucket_name, Key=KEY, Body=b"async bytes")
    page = Client().get(f"/fetch/{NAME}")
    assert page.status_code == 200
    assert page.content == b"async bytes"
    assert (project.local_path / KEY).read_bytes() == b"async bytes"


# --- signals from the daemon -----------------------------------------------------------------------


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    """`s3sync run` installs SIGTERM/SIGINT/SIGHUP handlers in this process: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_daemon_in_django_sends_signals(make_settings, s3_server: S3Server, restore_signal_handlers: None):
    """`manage.py s3sync run` in-process: resource_uploaded, resource_downloaded and resource_rejected arrive."""
    settings = make_settings(mirror_interval=0.5, settle_seconds=0.2, rescan_interval=1)
    got: dict[str, list[dict[str, Any]]] = {"uploaded": [], "downloaded": [], "rejected": []}
    seen = threading.Condition()

    def receiver(kind: str):
        def on_signal(sender: object, **kwargs: Any) -> None:
            with seen:
                got[kind].append({"sender": sender, **kwargs})
                seen.notify_all()

        return on_signal

    receivers = {kind: receiver(kind) for kind in got}
    resource_uploaded.connect(receivers["uploaded"])
    resource_downloaded.connect(receivers["downloaded"])
    resource_rejected.connect(receivers["rejected"])
    other_key = "CLIPPING-FLOWER/CF0002/CF0002_B.jpg"

    ended = threading.Event()  # call_command returned (or failed): nothing left to stop

    def drive() -> None:
        try:
            time.sleep(0.5)
            (settings.upload_dir_path / NAME).write_bytes(b"new picture")
            (settings.upload_dir_path / "not a resource.jpg").write_bytes(b"x")
            s3_server.client().put_object(Bucket=settings.bucket_name, Key=other_key, Body=b"from the bucket")
            deadline = time.monotonic() + 30
            with seen:
                while (
                    time.monotonic() < deadline
                    and not ended.is_set()
                    and not (
                        got["uploaded"] and got["rejected"] and any(d["key"] == other_key for d in got["downloaded"])
                    )
                ):
                    seen.wait(0.2)
        finally:
            if not ended.is_set():
                os.kill(os.getpid(), signal.SIGTERM)  # what systemd sends: the daemon stops cleanly

    helper = threading.Thread(target=drive)
    try:
        with override_settings(**django_names(settings)):
            helper.start()
            err = io.StringIO()
            try:
                call_command("s3sync", "--debug", "run", stdout=io.StringIO(), stderr=err)
            except Exception:
                print(err.getvalue())
                raise
            finally:
                ended.set()
    finally:
        helper.join(60)
        for kind, fn in receivers.items():
            {"uploaded": resource_uploaded, "downloaded": resource_downloaded, "rejected": resource_rejected}[
                kind
            ].disconnect(fn)
    up = got["uploaded"][0]
    assert (up["sender"], up["key"], up["name"], up["size"]) == ("s3sync", KEY, NAME, len(b"new picture"))
    assert up["path"] == settings.upload_dir_path / NAME
    down = next(d for d in got["downloaded"] if d["key"] == other_key)
    assert down["path"] == settings.local_path / other_key
    assert down["path"].read_bytes() == b"from the bucket"
    assert down["size"] == len(b"from the bucket")
    rejected = got["rejected"][0]
    assert rejected["name"] == "not a resource.jpg"
    assert "space" in rejected["reason"]


# --- the management command -------------------------------------------------------------------------


def test_split_django_options():
    """Django's options are taken from anywhere; --env-file, --version and the rest stay s3sync's, in order."""
    assert split_django_options(["sync", "--settings=a.b", "--dry-run", "--traceback"]) == (
        ["--settings=a.b", "--traceback"],
        ["sync", "--dry-run"],
    )
    assert split_django_options(["--version"]) == ([], ["--version"])
    assert split_django_options(["check", "--", "--settings"]) == ([], ["check", "--settings"])
    assert split_django_options(["-v", "2", "config", "-v3"]) == (["-v", "2", "-v3"], ["config"])


def test_manage_py_options_anywhere_env_file_version_and_help(tmp_path: Path):
    """`manage.py s3sync` takes --settings after the command, --env-file, --version (s3sync's), and alone is help."""
    env = subprocess_env()
    env.pop("DJANGO_SETTINGS_MODULE")
    late = python(
        "-m", "django", "s3sync", "check", NAME, "--settings", "tests.django_project.settings", env=env, cwd=tmp_path
    )
    assert late.returncode == 0, late.stderr
    assert "CLIPPING-FLOWER" in late.stdout
    env = subprocess_env()
    (tmp_path / "shop.env").write_text("S3_BUCKET_NAME=from-env-file\n")
    config = python("-m", "django", "s3sync", "--env-file", str(tmp_path / "shop.env"), "config", env=env, cwd=tmp_path)
    assert "S3_BUCKET_NAME=from-env-file" in config.stdout.splitlines(), config.stderr
    version = python("-m", "django", "s3sync", "--version", env=env, cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, "s3sync 0.1.0")
    alone = python("-m", "django", "s3sync", env=env, cwd=tmp_path)
    assert alone.returncode == 0
    assert "Usage: manage.py s3sync" in alone.stdout
    assert alone.stderr == ""


def test_manage_py_error_is_one_line_with_manage_py_hints(tmp_path: Path):
    """One error line, and its hint names `manage.py s3sync ...`, the command a Django user types."""
    r = python("-m", "django", "s3sync", "download", NAME, env=subprocess_env(), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "s3sync: error: S3_BUCKET_NAME: not set (set it, or run `manage.py s3sync run --local-server` for a local demo)"
    ]


def test_check_lists_every_bad_setting():
    """Three bad settings give three s3sync.E001 messages, one naming each."""
    with override_settings(
        S3_CATEGORY_MAP={"cf": "X"}, S3_DEFAULT_ACL="world-readable", S3_PUBLIC_BASE_URL="cdn.example.com"
    ):
        errors = [m for m in run_checks() if m.id == "s3sync.E001"]
    assert sorted(m.msg.split(":", 1)[0] for m in errors) == ["S3_CATEGORY_MAP", "S3_DEFAULT_ACL", "S3_PUBLIC_BASE_URL"]
    assert all("manage.py s3sync config" in m.hint for m in errors)


# --- drop-in: django_s3's remaining calls ----------------------------------------------------------


def test_django_s3_legacy_calls_still_work(project: Settings):
    """Transport(key, secret, bucket) (with a DeprecationWarning), download_by_name and category_code still work."""
    from s3sync.contrib.django import Resource

    assert project.aws_access_key_id is not None
    assert project.aws_secret_access_key is not None
    (project.upload_dir_path / NAME).write_bytes(b"legacy")
    with pytest.warns(DeprecationWarning, match="S3_BUCKET_NAME"):
        legacy = Transport(
            project.aws_access_key_id.get_secret_value(),
            project.aws_secret_access_key.get_secret_value(),
            project.bucket_name or "",
        )
    assert legacy.upload(Resource(NAME)).key == KEY
    resource, path = legacy.download_by_name(NAME)
    assert (resource.name, resource.category_code) == (NAME, "CF")
    assert path == project.local_path / KEY
    assert path.read_bytes() == b"legacy"
    with pytest.raises(TypeError):
        Transport("only-a-key")  # type: ignore[arg-type]
