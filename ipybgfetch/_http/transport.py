"""Which transport moves the bytes under the httpx client.

httpx stays the interface (headers, ``auth``, redirects, cookies, timeouts, ``verify``);
by default ipybgfetch's own HTTP/1.1 transport (:mod:`.http11`) moves the bytes, which
measured faster than both httpx's transport and aiohttp's here (docs/benchmarks.md).

httpx's own transport is kept when the user asks for something the HTTP/1.1 transport
doesn't do (``http2=True``, a ``proxy=``, a custom ``transport``/``mounts``, a Unix socket),
or when ``IPYBGFETCH_TRANSPORT=httpx`` is set. Proxies from the environment (``HTTPS_PROXY``
and friends, with ``trust_env``) are mounted by httpx itself on its own transport.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import httpx

from .._secrets import redact_url
from .http11 import DEFAULT_PORTS, Http11Transport

__all__ = ["Client", "make_client", "make_transport", "parse_url"]

#: client options that need httpx's own transport
HTTPX_ONLY = frozenset({"transport", "mounts", "http2", "uds", "app", "proxy"})
#: client options the transport needs too (the client keeps them for proxy mounts)
TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "limits")


def make_transport(options: dict[str, Any]) -> Http11Transport | None:
    """The transport for these httpx client options, or None for httpx's default."""
    if os.environ.get("IPYBGFETCH_TRANSPORT") == "httpx":
        return None
    if any(options.get(name) not in (None, False) for name in HTTPX_ONLY):
        return None
    if options.get("trust_env", True) and _environment_proxies():
        return None  # httpx mounts HTTP(S)_PROXY/ALL_PROXY only when it owns the transport
    return Http11Transport(**{k: options[k] for k in TRANSPORT_OPTIONS if k in options})


def _environment_proxies() -> bool:
    import urllib.request

    return any(urllib.request.getproxies().get(k) for k in ("http", "https", "all"))


