"""Views a shop would write: an image tag, a private link, and an async view that downloads."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

from s3sync.contrib.django import Transport

_IMG = engines["django"].from_string('{% load s3sync %}<img src="{% s3_url name %}">')
_PRIVATE = engines["django"].from_string(
    '{% load s3sync %}{% s3_presigned_url name 3600 as link %}<a href="{{ link }}">{{ name }}</a>'
)


def image(request: HttpRequest, name: str) -> HttpResponse:
    """``<img src="{% s3_url name %}">``."""
    return HttpResponse(_IMG.render({"name": name}))


def private(request: HttpRequest, name: str) -> HttpResponse:
    """A link valid for an hour, to an object of a private bucket."""
    return HttpResponse(_PRIVATE.render({"name": name}))


async def fetch(request: HttpRequest, name: str) -> HttpResponse:
    """An async view: the download runs in a worker thread (``adownload``), the loop goes on."""
    local = await Transport().adownload(name)
    return HttpResponse(local.read_bytes(), content_type="image/jpeg")


urlpatterns = [
    path("img/<str:name>", image),
    path("private/<str:name>", private),
    path("fetch/<str:name>", fetch),
]
