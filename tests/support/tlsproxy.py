"""A TLS front for a plain-HTTP S3 server, on 127.0.0.1: what a private-CA endpoint looks like.

It accepts TLS with the certificate it is given (from ``trustme``), and relays the decrypted
bytes both ways to the upstream server. Nothing is parsed, so the ``Host`` header a client
signs reaches the server unchanged and SigV4 still verifies::

    with TLSProxy(ca.server_context(), "127.0.0.1", server.port) as proxy:
        ...  # https://127.0.0.1:<proxy.port>

Bounded: sockets have timeouts, threads are daemons (one per connection), :meth:`TLSProxy.stop` closes everything.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
from types import TracebackType
from typing import Self

__all__ = ["TLSProxy"]


class TLSProxy:
    """Terminate TLS on a loopback port and relay each connection to ``upstream_host:upstream_port``."""

    def __init__(
        self, context: ssl.SSLContext, upstream_host: str, upstream_port: int, *, timeout: float = 30.0
    ) -> None:
        self._context = context
        self._upstream = (upstream_host, upstream_port)
        self._timeout = timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="tls-proxy", daemon=True)
        #: TLS handshakes that failed (a client that does not trust the certificate).
        self.refused = 0

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:<port>``: the certificate must name 127.0.0.1."""
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below (close() alone does not)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), name="tls-proxy-conn", daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(self._timeout)
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        try:
            upstream = socket.create_connection(self._upstream, timeout=self._timeout)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        try:
            _relay(client, upstream, self._timeout)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


def _relay(client: ssl.SSLSocket, upstream: socket.socket, timeout: float) -> None:
    """Copy both ways until either side ends, all on this one thread.

    One thread per direction would read and write the same TLS connection at once, which
    OpenSSL does not allow (it truncates or garbles records now and then).
    """
    with selectors.DefaultSelector() as sel:
        sel.register(client, selectors.EVENT_READ)
        sel.register(upstream, selectors.EVENT_READ)
        while True:
            if client.pending():  # decrypted bytes already inside the TLS layer: select cannot see them
                sources: list[socket.socket] = [client]
            else:
                sources = [key.fileobj for key, _ in sel.select(timeout)]  # type: ignore[misc]
                if not sources:
                    return  # idle for the whole timeout
            for src in sources:
                data = src.recv(256 * 1024)
                if not data:
                    return
                (upstream if src is client else client).sendall(data)
