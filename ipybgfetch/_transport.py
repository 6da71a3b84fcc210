"""Which transport moves the bytes under the httpx client.

httpx stays the interface (headers, ``auth``, redirects, cookies, timeouts, ``verify``);
by default ipybgfetch's own HTTP/1.1 transport (:mod:`._http11`) moves the bytes, which
measured faster than both httpx's transport and aiohttp's here (docs/benchmarks.md).

httpx's own transport is kept when the user asks for something the HTTP/1.1 transport
doesn't do (``http2=True``, a ``proxy=``, a custom ``transport``/``mounts``, a Unix socket),
or when ``IPYBGFETCH_TRANSPORT=httpx`` is set. Proxies from the environment (``HTTPS_PROXY``
and friends, with ``trust_env``) are mounted by httpx itself on its own transport.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from ._http11 import Http11Transport

__all__ = ["make_client", "make_transport"]

#: client options that need httpx's own transport
HTTPX_ONLY = frozenset({"transport", "mounts", "http2", "uds", "app", "proxy"})
#: client options the transport needs too (the client keeps them for proxy mounts)
TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "limits")


def make_transport(options: dict[str, Any]) -> httpx.AsyncBaseTransport | None:
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


def make_client(options: dict[str, Any]) -> httpx.AsyncClient:
    """The httpx client for a manager: these options, the fastest transport that serves
    them, and the cheaper cookie jar."""
    options = dict(options)
    transport = make_transport(options)
    if transport is not None:
        options["transport"] = transport
    client = httpx.AsyncClient(**options)
    if type(getattr(client, "_cookies", None)) is httpx.Cookies:  # httpx's private slot
        client._cookies = _Cookies(client._cookies)
    return client
