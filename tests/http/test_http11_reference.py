"""The own HTTP/1.1 response parser against a reference (h11, httpx's own parser).

Generated responses (framings, repeated and conflicting lengths, control characters in
header names and values, chunk sizes and extensions, interim heads, bodies cut short) go
byte for byte to ipybgfetch's connection protocol (over a real socket pair) and to h11;
both must accept or both refuse, and agree on the status and the decoded body (issue #15).
"""

from __future__ import annotations

import asyncio
import socket

import h11
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipybgfetch._http.http11 import _Connection


async def _ours(raw: bytes) -> tuple[int, bytes] | None:
    loop = asyncio.get_running_loop()
    mine, theirs = socket.socketpair()
    transport, conn = await loop.connect_accepted_socket(
        lambda: _Connection(("http", "example", 80)), mine
    )
    try:
        conn.start(True)
        theirs.sendall(raw)
        theirs.shutdown(socket.SHUT_WR)
        try:
            status = (await conn.head(5))[0]
            body = b""
            while (chunks := await conn.take(5)) is not None:
                body += b"".join(bytes(c) for c in chunks)
        except httpx.HTTPError:
            return None
        return status, body
    finally:
        conn.close()
        transport.close()
        theirs.close()


def ours(raw: bytes) -> tuple[int, bytes] | None:
    return asyncio.run(_ours(raw))


def reference(raw: bytes) -> tuple[int, bytes] | None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "example")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")  # the server closed: the end of a read-until-close body
    status, body = 0, b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:  # NEED_DATA after the close, ConnectionClosed: cut short
                return None
    except h11.RemoteProtocolError:
        return None


# -- the generator ----------------------------------------------------------------------

_names = st.sampled_from(
    [
        *(b"X-A", b"Server", b"Content-Type", b"ETag", b"x-weird!#$%&'*+-.^_`|~"),
        *(b"X A", b"X-A\x00", b"X:A", b"", b"X-\x7f", b"X-\xff"),  # not tokens
    ]
)
_value_chars = st.sampled_from(
    [
        *(b"a", b"Z", b"0", b" ", b"\t", b"/", b";", b",", b'"', b"\x80", b"\xff"),
        *(b"\x00", b"\r", b"\x01", b"\x7f", b"\x1f"),  # control characters
    ]
)
_values = st.lists(_value_chars, max_size=12).map(b"".join)


@st.composite
def _extra_headers(draw: st.DrawFn) -> list[bytes]:
    pairs = draw(st.lists(st.tuples(_names, _values), max_size=4))
    return [name + b": " + value for name, value in pairs]


@st.composite
def _chunked(draw: st.DrawFn, body: bytes) -> bytes:
    out = b""
    rest = body
    while rest:
        n = draw(st.integers(1, len(rest)))
        size = b"%x" % n
        size = draw(st.sampled_from([size, size.upper(), b"0" * draw(st.integers(0, 3)) + size]))
        ext = draw(st.sampled_from([b"", b";a=b", b";ext"]))
        out += size + ext + b"\r\n" + rest[:n] + b"\r\n"
        rest = rest[n:]
    trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 201, 204, 206, 304, 404, 500]))
    interim = draw(
        st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 X\r\n\r\n"])
    )
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "both", "close", "lengths"]))
    headers = draw(_extra_headers())
    if framing == "length":
        n = draw(st.sampled_from([len(body), len(body) + 5]))  # + 5: cut short
        headers.append(b"Content-Length: %d" % n)
    elif framing == "lengths":  # repeated: equal (taken once) or not (refused)
        other = draw(st.sampled_from([len(body), len(body) + 1]))
        form = draw(
            st.sampled_from(
                [b"Content-Length: %d, %d", b"Content-Length: %d\r\nContent-Length: %d"]
            )
        )
        headers.append(form % (len(body), other))
    elif framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked"])))
        if framing == "both":
            headers.append(b"Content-Length: 3")
    if framing in ("chunked", "both"):
        payload = draw(_chunked(body))
        if draw(st.booleans()) and payload:
            payload = payload[: draw(st.integers(0, len(payload) - 1))]  # cut short
    else:
        payload = body
    draw(st.randoms()).shuffle(headers)
    head = b"HTTP/1.1 %d Reason\r\n" % status + b"".join(h + b"\r\n" for h in headers)
    return interim + head + b"\r\n" + payload


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_the_parser_agrees_with_h11(raw):
    assert ours(raw) == reference(raw), raw


def test_the_reference_harness_sees_what_it_should():
    """The two harnesses themselves: a plain answer, a cut one, a malformed one."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert ours(ok) == reference(ok) == (200, b"hello")
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello"
    assert ours(cut) is None and reference(cut) is None
    nul = b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello"
    assert ours(nul) is None and reference(nul) is None
