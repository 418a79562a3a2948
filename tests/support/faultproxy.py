"""A fault-injecting HTTP/1.1 proxy for tests, on 127.0.0.1.

It understands just enough HTTP/1.1 (request line, headers, ``Content-Length`` or chunked
bodies, keep-alive, ``Expect: 100-continue``) to forward each request to an upstream S3
server and, per request, inject one fault:

=================  ===========================================================================
``reset_request``  read the head and half the body, then reset the connection (TCP RST)
``reset_response`` forward; send the head and half the upstream body, then reset
``delay``          read the request, wait ``seconds``, then forward (a slow or hung server)
``status``         answer ``status`` (503 ``SlowDown``, 500 ``InternalError``...) without forwarding
``clock_skew``     answer 403 ``RequestTimeTooSkewed`` without forwarding
``flip_byte``      forward; flip the middle byte of the response body (length unchanged)
``truncate``       forward; send the head (full ``Content-Length``) and half the body, then close
``hold``           read the request, set ``reached``, wait until ``release`` is set (at most
                   ``seconds``), then forward (or, with ``fail_after_hold``, answer ``status``):
                   the test acts while the request is held
``rewrite``        forward; pass the whole response body through ``rewrite(body) -> body`` and drop
                   the response headers named in ``drop_headers`` (``Content-Length`` follows the
                   new body): a listing without continuation token, objects without ETags...
=================  ===========================================================================

When a response has no body (``HEAD``, 204, an empty object), ``reset_response`` and
``truncate`` cut the head itself instead, and ``flip_byte`` has nothing to flip.

Rules are tried in order; the first whose ``match`` accepts the request, whose ``times`` is
not used up and whose coin (``probability``, from a per-rule ``random.Random`` seeded from
``seed``) comes up decides the request. ``match`` gets ``(method, path_with_query, headers)``
with the target exactly as sent (percent-encoded) and lower-case header names::

    proxy.set_faults([Fault("status", match=lambda m, p, h: "continuation-token=" in p, status=500)])

:meth:`FaultProxy.pause` makes the port refuse connections (ECONNREFUSED, like a server that is
down) while keeping it reserved; :meth:`FaultProxy.resume` listens again on the same port.

Bounded: every socket has a timeout, threads are daemons, :meth:`FaultProxy.stop` shuts every
connection down and joins every thread.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self, get_args

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "FaultProxy", "Match"]

HOST = "127.0.0.1"

FaultKind = Literal[
    "reset_request", "reset_response", "delay", "status", "clock_skew", "flip_byte", "truncate", "hold", "rewrite"
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

#: ``match(method, path_with_query, headers)``: headers with lower-case names.
Match = Callable[[str, str, Mapping[str, str]], bool]

_ERROR_CODES: dict[int, tuple[str, str]] = {
    403: ("RequestTimeTooSkewed", "The difference between the request time and the current time is too large."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad gateway."),
    503: ("SlowDown", "Please reduce your request rate."),
    504: ("GatewayTimeout", "Gateway timeout."),
}
_REASONS = {
    403: "Forbidden",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Slow Down",
    504: "Gateway Timeout",
}
_BUFSIZE = 65536
_MAX_HEAD = 64 * 1024


@dataclass(eq=False)
class Fault:
    """One fault rule. ``hits`` counts the requests it decided (reset by ``set_faults``).

    ``status`` and ``code`` are used by ``kind="status"`` (``code`` defaults from the status:
    503 ``SlowDown``, 500 ``InternalError``); ``seconds`` by ``kind="delay"``; ``seed`` makes the
    ``probability`` coin reproducible (default: derived from the proxy's seed and the rule's index).
    """

    kind: FaultKind
    match: Match | None = None
    probability: float = 1.0
    times: int | None = None
    status: int = 503
    seconds: float = 5.0
    seed: int | None = None
    code: str | None = None
    #: ``kind="hold"``: set by the proxy once a held request has been read; the test sets ``release``.
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    fail_after_hold: bool = False
    #: ``kind="rewrite"``: the new response body from the upstream's (de-chunked) one.
    rewrite: Callable[[bytes], bytes] | None = None
    #: ``kind="rewrite"``: response header names (lower-case) to leave out, e.g. ``{"etag"}``.
    drop_headers: frozenset[str] = frozenset()
    #: ``kind="status"``: more of the error, as a server sends it: XML inside ``<Error>`` (e.g.
    #: ``<Region>eu-central-1</Region>``) and response headers (e.g. ``x-amz-retry-after``).
    extra_xml: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    hits: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")
        if not 400 <= self.status <= 599:
            raise ValueError("status must be a 4xx or 5xx code")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")

    def _reset(self, default_seed: str) -> None:
        self.hits = 0
        self._rng = random.Random(self.seed if self.seed is not None else default_seed)

    def _decide(self, method: str, target: str, headers: Mapping[str, str]) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.match is not None and not self.match(method, target, headers):
            return False
        # Draw only for requests that match, so one rule's decisions do not depend on the others.
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return False
        self.hits += 1
        return True


class _ProtocolError(Exception):
    """The peer sent something this small proxy does not understand."""


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_BUFSIZE)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> bytes | None:
        """One head (through the blank line), or None on a clean end of stream."""
        while True:
            while self.buf.startswith(b"\r\n"):  # stray CRLF between messages (RFC 9112 2.2)
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _ProtocolError("head too large")
            if not self._fill():
                if self.buf:
                    raise _ProtocolError("connection closed inside a head")
                return None

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise _ProtocolError(f"connection closed {n - len(self.buf)} bytes short")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes: what is buffered, else one recv."""
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def read_line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[: end + 2])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise _ProtocolError("line too long")
            if not self._fill():
                raise _ProtocolError("connection closed inside a chunk header")

    def iter_exact(self, n: int) -> Iterator[bytes]:
        """``n`` bytes, in pieces as they arrive."""
        while n > 0:
            piece = self.read_some(min(n, _BUFSIZE))
            if not piece:
                raise _ProtocolError(f"connection closed {n} bytes short")
            n -= len(piece)
            yield piece

    def iter_chunked(self) -> Iterator[tuple[bytes, bytes]]:
        """A chunked body as ``(raw bytes, decoded data)`` pieces, trailers included in the raw."""
        while True:
            line = self.read_line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _ProtocolError(f"bad chunk size {line[:40]!r}") from exc
            if size == 0:
                raw = bytearray(line)
                while True:
                    trailer = self.read_line()
                    raw += trailer
                    if trailer == b"\r\n":
                        yield bytes(raw), b""
                        return
            data = self.read_exact(size + 2)
            if data[-2:] != b"\r\n":
                raise _ProtocolError("chunk not followed by CRLF")
            yield line + data, data[:-2]

    def iter_until_eof(self) -> Iterator[bytes]:
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            yield data
        while True:
            data = self.sock.recv(_BUFSIZE)
            if not data:
                return
            yield data


