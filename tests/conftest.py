"""Shared fixtures: a real loopback DataServer, a plain static server, a fresh manager."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import ipybgfetch
from ipybgfetch.testing import DataServer


@pytest.fixture(scope="session")
def server() -> Iterator[DataServer]:
    with DataServer() as srv:
        yield srv


@pytest.fixture
def mgr(tmp_path: Path) -> Iterator[ipybgfetch.BackgroundFetchManager]:
    m = ipybgfetch.BackgroundFetchManager(home=tmp_path / "home")
    yield m
    m.close()


class StaticServer:
    """The standard library's http.server serving a folder: a third-party, plain server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = lambda *a, **kw: _QuietHandler(*a, directory=str(root), **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "static"
    root.mkdir()
    srv = StaticServer(root)
    yield srv
    srv.close()
