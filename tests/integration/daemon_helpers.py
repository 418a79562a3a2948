"""Helpers for daemon tests: run the service in a thread, count requests, wait by bounded polls."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from s3sync._boto import BotoRequests
from s3sync.plan import is_probe_key
from s3sync.service import Service
from s3sync.settings import Settings
from s3sync.transport import Transport, make_client


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


class KeyCounter:
    """Counts S3 operations per (operation, key) on a real client, through botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        client.meta.events.register("provide-client-params.s3.*", self._seen)

    def _seen(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.record(model.name, str(params.get("Key", params.get("Prefix", ""))))

    def record(self, operation: str, key: str) -> None:
        """Count one request (also the hook of the transport's request stack).

        The conditional-writes probe (two PUTs and a DELETE under ``.s3sync-probe/``, once per
        transport) is left out: it is about the server, not about files.
        """
        if is_probe_key(key):
            return
        with self._lock:
            self.calls[(operation, key)] += 1

    def count(self, op: str, key: str | None = None) -> int:
        """Calls of ``op`` (for ``key`` when given)."""
        with self._lock:
            return sum(n for (o, k), n in self.calls.items() if o == op and (key is None or k == key))

    def reset(self) -> None:
        """Forget every call."""
        with self._lock:
            self.calls.clear()


def counted_transport(settings: Settings) -> tuple[Transport, KeyCounter]:
    """A real Transport whose client counts its requests."""
    client = make_client(settings)
    counter = KeyCounter(client)
    transport = Transport(settings, client=client)
    if not isinstance(transport.requests, BotoRequests):  # botocore's calls are counted by the client's hooks
        transport.requests.hooks.append(counter.record)
    return transport, counter


@contextlib.contextmanager
def running(settings: Settings, transport: Transport | None = None) -> Iterator[Service]:
    """Run the daemon in a thread; stop it (as SIGTERM would) on exit."""
    service = Service(settings, transport=transport, environ={})
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # the test thread re-raises it
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-daemon", daemon=True)
    thread.start()
    try:
        wait_for(lambda: (service.watcher is not None and service.watcher.is_alive()) or errors, timeout=20)
        if errors:
            raise errors[0]
        yield service
    finally:
        stop.set()
        thread.join(timeout=settings.shutdown_timeout + 15)
        assert not thread.is_alive(), "daemon did not stop"
        if errors:
            raise errors[0]


def object_bytes(settings: Settings, key: str) -> bytes | None:
    """The object's bytes, or None if absent (a fresh client, independent of the daemon)."""
    client = make_client(settings)
    try:
        return bytes(client.get_object(Bucket=settings.require_bucket(), Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # moto/rclone 404 shapes differ
        if "404" in str(exc) or "NoSuchKey" in str(exc):
            return None
        raise


def list_keys(settings: Settings, prefix: str = "") -> list[str]:
    """Every key in the bucket under ``prefix``."""
    client = make_client(settings)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.require_bucket(), Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def drop(folder: Path, name: str, data: bytes, staging: Path | None = None) -> Path:
    """Drop a complete file into ``folder``: written beside it, then renamed in (as users do)."""
    staging = staging or folder.parent / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / name
    tmp.write_bytes(data)
    target = folder / name
    os.replace(tmp, target)
    return target


@contextlib.contextmanager
def captured_events() -> Iterator[list[dict[str, Any]]]:
    """Capture structlog events from every thread."""
    with structlog.testing.capture_logs() as events:
        yield events


def events_named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Events whose name is ``name``."""
    return [e for e in list(events) if e.get("event") == name]
