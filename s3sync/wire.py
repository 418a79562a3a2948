"""A small HTTP/1.1 client: keep-alive connections to one host, and nothing more.

The fast path (:mod:`s3sync.fastpath`) sends its requests by the thousand, and with the GIL its
CPU per request is the limit of a mirror or upload of small files. ``http.client`` parses every
answer's headers through the ``email`` package and urllib3 adds its own layers on top. Measured
on this project's benchmark machine: 2,000 GETs of 64 KiB from ``rclone serve s3`` (through
:class:`~s3sync.fastpath.FastPath`, signing included) took 2.1-2.4 s of client CPU on urllib3 and
about 1.0 s on this module.

What it does: ``http`` and ``https`` to one host; a request whose body is in memory (sent with
its head in one write when small); answers delimited by ``Content-Length``, ``chunked`` or the
end of the connection; a pool of idle keep-alive connections. A request that fails on a reused
connection that the server closed cleanly before any byte of the answer is sent once more on a
new connection: the server closed it while idle, just as we picked it (idle connections are also
checked before reuse). A reset or a broken pipe is a failure like any other, left to the caller's
retries, so it shows in the logs.

What it does not do: redirects, proxies, compression, ``Expect: 100-continue``, HTTP/2. Its
callers never need them; the general-purpose path (botocore) stays for everything else.

Failures are :class:`WireError` subclasses; the fast path maps them to botocore's exceptions.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

__all__ = [
    "ConnectError",
    "ConnectTimeoutError",
    "Pool",
    "ProtocolError",
    "ReadTimeoutError",
    "Response",
    "TLSError",
    "WireError",
]

_MAX_HEAD = 64 * 1024  # bytes of status line and headers we accept in one answer
_ONE_WRITE = 256 * 1024  # bodies up to this size go out in the same write as the head
_RECV = 256 * 1024

_A = TypeVar("_A")
_R = TypeVar("_R")


class WireError(Exception):
    """A request could not be completed at the HTTP level."""


class ConnectError(WireError):
    """No connection to the server (refused, unknown host, TLS handshake failed)."""


class TLSError(ConnectError):
    """The server's TLS certificate did not verify (``CERTIFICATE_VERIFY_FAILED``: untrusted, expired, wrong name)."""


class ConnectTimeoutError(ConnectError):
    """The server did not accept the connection in time."""


class ReadTimeoutError(WireError):
    """The server stopped answering for longer than the read timeout."""


class ProtocolError(WireError):
    """The connection broke, or the answer is not valid HTTP/1.1."""


