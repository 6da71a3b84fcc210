"""Loopback servers for the benchmark: a fast static file server, and our DataServer.

The static server is nginx (Debian's ``nginx-light``: one worker, ``sendfile on``, no access
log, keep-alive without a request cap) when it is installed; otherwise a small built-in
server that answers with ``socket.sendfile`` (zero-copy, one thread per connection) and
says so. Both serve a folder in ``/dev/shm`` and run in their own process, so a server never
shares a GIL with the client being measured.

nginx also serves the same files under ``/capped/`` at :data:`CAPPED_RATE` per connection
(``limit_rate``, case 5); without nginx, case 5 uses ``DataServer --rate-limit`` instead.

``DataServer`` (``python -m ipybgfetch.testing``) runs in its own process too, for the "1d"
row, and with ``--latency`` for case 6. It sends 1 MiB slices of one cached block, so once
warm it is no slower than nginx for a single stream (curl: ~0.8 s/GiB against nginx's
~1.1 s/GiB here), but it costs a thread per connection and Python per request, so the
many-file cases use nginx.

Run the built-in static server by hand: ``python benchmarks/_servers.py ROOT [PORT]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/tmp;
    proxy_temp_path {work}/tmp;
    fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp;
    scgi_temp_path {work}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        # case 5: the same files, each connection capped (a CDN or hub that caps them)
        location /capped/ {{
            alias {root}/;
            limit_rate {limit_rate};
        }}
    }}
}}
"""


CAPPED_RATE = 16 * 1024 * 1024  # bytes/s per connection under /capped/ (case 5)
CAPPED_RATE_NGINX = "16m"  # the same, as nginx writes it (m = MiB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout} s")


class StaticServer:
    """nginx if installed, else the built-in sendfile server; serves ``root``."""

    def __init__(self, root: Path, work: Path, *, force_builtin: bool = False) -> None:
        self.root = root
        self.work = work
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
        )
        self.kind = "nginx" if nginx and not force_builtin else "builtin-sendfile"
        self._nginx = nginx

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        if self.kind == "nginx":
            out = subprocess.run([self._nginx or "nginx", "-v"], capture_output=True, text=True)
            return (out.stderr or out.stdout).strip().replace("nginx version: ", "") + (
                " (1 worker, sendfile)"
            )
        return "built-in Python sendfile server (nginx not installed: apt-get install nginx-light)"

    def start(self) -> StaticServer:
        self.work.mkdir(parents=True, exist_ok=True)
        if self.kind == "nginx":
            (self.work / "tmp").mkdir(exist_ok=True)
            conf = self.work / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(
                    work=self.work, port=self.port, root=self.root, limit_rate=CAPPED_RATE_NGINX
                )
            )
            cmd = [self._nginx or "nginx", "-c", str(conf), "-p", str(self.work)]
        else:
            cmd = [sys.executable, __file__, str(self.root), str(self.port)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM if self.kind != "nginx" else signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class DataServerProcess:
    """``python -m ipybgfetch.testing`` in a child process; ``args``: more command-line
    options (``--rate-limit``, ``--latency``)."""

    def __init__(self, *args: str) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.args = list(args)

    def start(self) -> DataServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ipybgfetch.testing", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            raise RuntimeError(f"DataServer did not start: {self.base_url!r}")
        # Drain the rest of its banner so the pipe never fills.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    def url(self, name: str, size: int) -> str:
        return f"{self.base_url}/gen/{size}/{name}"

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --------------------------------------------------------------------------------------
# The built-in fallback: GET/HEAD of files under ROOT with socket.sendfile, keep-alive.
# --------------------------------------------------------------------------------------


class _SendfileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = Path(".")

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(st.st_size))
            self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
            self.send_header("ETag", f'"{st.st_mtime_ns:x}-{st.st_size:x}"')
            self.send_header("Accept-Ranges", "none")
            self.end_headers()
            self.wfile.flush()
            if body:
                self.connection.sendfile(f)


def _serve_builtin(root: str, port: int) -> None:
    _SendfileHandler.root = Path(root).resolve()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 4096
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _SendfileHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    httpd.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(textwrap.dedent(__doc__ or ""), file=sys.stderr)
        sys.exit(2)
    _serve_builtin(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 8080)