def _parse_head(head: bytes) -> tuple[list[str], dict[str, str]]:
    """The start line split on spaces, and the fields (lower-case names, repeats joined by ', ')."""
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _ProtocolError(f"bad header line {line[:40]!r}")
        key = name.strip().lower()
        fields[key] = f"{fields[key]}, {value.strip()}" if key in fields else value.strip()
    return lines[0].split(" ", 2), fields


def _without_fields(head: bytes, names: set[bytes]) -> bytes:
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() not in names]
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _is_chunked(fields: Mapping[str, str]) -> bool:
    return "chunked" in fields.get("transfer-encoding", "").lower()


def _content_length(fields: Mapping[str, str]) -> int:
    text = fields.get("content-length", "0").split(",")[0].strip() or "0"
    if not text.isdigit():
        raise _ProtocolError(f"bad Content-Length {text[:20]!r}")
    return int(text)


def _rst(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer sees ECONNRESET, not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _ConnectionEndedError(Exception):
    """The connection must end here (and has been closed or reset as the fault demands)."""


class FaultProxy:
    """Proxy ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``, injecting :class:`Fault` s.

    ``timeout`` bounds every socket operation (idle keep-alive connections included).
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0, timeout: float = 30.0) -> None:
        if upstream_host not in {HOST, "localhost"}:
            raise ValueError("the test proxy only forwards to loopback (127.0.0.1)")
        self.upstream = (HOST, upstream_port)
        self.seed = seed
        self.timeout = timeout
        self._port = 0
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[tuple[str, str]] = []
        self._connections = 0
        #: Unexpected exceptions raised inside connection threads (a bug here, or in a ``match``).
        self.errors: list[BaseException] = []
        self._live: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stop = threading.Event()
        self._want_paused = False
        self._applied = threading.Condition(self._lock)
        self._listener: socket.socket | None = None
        self._holder: socket.socket | None = None  # bound, not listening: the port while paused
        self._accept_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None  # a socketpair that interrupts the accept loop
        self._wake_w: socket.socket | None = None

    # --- life cycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The proxy's port (known once started)."""
        if not self._port:
            raise RuntimeError("FaultProxy.start() first: the port is chosen when it starts")
        return self._port

    @property
    def endpoint(self) -> str:
        """The proxy's URL, to use as ``endpoint_url``."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Bind a free port and start accepting connections."""
        if self._accept_thread is not None:
            raise RuntimeError("FaultProxy already started")
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = self._listen(0)
        self._port = int(self._listener.getsockname()[1])
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self._port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and the port, and join every thread (bounded)."""
        self._stop.set()
        self._wake()
        self._shutdown_live()
        deadline = time.monotonic() + timeout
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for sock in (self._listener, self._holder, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._listener = self._holder = self._wake_r = self._wake_w = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def pause(self, timeout: float = 5.0) -> None:
        """The endpoint goes down: open connections are cut, new ones refused; the port stays ours."""
        self._set_paused(True, timeout)
        self._shutdown_live()

    def resume(self, timeout: float = 5.0) -> None:
        """The endpoint comes back, on the same port."""
        self._set_paused(False, timeout)

    @property
    def paused(self) -> bool:
        """Whether connections are being refused."""
        return self._want_paused

    # --- faults and observations ----------------------------------------------------------------
    def set_faults(self, rules: list[Fault]) -> None:
        """Replace the rules (each rule's ``hits`` and coin are reset, so runs repeat exactly)."""
        with self._lock:
            for index, rule in enumerate(rules):
                rule._reset(f"{self.seed}:{index}")
            self._faults = list(rules)

    def clear_faults(self) -> None:
        """Remove every rule: requests pass through untouched."""
        self.set_faults([])

    @property
    def faults(self) -> list[Fault]:
        """The current rules."""
        with self._lock:
            return list(self._faults)

    @property
    def hits(self) -> int:
        """Requests the current rules have decided."""
        with self._lock:
            return sum(rule.hits for rule in self._faults)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of every ``(method, path_with_query)`` seen, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Client connections accepted so far (keep-alive reuse shows as fewer connections than requests)."""
        with self._lock:
            return self._connections

    def clear_requests(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self._requests.clear()

    def count(self, method: str | None = None, contains: str = "", *, probes: bool = False) -> int:
        """Requests seen with ``method`` (any when None) whose path and query contain ``contains``.

        s3sync's probe of conditional writes (two PUTs and a DELETE under ``.s3sync-probe/``, once
        per transport) counts only with ``probes=True``: it is about the server, not about files.
        """
        with self._lock:
            return sum(
                1
                for m, p in self._requests
                if (method is None or m == method) and contains in p and (probes or "/.s3sync-probe/" not in p)
            )

    # --- accepting ----------------------------------------------------------------------------
    @staticmethod
    def _bind(port: int) -> socket.socket:
        """A socket bound to ``port``. SO_REUSEPORT lets the pause holder bind the port while the
        listener still has it, so there is never a moment when the port is free for others."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((HOST, port))
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def _start_listening(sock: socket.socket) -> socket.socket:
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _listen(self, port: int) -> socket.socket:
        return self._start_listening(self._bind(port))

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    def _set_paused(self, paused: bool, timeout: float) -> None:
        with self._lock:
            self._want_paused = paused
        if self._accept_thread is None:
            return  # applied by start()
        self._wake()
        with self._applied:
            ok = self._applied.wait_for(lambda: (self._holder is not None) == paused or self._stop.is_set(), timeout)
        if not ok:
            raise RuntimeError(f"FaultProxy could not {'pause' if paused else 'resume'} within {timeout} s")

    def _apply_state(self, sel: selectors.BaseSelector) -> None:
        """Swap the listener for a bound-but-silent socket (or back); runs on the accept thread."""
        with self._lock:
            paused = self._want_paused
        if paused and self._listener is not None:
            holder = self._bind(self._port)  # bound, never listening: the kernel answers SYNs with RST
            sel.unregister(self._listener)
            self._listener.close()  # connections still in the backlog are reset too
            self._listener = None
            with self._applied:
                self._holder = holder
                self._applied.notify_all()
        elif not paused and self._listener is None:
            assert self._holder is not None
            listener = self._start_listening(self._holder)  # the same socket: the port never left us
            sel.register(listener, selectors.EVENT_READ)
            with self._applied:
                self._listener = listener
                self._holder = None
                self._applied.notify_all()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        assert self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(self._listener, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    self._apply_state(sel)
                    for key, _ in sel.select(timeout=1.0):
                        if key.fileobj is self._wake_r:
                            with contextlib.suppress(OSError):
                                self._wake_r.recv(1024)  # drain the wake-ups
                        elif key.fileobj is self._listener and not self._stop.is_set():
                            self._accept_one()
            except BaseException as exc:  # recorded for the tests of this proxy, never silent
                self.errors.append(exc)
            finally:
                with self._applied:
                    self._applied.notify_all()

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:  # the peer gave up before we accepted (or would-block): nothing to serve
            return
        client.setblocking(True)
        client.settimeout(self.timeout)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=self._serve, args=(client,), name=f"faultproxy-{self._port}-conn", daemon=True)
        with self._lock:
            self._connections += 1
            self._live.add(client)
            self._threads = {x for x in self._threads if x.is_alive()}
            self._threads.add(t)
        t.start()

    def _shutdown_live(self) -> None:
        # shutdown() (not close()) from this thread: it wakes the owner thread, which closes.
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- one client connection ----------------------------------------------------------------
    def _serve(self, client: socket.socket) -> None:
        state = _Upstream(self)
        reader = _Reader(client)
        try:
            while not self._stop.is_set():
                head = reader.read_head()
                if head is None:
                    return
                if not self._exchange(head, reader, client, state):
                    return
        except (_ConnectionEndedError, _ProtocolError, OSError):
            return
        except Exception as exc:  # a bug here or in a rule's match: recorded, and the connection dropped
            self.errors.append(exc)
        finally:
            state.close()
            with self._lock:
                self._live.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _pick(self, method: str, target: str, fields: Mapping[str, str]) -> Fault | None:
        with self._lock:
            self._requests.append((method, target))
            for rule in self._faults:
                if rule._decide(method, target, fields):
                    return rule
        return None

    def _exchange(self, head: bytes, reader: _Reader, client: socket.socket, upstream: _Upstream) -> bool:
        """Handle one request; return whether the client connection stays open."""
        start, fields = _parse_head(head)
        if len(start) != 3 or not start[2].startswith("HTTP/1."):
            raise _ProtocolError(f"bad request line {' '.join(start)[:60]!r}")
        method, target = start[0], start[1]
        fault = self._pick(method, target, fields)
        kind = fault.kind if fault is not None else None
        client_keep = start[2] == "HTTP/1.1" and "close" not in fields.get("connection", "").lower()

        if fields.get("expect", "").lower() == "100-continue":
            # Answer the interim response here and strip the header upstream (botocore does not
            # sign it), so an upstream "100 Continue" is never taken for the final response.
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = _without_fields(head, {b"expect"})

        if kind == "reset_request":
            length = 0 if _is_chunked(fields) else _content_length(fields)
            if _is_chunked(fields):
                reader.read_some(_BUFSIZE)
            elif length:
                reader.read_exact(length // 2)
            _rst(client)
            raise _ConnectionEndedError

        body = self._read_request_body(reader, fields)

        if kind in {"status", "clock_skew"}:
            assert fault is not None
            client.sendall(_error_response(fault, method, target))
            return client_keep
        if kind == "delay":
            assert fault is not None
            if self._stop.wait(fault.seconds):
                raise _ConnectionEndedError
        if kind == "hold":
            assert fault is not None
            fault.reached.set()
            deadline = time.monotonic() + fault.seconds
            while not fault.release.wait(0.05):
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise _ConnectionEndedError
            if fault.fail_after_hold:
                client.sendall(_error_response(fault, method, target))
                return client_keep

        uconn = upstream.send(head + body)
        return self._relay_response(method, uconn, client, upstream, kind, fault) and client_keep

    def _read_request_body(self, reader: _Reader, fields: Mapping[str, str]) -> bytes:
        if _is_chunked(fields):
            return b"".join(raw for raw, _ in reader.iter_chunked())
        return reader.read_exact(_content_length(fields))

    def _relay_response(
        self,
        method: str,
        uconn: _Reader,
        client: socket.socket,
        upstream: _Upstream,
        kind: str | None,
        fault: Fault | None = None,
    ) -> bool:
        rhead = uconn.read_head()
        while rhead is not None and rhead.startswith(b"HTTP/1.1 1") and not rhead.startswith(b"HTTP/1.1 101"):
            rhead = uconn.read_head()  # interim 1xx
        if rhead is None:
            upstream.close()
            _rst(client)  # the upstream hung up without answering: so do we
            raise _ConnectionEndedError
        start, rfields = _parse_head(rhead)
        if len(start) < 2 or not start[1].isdigit():
            raise _ProtocolError(f"bad status line {' '.join(start)[:60]!r}")
        status = int(start[1])
        upstream_keep = start[0] == "HTTP/1.1" and "close" not in rfields.get("connection", "").lower()
        no_body = method == "HEAD" or status in {204, 304}
        chunked = not no_body and _is_chunked(rfields)
        until_eof = not no_body and not chunked and "content-length" not in rfields

        if kind == "rewrite":
            assert fault is not None
            return self._rewrite_response(uconn, upstream, client, rhead, rfields, fault, no_body=no_body)
        if kind in {"flip_byte", "truncate", "reset_response"}:
            # Read the whole body (de-chunked) so the fault lands inside the payload.
            if no_body:
                body = b""
            elif chunked:
                body = b"".join(data for _, data in uconn.iter_chunked())
                rhead = _without_fields(rhead, {b"transfer-encoding"})[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
            elif until_eof:
                body = b"".join(uconn.iter_until_eof())
            else:
                body = uconn.read_exact(_content_length(rfields))
            if not upstream_keep or until_eof:
                upstream.close()
            if kind == "flip_byte":
                if body:
                    i = len(body) // 2
                    body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
                client.sendall(rhead + body)
                return upstream_keep and not until_eof
            cut = rhead + body[: len(body) // 2] if body else rhead[: len(rhead) // 2]
            client.sendall(cut)
            if kind == "truncate":
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)  # a clean FIN, short of Content-Length
                client.close()
            else:
                _rst(client)
            raise _ConnectionEndedError

        client.sendall(rhead)
        if no_body:
            pass
        elif chunked:
            for raw, _ in uconn.iter_chunked():
                client.sendall(raw)
        elif until_eof:
            for piece in uconn.iter_until_eof():
                client.sendall(piece)
            upstream.close()
            return False  # the body ends with the connection
        else:
            for piece in uconn.iter_exact(_content_length(rfields)):
                client.sendall(piece)
        if not upstream_keep:
            upstream.close()
            return False
        return True


    @staticmethod
    def _rewrite_response(
        uconn: _Reader,
        upstream: _Upstream,
        client: socket.socket,
        rhead: bytes,
        rfields: Mapping[str, str],
        fault: Fault,
        *,
        no_body: bool,
    ) -> bool:
        """Read the whole upstream answer, rewrite its body, drop headers, send it with a true Content-Length."""
        upstream_keep = "close" not in rfields.get("connection", "").lower()
        if no_body:
            body = b""
        elif _is_chunked(rfields):
            body = b"".join(data for _, data in uconn.iter_chunked())
        elif "content-length" not in rfields:
            body = b"".join(uconn.iter_until_eof())
            upstream_keep = False
        else:
            body = uconn.read_exact(_content_length(rfields))
        if not upstream_keep:
            upstream.close()
        if not no_body and fault.rewrite is not None:
            body = fault.rewrite(body)
        drop = {b"transfer-encoding", b"content-length"} | {name.encode() for name in fault.drop_headers}
        head = _without_fields(rhead, drop)[:-2]
        if not no_body:
            head += b"Content-Length: %d\r\n" % len(body)
        elif "content-length" in rfields and "content-length" not in fault.drop_headers:
            head += b"Content-Length: %d\r\n" % _content_length(rfields)
        client.sendall(head + b"\r\n" + body)
        return upstream_keep


class _Upstream:
    """The upstream connection of one client connection, reused while it stays open."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.sock: socket.socket | None = None
        self.reader: _Reader | None = None

    def send(self, data: bytes) -> _Reader:
        if self.sock is not None and self._dropped():
            self.close()
        if self.sock is None:
            try:
                sock = socket.create_connection(self.proxy.upstream, timeout=min(5.0, self.proxy.timeout))
            except OSError as exc:
                raise _ConnectionEndedError from exc  # upstream down: the client's connection just ends
            sock.settimeout(self.proxy.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock, self.reader = sock, _Reader(sock)
            with self.proxy._lock:
                self.proxy._live.add(sock)
        assert self.reader is not None
        self.sock.sendall(data)
        return self.reader

    def _dropped(self) -> bool:
        """Whether the idle keep-alive connection was closed by the server (as urllib3 checks)."""
        assert self.sock is not None
        # Non-blocking for the peek: with a timeout set, Python would first wait up to that timeout.
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False  # nothing to read: still open
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(self.proxy.timeout)
        return True  # end of stream, or bytes nobody asked for: not reusable

    def close(self) -> None:
        sock, self.sock, self.reader = self.sock, None, None
        if sock is not None:
            with self.proxy._lock:
                self.proxy._live.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()


def _error_response(fault: Fault, method: str, target: str) -> bytes:
    """An S3-style XML error, as AWS would send it (no body for HEAD)."""
    status = 403 if fault.kind == "clock_skew" else fault.status
    code, message = _ERROR_CODES.get(status, ("InternalError", "Injected error."))
    if fault.kind == "status" and fault.code:
        code = fault.code
    resource = target.split("?", 1)[0].replace("&", "&amp;").replace("<", "&lt;")
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<Resource>{resource}</Resource>{fault.extra_xml}<RequestId>faultproxy</RequestId></Error>"
    ).encode()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-request-id: faultproxy\r\nDate: {date}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in fault.headers.items())
        + "\r\n"
    ).encode()
    return head if method == "HEAD" else head + body
