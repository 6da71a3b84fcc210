"""ipybgfetch._http.errors: both transports raise typed wire errors, and the engine's one
mapping (ipybgfetch._engine.failures) decides from the type, never from message texts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from script_server_support import Peer, ScriptServer, raw_servers, replies, response

from ipybgfetch._engine.failures import classify
from ipybgfetch._http.errors import (
    ClosedBeforeResponse,
    IncompleteBody,
    MalformedResponse,
    typed,
)
from ipybgfetch._http.http11 import Http11Transport

TRUNCATED = "the body was truncated: the connection closed before it was complete"
UNANSWERED = "the server closed the connection before answering"


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[Peer], None]], ScriptServer]]:
    yield from raw_servers()


def _get(url: str, transport: httpx.AsyncBaseTransport | None) -> BaseException:
    """GET ``url`` through ``transport`` (None: httpx's own); the error it raised."""

    async def go() -> None:
        async with (
            httpx.AsyncClient(transport=transport) as client,
            client.stream("GET", url) as r,
        ):
            async for _ in r.aiter_raw():
                pass

    try:
        asyncio.run(asyncio.wait_for(go(), 10))
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


def _broken_servers(raw: Any) -> dict[str, tuple[str, type[Exception], str]]:
    return {
        "truncated": (
            raw(replies(response(b"x" * 1000)[:-400], close=True)).url,
            IncompleteBody,
            TRUNCATED,
        ),
        "unanswered": (raw(Peer.read_request).url, ClosedBeforeResponse, UNANSWERED),
    }


@pytest.mark.parametrize("case", ["truncated", "unanswered"])
@pytest.mark.parametrize("transport", ["ipybgfetch", "httpx"])
def test_both_transports_give_the_same_type_and_the_same_record_error(raw, case, transport):
    url, kind, message = _broken_servers(raw)[case]
    exc = _get(url, Http11Transport() if transport == "ipybgfetch" else None)
    assert isinstance(exc, httpx.RemoteProtocolError)  # httpx's interface is kept
    if transport == "ipybgfetch":
        assert type(exc) is kind  # raised typed
    assert type(typed(exc)) is kind  # httpx's own transport: typed at the HTTP layer
    failure = classify(exc)
    assert failure == ("fetch-error", message, True)


def test_a_malformed_answer_is_typed(raw):
    srv = raw(replies(b"HTTQ/1.1 200 OK\r\n\r\n", close=True))
    exc = _get(srv.url, Http11Transport())
    assert isinstance(exc, MalformedResponse), exc
    assert isinstance(exc, httpx.RemoteProtocolError)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (IncompleteBody("any words at all"), TRUNCATED),
        (ClosedBeforeResponse("any words at all"), UNANSWERED),
        (httpx.RemoteProtocolError("any words: complete message body"), TRUNCATED),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), UNANSWERED),
    ],
)
def test_the_type_decides_not_the_words(exc, message):
    assert classify(exc).message == message


def test_other_errors_keep_their_own_words():
    failure = classify(httpx.ConnectError("cannot connect to x:1: refused"))
    assert failure == ("fetch-error", "ConnectError: cannot connect to x:1: refused", True)
    assert classify(httpx.UnsupportedProtocol("ftp")).retryable is False
    assert classify(httpx.TooManyRedirects("loop")).retryable is False
    timeout = classify(httpx.ReadTimeout("no data for 0.3 s"))
    assert timeout.message == "timed out (ReadTimeout): no data for 0.3 s"
