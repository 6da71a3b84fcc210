"""Requests and responses.

A :class:`Request` is what the user asks for; a :class:`Response` describes what the server
answered. Bodies never live in memory: ``Response.path`` is the file on disk.
"""

from __future__ import annotations

import codecs
import json as _json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union
from urllib.parse import urlsplit

import httpx

from ._exceptions import FetchError, InvalidStateError

if TYPE_CHECKING:
    from ._engine.record import RecordData

__all__ = ["Body", "Request", "Response", "validate_url"]

Body = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", None]
# The WHATWG URL standard's forbidden host code points (and "%", "\x7f"): a browser
# refuses a URL whose host has one.
_BAD_HOST_CHARS = re.compile(r"[\x00-\x20#/<>?@\[\\\]^|%\x7f]")
_BAD_URL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# http(s)://host[:port][/printable ASCII, no space]: valid as it is (urlsplit not needed)
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9][A-Za-z0-9.-]*(?::(\d{1,5}))?(?:/[!-~]*)?\Z")
#: A byte that is not allowed in a header name (an HTTP token), or in a header value.
BAD_HEADER_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
BAD_HEADER_VALUE = re.compile(rb"[\r\n\x00]")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def validate_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL without credentials, else raise."""
    if isinstance(url, httpx.URL):
        url = str(url)
    if not isinstance(url, str):
        raise FetchError(
            f"a URL must be a str (or an ipybgfetch.Request), got {type(url).__name__}: {url!r}"
        )
    text = url.strip()
    plain = _PLAIN_URL.match(text)
    if plain and (plain.group(1) is None or int(plain.group(1)) <= 65535):
        return text  # the common case, decided without urlsplit (same answer: tested)
    return _validate_slowly(text)


def _validate_slowly(text: str) -> str:
    if not text:
        raise FetchError("empty URL; pass an absolute URL such as 'https://example.org/a.csv'")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise FetchError(f"invalid URL {text!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        hint = (
            "a relative URL has no meaning here"
            if not parts.scheme
            else f"the {parts.scheme!r} scheme is not supported"
        )
        raise FetchError(
            f"invalid URL {text!r}: {hint}; use an absolute http:// or https:// URL "
            "such as 'https://example.org/a.csv'"
        )
    if not parts.hostname:
        raise FetchError(
            f"invalid URL {text!r}: it has no host, so it is not an absolute http(s) URL; e.g. 'https://example.org/a.csv'"
        )
    host = parts.netloc.rpartition("@")[2]
    if not host.startswith("["):  # an IPv6 literal was checked by urlsplit
        host = host.rpartition(":")[0] if ":" in host else host
        bad_host = _BAD_HOST_CHARS.search(host)
        if bad_host:
            raise FetchError(
                f"invalid URL {text!r}: its host {host!r} contains {bad_host.group()!r}, "
                "which no host name may contain; check the URL for a typo"
            )
    if parts.username is not None or parts.password is not None:
        raise FetchError(
            "URLs with credentials (user:password@host) are not allowed, because they would "
            "be stored and shown; pass them with auth=('user', 'password') or "
            "headers={'Authorization': ...} instead"
        )
    bad = _BAD_URL_CHARS.search(text)
    if bad:
        raise FetchError(
            f"invalid URL {text!r}: it contains the control character {bad.group()!r}; "
            "percent-encode it (e.g. a newline as %0A)"
        )
    return text.replace(" ", "%20")  # as browsers do


def checked_headers(headers: Any) -> httpx.Headers:
    """``headers`` as httpx.Headers, or a FetchError (a TypeError) saying which header is
    wrong: a name must be an HTTP token (letters, digits and ``!#$%&'*+-.^_`|~``), and a
    value must not contain CR, LF or NUL (they would split or end the header line).

    >>> checked_headers({"X-Token": "abc"})["x-token"]
    'abc'
    """
    try:
        checked = httpx.Headers(headers or {})
    except (TypeError, ValueError, AttributeError) as exc:
        raise FetchError(
            f"headers must be a mapping of str to str, e.g. {{'X-Token': 'abc'}}: {exc}"
        ) from None
    for name, value in checked.raw:
        if not name or BAD_HEADER_NAME.search(name):
            raise FetchError(
                f"invalid header name {name.decode('latin-1')!r}: a name is letters, "
                "digits and !#$%&'*+-.^_`|~ only (no spaces or colons), e.g. 'X-Token'"
            )
        if BAD_HEADER_VALUE.search(value):
            raise FetchError(
                f"invalid value for header {name.decode('latin-1')!r}: it contains a line "
                "break or NUL, which would split the request; remove it (or percent-encode "
                "it if the server expects that)"
            )
    return checked


class Request:
    """One request of a registration.

    >>> Request("https://example.org/up", method="POST", body=b"...",
    ...         headers={"X-Token": "..."}, integrity="sha256-<base64>")  # doctest: +SKIP

    ``body`` may be bytes, a str (sent as UTF-8) or a path (``pathlib.Path``) to a file
    that is streamed. ``integrity`` uses Subresource Integrity syntax (sha256/384/512).
    """

    __slots__ = ("body", "headers", "integrity", "method", "url")

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | httpx.Headers | None = None,
        body: Body = None,
        integrity: str | None = None,
    ) -> None:
        self.url = validate_url(url)
        if not isinstance(method, str) or not method or not set(method) <= _TOKEN_CHARS:
            raise FetchError(f"invalid HTTP method {method!r}; use e.g. 'GET' or 'POST'")
        self.method = method.upper()
        self.headers = checked_headers(headers)
        if body is not None and not isinstance(body, (bytes, bytearray, memoryview, str)):
            if not isinstance(body, os.PathLike):
                raise FetchError(
                    "body must be bytes, a str or a pathlib.Path to a file, "
                    f"got {type(body).__name__}"
                )
            if not Path(body).is_file():
                raise FetchError(f"body file {os.fspath(body)!r} does not exist")
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        if body is not None and self.method in ("GET", "HEAD"):
            raise FetchError(f"a {self.method} request cannot have a body; use method='POST'")
        self.body: bytes | str | os.PathLike[str] | None = body
        if integrity is not None:
            from ._integrity import parse_integrity

            try:
                integrity = parse_integrity(integrity)
            except ValueError as exc:
                raise FetchError(str(exc)) from None
        self.integrity: str | None = integrity or None

    def with_headers(self, headers: httpx.Headers) -> Request:
        """The same request with other headers (not checked again: already checked)."""
        copy = Request.__new__(Request)
        copy.url, copy.method, copy.body = self.url, self.method, self.body
        copy.integrity = self.integrity
        copy.headers = headers
        return copy

    @property
    def body_size(self) -> int:
        if self.body is None:
            return 0
        if isinstance(self.body, bytes):
            return len(self.body)
        if isinstance(self.body, str):
            return len(self.body.encode("utf-8"))
        return Path(self.body).stat().st_size

    @classmethod
    def coerce(cls, item: object) -> Request:
        if isinstance(item, Request):
            return item
        if isinstance(item, (str, httpx.URL)):
            return cls(str(item))
        if isinstance(item, os.PathLike):
            raise FetchError(f"{os.fspath(item)!r} is a local path, not a URL; pass an http(s) URL")
        raise FetchError(
            "each request must be a URL string or an ipybgfetch.Request, "
            f"got {type(item).__name__}: {item!r}"
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.url, self.method) == (other.url, other.method)

    __hash__ = None  # type: ignore[assignment]


class Response:
    """The server's answer for one record; the body is the file at :attr:`path`."""

    def __init__(self, data: RecordData) -> None:
        self._data = data

    @property
    def status(self) -> int:
        return self._data.status

    @property
    def ok(self) -> bool:
        return 200 <= self._data.status <= 299

    @property
    def headers(self) -> httpx.Headers:
        return self._data.response_headers

    @property
    def url(self) -> str:
        return self._data.response_url or self._data.request.url

    @property
    def path(self) -> Path:
        """Where the body is (or will be, once complete) on disk; for an object-storage
        dest, the object (an ``ObjectPath``: ``str()`` is its URL, ``open()`` reads it)."""
        if self._data.final_path is None:
            raise InvalidStateError("the response body has no file yet")
        return self._data.final_path

    @property
    def content_type(self) -> str:
        value: str = self.headers.get("content-type", "")
        return value

    def _complete_path(self) -> Path:
        data = self._data
        if data.state == "active" or data.state == "pending" or data.state == "paused":
            raise InvalidStateError(
                f"the body of {data.request.url} is still downloading; wait for the "
                "registration first (reg.wait() or await reg)"
            )
        if data.final_path is None or not data.final_path.exists():
            raise InvalidStateError(
                f"the body of {data.request.url} is not available ({data.error or data.state})"
            )
        return data.final_path

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        if any(c in mode for c in "wax+"):
            raise ValueError("response bodies are read-only; use mode 'rb' or 'r'")
        path = self._complete_path()
        if not isinstance(path, Path):  # an object (ObjectPath): read through fsspec
            return path.open(mode, **kwargs)
        return open(path, mode, **kwargs)

    def read(self) -> bytes:
        return self._complete_path().read_bytes()

    def text(self, encoding: str | None = None, errors: str = "replace") -> str:
        """The body decoded with ``encoding``, else the Content-Type's charset, else UTF-8.

        As a browser does, a leading UTF-8 byte order mark is dropped (and, without
        ``encoding``, wins over the charset), and a charset Python does not know falls
        back to UTF-8.
        """
        data = self.read()
        if encoding is None:
            encoding = "utf-8" if data.startswith(codecs.BOM_UTF8) else _text_codec(self)
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # decodes the same, without the byte order mark
        return data.decode(encoding, errors)

    def json(self, **kwargs: Any) -> Any:
        return _json.loads(self.read(), **kwargs)

    def __repr__(self) -> str:
        return f"<Response [{self.status}] {self.url}>"


def _text_codec(response: Response) -> str:
    """The Python codec for the response's charset: UTF-8 if it names none or an unknown one."""
    label = _charset(response.content_type)
    if not label:
        return "utf-8"
    try:
        name = codecs.lookup(label).name
        "".encode(name)  # refuses codecs that are not text encodings (base64, ...)
    except LookupError:
        return "utf-8"
    return name


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return None
