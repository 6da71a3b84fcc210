"""Both transports under the httpx client behave the same: ipybgfetch's own HTTP/1.1
transport (the default) and httpx's own (kept for http2=True, a proxy, a custom transport,
or IPYBGFETCH_TRANSPORT=httpx)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ipybgfetch import BackgroundFetchManager, Request, RetryPolicy
from ipybgfetch._http11 import Http11Transport
from ipybgfetch._transport import make_transport
from ipybgfetch.testing import DataServer

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05, read_timeout=0.5)


@pytest.fixture(params=["native", "httpx"])
def any_mgr(request, tmp_path: Path) -> Iterator[BackgroundFetchManager]:
    options = {} if request.param == "native" else {"transport": httpx.AsyncHTTPTransport()}
    with BackgroundFetchManager(home=tmp_path / "h", retries=FAST, client_options=options) as m:
        yield m


def test_the_default_is_native_and_falls_back_for_http2_and_proxies(monkeypatch):
    assert isinstance(make_transport({}), Http11Transport)
    assert make_transport({"http2": True}) is None
    assert make_transport({"proxy": "http://127.0.0.1:3128"}) is None
    assert isinstance(make_transport({"http2": False, "proxy": None}), Http11Transport)
    monkeypatch.setenv("IPYBGFETCH_TRANSPORT", "httpx")
    assert make_transport({}) is None


def test_transport_options_reach_the_transport_and_stay_on_the_client():
    options = {"verify": False, "follow_redirects": True}
    transport = make_transport(options)
    assert isinstance(transport, Http11Transport) and transport._verify is False
    assert options == {"verify": False, "follow_redirects": True}  # for env-proxy mounts


def test_bytes_resume_truncation_stall_and_refusal(any_mgr, server):
    size = 3 * 2**20 + 5
    tag = "httpx" if any_mgr._client_options else "native"  # fresh fault counters
    reqs = [
        server.url("t-ok.bin", size),
        server.url("t-drop.bin", size, drop_after=2**20, drop_times=1, tag=tag),
        server.url("t-short.bin", 50_000, short=1000),
        server.url("t-stall.bin", 50_000, stall=5, stall_after=1000, stall_times=1, tag=tag),
        server.url("t-redir.bin", 1000, redirect=2),
        Request(server.echo_url(), method="POST", body=b"x" * 100_000),
        "http://127.0.0.1:9/refused",
    ]
    reg = any_mgr.fetch("t", reqs).wait(60)
    recs = reg.match_all()
    assert recs[0]["sha256"] == DataServer.sha256("t-ok.bin", size)
    assert recs[1]["sha256"] == DataServer.sha256("t-drop.bin", size)
    ranges = [r.headers.get("range") for r in server.requests_for(reqs[1])]
    assert f"bytes={2**20}-" in ranges  # resumed, not restarted
    assert recs[2].state == "failure" and "truncated" in recs[2].error
    assert recs[3]["sha256"] == DataServer.sha256("t-stall.bin", 50_000)
    assert recs[3].attempts == 2  # the stall was detected and resumed
    assert recs[4].response.read() == DataServer.content("t-redir.bin", 1000)
    assert recs[5].response.read() == b"x" * 100_000
    assert recs[6].state == "failure" and "ConnectError" in recs[6].error


def test_the_cookie_jar_still_keeps_cookies_across_requests():
    """make_client's jar skips responses without Set-Cookie, and still keeps real cookies."""
    import asyncio
    import http.server
    import threading

    from ipybgfetch._transport import make_client

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (self.headers.get("Cookie") or "none").encode()
            self.send_response(200)
            if self.path == "/login":
                self.send_header("Set-Cookie", "session=abc123; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    async def main() -> list[str]:
        async with make_client({}) as client:
            assert type(client.cookies).__name__ == "_Cookies"
            seen = [(await client.get(f"{base}/plain")).text]
            seen.append((await client.get(f"{base}/login")).text)
            seen.append((await client.get(f"{base}/after")).text)
            return seen

    try:
        assert asyncio.run(main()) == ["none", "none", "session=abc123"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http2_without_h2_says_what_to_install(tmp_path, monkeypatch):
    # httpx would only fail inside every transfer ("internal error: ImportError").
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "h2" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"httpx\[http2\]"):
        BackgroundFetchManager(home=tmp_path / "h", client_options={"http2": True})
