"""A fault-injecting HTTP/1.1 proxy for tests, on loopback.

It understands just enough HTTP (request line, headers, Content-Length or chunked bodies,
keep-alive) to forward each request to the upstream S3 server and, per request, inject a
fault: reset the connection mid-request or mid-response, delay, answer 500/503 (SlowDown)
or 403 RequestTimeTooSkewed without forwarding, flip a byte in the response body, or cut
the body short. ``pause()`` refuses connections (the endpoint is "down") while keeping the
port. Deterministic with a seed; every socket has timeouts; threads are daemons.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Fault", "FaultProxy"]

Match = Callable[[str, str, dict[str, str]], bool]

_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass
class Fault:
    """One fault rule: ``kind`` applied to requests that ``match``, with ``probability``, at most ``times``."""

    kind: str  # reset_request | reset_response | delay | status | clock_skew | flip_byte | truncate
    match: Match | None = None
    probability: float = 1.0
    times: int | None = None
    status: int = 503
    seconds: float = 5.0
    hits: int = 0


def _rst(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    """Buffered reads on a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("short body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("short chunk")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read_chunked(self) -> bytes:
        out = b""
        while True:
            line = self.read_line()
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = self.read_line()
                    out += trailer
                    if trailer == b"\r\n":
                        return out
            out += self.read_exact(size + 2)


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
    return lines[0], fields


def _body(conn: _Conn, fields: dict[str, str], *, no_body: bool = False) -> bytes:
    if no_body:
        return b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return conn.read_chunked()
    return conn.read_exact(int(fields.get("content-length", "0") or 0))


class FaultProxy:
    """Proxy ``127.0.0.1:<port>`` -> ``upstream_host:upstream_port`` with injectable faults."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        """The proxy's URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Start accepting connections."""
        t = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop and close everything."""
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()

    def pause(self) -> None:
        """Refuse every connection (reset) until :meth:`resume`."""
        self._paused.set()

    def resume(self) -> None:
        """Accept connections again."""
        self._paused.clear()

    def set_faults(self, faults: list[Fault]) -> None:
        """Replace the fault rules."""
        with self._lock:
            self._faults = list(faults)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.set_faults([])

    def count(self, method: str, contains: str = "") -> int:
        """Requests seen with ``method`` whose path contains ``contains``."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and contains in p)

    def _pick(self, method: str, path: str, fields: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if fault.match is not None and not fault.match(method, path, fields):
                    continue
                if self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                return fault
        return None

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._paused.is_set():
                _rst(client)
                continue
            t = threading.Thread(target=self._serve, args=(client,), name="faultproxy-conn", daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(30)
        upstream: socket.socket | None = None
        cconn = _Conn(client)
        try:
            while not self._stop.is_set():
                head = cconn.read_head()
                if head is None:
                    return
                if self._paused.is_set():
                    _rst(client)
                    return
                request_line, fields = _headers(head)
                method, path = request_line.split(" ")[:2]
                fault = self._pick(method, path, fields)
                if fault is not None and fault.kind == "reset_request":
                    with contextlib.suppress(ConnectionError, OSError):
                        cconn.read_exact(min(int(fields.get("content-length", "0") or 0) // 2, 1))
                    _rst(client)
                    return
                if fields.get("expect", "").lower() == "100-continue":
                    # Answer the interim response ourselves and strip the header upstream, so the
                    # upstream's own "100 Continue" never gets mistaken for the final response.
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = b"\r\n".join(
                        line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")
                    )
                body = _body(cconn, fields)
                if fault is not None and fault.kind in {"status", "clock_skew"}:
                    client.sendall(self._error(fault))
                    continue
                if fault is not None and fault.kind == "delay":
                    if self._stop.wait(fault.seconds):
                        return
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=30)
                upstream.sendall(head + body)
                uconn = _Conn(upstream)
                rhead = uconn.read_head()
                while rhead is not None and rhead.startswith(b"HTTP/1.1 1"):
                    rhead = uconn.read_head()  # skip interim 1xx responses
                if rhead is None:
                    _rst(client)
                    return
                status_line, rfields = _headers(rhead)
                status = int(status_line.split(" ")[1])
                rbody = _body(uconn, rfields, no_body=method == "HEAD" or status in {204, 304})
                if fault is not None and fault.kind == "flip_byte" and rbody and "chunked" not in rfields.get(
                    "transfer-encoding", ""
                ):
                    i = len(rbody) // 2
                    rbody = rbody[:i] + bytes([rbody[i] ^ 0xFF]) + rbody[i + 1 :]
                if fault is not None and fault.kind == "truncate" and rbody:
                    client.sendall(rhead + rbody[: len(rbody) // 2])
                    client.close()
                    return
                if fault is not None and fault.kind == "reset_response":
                    # Cut inside the body, or inside the head when there is no body to cut.
                    partial = rhead + rbody[: len(rbody) // 2] if rbody else rhead[: len(rhead) // 2]
                    client.sendall(partial)
                    _rst(client)
                    return
                client.sendall(rhead + rbody)
                if rfields.get("connection", "").lower() == "close":
                    return
        except (OSError, ConnectionError, ValueError, IndexError):
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.close()

    @staticmethod
    def _error(fault: Fault) -> bytes:
        if fault.kind == "clock_skew":
            status, code, msg = 403, "RequestTimeTooSkewed", "The difference between the request time and the server's time is too large."
        else:
            status = fault.status
            code, msg = _ERRORS.get(status, ("InternalError", "error"))
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{msg}</Message>'
            f"<RequestId>faultproxy</RequestId></Error>"
        ).encode()
        reason = {403: "Forbidden", 500: "Internal Server Error", 503: "Slow Down"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n\r\n"
        ).encode()
        return head + body
