"""The fast path's HTTP/1.1 client against a scripted server on loopback: framing, keep-alive, failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from s3sync import wire

#: What the server does for one request: write to the socket; return False to close the connection.
Action = Callable[[socket.socket], bool]


def answer(raw: bytes, *, keep: bool = True) -> Action:
    def act(sock: socket.socket) -> bool:
        sock.sendall(raw)
        return keep

    return act


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


class ScriptedServer:
    """Answers each request with the next scripted action; records requests and connections."""

    def __init__(self, actions: list[Action]) -> None:
        self.actions = list(actions)
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        buf = b""
        with sock:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += sock.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self._lock:
                    self.requests.append((head, body))
                    action = self.actions.pop(0)
                if not action(sock):
                    return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    made: list[ScriptedServer] = []

    def make(*actions: Action) -> ScriptedServer:
        server = ScriptedServer(list(actions))
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def pool_for(server: ScriptedServer, read_timeout: float = 5.0) -> wire.Pool:
    return wire.Pool(server.url, maxsize=4, connect_timeout=2, read_timeout=read_timeout)


def test_keep_alive_reuses_one_connection(serve):
    """Answers framed by Content-Length leave the connection open for the next request."""
    server = serve(answer(ok(b"one")), answer(ok(b"two")), answer(ok(b"")))
    pool = pool_for(server)
    assert pool.request("GET", "/a", {}).data == b"one"
    assert pool.request("GET", "/b", {}).data == b"two"
    assert pool.request("PUT", "/c", {"x-amz-meta-a": "1"}, b"payload").status == 200
    assert server.connections == 1
    head, body = server.requests[2]
    assert head.startswith(b"PUT /c HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 7" in head
    assert b"\r\nx-amz-meta-a: 1" in head
    assert b"\r\nAccept-Encoding: identity\r\n" in head  # never a compressed answer we cannot read
    assert body == b"payload"
    pool.close()


def test_chunked_answer_is_decoded(serve):
    """A chunked body (with an extension and a trailer) reads as its bytes; the connection stays usable."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    server = serve(answer(chunked), answer(ok(b"next")))
    pool = pool_for(server)
    resp = pool.request("GET", "/big", {}, preload=False)
    assert resp.read(3) == b"hel"
    assert resp.read() == b"lo world"
    assert resp.complete
    assert pool.request("GET", "/next", {}).data == b"next"
    assert server.connections == 1
    pool.close()


def test_connection_close_and_read_until_close(serve):
    """``Connection: close`` and a body without length (read to the end) are not reused."""
    server = serve(
        answer(ok(b"bye", "Connection: close"), keep=False),
        answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", keep=False),
        answer(ok(b"third")),
    )
    pool = pool_for(server)
    assert pool.request("GET", "/1", {}).data == b"bye"
    assert pool.request("GET", "/2", {}).data == b"until the end"
    assert pool.request("GET", "/3", {}).data == b"third"
    assert server.connections == 3
    pool.close()


def test_idle_connection_closed_by_the_server_is_replaced(serve):
    """The server closing a kept-alive connection while it is idle costs nothing: a new one is made."""
    server = serve(answer(ok(b"first"), keep=False), answer(ok(b"second")))
    pool = pool_for(server)
    assert pool.request("GET", "/1", {}).data == b"first"
    time.sleep(0.2)  # the server's FIN arrives while the connection is idle
    assert pool.request("GET", "/2", {}).data == b"second"
    assert server.connections == 2
    pool.close()


def test_request_met_by_a_clean_close_on_a_reused_connection_is_sent_again(serve):
    """The keep-alive race: the server closes (FIN, no answer) as our request arrives; it goes out once more."""

    def close_quietly(sock: socket.socket) -> bool:
        return False

    server = serve(answer(ok(b"first")), close_quietly, answer(ok(b"again")))
    pool = pool_for(server)
    assert pool.request("GET", "/1", {}).data == b"first"
    assert pool.request("PUT", "/2", {}, b"body").data == b"again"
    assert server.connections == 2
    assert [head.split(b" ")[1] for head, _ in server.requests] == [b"/1", b"/2", b"/2"]
    assert server.requests[2][1] == b"body"
    pool.close()


def test_head_and_204_have_no_body(serve):
    """A HEAD answer's Content-Length describes the object, not a body to read."""
    server = serve(answer(b'HTTP/1.1 200 OK\r\nContent-Length: 123\r\nETag: "e"\r\n\r\n'), answer(ok(b"after")))
    pool = pool_for(server)
    resp = pool.request("HEAD", "/k", {})
    assert (resp.status, resp.headers["content-length"], resp.headers["etag"], resp.data) == (200, "123", '"e"', b"")
    assert pool.request("GET", "/k", {}).data == b"after"
    assert server.connections == 1
    pool.close()


