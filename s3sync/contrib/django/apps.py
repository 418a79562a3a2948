"""The Django app: ``INSTALLED_APPS = [..., "s3sync.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from s3sync.contrib.django.checks import APP_NAME, check_settings
from s3sync.contrib.django.conf import settings_from_django
from s3sync.settings import set_default_settings_factory

__all__ = ["S3SyncConfig"]


class S3SyncConfig(AppConfig):  # type: ignore[misc] # Django ships no type stubs
    """Registers the system checks, and makes the project's settings the library's default."""

    name = APP_NAME
    label = "s3sync"  # the default, "django", would be a confusing label to claim
    verbose_name = "s3sync"
    default = True

    def ready(self) -> None:
        """Register the checks; point ``s3sync.Transport()`` & co at the Django settings (core hook)."""
        checks.register(check_settings, "s3sync")
        # `from s3sync import Transport` behaves like the contrib names inside Django.
        set_default_settings_factory(settings_from_django)