class _Cookies(httpx.Cookies):
    """The client's cookie jar, skipping the jar's work for a response without cookies.

    httpx wraps every response in urllib objects to look for ``Set-Cookie`` (~15 % of the
    engine's time on 500 small files); most download responses set none.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def make_client(options: dict[str, Any]) -> Client:
    """The httpx client for a manager: these options, the fastest transport that serves
    them, and the cheaper cookie jar."""
    options = dict(options)
    transport = make_transport(options)
    if transport is not None:
        options["transport"] = transport
    client = Client(plain_transport=transport, **options)
    if type(getattr(client, "_cookies", None)) is httpx.Cookies:  # httpx's private slot
        client._cookies = _Cookies(client._cookies)
    return client


# -- the plain GET, without the client's per-request layers -------------------------------

_logger = logging.getLogger("httpx")  # the line httpx's client logs for each request

# An absolute http(s) URL that httpx would keep exactly as written: lower-case scheme and
# host, an optional port, a path and query of characters httpx never re-encodes (valid
# %XX escapes included), and no fragment. Anything else is parsed by httpx.URL.
_CHARS = r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2}"
_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::([0-9]{1,5}))?"
    rf"((?:/(?:{_CHARS})*)?)(?:\?((?:{_CHARS}|\?)*))?\Z"
)
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\Z")
_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\Z"
)
_MAX_URL_LENGTH = 65536  # httpx's limit


def _plain_url(text: str) -> httpx.URL | None:
    """``httpx.URL(text)`` built without parsing it again, for the URLs most downloads
    use; None for any other (the caller lets httpx parse it)."""
    if len(text) > _MAX_URL_LENGTH:
        return None  # httpx refuses it ("URL too long")
    m = _PLAIN_URL.match(text)
    if m is None:
        return None
    scheme, host, port_text, path, query = m.groups()
    if _IPV4_STYLE.match(host) and not _IPV4.match(host):
        return None  # httpx refuses it, with its own message
    if "." in path and any(s in (".", "..") for s in path.split("/")):
        return None  # dot segments: httpx removes them
    port = int(port_text) if port_text is not None else None
    if port == DEFAULT_PORTS[scheme]:
        port = None
    url = httpx.URL.__new__(httpx.URL)
    url._uri_reference = _ParseResult(scheme, "", host, port, path, query, None)
    return url


def _check_plain_urls() -> bool:
    """Whether this httpx stores a URL the way :func:`_plain_url` builds it."""
    try:
        for text in (
            "http://a.example:8080/x/y.csv?q=1&r=%20",
            "https://h.io",
            "http://1.2.3.4:80/",
        ):
            built, parsed = _plain_url(text), httpx.URL(text)
            if built is None or (str(built), built.raw_path, built.port) != (
                str(parsed),
                parsed.raw_path,
                parsed.port,
            ):
                return False
    except Exception:
        return False
    return True


try:
    from httpx._urlparse import ParseResult as _ParseResult  # httpx's own parsed form
except ImportError:  # another httpx layout: always parse with httpx.URL
    _PLAIN_URLS = False
else:
    _PLAIN_URLS = _check_plain_urls()


def parse_url(text: str) -> httpx.URL:
    """``httpx.URL(text)``, at a tenth of the cost for a plain URL (same result: tested)."""
    if _PLAIN_URLS:
        url = _plain_url(text)
        if url is not None:
            return url
    return httpx.URL(text)


# httpx's own redirect steps, used to go on from a redirect the shortcut received (the
# request is not sent again). Without them (another httpx), the shortcut is off.
_REDIRECTS = all(
    hasattr(httpx.AsyncClient, name)
    for name in ("_build_redirect_request", "_send_handling_redirects")
)


class Client(httpx.AsyncClient):
    """httpx's client, with a shortcut for the request most downloads are.

    A GET without a body, auth (given, the client's or in the URL), cookies in the jar,
    query params or event hooks, over ipybgfetch's own transport, goes straight to the
    transport: the layers of ``build_request``/``send`` (auth flow, hooks, cookie and
    param merging) have nothing to do for it, and no httpx.Request is built unless
    something asks for it. The header lines sent are those httpx would send (tested). A
    redirect answer is handed to httpx's own redirect loop, as ``send`` would do, so
    redirects keep httpx's rules (and the first request is not sent twice).
    """

    def __init__(self, *, plain_transport: Http11Transport | None = None, **options: Any):
        super().__init__(**options)
        self._plain_transport = plain_transport if _REDIRECTS else None

    async def open(
        self,
        method: str,
        url: str,
        *,
        headers: httpx.Headers,
        content: Any = None,
        timeout: httpx.Timeout,
        auth: Any = None,
    ) -> httpx.Response:
        """``send(build_request(...), stream=True, auth=auth)``: the response, its body
        not read yet."""
        target = parse_url(url)
        transport = self._plain_transport
        if (
            transport is not None
            and method == "GET"
            and content is None
            and auth is None
            and self.auth is None
            and not target.userinfo
            and not self.params
            and not any(self.event_hooks.values())
            and not self.cookies.jar
        ):
            merged = httpx.Headers(self.headers)
            merged.update(headers)
            lines = merged.raw
            if not any(name.lower() == b"host" for name, _ in lines):
                lines.insert(0, (b"Host", target.netloc))  # first, as httpx.Request puts it
            response = await self._send_plain(transport, target, lines, timeout.as_dict())
            if response.has_redirect_location:
                return await self._redirected(response)
            return response
        request = self.build_request(
            method, target, headers=headers, content=content, timeout=timeout
        )
        return await self.send(
            request, stream=True, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth
        )

    async def _redirected(self, response: httpx.Response) -> httpx.Response:
        """What ``_send_handling_redirects`` does with a redirect answer: follow it (with
        httpx's rules: method, headers, cookies, max_redirects), or say where it leads."""
        try:
            next_request = self._build_redirect_request(response.request, response)
            if not self.follow_redirects:
                response.next_request = next_request
                return response
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return await self._send_handling_redirects(
            next_request, follow_redirects=True, history=[response]
        )

    async def _send_plain(
        self,
        transport: Http11Transport,
        url: httpx.URL,
        lines: list[tuple[bytes, bytes]],
        timeouts: dict[str, Any],
    ) -> httpx.Response:
        """What ``_send_single_request`` does, for a request nothing else applies to."""
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        try:
            response = await transport.open_plain(url, lines, timeouts)
        except httpx.RequestError as exc:
            exc.request = httpx.Request("GET", url, headers=lines)  # as request_context does
            raise
        response.default_encoding = getattr(self, "_default_encoding", "utf-8")
        if any(name.lower() == b"set-cookie" for name, _ in response.head_lines):
            self.cookies.extract_cookies(response)
        if _logger.isEnabledFor(logging.INFO):
            _logger.info(
                'HTTP Request: %s %s "%s %d %s"',
                "GET",
                redact_url(str(url)),  # httpx's line, without the URL's secrets (never on disk)
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response
