"""Downloads over HTTPS through ipybgfetch's own transport: a real TLS server on loopback
with a throwaway CA (trustme), certificate checks on by default, keep-alive over TLS."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipybgfetch import BackgroundFetchManager, RetryPolicy
from ipybgfetch._http.http11 import Http11Transport

trustme = pytest.importorskip("trustme")

FAST = RetryPolicy(retries=1, backoff=0.01, max_backoff=0.02, read_timeout=5)


def _body(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest() * 4096  # 128 KiB, different per name


class _TLSServer:
    def __init__(self, ca: trustme.CA) -> None:
        self.accepts = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def do_GET(self) -> None:
                body = _body(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):  # type: ignore[no-untyped-def]
                sock, addr = super().get_request()
                server.accepts += 1
                return context.wrap_socket(sock, server_side=True), addr

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://localhost:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[_TLSServer]:
    srv = _TLSServer(ca)
    yield srv
    srv.close()


def _manager(home: Path, **client_options: object) -> BackgroundFetchManager:
    return BackgroundFetchManager(
        home=home,
        retries=FAST,
        max_connections_per_host=1,
        client_options=client_options,
        auto_resume=False,
    )


def test_https_download_verified_against_the_ca_and_kept_alive(tmp_path, ca, tls_server):
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    names = ["a.bin", "b.bin", "c.bin"]
    with _manager(tmp_path / "h", verify=trusted) as mgr:
        reg = mgr.fetch("tls", [tls_server.url(n) for n in names]).wait(30)
        assert isinstance(mgr._http._transport, Http11Transport)  # type: ignore[union-attr]
    assert reg.result == "success", [r.error for r in reg.match_all()]
    for name, record in zip(names, reg.match_all(), strict=True):
        assert record.response.read() == _body("/" + name)
        assert record["sha256"] == hashlib.sha256(_body("/" + name)).hexdigest()
    assert tls_server.accepts == 1  # one TLS connection carried all three requests


def test_an_untrusted_certificate_fails_the_record_and_says_why(tmp_path, tls_server):
    with _manager(tmp_path / "h") as mgr:  # default trust store: the test CA is unknown
        reg = mgr.fetch("untrusted", tls_server.url("x.bin")).wait(30)
    record = reg.match_all()[0]
    assert reg.result == "failure" and record.state == "failure"
    assert "certificate" in record.error.lower(), record.error
    assert record.attempts == 1 and "not retried" in record.error  # retrying cannot help
    assert not any(p.suffix in (".bin", ".part") for p in (tmp_path / "h").rglob("*"))


def test_verify_false_is_honoured(tmp_path, tls_server):
    with _manager(tmp_path / "h", verify=False) as mgr:
        reg = mgr.fetch("insecure", tls_server.url("y.bin")).wait(30)
    assert reg.result == "success"
    assert reg.match_all()[0].response.read() == _body("/y.bin")
