"""Both transports under the httpx client behave the same: ipybgfetch's own HTTP/1.1
transport (the default) and httpx's own (kept for http2=True, a proxy, a custom transport,
or IPYBGFETCH_TRANSPORT=httpx)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipybgfetch import BackgroundFetchManager, Request, RetryPolicy
from ipybgfetch._http.http11 import Http11Transport
from ipybgfetch._http.transport import Client, _plain_url, make_client, make_transport, parse_url
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

    from ipybgfetch._http.transport import make_client

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


# -- the plain-GET shortcut (Client.open) and its URL parsing ----------------------------

_URL_CHARS = "abcxyzABZ0189-._~!$&'()*+,;=:@/%?#[]^|{}\"<> \\`é\t"


@settings(max_examples=600, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https", "ftp"]),
    host=st.one_of(
        st.text(alphabet="abcxyzAZ019.-_%~[]:@", min_size=0, max_size=12),
        st.sampled_from(
            ["127.0.0.1", "256.1.1.1", "01.2.3.4", "1.2.3", "[::1]", "xn--bcher-kva.de"]
        ),
    ),
    port=st.one_of(st.none(), st.integers(0, 99999).map(str), st.sampled_from(["", "080", "x"])),
    path=st.text(alphabet=_URL_CHARS, max_size=20),
    query=st.one_of(st.none(), st.text(alphabet=_URL_CHARS, max_size=12)),
)
def test_parse_url_gives_what_httpx_url_gives(scheme, host, port, path, query):
    text = f"{scheme}://{host}" + (f":{port}" if port is not None else "") + path
    text += f"?{query}" if query is not None else ""
    try:
        expected = httpx.URL(text)
    except Exception as exc:
        with pytest.raises(type(exc)):
            parse_url(text)
        return
    got = parse_url(text)
    assert got == expected
    assert (str(got), got.raw_path, got.raw_host, got.port, got.query) == (
        str(expected),
        expected.raw_path,
        expected.raw_host,
        expected.port,
        expected.query,
    )


def test_parse_url_takes_the_shortcut_for_plain_urls_only():
    plain = [
        "http://127.0.0.1:8000/data/part-0001.csv",
        "https://huggingface.co/datasets/x/resolve/main/a%20b.parquet?download=true",
        "https://example.org",
        "http://example.org:80/a;b=c/d@e",
    ]
    for text in plain:
        built = _plain_url(text)
        assert built is not None and built == httpx.URL(text), text
    assert str(_plain_url("http://example.org:80/x")) == "http://example.org/x"
    others = [
        "HTTP://example.org/",  # upper-case scheme: httpx lower-cases it
        "http://Example.org/",
        "http://example.org/a/../b",  # dot segments
        "http://example.org/a b",  # re-encoded by httpx
        "http://example.org/a#frag",
        "http://999.1.1.1/",
        "http://user@example.org/",
        "http://example.org/%zz",
    ]
    for text in others:
        assert _plain_url(text) is None, text


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers by path; keeps each request's path and header lines (in order)."""

    seen: ClassVar[list[tuple[str, list[tuple[str, str]]]]] = []
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        type(self).seen.append((self.path, list(self.headers.items())))
        extra: list[tuple[str, str]] = []
        status, body = 200, f"{self.path}|{self.headers.get('Cookie', '-')}".encode()
        if self.path.startswith("/redirect"):
            status, extra = 302, [("Location", "/final")]
        elif self.path.startswith("/dl?token="):  # a one-time link that sets a session
            used = sum(p == self.path for p, _ in type(self).seen) > 1
            status, body = (410, b"used") if used else (302, b"")
            extra = [] if used else [("Location", "/file.bin"), ("Set-Cookie", "sid=xyz")]
        elif self.path.startswith("/login"):
            extra = [("Set-Cookie", "session=abc123; Path=/")]
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _open_all(base: str, paths: list[str], **options: object) -> tuple[list[str], int]:
    """GET each path through Client.open, in turn; the bodies, and how many went through
    httpx's send()."""

    async def main() -> tuple[list[str], int]:
        async with make_client({"follow_redirects": True, **options}) as client:
            assert isinstance(client, Client)
            sends = 0
            real_send = client.send

            async def counting_send(*args: object, **kwargs: object) -> httpx.Response:
                nonlocal sends
                sends += 1
                return await real_send(*args, **kwargs)  # type: ignore[arg-type]

            client.send = counting_send  # type: ignore[method-assign]
            bodies = []
            for path in paths:
                auth = ("u", "p") if path.startswith("/auth") else None
                resp = await client.open(
                    "GET",
                    base + path,
                    headers=httpx.Headers({"X-Mine": "1", "user-agent": "mine/1"}),
                    timeout=httpx.Timeout(5),
                    auth=auth,
                )
                bodies.append((await resp.aread()).decode())
                await resp.aclose()
            return bodies, sends

    return asyncio.run(main())


