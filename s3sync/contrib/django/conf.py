"""Settings from ``django.conf.settings``: the same ``S3_*`` names, the environment for the rest.

:func:`settings_from_django` is the Django project's :func:`~s3sync.settings.load_settings`: every
``S3_*`` name the :class:`~s3sync.settings.Settings` model knows is read from Django's settings
(``S3_CATEGORY_MAP`` as a dict, paths as ``str`` or ``Path``...), and whatever is not set there
(or set to ``None``) comes from the environment and the secrets folder, exactly as for the
command line. The ``.env`` file is not read: in a Django project, settings.py is the place.

The result is built once and kept (with one S3 client for it, see :func:`default_client`) until
Django says a ``S3_*`` setting changed (``override_settings``, ``setting_changed``) or
:func:`clear_settings_cache` is called, e.g. after changing the environment at run time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from pydantic import SecretStr

from s3sync.errors import ConfigurationError
from s3sync.settings import ENV_PREFIX, Settings, load_settings
from s3sync.transport import make_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["clear_settings_cache", "default_client", "django_values", "environment_for", "settings_from_django"]


class _Cache:
    """The project's settings and their client, built on first use; guarded by ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None
        self.client: S3Client | None = None
        self.client_settings: Settings | None = None


_cache = _Cache()


def django_values() -> dict[str, Any]:
    """The ``S3_*`` values set in Django's settings, by field name; ``None`` counts as not set.

    ``None`` falls through to the environment so that ``S3_BUCKET_NAME = os.environ.get(...)``,
    a common django_s3 idiom, behaves like not setting the name at all.
    """
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        value = getattr(django_settings, ENV_PREFIX + field.upper(), None)
        if value is not None:
            values[field] = value
    return values


def settings_from_django(**overrides: Any) -> Settings:
    """The :class:`Settings` of this Django project (Django's ``S3_*`` settings, then the environment).

    Raises :class:`~s3sync.errors.ConfigurationError` with the same message as the ``s3sync``
    command for the same value. With ``overrides`` (field names), a new, uncached object.
    """
    if overrides:
        return load_settings(None, **(django_values() | overrides))
    with _cache.lock:
        if _cache.settings is None:
            _cache.settings = load_settings(None, **django_values())
        return _cache.settings


def default_client(settings: Settings) -> S3Client:
    """One S3 client per settings object, shared by every ``Transport()`` of the process.

    botocore clients are thread-safe and take ~50-100 ms to build: a view that calls
    ``Transport()`` per request should not pay that each time.
    """
    with _cache.lock:
        if _cache.client is None or _cache.client_settings is not settings:
            _cache.client = make_client(settings)
            _cache.client_settings = settings
        return _cache.client


def clear_settings_cache() -> None:
    """Forget the cached settings and client: the next use reads Django's settings and the environment again."""
    with _cache.lock:
        _cache.settings = None
        _cache.client = None
        _cache.client_settings = None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith(ENV_PREFIX):
        clear_settings_cache()


# Connected at import, not in AppConfig.ready(): the names of this package work even when the
# app is not in INSTALLED_APPS, and they must still follow override_settings.
setting_changed.connect(_on_setting_changed, dispatch_uid="s3sync.contrib.django.clear_settings_cache")


def _env_text(value: object) -> str:
    """``value`` as the ``S3_*`` environment string the settings model parses back to it."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), default=str)
    if isinstance(value, set | frozenset):
        return json.dumps(sorted(str(v) for v in value))
    if isinstance(value, list | tuple):
        return json.dumps([str(v) for v in value])
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    return str(value)


def environment_for(settings: Settings | None = None) -> dict[str, str]:
    """The ``S3_*`` environment that makes ``load_settings()`` rebuild ``settings``, secrets included.

    Every name is present (``""`` for unset ones), so no ``.env`` file can fill a gap. With no
    argument: the project's settings; if they are invalid, the raw Django values, so that the
    command line reports the problem itself, with its own message and exit code.
    """
    if settings is None:
        try:
            settings = settings_from_django()
        except ConfigurationError:
            return {ENV_PREFIX + name.upper(): _env_text(value) for name, value in django_values().items()}
    return {ENV_PREFIX + name.upper(): _env_text(getattr(settings, name)) for name in type(settings).model_fields}
