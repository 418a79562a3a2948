"""Template tags: ``{% load s3sync %}``, then the URL of a resource by name.

``{% s3_url "CF0001_WHITE_320x320.jpg" %}`` is the public URL (``Resource(name).url``: the CDN root,
path-style or virtual-hosted form the settings choose); ``{% s3_presigned_url name 3600 %}`` a GET URL
for a private bucket, valid that many seconds (default 3600). Both take ``as var``. A name that breaks
the naming convention, or settings that give no URL (no bucket, no ``S3_PUBLIC_BASE_URL``), raise:
a broken image is found in development, not in the shop.
"""

from __future__ import annotations

from django import template

from s3sync.contrib.django.conf import default_client, settings_from_django
from s3sync.publish import presigned_url
from s3sync.resource import Resource

__all__ = ["register", "s3_presigned_url", "s3_url"]

register = template.Library()


def s3_url(name: object) -> str:
    """The public URL of the resource named ``name``."""
    return Resource(str(name), settings_from_django()).url


def s3_presigned_url(name: object, expires: object = 3600) -> str:
    """A presigned GET URL of the resource named ``name``, valid ``expires`` seconds (1 s to 7 days)."""
    settings = settings_from_django()
    res = Resource(str(name), settings)
    seconds = int(str(expires))
    return presigned_url(default_client(settings), settings.require_bucket(), res.key, expires=seconds)


# Registered by call, not as decorators: Django ships no type stubs, and the functions stay typed.
register.simple_tag(s3_url)
register.simple_tag(s3_presigned_url)
