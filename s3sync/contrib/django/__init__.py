"""s3sync for Django projects: the django_s3 API, configured by ``django.conf.settings``.

Add ``"s3sync.contrib.django"`` to ``INSTALLED_APPS`` and change the import lines::

    from s3sync.contrib.django import Browser, FileTreeNode, Resource, Transport

    Transport().download(Resource("CF0001_WHITE_320x320.jpg"))
    Transport().download("CF0001_WHITE_320x320.jpg")
    Browser().walk("CLIPPING-FLOWER")

Settings are the same ``S3_*`` names, read from Django's settings first and the environment
second (:func:`settings_from_django`); ``manage.py check`` reports invalid ones, and
``manage.py s3sync run|sync|check|tree|...`` is the ``s3sync`` command with those settings.
Importing this package needs Django (the ``django`` extra); the core never imports it.
"""

from __future__ import annotations

from s3sync.contrib.django.conf import clear_settings_cache, settings_from_django
from s3sync.contrib.django.library import Browser, FileTreeNode, Resource, Transport

__all__ = ["Browser", "FileTreeNode", "Resource", "Transport", "clear_settings_cache", "settings_from_django"]
