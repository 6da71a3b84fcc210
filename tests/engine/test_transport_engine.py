"""The HTTP/1.1 transport inside the engine: cancellation, uploads, keep-alive, slow disks,
proxies and the errors users read.

Each test drives a real ``BackgroundFetchManager`` against real loopback servers
(``DataServer``, or ``script_server_support.ScriptServer`` whose handlers write exactly
the bytes a scenario needs) and checks what a user sees: record states and
errors, files on disk, sockets left open, what the server received. The HTTP side is
never mocked.

A slow or stuck disk is played by :class:`WriterBlocker`: a job on ipybgfetch's writer
thread (one per process, shared by every file) that waits until the test releases it.
Every file's write job queued after it waits, exactly as behind a hanging ``write`` or
``fsync``. (It used to be a FIFO at a record's ``.part`` path, blocking the writer's
``open()``; a new ``.part`` is now written through the descriptor that claimed its name,
so nothing opens the path again.) A failing disk is an ``fsync`` that raises EIO.

Several tests began as proofs of bugs found in review (leaked sockets after a cancelled
upload, a lost early 413, 307 on uploads, a .part truncated by an orphaned write job,
environment proxies ignored, "refused" not said); they now guard the fixes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from script_server_support import Peer, ScriptServer, raw_servers, response

from ipybgfetch import BackgroundFetchManager, Request, RetryPolicy
from ipybgfetch.testing import DataServer

KiB = 1024
MiB = 1024 * KiB
FAST = RetryPolicy(retries=1, backoff=0.01, max_backoff=0.02, read_timeout=2, connect_timeout=2)
IO_TIMEOUT = 10.0

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc and uses FIFOs"
)


# ---------------------------------------------------------------------------------------
# Helpers: a scripted server, socket counting, a full listen backlog, a stuck writer
# ---------------------------------------------------------------------------------------


def target(head: bytes) -> str:
    return head.split(b" ")[1].decode()


@pytest.fixture
def script() -> Iterator[Callable[[Callable[[Peer], None]], ScriptServer]]:
    yield from raw_servers(IO_TIMEOUT)


@contextlib.contextmanager
def manager(home: Path, **options: Any) -> Iterator[BackgroundFetchManager]:
    options.setdefault("retries", FAST)
    mgr = BackgroundFetchManager(home=home, auto_resume=False, **options)
    try:
        yield mgr
    finally:
        mgr.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)
    return value


def client_sockets_to(port: int) -> int:
    """Open sockets of this process whose peer is ``port`` (the client ends)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/self/fd/{fd}"))
            if m:
                inodes.add(m.group(1))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listen backlog is full: a connect() to it hangs (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this system accepts connections beyond a full backlog")
        except TimeoutError:
            pass
        except OSError:
            pytest.skip("this system refuses connections beyond a full backlog")
        finally:
            probe.close()
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


class WriterBlocker:
    """Blocks ipybgfetch's writer thread, like a stuck disk, until :meth:`release`.

    :meth:`block` puts a job on the writer's queue that waits: the process has one writer
    thread, so every file's write jobs queue behind it, as behind a write that hangs.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self._gate = threading.Event()
        self._job: Any = None

    def _stuck(self) -> None:
        self.started.set()
        self._gate.wait(IO_TIMEOUT)

    def block(self) -> None:
        from ipybgfetch._engine import sink as _sink

        self._job = _sink._writer.submit(self._stuck)
        wait_until(self.started.is_set, what="the writer to be stuck")

    def release(self) -> None:
        """Let the writer go on."""
        self._gate.set()
        if self._job is not None:
            self._job.wait()


@contextlib.contextmanager
def writer_blocker() -> Iterator[WriterBlocker]:
    blocker = WriterBlocker()
    try:
        yield blocker
    finally:
        blocker.release()  # never leave the process-wide writer thread stuck


# ---------------------------------------------------------------------------------------
# Cancellation: while connecting, waiting for the head, streaming the body, uploading
# ---------------------------------------------------------------------------------------


def test_pause_abort_and_close_while_connecting_return_at_once(tmp_path):
    policy = RetryPolicy(retries=0, connect_timeout=30)
    with full_backlog() as port, manager(tmp_path / "h", retries=policy) as mgr:
        url = f"http://127.0.0.1:{port}/never.bin"
        reg = mgr.fetch("connecting", url)
        record = reg.match_all()[0]
        wait_until(lambda: record.state == "active", what="the request to start")
        time.sleep(0.5)  # the client is built; the connect() hangs
        t0 = time.monotonic()
        assert reg.pause() is True
        assert time.monotonic() - t0 < 1.0
        assert (reg.state, record.state) == ("paused", "paused")
        assert reg.abort() is True
        assert record.state == "aborted" and files_in(reg.dest) == []
        other = mgr.fetch("connecting-2", url)
        wait_until(lambda: other.match_all()[0].state == "active")
        time.sleep(0.2)
        t0 = time.monotonic()
        mgr.close()
        assert time.monotonic() - t0 < 2.0
        assert other.state == "paused"  # resumable by the next manager


def test_connect_timeout_fires_through_the_transport_and_is_retried(tmp_path):
    policy = RetryPolicy(retries=1, backoff=0.01, max_backoff=0.02, connect_timeout=0.3)
    with full_backlog() as port, manager(tmp_path / "h", retries=policy) as mgr:
        t0 = time.monotonic()
        reg = mgr.fetch("ct", f"http://127.0.0.1:{port}/x.bin").wait(20)
        elapsed = time.monotonic() - t0
    record = reg.match_all()[0]
    assert (reg.result, record.state, record.attempts) == ("failure", "failure", 2)
    assert "ConnectTimeout" in record.error and "0.3 s" in record.error, record.error
    assert 0.6 <= elapsed < 3.0, elapsed


def test_pause_while_waiting_for_the_head_drops_that_connection_and_resume_works(tmp_path, script):
    asked = threading.Event()
    dropped = threading.Event()

    def handler(peer: Peer) -> None:
        if peer.index == 0:
            peer.read_request()
            asked.set()
            peer.read_to_eof()  # never answers; returns when the client closes
            dropped.set()
            return
        while peer.read_request() is not None:
            peer.send(response(b"answer" * 1000))

    srv = script(handler)
    with manager(tmp_path / "h") as mgr:
        reg = mgr.fetch("head", srv.url + "/slow.bin")
        assert asked.wait(5)
        t0 = time.monotonic()
        assert reg.pause() is True
        assert time.monotonic() - t0 < 1.0
        assert dropped.wait(2), "the paused request's connection was kept open"
        assert files_in(reg.dest) == []
        assert reg.resume() is True
        reg.wait(10)
    assert reg.result == "success"
    assert reg.match_all()[0].response.read() == b"answer" * 1000
    assert srv.accepts == 2


@pytest.mark.parametrize("how", ["abort", "close"])
def test_stopping_mid_body_never_leaves_a_final_file(tmp_path, server, how):
    size = 4 * MiB
    url = server.url("midbody.bin", size, throttle=2 * MiB, tag=f"{how}-{time.monotonic_ns()}")
    with manager(tmp_path / "h") as mgr:
        reg = mgr.fetch("midbody", url)
        wait_until(lambda: reg.downloaded > 300 * KiB, what="some of the body")
        t0 = time.monotonic()
        reg.abort() if how == "abort" else mgr.close()
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.2)
        sent = server.bytes_sent_for(url)
        time.sleep(0.4)  # ~0.8 MiB more at the throttled rate if the socket were still open
    assert server.bytes_sent_for(url) == sent, "the server is still sending"
    left = files_in(reg.dest)
    if how == "abort":
        assert reg.state == "aborted" and left == []
    else:
        assert reg.state == "paused" and left == ["midbody.bin.part"]
        assert (reg.dest / left[0]).stat().st_size >= 300 * KiB


@linux_only
def test_pause_mid_upload_closes_the_connection(tmp_path, script):
    release = threading.Event()

    def handler(peer: Peer) -> None:
        peer.read_head()
        release.wait(IO_TIMEOUT)  # a server that stopped reading
        peer.read_to_eof()

    srv = script(handler)
    try:
        with manager(tmp_path / "h") as mgr:
            reg = mgr.fetch("up", Request(srv.url + "/up", method="POST", body=b"u" * 32 * MiB))
            wait_until(lambda: reg.uploaded > 1 * MiB, what="the upload to start")
            time.sleep(0.3)  # socket buffers full: the transport waits to write
            assert client_sockets_to(srv.port) == 1
            t0 = time.monotonic()
            assert reg.pause() is True
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.3)
            assert client_sockets_to(srv.port) == 0, "the paused upload's socket is still open"
    finally:
        release.set()


# ---------------------------------------------------------------------------------------
# Uploads: retries, early answers, redirects
# ---------------------------------------------------------------------------------------


@linux_only
def test_stalled_upload_write_timeouts_do_not_leak_connections(tmp_path, script):
    release = threading.Event()

    def handler(peer: Peer) -> None:
        peer.read_head()
        release.wait(IO_TIMEOUT)
        peer.read_to_eof()

    srv = script(handler)
    policy = RetryPolicy(retries=2, backoff=0.01, read_timeout=0.3, retry_non_idempotent=True)
    try:
        with manager(tmp_path / "h", retries=policy) as mgr:
            body = b"s" * 32 * MiB
            reg = mgr.fetch("stalled-up", Request(srv.url + "/up", method="POST", body=body))
            reg.wait(20)
            record = reg.match_all()[0]
            assert (record.state, record.attempts) == ("failure", 3)
            assert "WriteTimeout" in record.error, record.error
            time.sleep(0.2)
            assert client_sockets_to(srv.port) == 0, "sockets of failed attempts are open"
    finally:
        release.set()


def test_early_413_during_an_upload_is_what_the_user_sees(tmp_path, script):
    def handler(peer: Peer) -> None:
        peer.read_head()
        peer.send(response(b"too large", "413 Content Too Large", ("Connection: close",)))
        time.sleep(3)  # neither reads the body nor closes at once

    srv = script(handler)
    policy = RetryPolicy(retries=0, read_timeout=1)
    with manager(tmp_path / "h", retries=policy) as mgr:
        t0 = time.monotonic()
        request = Request(srv.url + "/up", method="POST", body=b"b" * 32 * MiB)
        reg = mgr.fetch("early", request).wait(20)
        elapsed = time.monotonic() - t0
    record = reg.match_all()[0]
    assert (reg.failure_reason, record["status"]) == ("bad-status", 413), record.error
    assert record.error == "the server answered 413"
    assert record.response.read() == b"too large"
    assert elapsed < 1.0


def test_early_413_then_close_during_an_upload_is_reported(tmp_path, script):
    def handler(peer: Peer) -> None:
        peer.read_head()
        peer.send(response(b"too large", "413 Content Too Large", ("Connection: close",)))
        peer.sock.shutdown(socket.SHUT_WR)
        peer.read_to_eof()  # drops the rest of the upload

    srv = script(handler)
    with manager(tmp_path / "h") as mgr:
        reqs = [
            Request(srv.url + "/bytes", method="POST", body=b"b" * 8 * MiB),
            Request(srv.url + "/file", method="PUT", body=_file(tmp_path / "up.bin", 8 * MiB)),
        ]
        reg = mgr.fetch("early-close", reqs).wait(20)
    for record in reg.match_all():
        assert (record.state, record["status"]) == ("failure", 413), record.error
        assert record.response.read() == b"too large"


def _file(path: Path, size: int) -> Path:
    path.write_bytes(bytes(range(256)) * (size // 256))
    return path


def test_file_upload_retried_after_503_is_sent_whole_again(tmp_path, server):
    body = _file(tmp_path / "upload.bin", 600 * KiB)
    url = server.echo_url(status=503, status_times=1, tag=str(time.monotonic_ns()))
    policy = RetryPolicy(retries=2, backoff=0.01, retry_non_idempotent=True)
    with manager(tmp_path / "h", retries=policy) as mgr:
        reg = mgr.fetch("up503", Request(url, method="POST", body=body)).wait(20)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record.attempts == 2
    assert record.response.read() == body.read_bytes()
    assert [r.bytes_received for r in server.requests_for(url)] == [600 * KiB] * 2
    assert reg.uploaded == reg.upload_total == 600 * KiB


def test_upload_redirected_by_307_is_sent_again(tmp_path, script):
    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            head, body = req.head, req.body
            if target(head).startswith("/first"):
                peer.send(response(status="307 Temporary Redirect", headers=("Location: /next",)))
            else:
                peer.send(response(hashlib.sha256(body).hexdigest().encode()))

    srv = script(handler)
    data = b"payload" * 10_000
    upload = _file(tmp_path / "up.bin", 300 * KiB)
    with manager(tmp_path / "h") as mgr:
        reqs = [
            Request(srv.url + "/first-a", method="POST", body=data),
            Request(srv.url + "/first-b", method="PUT", body=upload),
        ]
        reg = mgr.fetch("redirected-upload", reqs).wait(20)
    errors = [r.error for r in reg.match_all()]
    assert reg.result == "success", errors
    a, b = reg.match_all()
    assert a.response.read() == hashlib.sha256(data).hexdigest().encode()
    assert b.response.read() == hashlib.sha256(upload.read_bytes()).hexdigest().encode()


# ---------------------------------------------------------------------------------------
# Servers: HTTP/1.0, Connection: close mid-registration, reuse after failed records
# ---------------------------------------------------------------------------------------


class _Http10Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one response per connection, then close

    def do_GET(self) -> None:
        body = hashlib.sha256(self.path.encode()).digest() * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_http10_server_many_records_over_one_connection_at_a_time(tmp_path):
    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        accepts = 0

        def get_request(self):  # type: ignore[no-untyped-def]
            Server.accepts += 1
            return super().get_request()

    httpd = Server(("127.0.0.1", 0), _Http10Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with manager(tmp_path / "h", max_connections_per_host=1) as mgr:
            names = [f"/f{i}.bin" for i in range(25)]
            reg = mgr.fetch("http10", [base + n for n in names]).wait(20)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert reg.result == "success", [r.error for r in reg.match_all()]
    for name, record in zip(names, reg.match_all(), strict=True):
        assert record.response.read() == hashlib.sha256(name.encode()).digest() * 100
        assert record.attempts == 1
    assert Server.accepts == 25


def test_keep_alive_survives_close_404_and_short_records(tmp_path, script):
    """One connection at a time: a clean answer (200, 404) keeps the connection; a
    ``Connection: close`` answer or a short body ends it; nothing else is lost."""
    shorted: set[str] = set()

    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            path = target(req.head)
            body = path.encode() * 50
            if "close" in path:
                peer.send(response(body, headers=("Connection: close",)))
                return
            if "404" in path:
                peer.send(response(b"no such file", "404 Not Found"))
            elif "short" in path and path not in shorted:
                shorted.add(path)
                peer.send(response(body)[:-10])
                return
            else:
                peer.send(response(body))

    srv = script(handler)
    paths = ["/a", "/b", "/close-1", "/c", "/404-1", "/d", "/short-1", "/e", "/close-2", "/f"]
    with manager(tmp_path / "h", max_connections_per_host=1) as mgr:
        reg = mgr.fetch("keepalive", [srv.url + p for p in paths]).wait(20)
    for path, record in zip(paths, reg.match_all(), strict=True):
        if "404" in path:
            assert (record.state, record["status"]) == ("failure", 404)
        else:
            assert record.state == "success", (path, record.error)
            assert record.response.read() == path.encode() * 50
    assert srv.accepts == 4  # the first, then one after each close and the short body


# ---------------------------------------------------------------------------------------
# A slow disk: flow control through the engine, and a pause during the last flush
# ---------------------------------------------------------------------------------------


def _socket_buffers_max() -> int:
    """The most the kernel may buffer for one loopback connection (both ends)."""
    total = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return total or 16 * MiB


@linux_only
def test_a_stuck_writer_stops_the_socket_reads_and_memory_stays_bounded(tmp_path, server, script):
    # held at most: 3 writer batches (6 MiB) + READ_HIGH (8 MiB) + one read + the kernel's
    bound = 15 * MiB + _socket_buffers_max()
    size = max(96 * MiB, bound + 32 * MiB)
    url = server.url("slowdisk.bin", size, tag=str(time.monotonic_ns()))
    with manager(tmp_path / "h") as mgr, writer_blocker() as blocker:
        blocker.block()
        # one stream: this bound is one connection's (segments multiply it by connections)
        reg = mgr.fetch("slowdisk", url, segments=1)
        wait_until(lambda: reg.downloaded > 4 * MiB, what="the download to start")
        time.sleep(0.5)
        sent, received = server.bytes_sent_for(url), reg.downloaded
        time.sleep(0.3)
        assert sent < bound, (sent, bound)
        assert server.bytes_sent_for(url) == sent and reg.downloaded == received
        blocker.release()
        reg.wait(30)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record["sha256"] == DataServer.sha256("slowdisk.bin", size)
    assert record.attempts == 1


@linux_only
def test_a_connection_moves_on_while_the_disk_writes_a_small_bodys_tail(tmp_path, server, script):
    # One connection; the writer thread is stuck. Small bodies all arrive anyway: each
    # record hands its tail to the writer and frees the connection for the next request.
    sizes = [200 * KiB, 150 * KiB, 100 * KiB]  # each over the sink's INLINE_LIMIT
    tag = str(time.monotonic_ns())
    urls = [server.url(f"tail{i}.bin", n, tag=tag) for i, n in enumerate(sizes)]
    with (
        manager(tmp_path / "h", max_connections_per_host=1) as mgr,
        writer_blocker() as blocker,
    ):
        blocker.block()
        reg = mgr.fetch("tails", urls)
        wait_until(lambda: reg.downloaded == sum(sizes), what="every body received")
        assert [len(server.requests_for(u)) for u in urls] == [1, 1, 1]
        assert reg.state == "active" and not any(reg.dest.glob("tail*.bin")), (
            "a final file appeared before its bytes were written"
        )
        blocker.release()
        reg.wait(10)
    assert reg.result == "success", [r.error for r in reg.match_all()]
    for i, (record, n) in enumerate(zip(reg.match_all(), sizes, strict=True)):
        assert record["sha256"] == DataServer.sha256(f"tail{i}.bin", n)
        assert record.response.path.stat().st_size == n


@linux_only
def test_a_body_whose_tail_is_large_keeps_its_connection_until_written(tmp_path, server, script):
    # The memory bound: a body that leaves more than EARLY_RELEASE_LIMIT for a stuck disk
    # holds the only connection, so the next request is not sent (and buffered) meanwhile.
    big, small = 5 * MiB, 10 * KiB
    tag = str(time.monotonic_ns())
    urls = [server.url("bigtail.bin", big, tag=tag), server.url("next.bin", small, tag=tag)]
    with (
        manager(tmp_path / "h", max_connections_per_host=1) as mgr,
        writer_blocker() as blocker,
    ):
        blocker.block()
        reg = mgr.fetch("bigtail", urls)
        wait_until(lambda: reg.downloaded == big, what="the big body received")
        time.sleep(0.3)
        assert server.requests_for(urls[1]) == [], "the next request went out"
        blocker.release()
        reg.wait(10)
    assert reg.result == "success", [r.error for r in reg.match_all()]
    assert [r["sha256"] for r in reg.match_all()] == [
        DataServer.sha256("bigtail.bin", big),
        DataServer.sha256("next.bin", small),
    ]


@pytest.mark.parametrize("slow_disk", [False, True], ids=["fsync-inline", "fsync-pool"])
def test_files_are_fsynced_where_the_folder_says_and_errors_still_fail_the_record(
    tmp_path, server, script, slow_disk, monkeypatch
):
    from ipybgfetch._engine import sink as _sink

    where: list[str] = []  # the thread of every fsync (the real one still runs)
    real_fsync = _sink._timed_fsync
    planted = 0.01 if slow_disk else 0.0  # this folder's fsync time, kept as planted

    failing: set[str] = set()  # folders whose fsync fails with EIO

    def spy(fd: int, folder: str) -> None:
        where.append(threading.current_thread().name)
        if folder in failing:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd, folder)
        _sink._fsync_time[folder] = planted

    monkeypatch.setattr(_sink, "_timed_fsync", spy)
    dest = tmp_path / "d"
    dest.mkdir()
    # A folder whose fsyncs are slow sends them to the pool; a quick one keeps them inline.
    _sink._fsync_time[str(dest)] = planted
    sizes = [1, 50 * KiB, 300 * KiB, 3 * MiB]  # inline body, writer batches, several jobs
    tag = str(time.monotonic_ns())
    urls = [server.url(f"f{i}.bin", n, tag=tag) for i, n in enumerate(sizes)]
    with manager(tmp_path / "h") as mgr:
        reg = mgr.fetch("fsyncs", urls, dest=dest).wait(20)
        assert reg.result == "success", [r.error for r in reg.match_all()]
        for i, (record, n) in enumerate(zip(reg.match_all(), sizes, strict=True)):
            assert record["sha256"] == DataServer.sha256(f"f{i}.bin", n)
        assert len(where) == len(sizes)
        in_pool = [name.startswith("ipybgfetch-fsync") for name in where]
        assert in_pool == [slow_disk] * len(sizes), where
        if not slow_disk:  # a quick fsync runs on the loop, not as one more writer call
            assert where == ["ipybgfetch-engine"] * len(sizes), where
        # An fsync that fails (EIO from a dying disk) must fail the record, from wherever
        # the fsync ran.
        broken = tmp_path / "b"
        broken.mkdir()
        _sink._fsync_time[str(broken)] = planted
        failing.add(str(broken))
        bad = mgr.fetch("fsync-error", server.url("e.bin", 300 * KiB, tag=tag), dest=broken)
        bad.wait(20)
        record = bad.match_all()[0]
        assert bad.failure_reason == "fetch-error"
        assert "cannot write the file" in record.error and "I/O error" in record.error
        assert not (broken / "e.bin").exists()


@linux_only
def test_pause_while_the_last_batch_waits_for_the_disk_keeps_the_part_intact(tmp_path, script):
    body = bytes(i % 251 for i in range(150_001))
    etag = '"v1"'
    send_rest = threading.Event()

    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            rng = req.header("range")
            if rng is None:
                peer.send(response(body, headers=(f"ETag: {etag}",))[: -len(body) + 100_000])
                time.sleep(0.3)
                peer.send(body[100_000:100_001])  # past MAX_DELAY: one write job, run at once
                wait_until(lambda: reg.downloaded == 100_001, what="the first job submitted")
                blocker.block()  # the writer gets stuck after it
                send_rest.wait(IO_TIMEOUT)
                peer.send(body[100_001:])  # within MAX_DELAY: only the last job, queued
            else:
                start = int(rng.removeprefix("bytes=").removesuffix("-"))
                rest = body[start:]
                content_range = f"Content-Range: bytes {start}-{len(body) - 1}/{len(body)}"
                peer.send(response(rest, "206 Partial Content", (f"ETag: {etag}", content_range)))

    srv = script(handler)
    with manager(tmp_path / "h") as mgr, writer_blocker() as blocker:
        reg = mgr.fetch("lastflush", srv.url + "/data.bin")
        wait_until(
            lambda: reg.downloaded == 100_001 and blocker.started.is_set(),
            what="the first job written and the writer stuck",
        )
        send_rest.set()
        wait_until(lambda: reg.downloaded == len(body), what="every byte received")
        assert reg.state == "active"  # waiting for the last write job
        timer = threading.Timer(0.3, blocker.release)  # the disk catches up later
        timer.start()
        try:
            assert reg.pause() is True
        finally:
            timer.join()
        part = reg.dest / "data.bin.part"
        assert reg.resume() is True
        reg.wait(10)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record.response.read() == body, "the resumed file is not the server's bytes"
    assert not part.exists()


# ---------------------------------------------------------------------------------------
# Proxies from the environment
# ---------------------------------------------------------------------------------------


def test_a_proxy_from_the_environment_is_used(tmp_path, script, monkeypatch):
    seen: list[str] = []

    def proxy(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            seen.append(req.request_line.decode())
            peer.send(response(b"via the proxy"))

    srv = script(proxy)
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    with manager(tmp_path / "h", retries=0) as mgr:
        mgr.registrations()  # the engine runs (as after %load_ext) before the proxy is set
        monkeypatch.setenv("HTTP_PROXY", srv.url)
        reg = mgr.fetch("proxied", "http://files.example.invalid/data.bin").wait(20)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record.response.read() == b"via the proxy"
    assert seen == ["GET http://files.example.invalid/data.bin HTTP/1.1"]


# ---------------------------------------------------------------------------------------
# What record.error says
# ---------------------------------------------------------------------------------------


def test_a_refused_connection_says_refused(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
        port = holder.getsockname()[1]
        with manager(tmp_path / "h", retries=0) as mgr:
            reg = mgr.fetch("refused", f"http://127.0.0.1:{port}/x.bin").wait(20)
    error = reg.match_all()[0].error
    assert f"127.0.0.1:{port}" in error
    assert "refused" in error.lower(), error


def test_redirect_loops_odd_redirects_and_corrupt_gzip_say_what_happened(
    tmp_path, server, script, capfd
):
    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            path = target(req.head)
            if path.startswith("/js"):
                peer.send(response(b"", "302 Found", ("Location: javascript:alert(1)",)))
            else:  # "gzip" whose bytes are not gzip
                peer.send(response(b"not gzip at all" * 100, headers=("Content-Encoding: gzip",)))

    srv = script(handler)
    urls = [
        server.url("loop.bin", 10, redirect=25, tag=str(time.monotonic_ns())),
        srv.url + "/js",
        srv.url + "/bad.gz",
    ]
    with manager(tmp_path / "h") as mgr:
        reg = mgr.fetch("odd", urls).wait(20)
    loop, js, gz = reg.match_all()
    assert reg.failure_reason == "fetch-error"
    assert "redirected too many times" in loop.error and loop.attempts == 1, loop.error
    assert "redirected to a URL that cannot be fetched" in js.error, js.error
    assert "could not be decoded" in gz.error and "identity" in gz.error, gz.error
    assert not any("internal error" in r.error for r in (loop, js, gz))
    assert "raised an exception" not in capfd.readouterr().err  # no traceback dumped
    assert files_in(reg.dest) == []


def test_dns_tls_and_truncation_errors_say_what_happened(tmp_path, server):
    urls = [
        "http://nonexistent.invalid/x.bin",
        f"https://127.0.0.1:{server.port}/gen/10/plain.bin",  # TLS to a plain HTTP port
        server.url("cut.bin", 100_000, short=1000, tag=str(time.monotonic_ns())),
        server.url("stall.bin", 1000, delay=5, tag=str(time.monotonic_ns())),
    ]
    policy = RetryPolicy(retries=0, read_timeout=0.3, connect_timeout=5)
    with manager(tmp_path / "h", retries=policy) as mgr:
        reg = mgr.fetch("errors", urls).wait(20)
    dns, tls, cut, stall = (r.error for r in reg.match_all())
    assert "nonexistent.invalid" in dns and "name" in dns.lower(), dns
    assert f"127.0.0.1:{server.port}" in tls and "ssl" in tls.lower(), tls
    assert cut == "the body was truncated: the connection closed before it was complete"
    assert "timed out" in stall and "0.3 s" in stall, stall
    assert files_in(reg.dest) == []


def test_writer_completions_that_pile_up_wake_the_loop_once():
    """Jobs that finish while the event loop is busy are all woken by one
    call_soon_threadsafe (a self-pipe write is a GIL hand-off); each awaiting coroutine
    still resumes, with its own result or error."""
    from ipybgfetch._engine import sink as _sink

    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        scheduled = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal scheduled
            scheduled += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        gate = threading.Event()

        def job(i: int) -> None:
            gate.wait(10)
            if i == 3:
                raise OSError(errno.EIO, "job 3 failed")

        jobs = [_sink._writer.submit(job, i) for i in range(8)]

        async def wait_for(i: int) -> str:
            try:
                await jobs[i]
            except OSError as exc:
                return str(exc)
            return "ok"

        waits = [asyncio.ensure_future(wait_for(i)) for i in range(8)]
        await asyncio.sleep(0)  # every awaiter is waiting on its job
        gate.set()
        time.sleep(0.3)  # the loop is busy while all eight jobs finish
        results = await asyncio.gather(*waits)
        return results, scheduled

    results, scheduled = asyncio.run(main())
    assert results == ["ok", "ok", "ok", "[Errno 5] job 3 failed", "ok", "ok", "ok", "ok"]
    assert scheduled == 1