def test_a_plain_get_sends_the_same_request_httpx_would(recorder):
    bodies, sends = _open_all(recorder, ["/a.csv?x=1"])
    assert bodies == ["/a.csv?x=1|-"] and sends == 0  # the shortcut

    async def through_httpx() -> None:
        async with httpx.AsyncClient() as client:
            request = client.build_request(
                "GET", recorder + "/a.csv?x=1", headers={"X-Mine": "1", "user-agent": "mine/1"}
            )
            await (await client.send(request)).aread()

    asyncio.run(through_httpx())
    (_, shortcut), (_, full) = _Recorder.seen
    assert shortcut == full  # the same header lines, in the same order
    assert ("user-agent", "mine/1") in [(k.lower(), v) for k, v in shortcut]


def test_redirects_cookies_auth_and_hooks_keep_httpxs_rules(recorder):
    paths = ["/redirect", "/redirect", "/plain", "/login", "/after", "/auth"]
    bodies, sends = _open_all(recorder, paths)
    assert bodies[:2] == ["/final|-", "/final|-"]  # followed by httpx's redirect loop
    seen = [p for p, _ in _Recorder.seen]
    assert seen[:4] == ["/redirect", "/final", "/redirect", "/final"]  # each sent once
    assert bodies[3] == "/login|-" and bodies[4] == "/after|session=abc123"  # the jar
    auth_headers = dict(_Recorder.seen[-1][1])
    assert auth_headers.get("Authorization", "").startswith("Basic ")
    assert sends == 2  # the jar holds a cookie after /login: /after and /auth use send()

    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.url.path)

    bodies, sends = _open_all(recorder, ["/one"], event_hooks={"request": [hook]})
    assert bodies == ["/one|-"] and sends == 1 and hooked == ["/one"]


def test_a_one_time_redirect_is_followed_not_sent_again(recorder):
    """A download link that works once (a token, redirected to a signed URL, setting a
    session cookie): the shortcut must not send it twice (review of session 4)."""
    bodies, _ = _open_all(recorder, ["/dl?token=t1"])
    assert bodies == ["/file.bin|sid=xyz"]
    assert [(p, dict(h).get("Cookie")) for p, h in _Recorder.seen] == [
        ("/dl?token=t1", None),
        ("/file.bin", "sid=xyz"),
    ]


def test_without_follow_redirects_the_redirect_comes_back_with_next_request(recorder):
    """As httpx's send() returns them: next_request, the client's default_encoding, an
    elapsed time once read, and raise_for_status() raising HTTPStatusError."""

    async def main() -> None:
        async with make_client({"follow_redirects": False, "default_encoding": "latin-1"}) as c:

            async def get(path: str) -> httpx.Response:
                resp = await c.open(
                    "GET", recorder + path, headers=httpx.Headers(), timeout=httpx.Timeout(5)
                )
                await resp.aread()
                return resp

            redirect = await get("/redirect")
            assert redirect.status_code == 302 and redirect.default_encoding == "latin-1"
            assert str(redirect.next_request.url) == recorder + "/final"
            assert redirect.elapsed.total_seconds() > 0
            await get("/dl?token=t9")  # the 302
            gone = await get("/dl?token=t9")  # used: 410
            assert gone.status_code == 410
            with pytest.raises(httpx.HTTPStatusError):
                gone.raise_for_status()

    asyncio.run(main())


def test_a_plain_response_builds_its_request_only_when_asked(recorder):
    from ipybgfetch._http.http11 import PlainResponse

    async def main() -> None:
        async with make_client({"follow_redirects": True}) as client:
            resp = await client.open(
                "GET", recorder + "/x.csv", headers=httpx.Headers(), timeout=httpx.Timeout(5)
            )
            assert isinstance(resp, PlainResponse)
            assert str(resp.url) == recorder + "/x.csv" and resp._request is None
            assert resp.request.method == "GET" and resp.request.url == resp.url
            assert resp.request.headers["host"] == recorder.split("//")[1]
            assert (await resp.aread()) == b"/x.csv|-"
            await resp.aclose()
            with pytest.raises(httpx.ConnectError) as failed:
                await client.open(
                    "GET",
                    "http://127.0.0.1:9/gone",
                    headers=httpx.Headers(),
                    timeout=httpx.Timeout(5),
                )
            assert str(failed.value.request.url) == "http://127.0.0.1:9/gone"

    asyncio.run(main())


def test_credentials_in_the_url_go_through_httpxs_auth(recorder):
    """httpx turns user:password@ into Basic auth; the shortcut must not drop them."""
    with_credentials = recorder.replace("http://", "http://user:pw@")
    bodies, sends = _open_all(with_credentials, ["/private"])
    assert bodies == ["/private|-"] and sends == 1
    assert dict(_Recorder.seen[-1][1])["Authorization"] == "Basic dXNlcjpwdw=="
