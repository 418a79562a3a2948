"""systemd's sd_notify protocol, without a dependency: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

The daemon tells systemd (``Type=notify``) when it is ready, what it is doing, and that it
is alive. Watchdog pings are only sent while the upload and mirror loops are actually
alive: a hung loop stops the pings, and systemd restarts the service. Every send is
best-effort and never raises: the daemon must not die because the manager went away.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "WatchdogPinger"]


class Notifier:
    """Send sd_notify datagrams to ``$NOTIFY_SOCKET`` (a no-op when it is unset)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._watchdog_usec = watchdog_usec
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (ignored if it names another process)."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = environ.get("WATCHDOG_USEC", "")
        if raw.isdigit() and int(raw) > 0:
            pid = environ.get("WATCHDOG_PID", "")
            if not pid or (pid.isdigit() and int(pid) == os.getpid()):
                usec = int(raw)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``WATCHDOG_USEC``, as systemd recommends."""
        return self._watchdog_usec / 2e6 if self._watchdog_usec else None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; True when the datagram was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self) -> bool:
        """READY=1: the start-up scan is done and the watcher is live."""
        return self.send(ready=1)

    def reloading(self) -> bool:
        """RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload wants)."""
        return self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.send(stopping=1)

    def status(self, text: str) -> bool:
        """STATUS=<one line>."""
        return self.send(status=" ".join(text.split()))

    def watchdog(self) -> bool:
        """WATCHDOG=1: we are alive."""
        return self.send(watchdog=1)


class WatchdogPinger(threading.Thread):
    """Ping the systemd watchdog every ``watchdog_interval`` while ``is_alive_check()`` says the loops live."""

    def __init__(self, notifier: Notifier, is_alive_check: Callable[[], bool], stop: threading.Event) -> None:
        super().__init__(name="s3sync-watchdog", daemon=True)
        self.notifier = notifier
        self.check = is_alive_check
        self.stop_event = stop
        self.pings = 0

    def run(self) -> None:
        interval = self.notifier.watchdog_interval
        if not interval:
            return
        while not self.stop_event.wait(interval):
            if self.check() and self.notifier.watchdog():
                self.pings += 1
