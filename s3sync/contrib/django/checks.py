"""Django system checks: ``manage.py check`` (and every start-up) reports invalid ``S3_*`` settings.

Messages are the :class:`~s3sync.errors.ConfigurationError` texts, the very lines the ``s3sync``
command prints after ``s3sync: error:``, so a setting reads the same wherever it is wrong.

* ``s3sync.E001``: a setting is invalid (``S3_CATEGORY_MAP: code 'cf' must be 1-4 upper-case letters``).
* ``s3sync.E002``: the S3 client cannot be built from the settings (a credential without its pair).
* ``s3sync.W001``: ``S3_BUCKET_NAME`` is not set: ``Transport()`` and ``Browser()`` will fail.
* ``s3sync.W002``: a ``S3_*`` name in Django's settings that s3sync does not know (a typo?).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning  # noqa: A004 - Django's name

from s3sync.contrib.django.conf import default_client, settings_from_django
from s3sync.errors import ConfigurationError
from s3sync.settings import ENV_PREFIX, Settings

__all__ = ["APP_NAME", "check_settings"]

APP_NAME = "s3sync.contrib.django"
_HINT = "Set {setting} in the Django settings or the environment (see `manage.py s3sync config`)."


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate the project's s3sync settings as the command line would; one message per problem found."""
    if app_configs is not None and not any(getattr(c, "name", None) == APP_NAME for c in app_configs):
        return []
    messages: list[CheckMessage] = _unknown_names()
    try:
        settings = settings_from_django()
    except ConfigurationError as exc:  # every invalid setting at once, one E001 each
        return [
            *messages,
            *(Error(text, hint=_HINT.format(setting=name), id="s3sync.E001") for name, text in exc.problems),
        ]
    try:
        # Also caches the client that Transport() will use: the cost is paid once, not twice.
        default_client(settings)
    except ConfigurationError as exc:
        messages.append(Error(str(exc), hint=_HINT.format(setting=exc.setting or "it"), id="s3sync.E002"))
    try:
        settings.require_bucket()
    except ConfigurationError as exc:
        messages.append(Warning(str(exc), hint=_HINT.format(setting="S3_BUCKET_NAME"), id="s3sync.W001"))
    return messages


def _unknown_names() -> list[CheckMessage]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    messages: list[CheckMessage] = []
    for name in sorted(n for n in dir(django_settings) if n.startswith(ENV_PREFIX) and n not in known):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"Did you mean {close[0]}?" if close else "See `manage.py s3sync config` for every name."
        messages.append(Warning(f"{name}: not an s3sync setting (ignored)", hint=hint, id="s3sync.W002"))
    return messages
