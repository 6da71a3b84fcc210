"""ipybgfetch._http.http11 for real: the pure helpers (property tests) and Http11Transport under
an httpx.AsyncClient against loopback servers, no mocks.

Exact wire scenarios use ``script_server_support.ScriptServer``: every accepted connection
runs a handler (in its own thread) that reads requests and writes back exactly the bytes
the scenario needs, then keeps or closes the connection. Normal files come
from ipybgfetch.testing.DataServer (the session fixture ``server``).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from script_server_support import Peer, ScriptServer, raw_servers, replies, response

from ipybgfetch._http.http11 import MAX_HEAD, READ_HIGH, ChunkedDecoder, Http11Transport, parse_head
from ipybgfetch.testing import DataServer

# ---------------------------------------------------------------------------------------
# A scripted raw-socket server
# ---------------------------------------------------------------------------------------


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[Peer], None]], ScriptServer]]:
    yield from raw_servers()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port held by a bound socket that doesn't listen: connecting to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def client(**limits: Any) -> httpx.AsyncClient:
    transport = Http11Transport(limits=httpx.Limits(**limits) if limits else None)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(3.0))


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return out + b"0\r\n" + trailers + b"\r\n"


async def get_all(url: str, n: int, **limits: Any) -> list[httpx.Response]:
    async with client(**limits) as c:
        return [await c.get(url) for _ in range(n)]


# ---------------------------------------------------------------------------------------
# ChunkedDecoder: property tests
# ---------------------------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=8)
quoted = st.text(alphabet="abc ;=,xyz", max_size=6).map(lambda s: f'"{s}"')
bws = st.sampled_from(["", " ", "\t"])
extensions = st.lists(
    st.tuples(bws, tokens, st.none() | tokens | quoted).map(
        lambda e: f"{e[0]};{e[1]}" + ("" if e[2] is None else f"={e[2]}")
    ),
    max_size=3,
).map("".join)
field_values = st.binary(max_size=30).map(  # visible bytes, inner spaces and tabs
    lambda b: bytes(c for c in b if (c >= 0x21 and c != 0x7F) or c in b" \t").strip(b" \t")
)
trailer_lines = st.lists(
    st.tuples(tokens, field_values).map(lambda kv: kv[0].encode() + b": " + kv[1] + b"\r\n"),
    max_size=3,
).map(b"".join)


@st.composite
def chunked_messages(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    """(body, its chunked encoding, the bytes that follow the message)."""
    body = draw(st.binary(max_size=3000))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=12))))
    bounds = [0, *cuts, len(body)]
    wire = b""

    def size_line(n: int) -> bytes:
        digits = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in f"{n:x}")
        zeros = "0" * draw(st.integers(0, 2))
        return f"{zeros}{digits}{draw(extensions)}\r\n".encode()

    for start, end in itertools.pairwise(bounds):
        if end > start:
            wire += size_line(end - start) + body[start:end] + b"\r\n"
    wire += size_line(0) + draw(trailer_lines) + b"\r\n"
    after = draw(st.binary(max_size=40))
    return body, wire, after


def feed_split(data: bytes, splits: list[int]) -> tuple[ChunkedDecoder, bytes, bytes]:
    """Feed ``data`` to a new decoder cut at ``splits``: (decoder, decoded, rest)."""
    decoder = ChunkedDecoder()
    decoded, rest = [], b""
    bounds = [0, *sorted(s % (len(data) + 1) for s in splits), len(data)]
    for start, end in itertools.pairwise(bounds):
        was_done = decoder.done
        pieces, after = decoder.feed(data[start:end])
        assert all(isinstance(p, bytes | memoryview) for p in pieces)
        decoded += pieces
        if was_done or decoder.done:
            rest += after
        else:
            assert after == b""
    return decoder, b"".join(decoded), rest


@settings(max_examples=300, deadline=None)
@given(chunked_messages(), st.lists(st.integers(0, 10_000), max_size=20))
def test_chunked_decoder_decodes_any_encoding_fed_in_any_pieces(message, splits):
    body, wire, after = message
    decoder, decoded, rest = feed_split(wire + after, splits)
    assert decoder.done
    assert decoded == body
    assert rest == after


@given(chunked_messages())
def test_chunked_decoder_one_byte_at_a_time(message):
    body, wire, after = message
    decoder, decoded, rest = feed_split(wire + after, list(range(len(wire + after))))
    assert decoder.done and decoded == body and rest == after


@given(chunked_messages(), st.integers(0, 10_000))
def test_chunked_decoder_is_not_done_before_the_last_blank_line(message, cut):
    body, wire, _ = message
    cut = cut % len(wire)  # any proper prefix
    decoder, decoded, rest = feed_split(wire[:cut], [])
    assert not decoder.done and rest == b""
    assert body.startswith(decoded)


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=5))
def test_chunked_decoder_only_ever_raises_remote_protocol_error(data, splits):
    try:
        feed_split(data, splits)
    except httpx.RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\n",
        b"-1\r\nx\r\n",
        b"0x10\r\n",
        b"1_0\r\n",
        b"+5\r\nhello\r\n",
        b"\r\n",
        b";ext\r\n",
        b"3\r\nabcX\r\n",  # no CRLF after the data
        b"3\r\nabc\r\n" + b"1" * 9000,  # a size line that never ends
        b"5;" + b"e" * 9000 + b"\r\nhello\r\n",
    ],
    ids=lambda wire: repr(wire[:12]) + (f"+{len(wire) - 12}" if len(wire) > 12 else ""),
)
def test_chunked_decoder_rejects_malformed_framing(wire):
    with pytest.raises(httpx.RemoteProtocolError):
        feed_split(wire, [])
    with pytest.raises(httpx.RemoteProtocolError):
        feed_split(wire, list(range(len(wire))))


def test_chunked_decoder_accepts_bare_lf_and_bws():
    decoder, decoded, rest = feed_split(b"5 ;x=y\nhello\n0\nT: 1\n\nNEXT", [])
    assert decoder.done and decoded == b"hello" and rest == b"NEXT"


# ---------------------------------------------------------------------------------------
# parse_head: property tests
# ---------------------------------------------------------------------------------------

reasons = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c not in b"\r\n"))
ows = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t "])
header_lists = st.lists(st.tuples(tokens.map(str.encode), field_values, ows, ows), max_size=8)


@given(
    st.sampled_from([b"1.0", b"1.1"]),
    st.integers(100, 999),
    reasons,
    st.booleans(),
    header_lists,
)
def test_parse_head_round_trips(version, code, reason, space_without_reason, headers):
    status_line = b"HTTP/" + version + b" %d" % code
    if reason or space_without_reason:
        status_line += b" " + reason
    lines = [status_line] + [n + b":" + o1 + v + o2 for n, v, o1, o2 in headers]
    status, got_reason, got_headers, got_version = parse_head(b"\r\n".join(lines))
    assert status == code
    assert got_reason == reason
    assert got_version == version
    assert got_headers == [(n, v) for n, v, _, _ in headers]


def test_parse_head_unfolds_obsolete_line_folding():
    head = b"HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\n\tthree\r\nY: 1"
    assert parse_head(head)[2] == [(b"X-Long", b"one two three"), (b"Y", b"1")]


def _corrupt(kind: str, junk: bytes) -> bytes:
    junk = bytes(c for c in junk if c not in b"\r\n ")
    good = [b"HTTP/1.1 200 OK", b"Content-Length: 3"]
    if kind == "prefix":
        good[0] = b"HTTX/1.1" + junk + b" 200 OK"
    elif kind == "version":
        good[0] = b"HTTP/1.1" + (junk or b"1") + b" 200 OK"
    elif kind == "code":
        code = junk + b"0" if len(junk) == 3 and junk.isdigit() else junk
        good[0] = b"HTTP/1.1 " + code + b" OK"
    elif kind == "no colon":
        good.append(b"X" + junk.replace(b":", b""))
    elif kind == "space in name":
        good.append(b"Bad Name: x")
    elif kind == "space before colon":
        good.append(b"Bad : x")
    elif kind == "empty name":
        good.append(b": x")
    elif kind == "fold first":
        good = [good[0], b" folded: x"]
    elif kind == "bare status":
        good = [b"HTTP/1.1"]
    elif kind == "empty line":
        good.insert(1, b"")
    return b"\r\n".join(good)


@given(
    st.sampled_from(
        [
            "prefix",
            "version",
            "code",
            "no colon",
            "space in name",
            "space before colon",
            "empty name",
            "fold first",
            "bare status",
            "empty line",
        ]
    ),
    st.binary(max_size=10),
)
def test_parse_head_rejects_malformed_heads(kind, junk):
    with pytest.raises(httpx.RemoteProtocolError):
        parse_head(_corrupt(kind, junk))


@given(st.binary(max_size=300))
def test_parse_head_only_ever_raises_remote_protocol_error(data):
    try:
        status, _, headers, _ = parse_head(data)
    except httpx.RemoteProtocolError:
        return
    assert 0 <= status <= 999 and isinstance(headers, list)


# ---------------------------------------------------------------------------------------
# Bodies: Content-Length, chunked, read-until-close, none
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "a\r\nX-Injected: 1"}, {"X-A": "a\x00b"}, {"Bad Name": "x"}, {"X-Tab\t": "z"}],
    ids=["crlf-value", "nul-value", "space-name", "tab-name"],
)
def test_an_illegal_header_is_refused_before_anything_is_sent(raw, headers):
    # The product checks headers at fetch(); the transport refuses them too, for any
    # caller of the httpx client (httpx itself lets these names through to a transport).
    srv = raw(replies(response(b"ok")))

    async def send() -> None:
        async with client() as c:
            await c.get(srv.url + "/h", headers=headers)

    with pytest.raises(httpx.LocalProtocolError, match="illegal header"):
        run(send())
    assert srv.requests == []


def test_content_length_body(raw):
    body = bytes(range(256)) * 100
    srv = raw(replies(response(body, headers=("X-A: 1",))))
    r = run(get_all(srv.url + "/a?b=c", 1))[0]
    assert r.status_code == 200 and r.content == body
    assert r.headers["x-a"] == "1" and r.reason_phrase == "OK"
    assert r.http_version == "HTTP/1.1"
    assert srv.requests[0].request_line == b"GET /a?b=c HTTP/1.1"
    assert srv.requests[0].header("host") == f"127.0.0.1:{srv.port}"


def test_chunked_body_in_pieces_with_extensions_and_trailers(raw):
    pieces = [b"hello ", b"chunked", b" " * 5000, b"world"]

    def handler(peer: Peer) -> None:
        peer.read_request()
        wire = response(headers=("Transfer-Encoding: chunked",), length=False)
        wire += b"6;a=b\r\nhello \r\n" + b'7 ;x;y="1;2"\r\nchunked\r\n'
        wire += b"1388\r\n" + pieces[2] + b"\r\n" + b"5\r\nworld\r\n"
        wire += b"0\r\nX-Trailer: yes\r\n\r\n"
        for i in range(0, len(wire), 7):  # split across many TCP writes
            peer.send(wire[i : i + 7])
            if i % 700 == 0:
                time.sleep(0.001)
        peer.send(response(b"second"))  # not asked for yet: not part of the first body
        peer.read_to_eof()

    srv = raw(handler)

    async def main() -> tuple[bytes, int]:
        async with client() as c:
            r = await c.get(srv.url)
            return r.content, r.status_code

    content, status = run(main())
    assert status == 200 and content == b"".join(pieces)


def test_chunked_bodies_keep_the_connection_alive(raw):
    first = response(headers=("Transfer-Encoding: chunked",), length=False) + chunked(b"one")
    second = response(headers=("Transfer-Encoding: chunked",), length=False) + chunked(b"two")
    srv = raw(replies(first, second))
    assert [r.content for r in run(get_all(srv.url, 2))] == [b"one", b"two"]
    assert srv.accepts == 1


def test_read_until_close_body(raw):
    body = b"no length, the end is the close " * 1000

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for i in range(0, len(body), 4096):
            peer.send(body[i : i + 4096])
        peer.sock.close()

    srv = raw(handler)
    responses = run(get_all(srv.url, 1))
    assert responses[0].content == body


def test_read_until_close_body_is_not_reused(raw):
    srv = raw(replies(b"HTTP/1.1 200 OK\r\n\r\nfirst", close=True))
    responses = run(get_all(srv.url, 2))
    assert [r.content for r in responses] == [b"first", b"first"]
    assert srv.accepts == 2


def test_head_with_content_length_reads_no_body_and_keeps_the_connection(raw):
    srv = raw(
        replies(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            response(b"after"),
        )
    )

    async def main() -> list[httpx.Response]:
        async with client() as c:
            return [await c.head(srv.url), await c.head(srv.url), await c.get(srv.url)]

    heads = run(main())
    assert heads[0].headers["content-length"] == "100000" and heads[0].content == b""
    assert heads[1].content == b""
    assert heads[2].content == b"after"
    assert srv.accepts == 1
    assert [r.request_line.split()[0] for r in srv.requests] == [b"HEAD", b"HEAD", b"GET"]


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body(raw, status):
    no_body = f'HTTP/1.1 {status}\r\nContent-Length: 50\r\nETag: "x"\r\n\r\n'.encode()
    srv = raw(replies(no_body, response(b"next")))
    responses = run(get_all(srv.url, 2))
    assert responses[0].status_code == int(status[:3]) and responses[0].content == b""
    assert responses[1].content == b"next"
    assert srv.accepts == 1


@pytest.mark.parametrize("same_packet", [True, False])
def test_interim_1xx_answers_before_the_real_one(raw, same_packet):
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    final = response(b"real", headers=("X-Final: 1",))

    def handler(peer: Peer) -> None:
        peer.read_request()
        if same_packet:
            peer.send(interim + final)
        else:
            for part in (interim[:10], interim[10:30], interim[30:], final):
                peer.send(part)
                time.sleep(0.02)
        peer.read_to_eof()

    srv = raw(handler)
    r = run(get_all(srv.url, 1))[0]
    assert r.status_code == 200 and r.content == b"real"
    assert r.headers["x-final"] == "1" and "link" not in r.headers


def test_101_switching_protocols_is_refused(raw):
    srv = raw(replies(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="101"):
        run(get_all(srv.url, 1))


def test_gzip_is_decoded_by_aiter_bytes_and_left_alone_by_aiter_raw(server):
    size = 300_000
    url = server.url("gz.txt", size, gzip=1)
    plain = DataServer.content("gz.txt", size)

    async def main() -> tuple[bytes, bytes, str]:
        async with client() as c:
            async with c.stream("GET", url) as r:
                raw_bytes = b"".join([chunk async for chunk in r.aiter_raw()])
                encoding = r.headers["content-encoding"]
            async with c.stream("GET", url) as r:
                decoded = b"".join([chunk async for chunk in r.aiter_bytes()])
            return raw_bytes, decoded, encoding

    raw_bytes, decoded, encoding = run(main())
    assert encoding == "gzip"
    assert decoded == plain
    assert raw_bytes != plain and gzip.decompress(raw_bytes) == plain


# ---------------------------------------------------------------------------------------
# Keep-alive and the pool
# ---------------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(raw):
    srv = raw(replies(response(b"one"), response(b"two"), response(b"three")))
    assert [r.content for r in run(get_all(srv.url, 3))] == [b"one", b"two", b"three"]
    assert srv.accepts == 1
    assert {r.conn for r in srv.requests} == {0}


def test_connection_close_from_the_server_is_not_reused(raw):
    srv = raw(replies(response(b"bye", headers=("Connection: close",)), close=True))
    responses = run(get_all(srv.url, 2))
    assert [r.content for r in responses] == [b"bye", b"bye"]
    assert srv.accepts == 2


def test_http_1_0_answers_are_not_reused(raw):
    srv = raw(replies(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert [r.content for r in run(get_all(srv.url, 2))] == [b"ok", b"ok"]
    assert srv.accepts == 2


def test_bytes_beyond_the_content_length_stop_reuse(raw):
    srv = raw(replies(response(b"ok") + b"GARBAGE"))
    assert [r.content for r in run(get_all(srv.url, 2))] == [b"ok", b"ok"]
    assert srv.accepts == 2


def test_server_closing_an_idle_connection_means_a_new_one(raw):
    srv = raw(replies(response(b"fresh"), close=True))  # FIN right after each answer

    async def main() -> list[bytes]:
        async with client() as c:
            first = await c.get(srv.url)
            await asyncio.sleep(0.1)  # the FIN arrives while the connection is idle
            second = await c.get(srv.url)
            return [first.content, second.content]

    assert run(main()) == [b"fresh", b"fresh"]
    assert srv.accepts == 2


def _closes_after_one_answer(peer: Peer) -> None:
    """Connection 0 answers one request, then reads the next one and closes without an
    answer (the keep-alive race); later connections answer everything."""
    if peer.index == 0:
        peer.read_request()
        peer.send(response(b"first"))
        peer.read_request()
        return  # close: FIN
    while (req := peer.read_request()) is not None:
        peer.send(response(b"retried:" + req.body))


def test_stale_kept_alive_connection_is_retried_for_a_replayable_request(raw):
    srv = raw(_closes_after_one_answer)

    async def main() -> list[bytes]:
        async with client() as c:
            first = await c.get(srv.url)
            second = await c.post(srv.url, content=b"payload")
            return [first.content, second.content]

    assert run(main()) == [b"first", b"retried:payload"]
    assert srv.accepts == 2
    assert [(r.conn, r.body) for r in srv.requests] == [(0, b""), (0, b"payload"), (1, b"payload")]


def test_stale_kept_alive_connection_is_not_replayed_for_a_streamed_body(raw):
    srv = raw(_closes_after_one_answer)

    async def parts() -> AsyncIterator[bytes]:
        yield b"once"

    async def main() -> None:
        async with client() as c:
            await c.get(srv.url)
            await c.post(srv.url, content=parts())

    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        run(main())
    assert srv.accepts == 1


def test_keepalive_expiry_and_max_keepalive(raw):
    srv = raw(replies(response(b"a"), response(b"b")))

    async def main() -> None:
        async with client(keepalive_expiry=0.05) as c:
            await c.get(srv.url)
            await asyncio.sleep(0.15)
            await c.get(srv.url)

    run(main())
    assert srv.accepts == 2
    srv2 = raw(replies(response(b"a"), response(b"b")))
    run(get_all(srv2.url, 2, max_keepalive_connections=0))
    assert srv2.accepts == 2


def test_closing_the_transport_closes_idle_connections(raw):
    saw_eof = threading.Event()

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(response(b"x"))
        if peer.read_request() is None:
            saw_eof.set()

    srv = raw(handler)

    async def main() -> bool:
        c = client()
        await c.get(srv.url)
        await asyncio.sleep(0.1)
        assert not saw_eof.is_set()  # idle in the pool, still open
        await c.aclose()
        for _ in range(200):  # while the loop (and the socket object) is still alive
            if saw_eof.is_set():
                return True
            await asyncio.sleep(0.01)
        return False

    assert run(main())
    assert srv.accepts == 1


def test_pool_limit_and_slots_freed_after_errors(raw, refused_port):
    def handler(peer: Peer) -> None:
        req = peer.read_request()
        if req is None:
            return
        target = req.request_line.split()[1]
        if target == b"/truncated":
            peer.send(response(b"abc")[:-1])
            return
        if target == b"/hold":
            peer.send(response(b"x" * 10)[:-5])
            peer.read_to_eof()
            return
        peer.send(response(b"ok", headers=("Connection: close",)))

    srv = raw(handler)

    async def main() -> None:
        async with client(max_connections=1) as c:
            c.timeout = httpx.Timeout(3.0, pool=0.2)
            for _ in range(3):  # each failure must give its slot back
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.get(srv.url + "/truncated")
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{refused_port}/")
            assert (await c.get(srv.url + "/ok")).content == b"ok"
            async with c.stream("GET", srv.url + "/hold"):  # holds the only slot
                with pytest.raises(httpx.PoolTimeout):
                    await c.get(srv.url + "/ok")
            assert (await c.get(srv.url + "/ok")).content == b"ok"  # freed by the close

    run(main())


def test_closing_a_response_before_its_body_does_not_pool_the_connection(raw):
    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            peer.send(response(b"x" * 100_000)[:5000])  # the rest never comes
            peer.read_to_eof()
            return
        replies(response(b"second"))(peer)

    srv = raw(handler)

    async def main() -> bytes:
        async with client() as c:
            async with c.stream("GET", srv.url) as r:
                assert r.status_code == 200
            return (await c.get(srv.url)).content

    assert run(main()) == b"second"
    assert srv.accepts == 2


def test_cancelled_requests_give_their_slot_and_connection_back(raw):
    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            if req.request_line.split()[1] == b"/slow":
                peer.read_to_eof()  # never answers; the client cancels
                return
            peer.send(response(b"ok"))

    srv = raw(handler)

    async def main() -> bytes:
        async with client(max_connections=1) as c:
            c.timeout = httpx.Timeout(3.0, pool=0.5)
            task = asyncio.create_task(c.get(srv.url + "/slow"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return (await c.get(srv.url + "/fast")).content

    assert run(main()) == b"ok"
    assert srv.accepts == 2  # the cancelled request's connection was not reused


# ---------------------------------------------------------------------------------------
# Requests: bodies and local errors
# ---------------------------------------------------------------------------------------


def test_post_bytes_body_arrives_byte_exact(raw):
    payload = bytes(range(256)) * 4000 + b"\r\n\r\n0\r\n"
    srv = raw(replies(response(b"ok")))

    async def main() -> None:
        async with client() as c:
            assert (await c.post(srv.url + "/up", content=payload)).content == b"ok"

    run(main())
    req = srv.requests[0]
    assert req.request_line == b"POST /up HTTP/1.1"
    assert req.header("content-length") == str(len(payload))
    assert req.header("transfer-encoding") is None
    assert req.body == payload
    assert req.raw.endswith(b"\r\n\r\n" + payload)


def test_post_async_iterator_body_is_sent_chunked_byte_exact(raw):
    parts = [b"first", b"", b"\r\n0\r\n\r\n", bytes(range(256)) * 1000, b"last"]
    srv = raw(replies(response(b"ok"), response(b"again")))

    async def stream() -> AsyncIterator[bytes]:
        for part in parts:
            await asyncio.sleep(0)
            yield part

    async def main() -> list[bytes]:
        async with client() as c:
            first = await c.post(srv.url, content=stream())
            second = await c.get(srv.url)  # the connection is still in step
            return [first.content, second.content]

    assert run(main()) == [b"ok", b"again"]
    req = srv.requests[0]
    assert req.header("transfer-encoding") == "chunked"
    assert req.header("content-length") is None
    assert req.body == b"".join(parts)
    wire = req.raw.split(b"\r\n\r\n", 1)[1]
    assert wire == b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
    assert srv.accepts == 1


def test_streamed_upload_to_data_server_echo(server):
    data = DataServer.content("up.bin", 3 * 2**20)
    parts = [data[i : i + 2**18] for i in range(0, len(data), 2**18)]

    async def stream() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def main() -> httpx.Response:
        async with client() as c:
            return await c.post(server.echo_url(), content=stream())

    r = run(main())
    assert r.headers["x-echo-sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert r.content == b"".join(parts)


def test_header_with_cr_lf_is_refused_before_anything_is_sent(raw):
    received: list[bytes] = []

    def handler(peer: Peer) -> None:
        received.append(peer.read_to_eof())

    srv = raw(handler)

    async def main() -> None:
        async with client() as c:
            for name, value in [("X-Bad", "a\r\nInjected: 1"), ("X-Bad", "a\nb"), ("X\rY", "1")]:
                request = c.build_request("GET", srv.url, headers={name: value})
                with pytest.raises(httpx.LocalProtocolError):
                    await c.send(request)

    run(main())
    deadline = time.monotonic() + 2
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == [b"", b"", b""]  # three connections (each one closed), no byte sent
    assert srv.requests == []


# ---------------------------------------------------------------------------------------
# Broken servers
# ---------------------------------------------------------------------------------------


def test_truncated_content_length_body(raw):
    srv = raw(replies(response(b"x" * 1000)[:-400], close=True))
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body") as info:
        run(get_all(srv.url, 1))
    assert "received 600 bytes, expected 1000" in str(info.value)


def test_truncated_chunked_body(raw):
    head = response(headers=("Transfer-Encoding: chunked",), length=False)
    srv = raw(replies(head + b"5\r\nhello\r\n10\r\nabc", close=True))
    with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
        run(get_all(srv.url, 1))


def test_truncated_chunked_body_missing_only_the_last_chunk(raw):
    head = response(headers=("Transfer-Encoding: chunked",), length=False)
    srv = raw(replies(head + b"5\r\nhello\r\n", close=True))
    with pytest.raises(httpx.RemoteProtocolError, match="chunked"):
        run(get_all(srv.url, 1))


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_reset_during_a_framed_body_is_an_error(raw, framing):
    def handler(peer: Peer) -> None:
        peer.read_request()
        if framing == "length":
            peer.send(response(b"x" * 1000)[:-500])
        else:
            head = response(headers=("Transfer-Encoding: chunked",), length=False)
            peer.send(head + b"100\r\n" + b"x" * 100)
        time.sleep(0.2)
        peer.reset()

    srv = raw(handler)
    with pytest.raises(httpx.ReadError):
        run(get_all(srv.url, 1))


def test_malformed_chunked_body(raw):
    head = response(headers=("Transfer-Encoding: chunked",), length=False)
    srv = raw(replies(head + b"5\r\nhello\r\nzz\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="bad chunk size"):
        run(get_all(srv.url, 1))


def test_server_closes_without_any_response(raw):
    srv = raw(Peer.read_request)  # reads the request, closes without a word
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        run(get_all(srv.url, 1))
    assert len(srv.requests) == 1  # a first request on a new connection is not retried


def test_server_closes_inside_the_head(raw):
    srv = raw(replies(b"HTTP/1.1 200 OK\r\nContent-Le", close=True))
    with pytest.raises(httpx.RemoteProtocolError, match="head"):
        run(get_all(srv.url, 1))


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"FOO 200 OK\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
)
def test_bad_status_line_or_header(raw, head):
    srv = raw(replies(head))
    with pytest.raises(httpx.RemoteProtocolError):
        run(get_all(srv.url, 1))


def test_endless_response_head_is_refused(raw):
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10_000))
        peer.read_to_eof()

    srv = raw(handler)
    with pytest.raises(httpx.RemoteProtocolError, match="head over"):
        run(get_all(srv.url, 1))


def test_complete_response_head_over_the_limit_is_refused(raw):
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD - 5000)

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(big)  # under the limit, no blank line yet
        time.sleep(0.2)
        peer.send(b"\r\nX-More: " + b"b" * 10_000 + b"\r\nContent-Length: 0\r\n\r\n")
        peer.read_to_eof()

    srv = raw(handler)
    with pytest.raises(httpx.RemoteProtocolError):
        run(get_all(srv.url, 1))


@pytest.mark.parametrize(
    "lengths",
    [("5", "6"), ("5, 6",), ("-1",), ("0x5",), ("5", "")],
)
def test_bad_or_conflicting_content_length(raw, lengths):
    headers = tuple(f"Content-Length: {n}" for n in lengths)
    srv = raw(replies(response(b"hello", headers=headers, length=False)))
    with pytest.raises(httpx.RemoteProtocolError, match="Content-Length"):
        run(get_all(srv.url, 1))


@pytest.mark.parametrize("extra", ["Content-Length: 5", "Content-Length: 5, 5"])
def test_repeated_equal_content_length_is_fine(raw, extra):
    # "5, 5" as llhttp, curl and h11 take it (issue #15; it was refused before)
    srv = raw(replies(response(b"hello", headers=(extra,))))
    assert run(get_all(srv.url, 1))[0].content == b"hello"


def test_read_timeout_waiting_for_the_head(raw):
    srv = raw(replies())  # reads until the client closes, never answers

    async def main() -> None:
        async with client() as c:
            await c.get(srv.url, timeout=httpx.Timeout(3.0, read=0.3))

    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        run(main())
    assert 0.25 < time.monotonic() - start < 2


def test_read_timeout_inside_the_body(raw):
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(response(b"x" * 1000)[:-500])
        peer.read_to_eof()

    srv = raw(handler)
    start = time.monotonic()
    received, _ = run(_read_until_timeout(srv.url, read=0.3))
    assert received == 500
    assert time.monotonic() - start < 2


async def _read_until_timeout(url: str, read: float) -> tuple[int, float]:
    """GET ``url`` and read its body until it times out (ReadTimeout is expected): the
    bytes received, and the seconds from the last of them to the timeout."""
    received, last = 0, time.monotonic()
    async with client() as c:
        timeout = httpx.Timeout(3.0, read=read)
        async with c.stream("GET", url, timeout=timeout) as r:
            with pytest.raises(httpx.ReadTimeout):
                async for chunk in r.aiter_raw():
                    received += len(chunk)
                    last = time.monotonic()
    return received, time.monotonic() - last


def test_a_slow_but_steady_body_never_times_out_and_a_later_stall_does(raw):
    """The read timeout counts from the last bytes, not from the request: the one timer of
    a connection moves with each wait (bytes every 0.15 s for 0.9 s under a 0.3 s read
    timeout), then a stall times out within about the timeout."""

    def handler(peer: Peer) -> None:
        peer.read_request()
        wire = response(b"x" * 700)
        peer.send(wire[:-700])  # the head
        for i in range(6):
            time.sleep(0.15)
            peer.send(wire[-700 + 100 * i : -700 + 100 * (i + 1)])
        peer.read_to_eof()  # the last 100 bytes never come

    srv = raw(handler)
    received, stalled_for = run(_read_until_timeout(srv.url, read=0.3))
    assert received == 600  # every byte sent arrived: no timeout while they were coming
    assert 0.25 < stalled_for < 1.5


def test_connection_refused(refused_port):
    with pytest.raises(httpx.ConnectError, match="cannot connect"):
        run(get_all(f"http://127.0.0.1:{refused_port}/x", 1))


def test_unsupported_scheme_is_refused():
    async def main() -> None:
        transport = Http11Transport()
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))

    with pytest.raises(httpx.UnsupportedProtocol):
        run(main())


# ---------------------------------------------------------------------------------------
# Large bodies and flow control
# ---------------------------------------------------------------------------------------


def test_large_body_arrives_sha256_exact(server):
    size = 20 * 2**20 + 7
    url = server.url("big20.bin", size)

    async def main() -> tuple[str, int]:
        digest, n = hashlib.sha256(), 0
        async with client() as c, c.stream("GET", url) as r:
            async for chunk in r.aiter_raw():
                digest.update(chunk)
                n += len(chunk)
        return digest.hexdigest(), n

    assert run(main()) == (DataServer.sha256("big20.bin", size), size)


def test_flow_control_stops_reading_when_the_consumer_does_not_take(server):
    size = 80 * 2**20  # beyond READ_HIGH + the kernel's socket buffers
    url = server.url("flow.bin", size, tag=str(time.monotonic_ns()))

    async def main() -> tuple[int, str]:
        async with client() as c, c.stream("GET", url) as r:
            await asyncio.sleep(0.6)  # not taking anything
            sent_while_stalled = server.bytes_sent_for(url)
            digest = hashlib.sha256()
            async for chunk in r.aiter_raw():
                digest.update(chunk)
        return sent_while_stalled, digest.hexdigest()

    sent_while_stalled, sha = run(main(), timeout=20)
    assert READ_HIGH <= sent_while_stalled < size
    assert sha == DataServer.sha256("flow.bin", size)


# ---------------------------------------------------------------------------------------
# Regressions: bugs these tests found in the first version of _http11.py
# ---------------------------------------------------------------------------------------


def test_connection_pooled_with_reading_paused_still_answers(raw):
    size = READ_HIGH + 1  # the read that crosses READ_HIGH is the one that ends the body
    sent = threading.Event()

    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(response(b"z" * size))
        sent.set()
        replies(response(b"second"))(peer)

    srv = raw(handler)

    async def main() -> bytes:
        async with client() as c:
            async with c.stream("GET", srv.url) as r:
                assert r.status_code == 200
                while not sent.is_set():
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # every byte of the body is buffered: none taken
            second = await c.get(srv.url, timeout=httpx.Timeout(3.0, read=0.5))
            return second.content

    assert run(main()) == b"second"


def test_abandoned_body_iterator_does_not_close_a_reused_connection(raw):
    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            if req.body:
                time.sleep(0.2)  # answer the upload a little later
            peer.send(response(b"x" * 5000 if not req.body else b"stored:" + req.body))

    srv = raw(handler)

    async def upload() -> AsyncIterator[bytes]:
        yield b"data"

    async def main() -> bytes:
        async with client() as c:
            async with c.stream("GET", srv.url) as r:
                async for _ in r.aiter_raw():
                    break  # stop reading: the whole body was already received
            return (await c.post(srv.url, content=upload())).content

    assert run(main()) == b"stored:data"


def test_reset_during_read_until_close_body_is_an_error(raw):
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\n\r\n" + b"partial" * 100)
        time.sleep(0.2)  # the client has read what was sent
        peer.reset()

    srv = raw(handler)
    with pytest.raises(httpx.ReadError):
        run(get_all(srv.url, 1))


def test_early_answer_during_a_streamed_upload_is_returned(raw):
    def handler(peer: Peer) -> None:
        peer.read_head()
        peer.send(response(b"too big", "413 Payload Too Large", ("Connection: close",)))
        peer.half_close()
        peer.read_to_eof()  # keeps reading (and dropping) the upload

    srv = raw(handler)

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(20):
            await asyncio.sleep(0.01)
            yield b"u" * 1000

    async def main() -> int:
        async with client() as c:
            return (await c.post(srv.url, content=upload())).status_code

    assert run(main()) == 413


def test_many_interim_answers_in_one_read(raw):
    many = b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + response(b"ok")
    srv = raw(replies(many))
    assert run(get_all(srv.url, 1))[0].content == b"ok"


def test_bare_lf_response_head(raw):
    srv = raw(replies(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))

    async def main() -> bytes:
        async with client() as c:
            return (await c.get(srv.url, timeout=httpx.Timeout(3.0, read=0.5))).content

    assert run(main()) == b"ok"


def test_unsupported_transfer_coding_is_refused(raw):
    body = gzip.compress(b"payload")
    head = response(headers=("Transfer-Encoding: gzip, chunked",), length=False)
    srv = raw(replies(head + chunked(body)))
    with pytest.raises(httpx.RemoteProtocolError):
        run(get_all(srv.url, 1))


def test_a_cancel_arriving_as_a_connect_completes_is_never_swallowed():
    """asyncio.wait_for (Python < 3.12) returns the result and drops the cancel when both
    land in one loop iteration: a paused download then ran on. _bounded re-raises the
    cancel and hands the unused result (a new connection) to its cleanup."""
    from ipybgfetch._http.http11 import _bounded

    async def main() -> tuple[bool, list[str]]:
        loop = asyncio.get_running_loop()
        inner: asyncio.Future[str] = loop.create_future()
        cleaned: list[str] = []

        async def connect() -> str:
            return await inner

        outer = asyncio.ensure_future(_bounded(connect(), 10, cleaned.append))
        await asyncio.sleep(0.01)  # outer is waiting for the connection

        def both() -> None:
            inner.set_result("connection")
            outer.cancel()

        loop.call_soon(both)
        try:
            await outer
            cancelled = False
        except asyncio.CancelledError:
            cancelled = True
        await asyncio.sleep(0.01)
        return cancelled, cleaned

    assert asyncio.run(main()) == (True, ["connection"])
