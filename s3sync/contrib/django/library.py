"""``Transport``, ``Resource`` and ``Browser`` that take their settings from the Django project.

Thin subclasses of the core classes: the only difference is the default for ``settings``,
:func:`~s3sync.contrib.django.conf.settings_from_django` instead of the environment, so the
original django_s3 calls work unchanged (``Transport().download('name.jpg')``). Passing
``settings=`` explicitly behaves exactly like the core class.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from s3sync import browser as _browser
from s3sync import resource as _resource
from s3sync import transport as _transport
from s3sync.browser import FileTreeNode  # the core class itself: a node needs no settings
from s3sync.contrib.django.conf import default_client, settings_from_django

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from s3sync.resource import NamingRules
    from s3sync.settings import Settings
    from s3sync.transport import MultipartTracker

__all__ = ["Browser", "FileTreeNode", "Resource", "Transport"]


class Resource(_resource.Resource):
    """:class:`s3sync.Resource`; ``Resource(name)`` uses the Django project's settings."""

    __slots__ = ()

    def __init__(self, name: str, settings: NamingRules | Settings | None = None) -> None:
        super().__init__(name, settings if settings is not None else settings_from_django())

    @property
    def category_code(self) -> str:
        """django_s3's name for :attr:`code` (``"CF"``)."""
        return self.code


class Transport(_transport.Transport):
    """:class:`s3sync.Transport`; ``Transport()`` uses the Django project's settings and shared client."""

    def __init__(
        self,
        settings: Settings | str | None = None,
        *legacy: str,
        client: S3Client | None = None,
        tracker: MultipartTracker | None = None,
    ) -> None:
        if isinstance(settings, str):
            # django_s3's Transport(aws_key, aws_secret, bucket_name): the project's settings with those three.
            if len(legacy) != 2:
                raise TypeError("Transport(aws_key, aws_secret, bucket_name) takes exactly three strings")
            warnings.warn(
                "Transport(aws_key, aws_secret, bucket_name) is django_s3's form: set S3_AWS_ACCESS_KEY_ID, "
                "S3_AWS_SECRET_ACCESS_KEY and S3_BUCKET_NAME and call Transport()",
                DeprecationWarning,
                stacklevel=2,
            )
            settings = settings_from_django(
                aws_access_key_id=settings, aws_secret_access_key=legacy[0], bucket_name=legacy[1]
            )
        elif legacy:
            raise TypeError("Transport() takes settings only (or django_s3's aws_key, aws_secret, bucket_name)")
        elif settings is None:
            settings = settings_from_django()
            if client is None:
                client = default_client(settings)
        super().__init__(settings, client=client, tracker=tracker)

    def download_by_name(self, name: str) -> tuple[Resource, Path]:
        """django_s3's ``download_by_name``: ``(Resource(name), local path)``."""
        resource = Resource(name, self.settings)
        return resource, self.download(resource)


class Browser(_browser.Browser):
    """:class:`s3sync.Browser`; ``Browser()`` uses the Django project's settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: S3Client | None = None,
        transport: _transport.Transport | None = None,
    ) -> None:
        if transport is None:
            transport = Transport(settings, client=client)
        super().__init__(transport=transport)
