"""Why an attempt failed, in words and in kind: the one place that maps an exception from
the HTTP layer (or the disk) to what a record's ``error`` says and whether retrying can
help. Types decide, never message texts (the HTTP layer types its errors:
:mod:`ipybgfetch._http.errors`)."""

from __future__ import annotations

import ssl
from typing import NamedTuple

import httpx

from .._http.errors import ClosedBeforeResponse, IncompleteBody, typed
from .._vocab import FailureReason

__all__ = ["Failure", "classify"]


class Failure(NamedTuple):
    reason: FailureReason
    message: str  # one plain sentence for record.error
    retryable: bool  # False: the same request can only fail the same way again


def classify(exc: BaseException) -> Failure:
    """The failure of one attempt that raised ``exc``."""
    exc = typed(exc)
    if isinstance(exc, httpx.TooManyRedirects):
        return Failure(
            "fetch-error",
            "the server redirected too many times (a redirect loop?); open the URL in a "
            "browser to see where it leads (not retried)",
            False,
        )
    if isinstance(exc, httpx.DecodingError):
        return Failure(
            "fetch-error",
            f"the body could not be decoded ({exc}); the server's compressed data is "
            "corrupt. To get the bytes as they are, fetch with "
            "headers={'Accept-Encoding': 'identity'} (not retried)",
            False,
        )
    if isinstance(exc, httpx.InvalidURL):
        return Failure(
            "fetch-error",
            f"the server redirected to a URL that cannot be fetched ({exc}); open the URL "
            "in a browser to see where it leads (not retried)",
            False,
        )
    return Failure("fetch-error", _describe(exc), not _permanent(exc))


def _describe(exc: BaseException) -> str:
    """One plain sentence for a failed attempt, whichever transport raised it."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__}): {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, IncompleteBody):
        return "the body was truncated: the connection closed before it was complete"
    if isinstance(exc, ClosedBeforeResponse):
        return "the server closed the connection before answering"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, httpx.TransportError) else text


def _permanent(exc: BaseException) -> bool:
    """A failure no retry can fix: an untrusted certificate, an illegal request."""
    if isinstance(exc, (httpx.LocalProtocolError, httpx.UnsupportedProtocol)):
        return True
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__
    return False
