"""A forward HTTP proxy on loopback, as a corporate proxy is: it records what passes through it.

Plain-HTTP requests arrive in absolute form (``GET http://host:port/path HTTP/1.1``) and are
forwarded in origin form; ``CONNECT host:port`` opens a tunnel (HTTPS through the proxy). Each
connection is spliced both ways until either side closes. :attr:`ForwardProxy.seen` lists
``(method, target)`` of every request head the proxy read.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = ["ForwardProxy"]


class ForwardProxy:
    """``with ForwardProxy() as proxy:`` then ``HTTP_PROXY=proxy.url``."""

    def __init__(self, hosts: dict[str, str] | None = None) -> None:
        #: Names only this proxy can resolve (``{"s3.example.invalid": "127.0.0.1"}``): a request
        #: that goes around the proxy to such a name fails, so every request must pass here.
        self.hosts = dict(hosts or {})
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="forward-proxy", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def count(self, contains: str = "") -> int:
        """Requests seen whose target contains ``contains``."""
        with self._lock:
            return sum(1 for _, target in self.seen if contains in target)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(30)
        upstream: socket.socket | None = None
        try:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = client.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            line, _, fields = head.partition(b"\r\n")
            method, target, version = line.decode("latin-1").split(" ", 2)
            with self._lock:
                self.seen.append((method, target))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                name = host.strip("[]")
                upstream = socket.create_connection((self.hosts.get(name, name), int(port)), timeout=30)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
            else:
                url = urlsplit(target)
                name = url.hostname or "127.0.0.1"
                upstream = socket.create_connection((self.hosts.get(name, name), url.port or 80), timeout=30)
                origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
                kept = [f for f in fields.split(b"\r\n") if not f.lower().startswith(b"proxy-")]
                upstream.sendall(f"{method} {origin} {version}\r\n".encode("latin-1") + b"\r\n".join(kept))
                upstream.sendall(b"\r\n\r\n" + rest)
                # Keep-alive: later requests on this connection are relayed as sent (absolute form
                # is accepted by the servers used here); the first one is what the test counts.
            self._splice(client, upstream)
        except OSError:
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _splice(self, a: socket.socket, b: socket.socket) -> None:
        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        other = threading.Thread(target=pump, args=(b, a), daemon=True)
        other.start()
        pump(a, b)
        other.join(30)
