"""A scripted raw-socket HTTP server for wire-level tests (test_http11, test_transport_engine).

Every accepted connection runs ``handler(peer)`` in its own thread; the handler reads
requests and writes back exactly the bytes a scenario needs, then keeps or closes the
connection. ``raw_servers`` makes them for a test and closes them at its end, failing the
test if a handler raised or a server thread is still running.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

IO_TIMEOUT = 5.0  # seconds: no socket in a server thread blocks longer than this (default)


@dataclass
class RawRequest:
    """One request as the server read it off the socket."""

    head: bytes  # request line + headers, without the blank line
    body: bytes  # decoded (Content-Length or chunked)
    raw: bytes  # every byte of the request exactly as received
    conn: int  # index of the connection it came on (0 = first accepted)

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


class Peer:
    """The server's end of one accepted connection, handed to the scenario's handler."""

    def __init__(self, sock: socket.socket, index: int, server: ScriptServer) -> None:
        self.sock = sock
        self.index = index
        self.server = server
        self._buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(256 * 1024)
        self._buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise ConnectionError("client closed inside a request")
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError("client closed inside a request")
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def read_request(self) -> RawRequest | None:
        """The next request, or None if the client closed the connection before one."""
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                if self._buf:
                    raise ConnectionError(f"client closed inside a head: {self._buf[:80]!r}")
                return None
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        raw = head + b"\r\n\r\n"
        consumed = b""
        req = RawRequest(head=head, body=b"", raw=b"", conn=self.index)
        if (req.header("transfer-encoding") or "").lower() == "chunked":
            body = b""
            parts = []
            while True:
                line = self._line()
                parts.append(line + b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:  # trailers, then the blank line
                        trailer = self._line()
                        parts.append(trailer + b"\r\n")
                        if not trailer:
                            break
                    break
                data = self._take(size)
                crlf = self._take(2)
                assert crlf == b"\r\n", crlf
                parts += (data, crlf)
                body += data
            consumed = b"".join(parts)
        elif req.header("content-length") is not None:
            body = consumed = self._take(int(req.header("content-length") or 0))
        else:
            body = b""
        req.body, req.raw = body, raw + consumed
        with self.server.lock:
            self.server.requests.append(req)
        return req

    def read_head(self) -> bytes:
        """Just the next request's head (its body, if any, stays unread)."""
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError("client closed inside a head")
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        return head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_to_eof(self) -> bytes:
        """Everything the client sends until it closes (or IO_TIMEOUT passes)."""
        out = self._buf
        self._buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return out
                out += data
        except TimeoutError:
            return out

    def half_close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class ScriptServer:
    """Listens on 127.0.0.1:0; runs ``handler(peer)`` in a thread per accepted connection.

    ``accepts`` counts TCP connections, ``requests`` every request read by a handler.
    Handler exceptions other than OSError (the client going away) fail the test at close.
    """

    def __init__(self, handler: Callable[[Peer], None], io_timeout: float = IO_TIMEOUT) -> None:
        self.handler = handler
        self.io_timeout = io_timeout
        self.lock = threading.Lock()
        self.requests: list[RawRequest] = []
        self.accepts = 0
        self.errors: list[BaseException] = []
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.02)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="raw-server-accept", daemon=True
        )
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(self.io_timeout)
            with self.lock:
                index = self.accepts
                self.accepts += 1
                self._socks.append(sock)
            peer = Peer(sock, index, self)
            thread = threading.Thread(
                target=self._serve, args=(peer,), name="raw-server-conn", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, peer: Peer) -> None:
        try:
            self.handler(peer)
        except OSError:
            pass
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            try:
                peer.sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(self.io_timeout)
        self._listener.close()
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(self.io_timeout)
        leaked = [t for t in [self._acceptor, *self._threads] if t.is_alive()]
        assert not leaked, f"server threads still running: {leaked}"
        if self.errors:
            raise self.errors[0]


def replies(*responses: bytes, close: bool = False) -> Callable[[Peer], None]:
    """A handler answering each request on a connection with the next response, in order;
    then it closes (``close=True``) or waits for the client to close."""

    def handler(peer: Peer) -> None:
        for response in responses:
            if peer.read_request() is None:
                return
            peer.send(response)
        if not close:
            peer.read_to_eof()

    return handler


def raw_servers(
    io_timeout: float = IO_TIMEOUT,
) -> Iterator[Callable[[Callable[[Peer], None]], ScriptServer]]:
    """For a fixture: yields a maker of servers; closes them all afterwards."""
    servers: list[ScriptServer] = []

    def make(handler: Callable[[Peer], None]) -> ScriptServer:
        srv = ScriptServer(handler, io_timeout)
        servers.append(srv)
        return srv

    yield make
    errors = []
    for srv in servers:
        try:
            srv.close()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def response(
    body: bytes = b"",
    status: str = "200 OK",
    headers: tuple[str, ...] = (),
    *,
    length: bool = True,
    version: str = "1.1",
) -> bytes:
    """A whole response: status line, headers, Content-Length (unless ``length=False``)."""
    lines = [f"HTTP/{version} {status}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