class _Conn:
    """One socket and the bytes received on it beyond what was consumed."""

    __slots__ = ("buf", "sock", "used")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.used = 0  # requests sent on it

    def recv_into_buf(self) -> int:
        data = self.sock.recv(_RECV)
        self.buf += data
        return len(data)

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes: buffered ones first, else one receive; b"" at the end of the stream."""
        if self.buf:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        return self.sock.recv(min(n, _RECV))

    def take_into(self, view: memoryview) -> int:
        """Fill the start of ``view``: buffered bytes first, else one receive; 0 at the end of the stream."""
        if self.buf:
            n = min(len(view), len(self.buf))
            view[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        return self.sock.recv_into(view)

    def read_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        left = n
        while left > 0:
            data = self.take(left)
            if not data:
                raise ProtocolError(f"connection closed with {left} of {n} bytes still to come")
            parts.append(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_line(self) -> bytes:
        """One CRLF-terminated line (without the CRLF), for chunk sizes and trailers."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise ProtocolError("line too long in a chunked answer")
            if not self.recv_into_buf():
                raise ProtocolError("connection closed inside a chunked answer")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Response:
    """An answer: status, headers (names in lower case), and a body read with :meth:`read`.

    Reading the body to its end puts the connection back in the pool; :meth:`close` does that
    too, or closes the connection when the body was not read to its end.
    """

    def __init__(self, pool: Pool, conn: _Conn, status: int, headers: dict[str, str], mode: str, length: int) -> None:
        self.status = status
        self.headers = headers
        #: The whole body, when the request was sent with ``preload``.
        self.data = b""
        self._pool = pool
        self._conn: _Conn | None = conn
        self._mode = mode  # "length", "chunked", "close" or "none"
        self._left = length  # bytes left of the body ("length"), or of the current chunk ("chunked")
        self._keep = mode in ("length", "chunked", "none") and not _says_close(headers)
        self._done = mode == "none" or (mode == "length" and length == 0)

    @property
    def complete(self) -> bool:
        """The whole body has been read."""
        return self._done

    def read(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` bytes of the body (all that is left when None); b"" at its end."""
        return self._reading(self._read_all if amt is None else self._read_some, amt or 0, b"")

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Receive body bytes straight into ``buffer``; how many (at least one), 0 at the end.

        For large bodies: no bytes object is made per receive, and the caller's buffer is reused.
        """
        return self._reading(self._readinto_some, memoryview(buffer).cast("B"), 0)

    def _reading(self, step: Callable[[_A], _R], arg: _A, at_end: _R) -> _R:
        """Run one read ``step``; a broken socket drops the connection, a finished body returns it."""
        if self._done or self._conn is None:
            self.close()  # an empty body is done before any read: give its connection back
            return at_end
        try:
            result = step(arg)
        except OSError as exc:
            self._drop()
            if isinstance(exc, TimeoutError):
                raise ReadTimeoutError(f"no data for the read timeout ({exc})") from exc
            raise ProtocolError(f"connection broken while reading the answer: {exc}") from exc
        except ProtocolError:
            self._drop()
            raise
        if self._done:
            self.close()  # the whole body is in: the connection can serve the next request
        return result

    def _read_all(self, _: int) -> bytes:
        parts = []
        while chunk := self._read_some(1 << 30):
            parts.append(chunk)
        return b"".join(parts)

    def _read_some(self, amt: int) -> bytes:
        conn = self._conn
        assert conn is not None
        if self._mode == "length":
            data = conn.read_exact(min(amt, self._left))
            self._left -= len(data)
            self._done = self._left == 0
            return data
        if self._mode == "chunked":
            if self._left == 0 and not self._next_chunk(conn):
                return b""
            data = conn.read_exact(min(amt, self._left))
            self._left -= len(data)
            if self._left == 0:
                self._end_chunk(conn)
            return data
        data = conn.take(amt)  # "close": until the server ends the stream
        if not data:
            self._done = True
        return data

    def _readinto_some(self, view: memoryview) -> int:
        conn = self._conn
        assert conn is not None
        if not view:
            return 0
        if self._mode == "close":
            n = conn.take_into(view)
            if not n:
                self._done = True
            return n
        if self._mode == "chunked" and self._left == 0 and not self._next_chunk(conn):
            return 0
        n = conn.take_into(view[: self._left])
        if not n:
            raise ProtocolError(f"connection closed with {self._left} bytes of the body still to come")
        self._left -= n
        if self._mode == "length":
            self._done = self._left == 0
        elif self._left == 0:
            self._end_chunk(conn)
        return n

    def _next_chunk(self, conn: _Conn) -> bool:
        """Read the next chunk's size line; False (and the body done) at the last chunk."""
        size_line = conn.read_line().split(b";", 1)[0].strip()
        try:
            self._left = int(size_line, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:20]!r}") from None
        if self._left == 0:
            while conn.read_line():  # trailers, up to the empty line
                pass
            self._done = True
            return False
        return True

    @staticmethod
    def _end_chunk(conn: _Conn) -> None:
        if conn.read_exact(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")

    def close(self) -> None:
        """Give the connection back (whole body read, keep-alive) or close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep:
            self._pool._put(conn)
        else:
            conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Pool:
    """Keep-alive connections to the host of ``url``; safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        maxsize: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "s3sync",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.netloc.rpartition("@")[2]  # the Host header
        # Sent with every request. Without Accept-Encoding a server may compress (RFC 9110), and
        # this client does not decompress; http.client sends "identity" too.
        self._fixed = f"Host: {self.host}\r\nUser-Agent: {user_agent}\r\nAccept-Encoding: identity"
        self._hostname = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._maxsize = maxsize
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        # A pool dropped without close() still closes its idle sockets (as urllib3's pools do).
        weakref.finalize(self, _close_all, self._idle)

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"", *, preload: bool = True
    ) -> Response:
        """Send one request; the answer's head is read, its body too when ``preload``.

        ``target`` is the path and query, already encoded. ``Host`` and ``Content-Length`` are added.
        """
        length = len(body) if body or method in ("PUT", "POST") else None
        head = _encode_head(method, target, self._fixed, headers, length)
        while True:
            conn = self._get()
            fresh = conn is None
            if conn is None:
                conn = self._connect()
            try:
                resp = self._exchange(conn, method, head, body)
            except _StaleConnectionError:
                conn.close()
                if fresh:  # pragma: no cover - _StaleConnectionError is only raised for reused connections
                    raise ProtocolError("connection closed before the answer") from None
                continue  # the server had closed the idle connection: once more on a new one
            except BaseException:
                conn.close()
                raise
            if preload:
                data = resp.read()
                resp.close()
                resp.data = data
            return resp

    def close(self) -> None:
        """Close the idle connections; connections in use close when their answer is done."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
        _close_all(idle)

    # --- connections -----------------------------------------------------------------------------
    def _get(self) -> _Conn | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if not _dropped(conn):
                return conn
            conn.close()

    def _put(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Conn:
        try:
            sock = socket.create_connection((self._hostname, self._port), timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(f"connecting to {self.host} timed out") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.host}: {exc.strerror or exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._hostname)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(f"TLS handshake with {self.host} timed out") from exc
        except ssl.SSLCertVerificationError as exc:
            # Not retried: no later attempt will trust it. Other TLS failures stay ConnectError.
            sock.close()
            raise TLSError(f"TLS handshake with {self.host} failed: {exc}") from exc
        except OSError as exc:
            sock.close()
            raise ConnectError(f"TLS handshake with {self.host} failed: {exc}") from exc
        sock.settimeout(self._read_timeout)
        return _Conn(sock)

    # --- one exchange ------------------------------------------------------------------------------
    def _exchange(self, conn: _Conn, method: str, head: bytes, body: bytes) -> Response:
        reused = conn.used > 0
        conn.used += 1
        try:
            if body and len(body) <= _ONE_WRITE:
                conn.sock.sendall(head + body)
            else:
                conn.sock.sendall(head)
                if body:
                    conn.sock.sendall(body)
        except TimeoutError as exc:
            raise ReadTimeoutError(f"sending the request timed out ({exc})") from exc
        except OSError as exc:
            # The server may have answered (and closed) before taking the whole body: say what it said.
            try:
                return self._answer(conn, method, reused=False, keep=False)
            except WireError:
                raise ProtocolError(f"connection broken while sending the request: {exc}") from exc
        return self._answer(conn, method, reused=reused, keep=True)

    def _answer(self, conn: _Conn, method: str, *, reused: bool, keep: bool) -> Response:
        try:
            while True:
                status, headers = _read_head(conn, reused=reused)
                if not 100 <= status < 200:
                    break
                reused = False  # an interim answer (100 Continue): the real one follows
        except TimeoutError as exc:
            raise ReadTimeoutError(f"no answer within the read timeout ({exc})") from exc
        except OSError as exc:
            raise ProtocolError(f"connection broken before the answer: {exc}") from exc
        mode, length = _body_mode(method, status, headers)
        resp = Response(self, conn, status, headers, mode, length)
        if not keep:
            resp._keep = False
        return resp


class _StaleConnectionError(Exception):
    """A reused connection was closed cleanly (FIN, no byte of an answer): the idle-close race; send again.

    A reset or a broken pipe is not this: it is a fault of the exchange, reported as such.
    """


def _encode_head(method: str, target: str, fixed: str, headers: Mapping[str, str], length: int | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", fixed]
    has_length = False
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        has_length = has_length or name.lower() == "content-length"
        lines.append(f"{name}: {value}")
    if length is not None and not has_length:
        lines.append(f"Content-Length: {length}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a header is not Latin-1 text: {exc}") from exc


def _read_head(conn: _Conn, *, reused: bool) -> tuple[int, dict[str, str]]:
    """Status and headers of the next answer; the rest stays in ``conn.buf``."""
    start = 0
    while True:
        end = conn.buf.find(b"\r\n\r\n", start)
        if end >= 0:
            break
        if len(conn.buf) > _MAX_HEAD:
            raise ProtocolError("answer head larger than 64 KiB")
        start = max(0, len(conn.buf) - 3)
        if not conn.recv_into_buf():
            if reused and not conn.buf:
                raise _StaleConnectionError
            raise ProtocolError("connection closed before the answer was complete")
    text = conn.buf[:end].decode("latin-1")
    del conn.buf[: end + 4]
    status_line, _, rest = text.partition("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
    headers: dict[str, str] = {}
    last = ""
    for line in rest.split("\r\n") if rest else ():
        if line[:1] in (" ", "\t") and last:  # an obsolete folded continuation
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"malformed header line {line[:60]!r}")
        last = name.strip().lower()
        value = value.strip()
        headers[last] = f"{headers[last]}, {value}" if last in headers else value
    if version == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower():
        headers.setdefault("connection", "close")
    return int(code), headers


def _body_mode(method: str, status: int, headers: Mapping[str, str]) -> tuple[str, int]:
    """How the body is delimited: ("none"|"length"|"chunked"|"close", length)."""
    if method == "HEAD" or status in (204, 304):
        return "none", 0
    encoding = headers.get("transfer-encoding", "").lower()
    if encoding:
        return ("chunked", 0) if encoding.rsplit(",", 1)[-1].strip() == "chunked" else ("close", -1)
    raw = headers.get("content-length")
    if raw is None:
        return "close", -1
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise ProtocolError(f"bad Content-Length {raw[:40]!r}")
    return "length", int(values.pop())


def _close_all(conns: list[_Conn]) -> None:
    for conn in conns:
        conn.close()


def _says_close(headers: Mapping[str, str]) -> bool:
    return "close" in (t.strip() for t in headers.get("connection", "").lower().split(","))


def _dropped(conn: _Conn) -> bool:
    """An idle connection with something to read has been closed (or is out of step): not reusable."""
    if conn.buf:
        return True
    poller = select.poll()  # not select(): no limit on descriptor numbers
    try:
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
