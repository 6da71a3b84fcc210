"""Hostile directories and servers (issue #15): nothing written outside dest, no secret on
disk, no spliced files, bounded work, strict framing.

Every test drives a real ``BackgroundFetchManager`` over both transports (ipybgfetch's own
HTTP/1.1 transport and httpx's) against a raw-socket server whose bytes the test writes
(``script_server_support``). Each one failed before its fix (checked by running it on
the code without the fix), except the httpx-transport cases of ``test_parser_strictness``
and ``test_interim_heads_keep_a_slow_answer_alive``: h11/httpcore already behaved so; they
hold the two transports to the same rule.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from script_server_support import Peer, RawRequest, ScriptServer, raw_servers, response

from ipybgfetch import BackgroundFetchManager, FetchError, Request, RetryPolicy
from ipybgfetch._exceptions import NeedsCredentialsError

KiB = 1024
MiB = 1024 * KiB
FAST = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02, read_timeout=3, connect_timeout=3)
LM = "Mon, 01 Jan 2024 00:00:00 GMT"
DATE = "Tue, 02 Jan 2024 00:00:00 GMT"  # a day after LM: LM is a strong validator


@pytest.fixture(params=["native", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def script() -> Iterator[Callable[[Callable[[Peer], None]], ScriptServer]]:
    yield from raw_servers(10.0)


@contextlib.contextmanager
def manager(home: Path, transport: str, **options: Any) -> Iterator[BackgroundFetchManager]:
    options.setdefault("retries", FAST)
    options.setdefault("auto_resume", False)
    if transport == "httpx":
        options["client_options"] = {"transport": httpx.AsyncHTTPTransport()}
    mgr = BackgroundFetchManager(home=home, **options)
    try:
        yield mgr
    finally:
        mgr.close()


def serve(answer: Callable[[RawRequest, Peer], bool | None]) -> Callable[[Peer], None]:
    """A handler calling ``answer(request, peer)`` for each request of a connection; the
    connection closes when it returns False."""

    def handler(peer: Peer) -> None:
        while (req := peer.read_request()) is not None:
            if answer(req, peer) is False:
                return

    return handler


def path_of(req: RawRequest) -> str:
    return req.request_line.split(b" ")[1].decode()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.01)
    return value


def body_of(size: int, version: int = 1) -> bytes:
    pattern = bytes((i * 7 + version * 31) % 251 for i in range(251))
    return (pattern * (size // 251 + 1))[:size]


def replace_with_symlink(path: Path, target: Path) -> None:
    """What an attacker who can create entries in dest does: the name now points out."""
    tmp = path.with_name(path.name + ".evil")
    os.symlink(target, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# 1. the .part file is never opened, written or renamed through a symlink
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["resume", "restart-after-416", "restart-after-200"])
def test_part_is_never_written_through_a_symlink(script, tmp_path, transport, path):
    size = 400 * KiB
    data = body_of(size)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious data outside dest")
    dest = tmp_path / "dest"
    part = dest / "data.bin.part"
    lock = threading.Lock()
    seen: list[str | None] = []

    def answer(req: RawRequest, peer: Peer) -> bool:
        with lock:
            seen.append(req.header("range"))
            n = len(seen)
        head = ('ETag: "v1"', "Content-Type: application/octet-stream")
        whole = response(data, headers=head)
        if n == 1:  # half the body, then the connection drops
            peer.send(whole[: -(size // 2)])
            return False
        if n == 2 and path == "resume":  # swapped in as the resume asks for the rest
            replace_with_symlink(part, outside)
            start = size // 2
            content_range = f"Content-Range: bytes {start}-{size - 1}/{size}"
            peer.send(response(data[start:], "206 Partial Content", (*head, content_range)))
        elif n == 2 and path == "restart-after-416":
            peer.send(response(b"", "416 Range Not Satisfiable", (f"Content-Range: */{size}",)))
        elif n == 3 and path == "restart-after-416":  # swapped while it waited to retry
            replace_with_symlink(part, outside)
            peer.send(whole)
        elif n == 2 and path == "restart-after-200":  # swapped once the restart began
            split = len(whole) - size
            peer.send(whole[:split])  # the head: a 200 to the Range request
            deadline = time.monotonic() + 1
            while os.path.lexists(part) and time.monotonic() < deadline:
                time.sleep(0.01)
            replace_with_symlink(part, outside)
            peer.send(whole[split:])
        else:
            peer.send(whole)
        return True

    srv = script(serve(answer))
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("sym", srv.url + "/data.bin", dest=dest).wait(30)
    record = reg.match_all()[0]
    assert outside.read_bytes() == b"precious data outside dest"  # never written
    assert reg.result == "success", record.error
    final = dest / "data.bin"
    assert not final.is_symlink() and final.read_bytes() == data
    assert not part.exists() and not part.is_symlink()


def test_part_swapped_before_its_rename_is_never_renamed_in(script, tmp_path, transport):
    """A symlink put in place of the finished .part (while the writer finishes it) never
    becomes the final file: the record starts again and ends with its own bytes."""
    from ipybgfetch._engine import sink as _sink

    size = 1 * MiB
    data = body_of(size)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    dest = tmp_path / "dest"
    srv = script(serve(lambda req, peer: peer.send(response(data, headers=('ETag: "v1"',)))))
    started, gate = threading.Event(), threading.Event()

    def stuck() -> None:  # the writer thread waits: the body's last batch is not written
        started.set()
        gate.wait(10)

    with manager(tmp_path / "h", transport) as mgr:
        job = _sink._writer.submit(stuck)
        try:
            started.wait(5)
            reg = mgr.fetch("swap", srv.url + "/data.bin", dest=dest)
            wait_until(lambda: reg.downloaded == size)
            time.sleep(0.1)
            replace_with_symlink(dest / "data.bin.part", outside)
        finally:
            gate.set()
            job.wait()
        reg.wait(30)
    assert reg.result == "success", reg.match_all()[0].error
    final = dest / "data.bin"
    assert not final.is_symlink() and final.read_bytes() == data
    assert outside.read_bytes() == b"precious"
    assert len(srv.requests) == 2  # it started again


def test_a_segmented_part_swapped_while_paused_is_never_written_through(tmp_path, transport):
    """A segmented download (several connections) reopens its .part on resume: a symlink
    put there while it was paused is not followed; the file starts again, the outside
    file stays as it was."""
    from ipybgfetch.testing import DataServer

    size = 16 * MiB
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    with DataServer() as srv:
        url = srv.url("seg.bin", size, throttle=4 * MiB)
        with manager(tmp_path / "h", transport, max_connections_per_host=4) as mgr:
            reg = mgr.fetch("seg", url, min_segment_size="1MiB", dest=tmp_path / "dest")
            wait_until(lambda: reg.downloaded > 2 * MiB, 20)
            assert reg.pause() is True
            assert reg.match_all()[0]._data.segment_map is not None  # it was split
            part = tmp_path / "dest" / "seg.bin.part"
            replace_with_symlink(part, outside)
            assert reg.resume() is True
            reg.wait(60)
        record = reg.match_all()[0]
        assert reg.result == "success", record.error
        assert record["sha256"] == DataServer.sha256("seg.bin", size)
    assert outside.read_bytes() == b"precious"
    final = tmp_path / "dest" / "seg.bin"
    assert not final.is_symlink()


# ---------------------------------------------------------------------------------------
# 2. no secret on disk
# ---------------------------------------------------------------------------------------

SECRETS = {
    "X-Api-Key": "xapikey-SECRET-111",
    "PRIVATE-TOKEN": "privtoken-SECRET-222",
    "X-Auth-Token": "xauth-SECRET-333",
    "Authorization": "Bearer bearer-SECRET-444",
}
QUERY_SECRET = "querytoken-SECRET-555"
SIGNATURE = "amzsig-SECRET-666"
CREDENTIAL = "AKIAEXAMPLE-SECRET-777"


def all_bytes_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_secrets_never_reach_the_disk(script, tmp_path, transport):
    size = 300 * KiB
    data = body_of(size)
    release = threading.Event()

    def answer(req: RawRequest, peer: Peer) -> bool:
        target = path_of(req)
        if target.startswith("/signed"):
            peer.send(response(b"signed body", headers=("Content-Type: text/plain",)))
        elif target.startswith("/redirect"):
            location = f"/signed?X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}"
            peer.send(response(b"", "302 Found", (f"Location: {location}",)))
        elif target.startswith("/slow"):  # half, then nothing until the test ends
            peer.send(response(data, headers=('ETag: "s"',))[: -(size // 2)])
            release.wait(10)
            return False
        else:
            peer.send(response(b"plain body", headers=("Content-Type: text/plain",)))
        return True

    srv = script(serve(answer))
    home = tmp_path / "h"
    try:
        with manager(home, transport) as mgr:
            reg = mgr.fetch(
                "secrets",
                [
                    Request(
                        srv.url + f"/a.txt?access_token={QUERY_SECRET}&name=ok",
                        headers={**SECRETS, "Accept-Language": "kept-in-db"},
                    ),
                    srv.url + "/redirect",
                ],
            ).wait(20)
            assert reg.result == "success", [r.error for r in reg.match_all()]
            sent = next(r for r in srv.requests if path_of(r).startswith("/a.txt"))
            for name, value in SECRETS.items():  # sent, in memory
                assert sent.header(name) == value
            slow = mgr.fetch(
                "unfinished",
                Request(srv.url + "/slow.bin", headers={"X-Api-Key": SECRETS["X-Api-Key"]}),
            )
            wait_until(lambda: slow.downloaded > 0)
            mgr.fetch("query", srv.url + f"/slow.bin?token={QUERY_SECRET}")
            wait_until(lambda: len([r for r in srv.requests if "slow" in path_of(r)]) == 2)
        on_disk = all_bytes_under(home)
        assert b"kept-in-db" in on_disk  # an allowlisted header is stored
        for secret in (*SECRETS.values(), QUERY_SECRET, SIGNATURE, CREDENTIAL):
            assert secret.encode() not in on_disk, secret
        assert b"signed body" in on_disk and b"plain body" in on_disk  # the bodies are there
        # a new process: the header kept in memory only is asked for again
        with manager(home, transport, auto_resume=True) as mgr2:
            restored = mgr2.get("unfinished")
            assert restored is not None and restored.state == "needs-credentials"
            by_query = mgr2.get("query")
            assert by_query is not None and by_query.state == "needs-credentials"
            with pytest.raises(NeedsCredentialsError, match="secret query parameters"):
                by_query.resume(headers={"X-Other": "1"})
            assert mgr2.get("secrets") is None  # settled: its records are still there
            done = next(r for r in mgr2.registrations() if r.id == "secrets")
            assert done.match_all()[1].response.read() == b"signed body"
    finally:
        release.set()


def test_a_restored_url_with_a_redacted_secret_is_never_sent(script, tmp_path, transport):
    """reg.retry() in a new process: the stored URL has REDACTED for its token; it is
    not sent (the server would see the placeholder), the record says why."""
    srv = script(serve(lambda req, peer: peer.send(response(b"gone", "404 Not Found"))))
    home = tmp_path / "h"
    url = srv.url + f"/data.csv?token={QUERY_SECRET}&v=2"
    with manager(home, transport) as mgr:
        assert mgr.fetch("q", url).wait(20).failure_reason == "bad-status"
    with manager(home, transport) as mgr2:
        reg = next(r for r in mgr2.registrations() if r.id == "q")
        assert reg.retry() == 1
        reg.wait(20)
        record = reg.match_all()[0]
        assert record.state == "failure" and "were never stored" in record.error
    assert len(srv.requests) == 1  # only the first process's request went out
    assert all(b"REDACTED" not in r.raw for r in srv.requests)


# ---------------------------------------------------------------------------------------
# 3. download_total counts bytes received; restarts from zero are capped
# ---------------------------------------------------------------------------------------


def changing_server(script, step: int, complete_after: int | None = None) -> ScriptServer:
    """Each answer is a new version (a new ETag) of a chunked body, dropped a little later
    than the last one (``step`` bytes more each time); from answer ``complete_after`` on,
    whole (so a client that never gives up ends, and a test can count)."""
    counter = {"n": 0}
    lock = threading.Lock()

    def answer(req: RawRequest, peer: Peer) -> bool:
        with lock:
            counter["n"] += 1
            n = counter["n"]
        body = body_of(8 * MiB if complete_after is None else 2 * MiB, n)
        head = f'HTTP/1.1 200 OK\r\nETag: "v{n}"\r\nTransfer-Encoding: chunked\r\n\r\n'
        if complete_after is not None and n >= complete_after:
            peer.send(head.encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
            return True
        cut = step * n
        peer.send(head.encode() + b"%x\r\n" % len(body) + body[:cut])
        return False

    return script(serve(answer))


def test_download_total_counts_bytes_received_across_restarts(script, tmp_path, transport):
    srv = changing_server(script, step=100 * KiB)
    retries = RetryPolicy(retries=5, backoff=0.01, max_backoff=0.02, read_timeout=3)
    with manager(tmp_path / "h", transport, retries=retries) as mgr:
        reg = mgr.fetch("cap", srv.url + "/f.bin", download_total=MiB).wait(60)
    record = reg.match_all()[0]
    assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded"), (
        record.error,
        record.attempts,
    )
    # 100 + 200 + 300 + 400 KiB > 1 MiB: the 4th answer crosses it, never many more
    assert len(srv.requests) <= 5, len(srv.requests)


def test_restarts_from_zero_are_capped_per_record(script, tmp_path, transport):
    srv = changing_server(script, step=50 * KiB, complete_after=30)
    retries = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.02, read_timeout=3, max_restarts=4)
    with manager(tmp_path / "h", transport, retries=retries) as mgr:
        reg = mgr.fetch("restarts", srv.url + "/f.bin").wait(60)
    record = reg.match_all()[0]
    assert record.state == "failure" and "started again from byte 0" in record.error
    assert len(srv.requests) <= 4 + 2, len(srv.requests)  # never the 30 it would take


def test_retry_progress_is_measured_against_the_best_offset(script, tmp_path, transport):
    """Each answer drops at 100 KiB of a new version: the record never gets past its
    best offset, so it is given up after ``retries`` (it was retried forever: every
    restart looked like progress against the attempt before)."""
    counter = {"n": 0}

    def answer(req: RawRequest, peer: Peer) -> bool:
        counter["n"] += 1
        n = counter["n"]
        if n >= 40:
            peer.send(response(b"x", headers=(f'ETag: "v{n}"',)))
            return True
        cut = 100 * KiB if n % 2 else 50 * KiB  # 100, 50, 100, 50...: no new best
        body = body_of(MiB, n)
        peer.send(response(body, headers=(f'ETag: "v{n}"',))[: len(body) // 2 + cut])
        return False

    srv = script(serve(answer))
    retries = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.02, max_restarts=100)
    with manager(tmp_path / "h", transport, retries=retries) as mgr:
        reg = mgr.fetch("best", srv.url + "/f.bin").wait(60)
    assert reg.match_all()[0].state == "failure"
    assert len(srv.requests) <= 5, len(srv.requests)


# ---------------------------------------------------------------------------------------
# 4. If-Range: strong validators only; never two versions spliced
# ---------------------------------------------------------------------------------------


def versioned_server(script, first_head: tuple[str, ...], later_head: tuple[str, ...]):
    """v1 (``first_head``) is dropped half way; every later answer is v2 (``later_head``):
    a 206 for a Range, whatever If-Range says (a server that ignores it), else a 200."""
    size = 200 * KiB
    v1, v2 = body_of(size, 1), body_of(size, 2)
    counter = {"n": 0}

    def answer(req: RawRequest, peer: Peer) -> bool:
        counter["n"] += 1
        if counter["n"] == 1:
            peer.send(response(v1, headers=first_head)[: -(size // 2)])
            return False
        rng = req.header("range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            head = (*later_head, f"Content-Range: bytes {start}-{size - 1}/{size}")
            peer.send(response(v2[start:], "206 Partial Content", head))
        else:
            peer.send(response(v2, headers=later_head))
        return True

    return script(serve(answer)), v2


@pytest.mark.parametrize(
    "first,later,resumes",
    [
        # a weak ETag and a date: no If-Range at all (it sent the date, then spliced)
        (("ETag: W/\"a\"", f"Last-Modified: {LM}", f"Date: {DATE}"),
         ("ETag: W/\"b\"", f"Last-Modified: {LM}", f"Date: {DATE}"), False),
        # no ETag, a strong date: If-Range is the date; a 206 with an ETag is refused
        ((f"Last-Modified: {LM}", f"Date: {DATE}"),
         ('ETag: "b"', f"Last-Modified: {LM}", f"Date: {DATE}"), True),
        # a date without a Date header to show it is strong: no If-Range
        ((f"Last-Modified: {LM}",), (f"Last-Modified: {LM}",), False),
    ],
)  # fmt: skip
def test_if_range_is_strong_and_206_must_match(script, tmp_path, transport, first, later, resumes):
    srv, v2 = versioned_server(script, first, later)
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("ifr", srv.url + "/v.bin").wait(30)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record.response.read() == v2  # one version, never half of each
    second = srv.requests[1]
    if resumes:
        assert second.header("if-range") == LM and second.header("range")
    else:
        assert second.header("if-range") is None and second.header("range") is None


# ---------------------------------------------------------------------------------------
# 5. a compressed body cut short, without its trailer or with bytes after it, fails
# ---------------------------------------------------------------------------------------

PLAIN = b"".join(b"line %d of a csv file,with,some,columns\n" % i for i in range(20_000))
GZ = gzip.compress(PLAIN)


@pytest.mark.parametrize(
    "coding,body",
    [
        ("gzip", GZ[: len(GZ) // 2]),  # cut in half, correctly framed
        ("gzip", GZ[:-8]),  # no CRC32/ISIZE trailer
        ("gzip", GZ + b"garbage after the stream"),
        ("deflate", zlib.compress(PLAIN)[:-4]),  # no Adler-32 trailer
    ],
    ids=["half", "no-trailer", "garbage-after", "deflate-no-trailer"],
)
def test_incomplete_compressed_body_fails(script, tmp_path, transport, coding, body):
    srv = script(
        serve(lambda req, peer: peer.send(response(body, headers=(f"Content-Encoding: {coding}",))))
    )
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("gz", srv.url + "/data.csv").wait(30)
    record = reg.match_all()[0]
    assert (record.state, reg.failure_reason) == ("failure", "fetch-error")
    assert "compressed body is incomplete" in record.error, record.error
    assert record.attempts == FAST.retries + 1  # retried, then given up
    assert not (reg.dest / "data.csv").exists()


def test_complete_compressed_body_is_stored_decoded(script, tmp_path, transport):
    body = GZ + gzip.compress(b"second member\n")  # RFC 1952: members one after another
    srv = script(
        serve(lambda req, peer: peer.send(response(body, headers=("Content-Encoding: gzip",))))
    )
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("gz-ok", srv.url + "/data.csv").wait(30)
    assert reg.result == "success"
    assert reg.match_all()[0].response.read() == PLAIN + b"second member\n"


# ---------------------------------------------------------------------------------------
# 6. Accept-Encoding: identity unless the user set it
# ---------------------------------------------------------------------------------------


def test_downloads_ask_for_identity_unless_the_user_set_accept_encoding(
    script, tmp_path, transport
):
    srv = script(serve(lambda req, peer: peer.send(response(b"abc"))))
    with manager(tmp_path / "h", transport) as mgr:
        mgr.fetch("ae", srv.url + "/a").wait(20)
        mgr.fetch("ae2", Request(srv.url + "/b", headers={"Accept-Encoding": "gzip"})).wait(20)
    first, second = srv.requests
    assert first.header("accept-encoding") == "identity"  # a first request too, not only resumes
    assert second.header("accept-encoding") == "gzip"


# ---------------------------------------------------------------------------------------
# 7. a user's own Range header is refused with a clear message
# ---------------------------------------------------------------------------------------


def test_a_users_range_header_is_refused_in_fetch(tmp_path, transport):
    with manager(tmp_path / "h", transport) as mgr:
        url = "http://127.0.0.1:9/data.bin"
        with pytest.raises(FetchError, match=r"Range header .* is not supported"):
            mgr.fetch("r1", url, headers={"Range": "bytes=0-99"})
        with pytest.raises(FetchError, match="Fetch the whole file"):
            mgr.fetch("r2", Request(url, headers={"range": "bytes=100-199"}))
        assert mgr.get_ids() == []


# ---------------------------------------------------------------------------------------
# 8. Content-Length together with chunked: Transfer-Encoding wins, then the connection closes
# ---------------------------------------------------------------------------------------


def test_content_length_with_chunked_is_stored_then_the_connection_closes(
    script, tmp_path, transport
):
    both = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n0123456789\r\n0\r\n\r\n"
    )

    def answer(req: RawRequest, peer: Peer) -> bool:
        peer.send(both if path_of(req) == "/both" else response(b"plain"))
        return True

    srv = script(serve(answer))
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("both", [srv.url + "/both"]).wait(20)
        assert reg.result == "success", reg.match_all()[0].error
        assert reg.match_all()[0].response.read() == b"0123456789"
        mgr.fetch("after", srv.url + "/plain").wait(20)
    assert srv.accepts == 2  # the connection of the ambiguous answer was not reused


# ---------------------------------------------------------------------------------------
# 9. a record that did not succeed never occupies a final name in dest
# ---------------------------------------------------------------------------------------


def test_a_failed_records_body_is_kept_out_of_dests_globs(script, tmp_path, transport):
    html = b"<html><body>404 Not Found</body></html>"

    def answer(req: RawRequest, peer: Peer) -> bool:
        if path_of(req) == "/missing.csv":
            peer.send(response(html, "404 Not Found", ("Content-Type: text/html",)))
        else:
            peer.send(response(b"a,b\n1,2\n", headers=("Content-Type: text/csv",)))
        return True

    srv = script(serve(answer))
    dest = tmp_path / "dest"
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("f", [srv.url + "/ok.csv", srv.url + "/missing.csv"], dest=dest).wait(20)
        _, missing = reg.match_all()
        assert (missing.state, reg.failure_reason) == ("failure", "bad-status")
        assert sorted(p.name for p in dest.glob("*.csv")) == ["ok.csv"]
        assert glob.glob(str(dest / "**" / "*.csv"), recursive=True) == [str(dest / "ok.csv")]
        assert missing.response.status == 404 and missing.response.read() == html
        assert not (dest / "missing.csv").exists()
        assert mgr.delete("f") == 1
    assert not dest.exists() or list(dest.rglob("*")) == []


# ---------------------------------------------------------------------------------------
# 10. any byte resets the read timeout; a trickle is caught by the minimum speed
# ---------------------------------------------------------------------------------------


def test_interim_heads_keep_a_slow_answer_alive(script, tmp_path, transport):
    def answer(req: RawRequest, peer: Peer) -> bool:
        for _ in range(6):  # 3 s of "102 Processing" every 0.5 s, read timeout 1 s
            peer.send(b"HTTP/1.1 102 Processing\r\n\r\n")
            time.sleep(0.5)
        peer.send(response(b"finally"))
        return True

    srv = script(serve(answer))
    policy = RetryPolicy(retries=0, read_timeout=1, connect_timeout=3)
    with manager(tmp_path / "h", transport, retries=policy) as mgr:
        reg = mgr.fetch("102", srv.url + "/slow").wait(30)
    record = reg.match_all()[0]
    assert reg.result == "success", record.error
    assert record.attempts == 1 and record.response.read() == b"finally"


def test_a_trickling_body_fails_under_the_minimum_speed(script, tmp_path, transport):
    stop = threading.Event()

    def answer(req: RawRequest, peer: Peer) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(60):  # 1 byte every 0.3 s: never silent for the read timeout
            if stop.is_set():
                break
            peer.send(b"x")
            time.sleep(0.3)
        return False

    srv = script(serve(answer))
    policy = RetryPolicy(retries=0, read_timeout=2, speed_limit=100, speed_time=1.5)
    assert RetryPolicy().speed_limit > 0 and RetryPolicy().speed_time > 0  # on by default
    with manager(tmp_path / "h", transport, retries=policy) as mgr:
        t0 = time.monotonic()
        reg = mgr.fetch("trickle", srv.url + "/t").wait(15)
        took = time.monotonic() - t0
    stop.set()
    record = reg.match_all()[0]
    assert record.state == "failure" and "too slow" in record.error, record.error
    assert took < 10


# ---------------------------------------------------------------------------------------
# 11. sizes of 2^63 or more: a clear protocol error
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
    ],
    ids=["2^63", "20-digits"],
)
def test_sizes_of_2_63_or_more_are_a_clear_protocol_error(script, tmp_path, transport, head):
    def answer(req: RawRequest, peer: Peer) -> bool:
        peer.send(head)
        return False

    srv = script(serve(answer))
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("big", srv.url + "/big").wait(20)
    record = reg.match_all()[0]
    assert (record.state, reg.failure_reason) == ("failure", "fetch-error")
    assert "internal error" not in record.error and "Overflow" not in record.error
    assert "2^63" in record.error or "Content-Length" in record.error, record.error


def test_a_range_answer_of_2_63_or_more_is_a_clear_protocol_error(script, tmp_path, transport):
    big = 2**63

    def answer(req: RawRequest, peer: Peer) -> bool:
        if req.header("range") is None:
            peer.send(response(b"x" * 1000, headers=('ETag: "e"',))[:-500])
            return False
        head = ('ETag: "e"', f"Content-Range: bytes 500-{big - 1}/{big}")
        peer.send(response(b"y" * 500, "206 Partial Content", head))
        return True

    srv = script(serve(answer))
    with manager(tmp_path / "h", transport, retries=RetryPolicy(retries=1, backoff=0.01)) as mgr:
        reg = mgr.fetch("big-range", srv.url + "/big").wait(20)
    record = reg.match_all()[0]
    assert record.state == "failure" and "2^63" in record.error, record.error


# ---------------------------------------------------------------------------------------
# 12. parser strictness (engine level; the differential test is in test_http11_reference)
# ---------------------------------------------------------------------------------------


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BIG_HEAD = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.parametrize(
    "raw,ok",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length\x00: 5\r\nConnection: close\r\n\r\nhello", False),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello", False),
        (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello", False),
        (CHUNKED + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n", False),
        (CHUNKED + b"0" * 20 + b"5\r\nhello\r\n0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", True),
        (BIG_HEAD + b"hello", True),
    ],
    ids=["nul-in-name", "nul-in-value", "bare-cr", "17-digit-chunk-size", "21-digit-chunk-size",
         "cl-10-10", "100k-head"],
)  # fmt: skip
def test_parser_strictness(script, tmp_path, transport, raw, ok, request):
    if transport == "httpx" and "17-digit" in request.node.name:
        pytest.skip("h11 caps chunk sizes at 20 digits, not 16 (the 21-digit case covers it)")

    def answer(req: RawRequest, peer: Peer) -> bool:
        peer.send(raw)
        return False

    srv = script(serve(answer))
    policy = RetryPolicy(retries=0, read_timeout=3)
    with manager(tmp_path / "h", transport, retries=policy) as mgr:
        reg = mgr.fetch("p", srv.url + "/p").wait(20)
    record = reg.match_all()[0]
    if ok:
        assert reg.result == "success", record.error
        assert record.response.read() == b"hello"
    else:
        assert record.state == "failure", "accepted a malformed response"


# ---------------------------------------------------------------------------------------
# 13. filename* wins; a Content-Length over download_total is refused before downloading
# ---------------------------------------------------------------------------------------


def test_filename_star_is_preferred_over_filename(script, tmp_path, transport):
    disposition = "attachment; filename=\"fallback.csv\"; filename*=UTF-8''r%C3%A9al.csv"
    srv = script(
        serve(
            lambda req, peer: peer.send(
                response(b"a\n", headers=(f"Content-Disposition: {disposition}",))
            )
        )
    )
    with manager(tmp_path / "h", transport) as mgr:
        reg = mgr.fetch("name", srv.url + "/x").wait(20)
    assert reg.match_all()[0].response.path.name == "réal.csv"


def test_content_length_over_download_total_is_refused_before_downloading(
    script, tmp_path, transport
):
    stop = threading.Event()

    def answer(req: RawRequest, peer: Peer) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 * MiB))
        peer.send(b"z" * 64 * KiB)
        stop.wait(10)
        return False

    srv = script(serve(answer))
    try:
        with manager(tmp_path / "h", transport) as mgr:
            reg = mgr.fetch("big", srv.url + "/big.bin", download_total=MiB).wait(20)
    finally:
        stop.set()
    assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded")
    assert reg.downloaded == 0
    assert "10485760 bytes announced" in reg.match_all()[0].error
