"""ipybgfetch's own HTTP/1.1 transport under the httpx client: asyncio protocols, no copies.

httpx stays the interface (headers, ``auth``, redirects, cookies, timeouts, ``verify``);
this module only moves bytes. A body arrives as the ``bytes`` objects the event loop reads
from the socket (up to 256 KiB each) and goes to the ``.part`` file as they are: nothing
is re-chunked, joined or copied on the way. A connection is an :class:`asyncio.Protocol`
kept alive in a per-host pool; nothing is imported or built that a plain ``http://``
download doesn't need (the TLS context is made on the first ``https://`` request).

Why not httpx's own transport (httpcore + h11) or aiohttp: both cost more per chunk and per
request in Python, and on a 2-core machine that is the whole gap to curl. Measured in
docs/benchmarks.md (case 1, 1 GiB; case 2, 500 x 200 KiB).

Only the parts of HTTP/1.1 a download client needs: ``Content-Length``, chunked and
read-until-close bodies, interim ``1xx`` answers, ``HEAD``/``204``/``304`` without a body,
keep-alive with a stale-connection retry for requests that can be replayed, and request
bodies (``Content-Length`` or chunked). Anything else (HTTP/2, proxies given in code, Unix
sockets, a custom transport) stays with httpx's transport: see :func:`make_transport`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import httpx

from .._models import BAD_HEADER_NAME, BAD_HEADER_VALUE
from .errors import ClosedBeforeResponse, IncompleteBody, MalformedResponse

__all__ = [
    "DEFAULT_PORTS",
    "Body",
    "ChunkedDecoder",
    "Http11Transport",
    "PlainResponse",
    "parse_head",
]

T = TypeVar("T")
R = TypeVar("R", bound=httpx.Response)

MAX_HEAD = 128 * 1024  # bytes: a longer status line + headers is refused (curl: 100 KiB)
MAX_CHUNK_LINE = 8 * 1024  # bytes: a chunk-size line (with extensions) or a trailer line
MAX_CHUNK_DIGITS = 16  # hex digits of a chunk size (llhttp: the size must fit 64 bits)
MAX_SIZE = 2**63 - 1  # bytes: the largest body size a file can hold
READ_HIGH = 8 * 1024 * 1024  # bytes of body not yet taken: stop reading (until taken)
DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUS = (204, 304)
# `b"x" in some_bytes` first tries the operand as an int and formats a TypeError: ~10x a
# regex search, and these run for every header of every response
_VIEW_OVER = 16 * 1024  # bytes of body after the head: passed on as a view, not a copy
_BLANK = re.compile(rb"[ \t]")
# a header name must be a token (BAD_HEADER_NAME); a value must not hold NUL, a bare CR
# or LF, VT or FF (h11's rule; llhttp and curl refuse NUL and bare CR too)
_BAD_VALUE = re.compile(rb"[\x00\r\n\x0b\x0c]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # RFC 9112 2.2: a recipient MAY take a bare LF


class _Stale(Exception):
    """A kept-alive connection was closed by the server before it answered anything."""


def parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """``HTTP/1.1 200 OK\\r\\nName: value...`` (without the blank line) ->
    (status, reason, headers, version). Raises httpx.RemoteProtocolError if malformed."""
    lines = head.split(b"\n")
    # every line but the last lost its LF here, the last one its CRLF already (a CR
    # still at its end is a bare CR)
    lines[:-1] = [line.removesuffix(b"\r") for line in lines[:-1]]
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[0]) != 8:
        raise MalformedResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or code[0:1] == b"0":
        raise MalformedResponse(f"bad status code in {status_line[:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or BAD_HEADER_NAME.search(name):
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding (RFC 9112 5.2)
                if _BAD_VALUE.search(line):
                    raise MalformedResponse(f"control character in {line[:80]!r}")
                last_name, last_value = headers[-1]
                headers[-1] = (last_name, (last_value + b" " + line.strip(b" \t")).strip())
                continue
            raise MalformedResponse(f"malformed header line: {line[:80]!r}")
        if _BAD_VALUE.search(value):
            raise MalformedResponse(f"control character in header {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(code), (parts[2] if len(parts) > 2 else b""), headers, parts[0][5:]


class ChunkedDecoder:
    """Decodes a ``Transfer-Encoding: chunked`` body fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._pending = bytearray()  # an unfinished size line, trailer line or CRLF
        self._left = 0  # data bytes left in the current chunk
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer -> done
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Body pieces decoded from ``data``, and what came after the end (if it ended)."""
        out: list[bytes] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == "data":
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take] if (pos or take != end) else data)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
                continue
            # a line: size, the CRLF after data, or a trailer line
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._pending += view[pos:]
                if len(self._pending) > MAX_CHUNK_LINE:
                    raise MalformedResponse("chunk-size line too long")
                break
            line = bytes(self._pending) + data[pos:nl] if self._pending else data[pos:nl]
            self._pending.clear()
            pos = nl + 1
            if len(line) > MAX_CHUNK_LINE:
                raise MalformedResponse("chunk-size line too long")
            line = line[:-1] if line.endswith(b"\r") else line
            if self._state == "crlf":
                if line:
                    raise MalformedResponse("no CRLF after a chunk's data")
                self._state = "size"
            elif self._state == "size":
                size_text = line.split(b";", 1)[0].rstrip(b" \t")
                if (
                    not size_text
                    or len(size_text) > MAX_CHUNK_DIGITS
                    or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
                    or _BAD_VALUE.search(line)
                ):
                    raise MalformedResponse(f"bad chunk size: {line[:40]!r}")
                size = int(size_text, 16)
                if size > MAX_SIZE:
                    raise MalformedResponse(f"chunk size over 2^63: {line[:40]!r}")
                if size == 0:
                    self._state = "trailer"
                else:
                    self._left, self._state = size, "data"
            elif not line:  # the blank line after the trailers
                self.done = True
        return out, (data[pos:] if self.done else b"")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, kept alive between them."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reusable = True
        self.uses = 0
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: float | None = None  # when the current wait times out
        self._wait_timeout: float | None = None  # its timeout, restarted by any byte
        self._timer: asyncio.TimerHandle | None = None
        self._exc: BaseException | None = None
        self._eof = False
        # response state
        self._expect_body = True
        self._head_buf = bytearray()
        self._head: tuple[int, bytes, list[tuple[bytes, bytes]], bytes] | None = None
        self._in_head = False
        self.got_bytes = False
        self._framing = "close"  # "length" | "chunked" | "close"
        self._left = 0  # "length": bytes still to come
        self._received = 0
        self._expected = 0
        self._chunked: ChunkedDecoder | None = None
        self._encoded = False  # a Content-Encoding: httpx decodes it from bytes
        self._body: collections.deque[bytes | memoryview] = collections.deque()
        self._buffered = 0
        self.body_done = False
        self._reading_paused = False
        # write side
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is not None and self._wait_timeout is not None:
            # any byte from the server resets the read timeout (a 102 Processing head,
            # part of a chunk-size line...), not only body bytes and final heads
            self._deadline = self._loop.time() + self._wait_timeout
        if self._in_head:
            self.got_bytes = True
            self._receive_head(data)
        elif self._head is not None and not self.body_done:
            self._receive_body(data)
        else:  # bytes nobody asked for (a late answer, a 408 on an idle connection)
            self.reusable = False
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        self._end_of_stream()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None and self._waiter is None:
            self._timer.cancel()  # a wait in progress keeps its timer: it is about to end
            self._timer = None
        if exc is not None and self._exc is None:
            self._exc = exc
        self._end_of_stream()
        self._release_drain()

    def _end_of_stream(self) -> None:
        """The server sends no more: a read-until-close body ends here, unless it broke."""
        self._eof = True
        self.reusable = False
        if (
            self._exc is None
            and self._head is not None
            and not self.body_done
            and self._framing == "close"
        ):
            self._finish_body()
        self._wake()

    def _release_drain(self) -> None:
        """Wake send() if it waits for the socket to drain."""
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._release_drain()

    # -- receiving ------------------------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        if self._head_buf:  # the head came in pieces: look in what we have so far
            start = max(0, len(self._head_buf) - 3)
            self._head_buf += data
            data = bytes(self._head_buf)
            self._head_buf.clear()
        else:  # the usual case: the whole head in one read (with the body's first bytes)
            start = 0
        while True:
            found = _HEAD_END.search(data, start, MAX_HEAD + 4)
            if found is None:
                if len(data) > MAX_HEAD:
                    self._fail(MalformedResponse(f"response head over {MAX_HEAD} bytes"))
                else:
                    self._head_buf += data
                return
            try:
                head = parse_head(data[: found.start()])
            except httpx.RemoteProtocolError as exc:
                self._fail(exc)
                return
            body_start = found.end()
            status = head[0]
            if not 100 <= status < 200:
                break
            if status == 101:
                self._fail(httpx.RemoteProtocolError("the server switched protocols (101)"))
                return
            data, start = data[body_start:], 0  # an interim answer: the real one follows
        try:
            self._set_framing(head)
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)  # _head stays None: head() raises exc, no 200 with no body
            return
        self._in_head = False
        self._head = head
        self._release_drain()  # an answer while sending: send() stops (RFC 9112 9.5)
        extra = len(data) - body_start
        if extra and self.body_done:
            self.reusable = False  # bytes after a body-less answer: don't trust the stream
        elif extra:
            # The body's first bytes came with the head (often all of a small body): a
            # plain body takes them as a view of the read, not a copy; chunked and
            # content-encoded bodies go through byte methods, so they get bytes.
            plain = self._chunked is None and not self._encoded
            view = plain and extra >= _VIEW_OVER
            self._receive_body(memoryview(data)[body_start:] if view else data[body_start:])
        self._wake()

    def _set_framing(self, head: tuple[int, bytes, list[tuple[bytes, bytes]], bytes]) -> None:
        status, _, headers, version = head
        self._encoded = any(
            n.lower() == b"content-encoding" and v.strip().lower() not in (b"", b"identity")
            for n, v in headers
        )
        connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
        if version != b"1.1" or connection.find(b"close") >= 0:
            self.reusable = False
        # The framing headers are checked on every answer, with a body or not (as llhttp
        # and h11 do): a malformed one means the stream cannot be trusted.
        encodings = [v for n, v in headers if n.lower() == b"transfer-encoding"]
        if encodings:
            codings = [c.strip().lower() for c in b",".join(encodings).split(b",")]
            if codings != [b"chunked"]:  # gzip/deflate/identity...: not decoded here
                raise MalformedResponse(f"unsupported Transfer-Encoding: {codings!r}")
        # "Content-Length: 10, 10" or the header twice: the same value, taken once
        lengths = {
            part.strip()
            for n, v in headers
            if n.lower() == b"content-length"
            for part in v.split(b",")
        }
        length = -1
        if lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                raise MalformedResponse(f"bad Content-Length: {sorted(lengths)!r}")
            length = int(next(iter(lengths)))
            if length > MAX_SIZE:
                raise MalformedResponse(
                    f"Content-Length of {length} bytes (2^63 or more): no file can hold it"
                )
        if not self._expect_body or status in _NO_BODY_STATUS:
            self._framing = "length"
            self._finish_body()
        elif encodings:
            self._framing = "chunked"
            self._chunked = ChunkedDecoder()
            if lengths:
                self.reusable = False  # RFC 9112 6.1: both framings: close after this one
        elif length < 0:
            self._framing = "close"
            self.reusable = False
        else:
            self._framing = "length"
            self._left = self._expected = length
            if length == 0:
                self._finish_body()

    def _receive_body(self, data: bytes | memoryview) -> None:
        framing = self._framing
        if framing == "length":
            n = len(data)
            if n > self._left:
                data = data[: self._left]
                n = self._left
                self.reusable = False  # more than announced: the stream is out of step
            self._left -= n
            self._received += n
            self._push(data)
            if self._left == 0:
                self._finish_body()
        elif framing == "chunked":
            assert self._chunked is not None
            assert isinstance(data, bytes)  # a view is taken for plain bodies only
            try:
                pieces, rest = self._chunked.feed(data)
            except httpx.RemoteProtocolError as exc:
                self._fail(exc)
                return
            for piece in pieces:
                self._received += len(piece)
                self._push(piece)
            if self._chunked.done:
                if rest:
                    self.reusable = False
                self._finish_body()
        else:
            self._received += len(data)
            self._push(data)

    def _push(self, data: bytes | memoryview) -> None:
        if not data:
            return
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _finish_body(self) -> None:
        self.body_done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self.reusable = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None, what: str) -> None:
        """Wait for the next event (bytes, the end, an error), at most ``timeout`` seconds.

        The deadline is kept on the connection and one timer checks it: a timer made and
        cancelled for every wait cost ~5 % of the engine's time on many small files. When
        the timer fires for an earlier wait, it moves itself to the current deadline.
        """
        self._waiter = waiter = self._loop.create_future()
        self._wait_timeout = timeout
        if timeout is not None:
            self._deadline = deadline = self._loop.time() + timeout
            if self._timer is None or self._timer.when() > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self._loop.call_at(deadline, self._check_deadline)
        else:
            self._deadline = None
        try:
            await waiter
        except asyncio.TimeoutError:
            self.reusable = False
            raise httpx.ReadTimeout(f"no data from the server for {timeout:g} s ({what})") from None
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        """The wait timer: expire the waiter past its deadline, else wait for the deadline."""
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # that wait is over; the next one schedules a timer if it needs one
        if self._loop.time() >= deadline:
            _expire(waiter)
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    # -- the request/response cycle -------------------------------------------------------

    def start(self, expect_body: bool) -> None:
        self.uses += 1
        self._expect_body = expect_body
        self._head = None
        self._head_buf.clear()
        self._in_head = True
        self.got_bytes = False
        self._framing = "close"
        self._left = self._received = self._expected = 0
        self._chunked = None
        self._body.clear()
        self._buffered = 0
        self.body_done = False
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    async def send(
        self,
        method: str,
        target: bytes,
        header_lines: list[tuple[bytes, bytes]],
        stream: Any,
        timeouts: dict[str, Any],
    ) -> None:
        """Send the request line, the headers and the body (``stream``: None for none)."""
        assert self.transport is not None
        lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in header_lines:
            if BAD_HEADER_VALUE.search(value) or not name or BAD_HEADER_NAME.search(name):
                raise httpx.LocalProtocolError(
                    f"illegal header {name!r}: a name must be an HTTP token, and a value "
                    "must not contain CR, LF or NUL"
                )
            lines += (name, b": ", value, b"\r\n")
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
        lines.append(b"\r\n")
        write_timeout = timeouts.get("write")
        if stream is None:
            self._write(b"".join(lines))
            await self._drained(write_timeout)
            return
        if isinstance(stream, httpx.ByteStream):
            body = b"".join(stream)
            if chunked and body:
                lines += (f"{len(body):x}\r\n".encode(), body, b"\r\n0\r\n\r\n")
            elif chunked:
                lines.append(b"0\r\n\r\n")
            else:
                lines.append(body)
            self._write(b"".join(lines))
            await self._drained(write_timeout)
            return
        self._write(b"".join(lines))
        async for part in stream:
            if self._head is not None:  # answered before the body was sent: stop
                self.reusable = False
                return
            if not part:
                continue
            if chunked:
                self._write(f"{len(part):x}\r\n".encode() + bytes(part) + b"\r\n")
            else:
                self._write(part)
            await self._drained(write_timeout)
        if chunked:
            self._write(b"0\r\n\r\n")
        await self._drained(write_timeout)

    def _write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _write_error(self._exc)
        self.transport.write(data)

    async def _drained(self, timeout: float | None) -> None:
        if not self._writing_paused:
            return
        if self.closed:
            raise _write_error(self._exc)
        if self._head is not None:
            self.reusable = False
            return
        self._drain = drain = self._loop.create_future()
        handle = self._loop.call_later(timeout, _expire, drain) if timeout is not None else None
        try:
            await drain
        except asyncio.TimeoutError:
            self.reusable = False
            raise httpx.WriteTimeout(f"could not send for {timeout:g} s") from None
        finally:
            if handle is not None:
                handle.cancel()
        if self.closed and self._writing_paused:
            raise _write_error(self._exc)
        if self._writing_paused and self._head is not None:
            self.reusable = False

    async def head(
        self, timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        while self._head is None:
            if self._exc is not None:
                if isinstance(self._exc, httpx.HTTPError):
                    raise self._exc
                if not self.got_bytes and self.uses > 1:
                    raise _Stale()
                raise httpx.ReadError(str(self._exc) or type(self._exc).__name__) from self._exc
            if self._eof:
                if not self.got_bytes and self.uses > 1:
                    raise _Stale()
                if not self.got_bytes:
                    raise ClosedBeforeResponse("Server disconnected without sending a response.")
                raise ClosedBeforeResponse("the connection closed in the response head")
            await self._wait(timeout, "waiting for the response")
        status, reason, headers, version = self._head
        return status, reason, headers, version

    async def take(self, timeout: float | None) -> collections.deque[bytes | memoryview] | None:
        """The body bytes received so far (waiting for some); None once it is complete."""
        while not self._body:
            if self.body_done:
                return None
            if self._exc is not None:
                if isinstance(self._exc, httpx.HTTPError):
                    raise self._exc
                raise httpx.ReadError(str(self._exc) or type(self._exc).__name__) from self._exc
            if self._eof:
                raise IncompleteBody(self._truncation())
            await self._wait(timeout, "reading the body")
        body, self._body = self._body, collections.deque()
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return body

    def _truncation(self) -> str:
        if self._framing == "length":
            return (
                "peer closed connection without sending complete message body "
                f"(received {self._received} bytes, expected {self._expected})"
            )
        return (
            "peer closed connection without sending complete message body (incomplete chunked read)"
        )

    def close(self) -> None:
        self.reusable = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


async def _bounded(
    coro: Coroutine[Any, Any, T], timeout: float | None, cleanup: Callable[[T], None]
) -> T:
    """``await coro`` within ``timeout`` seconds (asyncio.TimeoutError after it).

    Not ``asyncio.wait_for``: before Python 3.12 it can swallow a cancellation that
    arrives as the inner call completes (the task then runs on, uncancelled: a paused
    download that keeps going). A result nobody will use is handed to ``cleanup``.
    """
    if timeout is None:
        return await coro
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        _abandon(task, cleanup)
        raise
    if not done:
        _abandon(task, cleanup)
        raise asyncio.TimeoutError()
    return task.result()


def _abandon(task: asyncio.Future[T], cleanup: Callable[[T], None]) -> None:
    def done(t: asyncio.Future[T]) -> None:
        if not t.cancelled() and t.exception() is None:
            cleanup(t.result())

    task.cancel()
    task.add_done_callback(done)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


def _write_error(exc: BaseException | None) -> httpx.WriteError:
    return httpx.WriteError(f"the connection closed while sending the request ({exc or 'EOF'})")


class Body(httpx.AsyncByteStream):
    """A response body as httpx reads it: the chunks as they came off the socket."""

    def __init__(
        self, transport: Http11Transport, conn: _Connection, timeout: float | None
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                chunks = await conn.take(self._timeout)
                if chunks is None:
                    break
                for chunk in chunks:
                    # a plain body's chunk may be a view of the socket read (no copy):
                    # bytes-like, which is all httpx and the engine do with it
                    yield chunk  # type: ignore[misc]
        except BaseException:
            if self._conn is conn:  # still ours: not handed back to the pool yet
                conn.close()
            raise
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport._release(conn)


class PlainResponse(httpx.Response):
    """The answer to :meth:`Http11Transport.open_plain`: its httpx.Request is built on
    first use (``.request``); ``.url`` is the URL asked for, without building it."""

    sent: tuple[httpx.URL, list[tuple[bytes, bytes]], dict[str, Any]]
    head_lines: list[tuple[bytes, bytes]]  # the header lines as received
    started: float  # perf_counter() when the request went out: for .elapsed

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            url, header_lines, timeouts = self.sent
            self._request = httpx.Request(
                "GET", url, headers=header_lines, extensions={"timeout": timeouts}
            )
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value

    @property
    def url(self) -> httpx.URL:
        return self.sent[0] if self._request is None else self._request.url

    def raise_for_status(self) -> PlainResponse:
        self.request  # noqa: B018 (built on demand: httpx's check reads the private slot)
        super().raise_for_status()
        return self

    async def aclose(self) -> None:
        if not self.is_closed:  # what httpx's client sets when the body is done with
            self.elapsed = datetime.timedelta(seconds=time.perf_counter() - self.started)
        await super().aclose()


class Http11Transport(httpx.AsyncBaseTransport):
    """An httpx transport speaking HTTP/1.1 over asyncio protocols, with a keep-alive pool."""

    def __init__(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        self._verify = verify
        self._cert = cert
        self._trust_env = trust_env
        self._ssl: ssl.SSLContext | None = None
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._max_connections = limits.max_connections
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._n_idle = 0
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        conn, head = await self._exchange(
            url,
            request.method,
            request.headers.raw,
            request.stream,
            isinstance(request.stream, httpx.ByteStream),
            timeouts,
        )
        return self._response(httpx.Response, conn, head, timeouts)

    async def open_plain(
        self, url: httpx.URL, header_lines: list[tuple[bytes, bytes]], timeouts: dict[str, Any]
    ) -> PlainResponse:
        """A GET without a body, sent without an httpx.Request: ``header_lines`` go out as
        they are (the caller puts ``Host`` first, as httpx does). The response builds its
        httpx.Request only if someone asks for it (cookies, a redirect, logging)."""
        started = time.perf_counter()
        conn, head = await self._exchange(url, "GET", header_lines, None, True, timeouts)
        response = self._response(PlainResponse, conn, head, timeouts)
        response.sent = (url, header_lines, timeouts)
        response.head_lines = head[2]
        response.started = started
        return response

    def _response(
        self,
        cls: type[R],
        conn: _Connection,
        head: tuple[int, bytes, list[tuple[bytes, bytes]], bytes],
        timeouts: dict[str, Any],
    ) -> R:
        """The response to ``head``; its body streams from ``conn``."""
        status, reason, headers, version = head
        return cls(
            status,
            headers=headers,
            stream=Body(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/" + version, "reason_phrase": reason},
        )

    async def _exchange(
        self,
        url: httpx.URL,
        method: str,
        header_lines: list[tuple[bytes, bytes]],
        stream: Any,
        replayable: bool,
        timeouts: dict[str, Any],
    ) -> tuple[_Connection, tuple[int, bytes, list[tuple[bytes, bytes]], bytes]]:
        """Send one request on a pooled (or new) connection; the connection and the head of
        its answer (the body is read from the connection afterwards)."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        scheme = url.scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        if not url.host:
            raise httpx.UnsupportedProtocol(f"no host in the URL {url}")
        key = (scheme, url.host, url.port or DEFAULT_PORTS[scheme])
        target = url.raw_path
        expect_body = method != "HEAD"
        await self._acquire(timeouts.get("pool"))
        try:
            while True:
                conn = self._pop_idle(key) or await self._connect(key, timeouts.get("connect"))
                conn.start(expect_body)
                try:
                    try:
                        await conn.send(method, target, header_lines, stream, timeouts)
                    except httpx.WriteError:
                        conn.reusable = False  # an early answer (413, 401...) may be waiting
                    head = await conn.head(timeouts.get("read"))
                except _Stale:
                    conn.close()
                    if replayable:
                        continue  # the server closed a kept-alive connection: a new one
                    raise ClosedBeforeResponse(
                        "Server disconnected without sending a response."
                    ) from None
                except BaseException:
                    conn.close()
                    raise
                return conn, head
        except BaseException:
            self._release_slot()
            raise

    async def _acquire(self, timeout: float | None) -> None:
        if self._max_connections is None:
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        slots = self._slots
        try:
            await _bounded(slots.acquire(), timeout, cleanup=lambda _: slots.release())
        except asyncio.TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {timeout:g} s") from None

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def _pop_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._n_idle -= 1
            expired = self._expiry is not None and now - conn.idle_since > self._expiry
            if conn.closed or not conn.reusable or expired:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _Connection) -> None:
        """A response is done with its connection: keep it alive if it can be reused."""
        self._release_slot()
        if not (conn.body_done and conn.reusable and not conn.closed) or self._closed:
            conn.close()
            return
        if self._max_idle is not None and self._n_idle >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn._head = None  # between requests: any byte from the server is unexpected
        self._idle.setdefault(conn.key, []).append(conn)
        self._n_idle += 1

    async def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl
            if context is None:
                context = self._ssl = await loop.run_in_executor(None, self._make_ssl_context)
        try:
            _, conn = await _bounded(
                loop.create_connection(
                    lambda: _Connection(key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                timeout,
                cleanup=lambda made: made[0].close(),
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(
                f"could not connect to {host}:{port} within {timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason: object = exc
            if exc.errno and exc.errno > 0 and not isinstance(exc, ssl.SSLError):
                reason = os.strerror(exc.errno)  # not asyncio's "Connect call failed (...)"
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {reason}") from exc
        return conn

    def _make_ssl_context(self) -> ssl.SSLContext:
        if isinstance(self._verify, ssl.SSLContext):
            return self._verify
        context = httpx.create_ssl_context(
            verify=self._verify, cert=self._cert, trust_env=self._trust_env
        )
        context.set_alpn_protocols(["http/1.1"])
        return context

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._n_idle = 0
