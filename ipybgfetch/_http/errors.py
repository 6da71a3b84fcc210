"""What can go wrong on the wire, as types.

ipybgfetch's HTTP/1.1 transport raises these directly; :func:`typed` gives the same types
to the errors of httpx's own transport (used for proxies and HTTP/2), which reports these
cases only in its messages. Each subclasses the httpx exception it refines, so
``except httpx.RemoteProtocolError`` (or ``TransportError``) keeps working. The engine maps
them to a record's failure in one place (:mod:`ipybgfetch._engine.failures`).

    httpx.RemoteProtocolError
     ├── IncompleteBody        the connection closed before the whole body arrived
     ├── ClosedBeforeResponse  the server closed the connection without answering
     └── MalformedResponse     not HTTP/1.x: a bad status line, header, framing or length
"""

from __future__ import annotations

import httpx

__all__ = ["ClosedBeforeResponse", "IncompleteBody", "MalformedResponse", "typed"]


class IncompleteBody(httpx.RemoteProtocolError):
    """The connection closed before the whole body arrived (short Content-Length body,
    unfinished chunked body)."""


class ClosedBeforeResponse(httpx.RemoteProtocolError):
    """The server closed the connection without sending a response."""


class MalformedResponse(httpx.RemoteProtocolError):
    """The answer is not valid HTTP/1.x (status line, header line, chunk framing,
    Content-Length, Transfer-Encoding, an oversized head)."""


# What httpcore/h11 (httpx's own transport) say for these cases: the one place that reads
# another transport's messages.
_HTTPX_MESSAGES: tuple[tuple[str, type[httpx.RemoteProtocolError]], ...] = (
    ("complete message body", IncompleteBody),
    ("without sending a response", ClosedBeforeResponse),
)


def typed(exc: BaseException) -> BaseException:
    """``exc`` as one of the types above when httpx's own transport raised it untyped;
    any other error as it is."""
    if type(exc) is not httpx.RemoteProtocolError:
        return exc
    text = str(exc)
    for fragment, kind in _HTTPX_MESSAGES:
        if fragment in text:
            new = kind(text)
            try:
                new.request = exc.request
            except RuntimeError:  # raised before a request was attached
                pass
            new.__cause__ = exc
            return new
    return exc