def test_interim_100_continue_is_skipped(serve):
    """An unasked-for ``100 Continue`` is skipped; the final answer is returned."""
    server = serve(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done")))
    pool = pool_for(server)
    assert pool.request("PUT", "/k", {}, b"x").data == b"done"
    pool.close()


def test_truncated_body_is_a_protocol_error(serve):
    """Fewer bytes than Content-Length, then the end of the stream: ProtocolError, never short data."""
    server = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40, keep=False))
    pool = pool_for(server)
    resp = pool.request("GET", "/k", {}, preload=False)
    with pytest.raises(wire.ProtocolError, match="60 of 100 bytes still to come"):
        resp.read(100)
    pool.close()


def test_reset_is_reported_not_retried(serve):
    """A connection reset instead of an answer fails the request (the caller's retries decide)."""

    def reset(sock: socket.socket) -> bool:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return False

    server = serve(answer(ok(b"warm")), reset, answer(ok(b"unused")))
    pool = pool_for(server)
    assert pool.request("GET", "/1", {}).data == b"warm"
    with pytest.raises(wire.ProtocolError):
        pool.request("GET", "/2", {})
    assert len(server.requests) == 2
    pool.close()


def test_silence_is_a_read_timeout(serve):
    """No answer within the read timeout: ReadTimeoutError."""

    def silent(sock: socket.socket) -> bool:
        time.sleep(1.0)
        return False

    server = serve(silent)
    pool = pool_for(server, read_timeout=0.3)
    with pytest.raises(wire.ReadTimeoutError):
        pool.request("GET", "/slow", {})
    pool.close()


def test_refused_connection_is_a_connect_error():
    """Nothing listening: ConnectError at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        pool = wire.Pool(f"http://127.0.0.1:{port}", maxsize=1, connect_timeout=1, read_timeout=1)
        with pytest.raises(wire.ConnectError, match="cannot connect"):
            pool.request("GET", "/", {})


@pytest.mark.parametrize("header", [("x-bad", "a\r\nInjected: 1"), ("x-bad\r\nInjected", "1"), ("x:y", "1")])
def test_header_injection_is_refused(header):
    """CR, LF or a colon where they would split a header: refused before anything is sent."""
    pool = wire.Pool("http://127.0.0.1:9", maxsize=1, connect_timeout=1, read_timeout=1)
    with pytest.raises(ValueError, match="invalid header"):
        pool.request("GET", "/", dict([header]))


def test_partly_read_body_closes_its_connection(serve):
    """An answer abandoned half-read cannot serve another request: its connection is closed."""
    server = serve(answer(ok(b"0123456789")), answer(ok(b"fresh")))
    pool = pool_for(server)
    resp = pool.request("GET", "/k", {}, preload=False)
    assert resp.read(4) == b"0123"
    resp.close()
    assert pool.request("GET", "/k", {}).data == b"fresh"
    assert server.connections == 2
    pool.close()


def _drain_into(resp: wire.Response, size: int) -> tuple[bytes, list[int]]:
    """Read a body with readinto through a ``size``-byte buffer; the bytes and each call's count."""
    buf = bytearray(size)
    out, counts = bytearray(), []
    while n := resp.readinto(buf):
        counts.append(n)
        out += buf[:n]
    return bytes(out), counts


@pytest.mark.parametrize("size", [1, 4, 64 * 1024])
def test_readinto_reads_every_framing_and_keeps_the_connection(serve, size):
    """readinto gives the same bytes as read for Content-Length, chunked and read-until-close bodies."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    server = serve(
        answer(ok(b"0123456789")),
        answer(chunked),
        answer(ok(b"")),
        answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", keep=False),
    )
    pool = pool_for(server)
    for target, body in (("/length", b"0123456789"), ("/chunked", b"hello world"), ("/empty", b"")):
        resp = pool.request("GET", target, {}, preload=False)
        data, counts = _drain_into(resp, size)
        assert data == body
        assert all(0 < n <= size for n in counts)
        assert resp.complete
        assert resp.readinto(bytearray(8)) == 0  # at the end it stays at the end
    assert server.connections == 1  # every framed answer gave the connection back
    resp = pool.request("GET", "/close", {}, preload=False)
    assert _drain_into(resp, size)[0] == b"until the end"  # delimited by the end of the stream
    assert resp.complete
    pool.close()


def test_readinto_a_truncated_body_is_a_protocol_error(serve):
    """readinto, like read, never ends early without saying so: the missing bytes are an error."""
    server = serve(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40, keep=False))
    pool = pool_for(server)
    resp = pool.request("GET", "/k", {}, preload=False)
    buf = memoryview(bytearray(100))
    got = 0
    while got < 40:  # what arrived is given, up to the end of the stream
        got += resp.readinto(buf[got:])
    assert bytes(buf[:got]) == b"x" * 40
    with pytest.raises(wire.ProtocolError, match="60 bytes of the body still to come"):
        resp.readinto(buf[got:])
    pool.close()
