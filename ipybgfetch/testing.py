"""A loopback HTTP/1.1 data server with fault injection, for tests, notebooks and benchmarks.

``DataServer`` serves *generated* files of any size (never stored: their bytes are a pure
function of name and size), *static* files you add, and an *echo* endpoint for uploads. Every
URL can carry query parameters that inject a fault, so a download pipeline can be tested
offline against drops, stalls, 503 storms, changing ETags and hostile headers::

    from ipybgfetch.testing import DataServer

    with DataServer() as srv:
        url = srv.url("big.bin", 512 * 2**20, drop_after=10 * 2**20, drop_times=1)
        ...                                   # download it with the code under test
        assert sha256_of_file == DataServer.sha256("big.bin", 512 * 2**20)
        assert srv.requests[-1].headers["range"] == f"bytes={10 * 2**20}-"

From a shell: ``python -m ipybgfetch.testing --port 8765`` serves until Ctrl-C.

Endpoints
---------
``/gen/SIZE/NAME``
    A generated file of ``SIZE`` bytes. ``DataServer.content(name, size)`` returns the same
    bytes without a server; ``DataServer.sha256`` / ``DataServer.sri`` their digests. The
    content type is guessed from NAME's extension (``application/octet-stream`` otherwise).
Paths registered with ``add_file``
    Fixed bytes, with the same headers and faults as generated files.
``/echo`` (or any path with ``echo=1``), any method
    Reads the request body (Content-Length or chunked) and answers 200 with the same bytes
    (``application/octet-stream``) plus ``X-Echo-Sha256`` (hex), ``X-Echo-Length`` and
    ``X-Echo-Method``. Bodies are spooled to a temporary file above 8 MiB.
``/``
    A short plain-text help page. Anything else is a 404 with a small body.

Every file response carries a strong ``ETag`` (derived from name, size and generation),
``Last-Modified`` (a fixed date: 2024-01-01 plus one day per generation), ``Accept-Ranges:
bytes`` and ``Content-Length``. ``Range: bytes=N-``, ``bytes=N-M`` and ``bytes=-N`` give a 206
with ``Content-Range: bytes a-b/total``; an unsatisfiable range gives a 416 with
``Content-Range: bytes */total``; a malformed or multi-range header is ignored (200). With
``If-Range`` (an ETag, compared strongly, or an HTTP-date compared exactly with
Last-Modified) that does not match, the Range is ignored and the full body is sent (200).
``HEAD`` gives the same headers without a body.

Fault parameters (query string; ``srv.url(name, size, **faults)`` builds them)
-------------------------------------------------------------------------------
Request counters (for every ``*_times`` and ``etag_change_after``) are kept per *full request
target*: path plus the raw query string exactly as sent. Every request counts (GET, HEAD,
ranged or not, redirect hops included); each hop of a redirect chain has its own target.
Add ``tag=anything`` to get a fresh URL with fresh counters. ``srv.reset()`` clears them.

``status=CODE``            answer CODE with a small text body instead of the file.
``status_times=K``         apply ``status`` only to the first K requests, then serve normally
                           (a 503 storm that recovers).
``status_after=K``         apply ``status`` only after the first K requests (a server that
                           starts failing: the first download works, its later ranges fail).
``retry_after=SECONDS``    send ``Retry-After: SECONDS`` (with ``status``: on the status
                           responses only; without it: on every response).
``retry_after_date=1``     send Retry-After as an HTTP-date (now + SECONDS, default 0).
``drop_after=N``           send the headers with the full Content-Length, then N body bytes,
                           then close the connection (FIN): the client sees a truncated body.
``short=N``                advertise the full Content-Length but send N bytes fewer, then
                           close. ``drop_after`` and ``short`` combine (the smaller wins).
``drop_times=K``           apply ``drop_after``/``short`` only to the first K requests.
``throttle=BYTES_PER_SEC`` pace the body at about that rate.
``stall=SECONDS``          after ``stall_after=N`` body bytes (default 0) stop sending for
                           SECONDS, keeping the socket open; then finish the body.
``stall_times=K``          apply ``stall`` only to the first K requests.
``ignore_range=1``         ignore Range headers: always 200 with the full body.
``etag_change_after=K``    requests after the K-th see generation 1: a new ETag, a new
                           Last-Modified and (for generated files) *different content*, so a
                           client that mixes generations gets a wrong hash. The new bytes are
                           ``DataServer.content(name, size, generation=1)``. For static files
                           only the validators change.
``vary=Header-Name``       send ``Vary: Header-Name``.
``disposition=NAME``       send ``Content-Disposition: attachment; filename="NAME"``.
``disposition_raw=VALUE``  send ``Content-Disposition: VALUE`` verbatim (hostile names,
                           ``attachment; filename*=UTF-8''...``). Header values go out as
                           UTF-8 bytes; CR/LF become spaces (no header injection).
``content_type=TYPE``      override the Content-Type.
``no_length=1``            no Content-Length: the body is close-delimited
                           (``Connection: close``); ``no_length=chunked`` uses chunked
                           transfer coding instead.
``delay=SECONDS``          wait before sending the headers (an added time to first byte).
``signed=SECONDS``         a signed URL that expires: a request without ``expires=`` is
                           redirected (302) to the same URL plus ``expires=<now+SECONDS>``;
                           a request whose ``expires`` has passed gets a 403. Segments and
                           resumes that keep the redirect's final URL see it expire, and
                           must go back to the original URL for a fresh one.
``expires=UNIX_TIME``      set by ``signed`` (see above).
``redirect=N``             a chain of N 302 hops (each to the same URL with ``redirect=N-1``)
                           before the file is served.
``gzip=1``                 ``Content-Encoding: gzip`` of the full body (ranges ignored,
                           ETag suffixed with ``-gzip``; up to 256 MiB).
``echo=1``                 treat this path as the echo endpoint.
``tag=ANY``                ignored by the server; makes a distinct URL.

Server-wide faults (``DataServer(rate_limit=..., latency=...)``, or ``--rate-limit`` and
``--latency`` on the command line) apply to every response whose URL does not set its own:
``rate_limit`` paces each response body like ``throttle`` (one response at a time per
connection: a per-connection cap, as nginx's ``limit_rate``), ``latency`` waits before each
response's headers like ``delay``. They make a capped CDN or a far-away server out of
loopback for any client (curl, aria2c, ...), without query parameters.

Order of evaluation: ``delay``, ``redirect``, ``signed``, ``status``, then the file (or echo) with
``gzip``, ranges, and the body faults. A malformed fault value gives a 400.

Request log
-----------
``srv.requests`` is a snapshot list of ``RequestRecord`` (method, path, target, query dict,
headers dict with lower-case names, arrival time, status, bytes_sent, bytes_received), in
arrival order. ``bytes_sent`` counts body bytes handed to the socket. ``srv.bytes_sent_total``,
``srv.bytes_sent_for(url)`` and ``srv.requests_for(url)`` summarise it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip as _gzip
import hashlib
import http
import mimetypes
import random
import re
import socket
import socketserver
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = ["DataServer", "RequestRecord"]

CHUNK_SIZE: Final = 1 << 20
"""Size of the pseudo-random block generated files are built from, and of body writes."""

_ROTATION: Final = 2654435761  # odd: block k is the base block rotated by k*_ROTATION mod 1 MiB
_EPOCH: Final = 1704067200  # 2024-01-01T00:00:00Z, Last-Modified of generation 0
_SMALL_BODY: Final = 64 * 1024  # bodies up to this size go out in the same write as the headers
_ECHO_SPOOL: Final = 8 << 20
_GZIP_MAX: Final = 256 << 20
_DIGITS = re.compile(r"[0-9]+")
_NEWLINES = re.compile(r"[\r\n]+")

# --------------------------------------------------------------------------------------
# Generated content: a pure function of (name, size, generation)
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _base_block(name: str, size: int, generation: int) -> bytes:
    """The pseudo-random block a generated file is made of (doubled when rotations are needed)."""
    seed = hashlib.sha256(f"ipybgfetch.testing\0{generation}\0{size}\0{name}".encode()).digest()
    data = random.Random(seed).randbytes(min(size, CHUNK_SIZE))
    return data + data if size > CHUNK_SIZE else data


def _iter_generated(
    name: str, size: int, generation: int, start: int, end: int
) -> Iterator[memoryview]:
    """Yield the bytes ``[start, end)`` of a generated file, at most ``CHUNK_SIZE`` at a time."""
    if start >= end:
        return
    block = memoryview(_base_block(name, size, generation))
    pos = start
    while pos < end:
        k, off = divmod(pos, CHUNK_SIZE)
        stop = min(end - k * CHUNK_SIZE, CHUNK_SIZE)
        rot = (k * _ROTATION) % CHUNK_SIZE if size > CHUNK_SIZE else 0
        yield block[rot + off : rot + stop]
        pos = k * CHUNK_SIZE + stop


def _check_name_size(name: str, size: int) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an int >= 0, got {size!r}")


@functools.lru_cache(maxsize=256)
def _generated_digest(name: str, size: int, generation: int, algo: str) -> bytes:
    h = hashlib.new(algo)
    for chunk in _iter_generated(name, size, generation, 0, size):
        h.update(chunk)
    return h.digest()


def _generated_etag(name: str, size: int, generation: int) -> str:
    digest = hashlib.sha256(f"{name}\0{size}\0{generation}".encode()).hexdigest()
    return f'"g{digest[:24]}"'


def _last_modified(generation: int) -> float:
    return float(_EPOCH + 86400 * generation)


# --------------------------------------------------------------------------------------
# Ranges and validators
# --------------------------------------------------------------------------------------


class _Unsatisfiable:
    pass


_UNSATISFIABLE: Final = _Unsatisfiable()


def _parse_range(value: str, total: int) -> tuple[int, int] | _Unsatisfiable | None:
    """Parse a single-range ``Range`` header against ``total`` bytes.

    Returns ``(start, end)`` with ``end`` exclusive, ``_UNSATISFIABLE``, or ``None`` when the
    header must be ignored (malformed, another unit, several ranges).
    """
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if not first:
        if not _DIGITS.fullmatch(last):
            return None
        n = int(last)
        if n == 0 or total == 0:
            return _UNSATISFIABLE
        return (max(total - n, 0), total)
    if not _DIGITS.fullmatch(first) or (last and not _DIGITS.fullmatch(last)):
        return None
    a = int(first)
    if last and int(last) < a:
        return None
    if a >= total:
        return _UNSATISFIABLE
    return (a, total if not last else min(int(last) + 1, total))


def _if_range_matches(value: str, etag: str | None, last_modified: float | None) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        return etag is not None and not value.startswith("W/") and value == etag
    if last_modified is None:
        return False
    try:
        return parsedate_to_datetime(value).timestamp() == last_modified
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

FAULT_PARAMS: Final = frozenset(
    {
        "status",
        "status_times",
        "status_after",
        "retry_after",
        "retry_after_date",
        "drop_after",
        "drop_times",
        "short",
        "throttle",
        "stall",
        "stall_after",
        "stall_times",
        "ignore_range",
        "etag_change_after",
        "vary",
        "disposition",
        "disposition_raw",
        "content_type",
        "no_length",
        "delay",
        "redirect",
        "signed",
        "expires",
        "gzip",
        "echo",
        "tag",
    }
)
"""The query parameters the server understands (see the module docstring)."""


@dataclass
class _Faults:
    status: int | None = None
    status_times: int | None = None
    status_after: int = 0
    retry_after: float | None = None
    retry_after_date: bool = False
    drop_after: int | None = None
    drop_times: int | None = None
    short: int | None = None
    throttle: float | None = None
    stall: float = 0.0
    stall_after: int = 0
    stall_times: int | None = None
    ignore_range: bool = False
    etag_change_after: int | None = None
    vary: str | None = None
    disposition: str | None = None
    disposition_raw: str | None = None
    content_type: str | None = None
    no_length: str | None = None  # None | "close" | "chunked"
    delay: float = 0.0
    redirect: int = 0
    signed: float | None = None
    expires: float | None = None
    gzip: bool = False
    echo: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> _Faults:
        f = cls()

        def uint(key: str) -> int | None:
            if key not in query:
                return None
            v = query[key].strip()
            if not _DIGITS.fullmatch(v):
                raise ValueError(f"{key}={query[key]!r}: expected an integer >= 0")
            return int(v)

        def ufloat(key: str) -> float | None:
            if key not in query:
                return None
            try:
                v = float(query[key])
            except ValueError:
                raise ValueError(f"{key}={query[key]!r}: expected a number >= 0") from None
            if not v >= 0 or v == float("inf"):
                raise ValueError(f"{key}={query[key]!r}: expected a finite number >= 0")
            return v

        def flag(key: str) -> bool:
            v = query.get(key, "").strip().lower()
            if v in _TRUE:
                return True
            if v in _FALSE:
                return False
            raise ValueError(f"{key}={query[key]!r}: expected 1 or 0")

        f.status = uint("status")
        if f.status is not None and not 200 <= f.status <= 599:
            raise ValueError(f"status={f.status}: expected 200..599")
        f.status_times = uint("status_times")
        f.status_after = uint("status_after") or 0
        f.retry_after = ufloat("retry_after")
        f.retry_after_date = flag("retry_after_date")
        f.drop_after = uint("drop_after")
        f.drop_times = uint("drop_times")
        f.short = uint("short")
        f.throttle = ufloat("throttle")
        if f.throttle is not None and f.throttle <= 0:
            raise ValueError("throttle must be > 0 bytes per second")
        f.stall = ufloat("stall") or 0.0
        f.stall_after = uint("stall_after") or 0
        f.stall_times = uint("stall_times")
        f.ignore_range = flag("ignore_range")
        f.etag_change_after = uint("etag_change_after")
        f.vary = query.get("vary") or None
        f.disposition = query.get("disposition")
        f.disposition_raw = query.get("disposition_raw")
        f.content_type = query.get("content_type") or None
        nl = query.get("no_length", "").strip().lower()
        if nl == "chunked":
            f.no_length = "chunked"
        elif nl in ("close", *_TRUE):
            f.no_length = "close"
        elif nl not in _FALSE:
            raise ValueError(f"no_length={query['no_length']!r}: expected 1, close or chunked")
        f.delay = ufloat("delay") or 0.0
        f.redirect = uint("redirect") or 0
        f.signed = ufloat("signed")
        f.expires = ufloat("expires")
        f.gzip = flag("gzip")
        f.echo = flag("echo")
        return f


def _encode_faults(faults: Mapping[str, object]) -> str:
    unknown = sorted(set(faults) - FAULT_PARAMS)
    if unknown:
        raise TypeError(
            f"unknown fault parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(FAULT_PARAMS))}"
        )
    items: list[tuple[str, str]] = []
    for key, value in faults.items():
        if value is None or value is False:
            continue
        items.append((key, "1" if value is True else str(value)))
    return urlencode(items, quote_via=quote)


# --------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request the server received (``status`` and byte counts fill in as it is served)."""

    method: str
    path: str
    """The raw (percent-encoded) path, without the query."""
    target: str
    """The raw request target: path and query exactly as sent."""
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers, names in lower case (repeated headers joined with ", ")."""
    time: float
    """``time.time()`` when the request line and headers had been read."""
    status: int = 0
    bytes_sent: int = 0
    """Response body bytes handed to the socket (not counting headers or chunk framing)."""
    bytes_received: int = 0
    """Request body bytes read."""


# --------------------------------------------------------------------------------------
# The HTTP machinery
# --------------------------------------------------------------------------------------


class _Stopping(Exception):
    """Raised inside a handler when the server is stopping."""


@dataclass
class _Resource:
    total: int
    chunks: Callable[[int, int], Iterable[bytes | memoryview]]
    content_type: str
    etag: str | None = None
    last_modified: float | None = None
    ranges: bool = True
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _StaticFile:
    data: bytes
    content_type: str
    headers: list[tuple[str, str]]
    digest: str


def _static_chunks(data: bytes | memoryview) -> Callable[[int, int], Iterator[memoryview]]:
    view = memoryview(data)

    def chunks(start: int, end: int) -> Iterator[memoryview]:
        for pos in range(start, end, CHUNK_SIZE):
            yield view[pos : min(pos + CHUNK_SIZE, end)]

    return chunks


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    owner: DataServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup; not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Stopping)):
            return  # a client went away, or we are stopping: not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ipybgfetch-testing"
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -- plumbing ---------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, add=False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _do(self) -> None:
        try:
            self._respond()
        except (OSError, _Stopping):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _do

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.server.owner._stop_event.wait(seconds):
            raise _Stopping

    # -- request body -------------------------------------------------------------------

    def _iter_request_body(self) -> Iterator[bytes]:
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                except ValueError:
                    raise ValueError("malformed chunk size") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, CHUNK_SIZE))
                    if not data:
                        raise ConnectionError("client closed during the request body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(3)
            return
        length_s = self.headers.get("Content-Length")
        if length_s is None:
            return
        if not _DIGITS.fullmatch(length_s.strip()):
            raise ValueError("malformed Content-Length")
        remaining = int(length_s)
        while remaining:
            data = self.rfile.read(min(remaining, CHUNK_SIZE))
            if not data:
                raise ConnectionError("client closed during the request body")
            remaining -= len(data)
            yield data

    # -- responses ----------------------------------------------------------------------

    def _head_bytes(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        lines = [f"HTTP/1.1 {status} {phrase}"]
        lines += (f"{k}: {_NEWLINES.sub(' ', str(v))}" for k, v in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    def _base_headers(self) -> list[tuple[str, str]]:
        return [("Server", self.server_version), ("Date", formatdate(usegmt=True))]

    def _send_simple(
        self,
        record: RequestRecord,
        status: int,
        text: str,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        body = b"" if status in (204, 304) else text.encode()
        headers = self._base_headers()
        headers += [("Content-Type", "text/plain; charset=utf-8"), *extra]
        if status != 304:
            headers.append(("Content-Length", str(len(body))))
        if self.close_connection:
            headers.append(("Connection", "close"))
        record.status = status
        head = self._head_bytes(status, headers)
        if self.command == "HEAD" or not body:
            self.connection.sendall(head)
        else:
            record.bytes_sent += len(body)
            self.server.owner._add_sent(len(body))
            self.connection.sendall(head + body)

    def _retry_after(self, f: _Faults) -> list[tuple[str, str]]:
        if f.retry_after is None and not f.retry_after_date:
            return []
        seconds = f.retry_after or 0.0
        if f.retry_after_date:
            return [("Retry-After", formatdate(time.time() + seconds, usegmt=True))]
        value = str(int(seconds)) if seconds == int(seconds) else str(int(seconds) + 1)
        return [("Retry-After", value)]

    def _respond(self) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers: dict[str, str] = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        record = RequestRecord(
            method=self.command,
            path=split.path,
            target=self.path,
            query=query,
            headers=headers,
            time=time.time(),
        )
        count = owner._log(record)

        try:
            faults = _Faults.parse(query)
            is_echo = split.path == "/echo" or faults.echo
        except ValueError as exc:
            faults, is_echo, error = None, False, str(exc)
        else:
            error = ""

        # The request body: spooled for echo, otherwise read and dropped.
        echo_hash = hashlib.sha256()
        with contextlib.ExitStack() as stack:
            spool: IO[bytes] | None = None
            if is_echo:
                spool = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=_ECHO_SPOOL))
            try:
                for data in self._iter_request_body():
                    record.bytes_received += len(data)
                    if spool is not None:
                        echo_hash.update(data)
                        spool.write(data)
            except ValueError as exc:
                self.close_connection = True
                self._send_simple(record, 400, f"bad request body: {exc}\n")
                return
            if faults is None:
                self._send_simple(record, 400, f"bad fault parameter: {error}\n")
                return
            owner._serving(+1)
            try:
                self._respond_with(record, count, split.path, query, faults, spool, echo_hash)
            finally:
                owner._serving(-1)

    def _respond_with(
        self,
        record: RequestRecord,
        count: int,
        path: str,
        query: dict[str, str],
        f: _Faults,
        spool: IO[bytes] | None,
        echo_hash: Any,
    ) -> None:
        owner = self.server.owner
        self._sleep(f.delay or owner.latency)

        if f.redirect > 0:
            nq = dict(query)
            if f.redirect > 1:
                nq["redirect"] = str(f.redirect - 1)
            else:
                del nq["redirect"]
            location = owner.base_url + path + ("?" + urlencode(nq, quote_via=quote) if nq else "")
            self._send_simple(record, 302, f"redirect to {location}\n", [("Location", location)])
            return

        if f.signed is not None:
            if f.expires is None:
                nq = {**query, "expires": f"{time.time() + f.signed:.3f}"}
                location = owner.base_url + path + "?" + urlencode(nq, quote_via=quote)
                self._send_simple(record, 302, f"signed: {location}\n", [("Location", location)])
                return
            if time.time() > f.expires:
                self._send_simple(record, 403, "403 Forbidden: the signature has expired\n")
                return

        retry_after = self._retry_after(f)
        if f.status is not None:
            if (f.status_times is None or count <= f.status_times) and count > f.status_after:
                text = f"{f.status} {_phrase(f.status)} (injected by ?status=)\n"
                self._send_simple(record, f.status, text, retry_after)
                return
            retry_after = []

        generation = 1 if f.etag_change_after is not None and count > f.etag_change_after else 0
        res = self._resource(path, generation, spool, echo_hash)
        if res is None:
            self._send_simple(record, 404, f"not found: {path}\n", retry_after)
            return

        if f.gzip:
            if res.total > _GZIP_MAX:
                self._send_simple(record, 400, "gzip=1 supports bodies up to 256 MiB\n")
                return
            raw = b"".join(res.chunks(0, res.total))
            packed = _gzip.compress(raw, compresslevel=1, mtime=0)
            res.total, res.chunks, res.ranges = len(packed), _static_chunks(packed), False
            if res.etag:
                res.etag = res.etag[:-1] + '-gzip"'

        status, start, end = 200, 0, res.total
        extra: list[tuple[str, str]] = []
        range_h = record.headers.get("range")
        if range_h is not None and res.ranges and not f.ignore_range:
            if_range = record.headers.get("if-range")
            if if_range is None or _if_range_matches(if_range, res.etag, res.last_modified):
                parsed = _parse_range(range_h, res.total)
                if isinstance(parsed, _Unsatisfiable):
                    validators = self._validators(res)
                    self._send_simple(
                        record,
                        416,
                        f"range not satisfiable: {range_h} (size {res.total})\n",
                        [("Content-Range", f"bytes */{res.total}"), *validators],
                    )
                    return
                if parsed is not None:
                    status, (start, end) = 206, parsed
                    extra.append(("Content-Range", f"bytes {start}-{end - 1}/{res.total}"))

        length = end - start
        framing = f.no_length or "length"
        if framing == "chunked" and self.request_version == "HTTP/1.0":
            framing = "close"

        hdrs = self._base_headers()
        hdrs.append(("Content-Type", f.content_type or res.content_type))
        hdrs.append(("Accept-Ranges", "bytes" if res.ranges else "none"))
        hdrs += self._validators(res)
        if framing == "length":
            hdrs.append(("Content-Length", str(length)))
        elif framing == "chunked":
            hdrs.append(("Transfer-Encoding", "chunked"))
        hdrs += extra
        if f.gzip:
            hdrs.append(("Content-Encoding", "gzip"))
        if f.vary:
            hdrs.append(("Vary", f.vary))
        if f.disposition_raw is not None:
            hdrs.append(("Content-Disposition", f.disposition_raw))
        elif f.disposition is not None:
            escaped = f.disposition.replace("\\", "\\\\").replace('"', '\\"')
            hdrs.append(("Content-Disposition", f'attachment; filename="{escaped}"'))
        hdrs += res.headers
        hdrs += retry_after
        if framing == "close":
            self.close_connection = True
        if self.close_connection:
            hdrs.append(("Connection", "close"))

        record.status = status
        head = self._head_bytes(status, hdrs)
        if self.command == "HEAD":
            self.connection.sendall(head)
            return

        limit: int | None = None
        if (f.drop_after is not None or f.short is not None) and (
            f.drop_times is None or count <= f.drop_times
        ):
            cands = [] if f.drop_after is None else [f.drop_after]
            if f.short is not None:
                cands.append(max(length - f.short, 0))
            limit = min(cands)
        stall_at: int | None = None
        if f.stall > 0 and (f.stall_times is None or count <= f.stall_times):
            stall_at = f.stall_after

        plain = limit is None and stall_at is None and not (f.throttle or owner.rate_limit)
        if plain and framing == "length" and length <= _SMALL_BODY:
            body = b"".join(res.chunks(start, end))
            record.bytes_sent += len(body)
            owner._add_sent(len(body))
            self.connection.sendall(head + body)
            return

        self.connection.sendall(head)
        throttle = f.throttle or owner.rate_limit
        self._send_body(record, res.chunks(start, end), framing, limit, stall_at, f.stall, throttle)
        if limit is not None:
            # A dropped or short body: close without finishing (FIN after the bytes sent).
            self.close_connection = True

    def _validators(self, res: _Resource) -> list[tuple[str, str]]:
        out = []
        if res.etag is not None:
            out.append(("ETag", res.etag))
        if res.last_modified is not None:
            out.append(("Last-Modified", formatdate(res.last_modified, usegmt=True)))
        return out

    def _send_body(
        self,
        record: RequestRecord,
        chunks: Iterable[bytes | memoryview],
        framing: str,
        limit: int | None,
        stall_at: int | None,
        stall: float,
        throttle: float | None,
    ) -> None:
        owner = self.server.owner
        sock = self.connection
        sent = 0
        quantum = max(1, min(CHUNK_SIZE, int(throttle // 20))) if throttle else CHUNK_SIZE
        t0 = time.monotonic()
        for chunk in chunks:
            mv = memoryview(chunk)
            while len(mv):
                if stall_at is not None and sent >= stall_at:
                    self._sleep(stall)
                    stall_at = None
                    t0 = time.monotonic() - (sent / throttle if throttle else 0.0)
                if limit is not None and sent >= limit:
                    return
                n = min(len(mv), quantum)
                if limit is not None:
                    n = min(n, limit - sent)
                if stall_at is not None:
                    n = min(n, stall_at - sent)
                piece = mv[:n]
                mv = mv[n:]
                record.bytes_sent += n
                owner._add_sent(n)
                if framing == "chunked":
                    sock.sendall(b"%x\r\n" % n + bytes(piece) + b"\r\n")
                else:
                    sock.sendall(piece)
                sent += n
                if throttle:
                    self._sleep(t0 + sent / throttle - time.monotonic())
        if stall_at is not None and sent >= stall_at:
            self._sleep(stall)
        if limit is not None:
            return
        if framing == "chunked":
            sock.sendall(b"0\r\n\r\n")

    def _resource(
        self, path: str, generation: int, spool: IO[bytes] | None, echo_hash: Any
    ) -> _Resource | None:
        owner = self.server.owner
        if spool is not None:
            total = spool.tell()

            def echo_chunks(start: int, end: int) -> Iterator[bytes]:
                spool.seek(start)
                remaining = end - start
                while remaining > 0:
                    data = spool.read(min(remaining, CHUNK_SIZE))
                    if not data:
                        return
                    remaining -= len(data)
                    yield data

            return _Resource(
                total=total,
                chunks=echo_chunks,
                content_type="application/octet-stream",
                ranges=False,
                headers=[
                    ("X-Echo-Sha256", echo_hash.hexdigest()),
                    ("X-Echo-Length", str(total)),
                    ("X-Echo-Method", self.command),
                ],
            )
        static = owner._get_file(unquote(path))
        if static is not None:
            return _Resource(
                total=len(static.data),
                chunks=_static_chunks(static.data),
                content_type=static.content_type,
                etag=f'"s{static.digest}-{generation}"',
                last_modified=_last_modified(generation),
                headers=list(static.headers),
            )
        parts = path.split("/", 3)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "gen" and parts[3]:
            if not _DIGITS.fullmatch(parts[2]):
                return None
            size, name = int(parts[2]), unquote(parts[3])

            def gen_chunks(start: int, end: int) -> Iterator[memoryview]:
                return _iter_generated(name, size, generation, start, end)

            return _Resource(
                total=size,
                chunks=gen_chunks,
                content_type=_guess_type(name),
                etag=_generated_etag(name, size, generation),
                last_modified=_last_modified(generation),
            )
        if path == "/":
            text = (
                b"ipybgfetch.testing.DataServer\n"
                b"GET /gen/SIZE/NAME   generated file (faults: see the module docstring)\n"
                b"POST /echo           echo the request body\n"
            )
            return _Resource(
                total=len(text),
                chunks=_static_chunks(text),
                content_type="text/plain; charset=utf-8",
                ranges=False,
            )
        return None


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


# --------------------------------------------------------------------------------------
# The public class
# --------------------------------------------------------------------------------------


class DataServer:
    """A loopback HTTP/1.1 server for generated files, static files and uploads.

    Use it as a context manager (``with DataServer() as srv:``) or call ``start()`` and
    ``stop()``. It binds ``host`` (127.0.0.1) on ``port`` (0: a random free port) and serves
    from a daemon thread, one thread per connection, with keep-alive.

    ``rate_limit`` (bytes per second) caps the rate of each response body, and so of each
    connection (a CDN or hub that caps connections); ``latency`` (seconds) is added before each
    response's headers (time to first byte). Both apply to every URL that does not set
    ``throttle=`` / ``delay=`` itself, and can be changed while the server runs.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        request_queue_size: int = 128,
        rate_limit: float | None = None,
        latency: float = 0.0,
    ) -> None:
        if rate_limit is not None and not 0 < rate_limit < float("inf"):
            raise ValueError(f"rate_limit must be bytes per second > 0, got {rate_limit!r}")
        if not 0 <= latency < float("inf"):
            raise ValueError(f"latency must be a number of seconds >= 0, got {latency!r}")
        self.rate_limit = rate_limit
        self.latency = latency
        self._host = host
        self._requested_port = port
        self._queue = request_queue_size
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._files: dict[str, _StaticFile] = {}
        self._requests: list[RequestRecord] = []
        self._counts: dict[str, int] = {}
        self._sent_total = 0
        self._active = 0
        self._peak = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DataServer:
        """Bind and start serving in a daemon thread (no-op if already running)."""
        if self._httpd is not None:
            return self
        self._stop_event.clear()
        handler_server = type(
            "_BoundHTTPServer", (_HTTPServer,), {"request_queue_size": self._queue}
        )
        httpd = handler_server((self._host, self._requested_port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ipybgfetch.testing.DataServer:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection, stalled ones included."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> DataServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (raises RuntimeError before ``start()``)."""
        if self._httpd is None:
            raise RuntimeError("DataServer is not running: call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (raises RuntimeError before ``start()``)."""
        return f"http://{self._host}:{self.port}"

    # -- URLs -----------------------------------------------------------------------------

    def url(self, name: str, size: int, **faults: object) -> str:
        """The URL of generated file ``name`` of ``size`` bytes, with fault query parameters.

        ``True`` becomes ``1``; ``None``/``False`` leave the parameter out. Unknown fault names
        raise ``TypeError`` (see ``FAULT_PARAMS``).
        """
        _check_name_size(name, size)
        query = _encode_faults(faults)
        url = f"{self.base_url}/gen/{size}/{quote(name, safe='')}"
        return f"{url}?{query}" if query else url

    def echo_url(self, **faults: object) -> str:
        """The URL of the echo endpoint (``/echo``), with fault query parameters."""
        query = _encode_faults(faults)
        return f"{self.base_url}/echo" + (f"?{query}" if query else "")

    def add_file(
        self,
        path: str,
        data: bytes,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        **faults: object,
    ) -> str:
        """Serve ``data`` at ``path``; returns its URL (with ``faults`` as query parameters).

        The content type is guessed from the extension when ``content_type`` is None;
        ``headers`` are added to every response. Adding the same path again replaces it.
        """
        key = "/" + path.lstrip("/")
        if key == "/echo" or key.startswith("/gen/"):
            raise ValueError(f"path {path!r} is reserved (/echo and /gen/ are built in)")
        data = bytes(data)
        entry = _StaticFile(
            data=data,
            content_type=content_type or _guess_type(key),
            headers=list((headers or {}).items()),
            digest=hashlib.sha256(data).hexdigest()[:24],
        )
        with self._lock:
            self._files[key] = entry
        query = _encode_faults(faults)
        url = self.base_url + quote(key)
        return f"{url}?{query}" if query else url

    # -- generated content (no server needed) -------------------------------------------------

    @staticmethod
    def content(
        name: str, size: int, start: int = 0, end: int | None = None, *, generation: int = 0
    ) -> bytes:
        """Bytes ``[start, end)`` of generated file ``(name, size)`` (slice semantics, clamped)."""
        _check_name_size(name, size)
        end = size if end is None else min(end, size)
        if start < 0 or end < 0:
            raise ValueError("start and end must be >= 0")
        return b"".join(_iter_generated(name, size, generation, min(start, end), end))

    @staticmethod
    def iter_content(
        name: str, size: int, start: int = 0, end: int | None = None, *, generation: int = 0
    ) -> Iterator[memoryview]:
        """Like ``content`` but yields memoryviews of at most 1 MiB (for huge files)."""
        _check_name_size(name, size)
        end = size if end is None else min(end, size)
        if start < 0 or end < 0:
            raise ValueError("start and end must be >= 0")
        return _iter_generated(name, size, generation, min(start, end), end)

    @staticmethod
    def sha256(name: str, size: int, *, generation: int = 0) -> str:
        """Hex SHA-256 of generated file ``(name, size)``."""
        _check_name_size(name, size)
        return _generated_digest(name, size, generation, "sha256").hex()

    @staticmethod
    def sri(name: str, size: int, algo: str = "sha256", *, generation: int = 0) -> str:
        """Subresource-Integrity string (``sha256-<base64>``) of generated file ``(name, size)``."""
        _check_name_size(name, size)
        if algo not in ("sha256", "sha384", "sha512"):
            raise ValueError(f"algo must be sha256, sha384 or sha512, got {algo!r}")
        digest = _generated_digest(name, size, generation, algo)
        return f"{algo}-{base64.b64encode(digest).decode()}"

    @staticmethod
    def etag(name: str, size: int, *, generation: int = 0) -> str:
        """The strong ETag the server sends for generated file ``(name, size)``."""
        _check_name_size(name, size)
        return _generated_etag(name, size, generation)

    @staticmethod
    def last_modified(*, generation: int = 0) -> str:
        """The Last-Modified HTTP-date the server sends (for every file) at ``generation``."""
        return formatdate(_last_modified(generation), usegmt=True)

    # -- the request log --------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received since start or the last ``reset()``."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, url_or_path: str) -> list[RequestRecord]:
        """Records for one path (or, if it has a query, one exact target); URLs accepted."""
        key, exact = _log_key(url_or_path)
        return [r for r in self.requests if (r.target if exact else r.path) == key]

    @property
    def bytes_sent_total(self) -> int:
        """Response body bytes sent since start or the last ``reset()``."""
        with self._lock:
            return self._sent_total

    def bytes_sent_for(self, url_or_path: str) -> int:
        """Response body bytes sent for one path (or exact target, when it has a query)."""
        return sum(r.bytes_sent for r in self.requests_for(url_or_path))

    @property
    def active_responses(self) -> int:
        """Responses being served right now (one per busy connection)."""
        with self._lock:
            return self._active

    @property
    def peak_responses(self) -> int:
        """The most responses served at the same time since start or the last ``reset()``:
        how many connections a client really used at once."""
        with self._lock:
            return self._peak

    def reset(self) -> None:
        """Clear the request log, the byte counters and every per-URL request counter."""
        with self._lock:
            self._requests.clear()
            self._counts.clear()
            self._sent_total = 0
            self._peak = self._active

    # -- internal hooks used by the handler ------------------------------------------------------

    def _log(self, record: RequestRecord) -> int:
        with self._lock:
            self._requests.append(record)
            count = self._counts.get(record.target, 0) + 1
            self._counts[record.target] = count
            return count

    def _serving(self, n: int) -> None:
        with self._lock:
            self._active += n
            self._peak = max(self._peak, self._active)

    def _add_sent(self, n: int) -> None:
        with self._lock:
            self._sent_total += n

    def _get_file(self, path: str) -> _StaticFile | None:
        with self._lock:
            return self._files.get(path)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
        if add and self._stop_event.is_set():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<DataServer {where}>"


def _log_key(url_or_path: str) -> tuple[str, bool]:
    split = urlsplit(url_or_path)
    path = split.path or "/"
    if split.query:
        return f"{path}?{split.query}", True
    return path, False


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m ipybgfetch.testing [--host H] [--port P] [--rate-limit B] [--latency S]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ipybgfetch.testing",
        description="Serve generated files with fault injection on loopback until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a random free port)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="BYTES_PER_SEC",
        help="cap every response body at this rate (per connection, like nginx limit_rate)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before every response's headers (added time to first byte)",
    )
    args = parser.parse_args(argv)
    srv = DataServer(args.host, args.port, rate_limit=args.rate_limit, latency=args.latency)
    srv.start()
    print(srv.base_url, flush=True)
    print(f"  e.g. {srv.url('example.bin', 100 * 2**20, drop_after=2**20)}", flush=True)
    print("  Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
