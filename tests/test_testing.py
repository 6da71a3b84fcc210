"""Tests for ipybgfetch.testing.DataServer, against the real loopback server with httpx."""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipybgfetch.testing import CHUNK_SIZE, DataServer, RequestRecord, _parse_range

MiB = 2**20
_names = itertools.count()


def fresh(prefix: str = "f") -> str:
    """A name no other test uses, so per-URL counters start at zero."""
    return f"{prefix}-{next(_names)}.bin"


@pytest.fixture(scope="module")
def srv() -> Iterator[DataServer]:
    with DataServer() as server:
        yield server


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


# -- generated content ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MiB + 3, 3 * MiB + 17])
def test_content_is_deterministic_and_served(
    srv: DataServer, client: httpx.Client, size: int
) -> None:
    name = "data.bin"
    data = DataServer.content(name, size)
    assert len(data) == size
    assert data == DataServer.content(name, size)
    assert DataServer.sha256(name, size) == hashlib.sha256(data).hexdigest()
    sri = DataServer.sri(name, size)
    assert sri == "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert DataServer.sri(name, size, "sha512").startswith("sha512-")
    r = client.get(srv.url(name, size))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-length"] == str(size)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == DataServer.etag(name, size)
    assert r.headers["last-modified"] == DataServer.last_modified()


def test_content_depends_on_name_size_generation() -> None:
    a = DataServer.content("a", 4096)
    assert a != DataServer.content("b", 4096)
    assert a[:100] != DataServer.content("a", 4097)[:100]
    assert a != DataServer.content("a", 4096, generation=1)
    assert DataServer.etag("a", 4096) != DataServer.etag("a", 4096, generation=1)


def test_large_content_is_not_periodic_and_slices_agree() -> None:
    size = 3 * MiB + 5
    full = DataServer.content("p", size)
    assert full[:MiB] != full[MiB : 2 * MiB]
    for start, end in [(0, 10), (MiB - 3, MiB + 3), (2 * MiB + 1, size), (size, size)]:
        assert DataServer.content("p", size, start, end) == full[start:end]
    assert DataServer.content("p", size, 10, 10**12) == full[10:]
    assert b"".join(DataServer.iter_content("p", size, 5, 2 * MiB)) == full[5 : 2 * MiB]


def test_sha256_of_256_mib_is_fast() -> None:
    t = time.perf_counter()
    DataServer.sha256("speed", 256 * MiB + 1)
    assert time.perf_counter() - t < 5


def test_head_has_headers_without_body(srv: DataServer, client: httpx.Client) -> None:
    r = client.head(srv.url("h.csv", 1234))
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "1234"
    assert r.headers["content-type"].startswith("text/csv")


# -- ranges ------------------------------------------------------------------------------


def test_ranges(srv: DataServer, client: httpx.Client) -> None:
    size = MiB + 3
    url = srv.url("r.bin", size)
    full = DataServer.content("r.bin", size)

    r = client.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
    assert r.content == full[1000:]

    r = client.get(url, headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.content) == (206, full[10:20])
    assert r.headers["content-length"] == "10"

    r = client.get(url, headers={"Range": "bytes=-7"})
    assert (r.status_code, r.content) == (206, full[-7:])
    assert r.headers["content-range"] == f"bytes {size - 7}-{size - 1}/{size}"

    r = client.get(url, headers={"Range": f"bytes={size - 2}-{size + 100}"})
    assert (r.status_code, r.content) == (206, full[-2:])

    for bad in (f"bytes={size}-", "bytes=-0"):
        r = client.get(url, headers={"Range": bad})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{size}"

    for ignored in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=x-"):
        r = client.get(url, headers={"Range": ignored})
        assert (r.status_code, len(r.content)) == (200, size)


def test_range_on_empty_file_is_416(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.url("empty", 0), headers={"Range": "bytes=0-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */0"


def test_if_range(srv: DataServer, client: httpx.Client) -> None:
    size = 5000
    url = srv.url("ir.bin", size)
    etag, lm = DataServer.etag("ir.bin", size), DataServer.last_modified()
    cases = [
        (etag, 206),
        ('"other"', 200),
        ("W/" + etag, 200),
        (lm, 206),
        ("Tue, 02 Jan 2024 00:00:00 GMT", 200),
        ("not a date", 200),
    ]
    for if_range, expected in cases:
        r = client.get(url, headers={"Range": "bytes=100-", "If-Range": if_range})
        assert r.status_code == expected, if_range
        want = DataServer.content("ir.bin", size, 100 if expected == 206 else 0)
        assert r.content == want


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.one_of(st.integers(0, 3000), st.integers(MiB - 10, 2 * MiB + 10)),
    a=st.integers(0, 2 * MiB + 20),
    b=st.integers(0, 2 * MiB + 20),
    form=st.sampled_from(["open", "closed", "suffix"]),
)
def test_range_property(
    srv: DataServer, client: httpx.Client, size: int, a: int, b: int, form: str
) -> None:
    name = "prop.bin"
    if form == "open":
        header, start, end = f"bytes={a}-", a, size
    elif form == "closed":
        a, b = min(a, b), max(a, b)
        header, start, end = f"bytes={a}-{b}", a, min(b + 1, size)
    else:
        header, start, end = f"bytes=-{a}", max(size - a, 0), size
    unsat = (form == "suffix" and (a == 0 or size == 0)) or (form != "suffix" and a >= size)
    r = client.get(srv.url(name, size), headers={"Range": header})
    if unsat:
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{size}"
        assert _parse_range(header, size) is not None
        return
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    assert r.content == DataServer.content(name, size, start, end)
    assert _parse_range(header, size) == (start, end)


# -- faults ------------------------------------------------------------------------------


def test_status_and_status_times(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.url(fresh(), 100, status=404))
    assert r.status_code == 404
    assert r.content  # a small body still

    url = srv.url(fresh(), 100, status=503, status_times=2, retry_after=7)
    got = [client.get(url) for _ in range(3)]
    assert [x.status_code for x in got] == [503, 503, 200]
    assert got[0].headers["retry-after"] == "7"
    assert "retry-after" not in got[2].headers
    assert got[2].content == DataServer.content(url.split("/")[-1].split("?")[0], 100)


def test_retry_after_date(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.url(fresh(), 10, status=429, retry_after=120, retry_after_date=True))
    assert r.status_code == 429
    when = parsedate_to_datetime(r.headers["retry-after"]).timestamp()
    assert 60 < when - time.time() < 180


def test_drop_after(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    url = srv.url(name, 100_000, drop_after=1000, drop_times=1)
    received = bytearray()
    with pytest.raises(httpx.TransportError), client.stream("GET", url) as r:
        assert r.headers["content-length"] == "100000"
        for chunk in r.iter_raw():
            received += chunk
    assert bytes(received) == DataServer.content(name, 100_000, 0, 1000)
    r = client.get(url)  # drop_times=1: the second request is served in full
    assert r.content == DataServer.content(name, 100_000)
    assert srv.bytes_sent_for(url) == 101_000


def test_short(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    received = bytearray()
    with (
        pytest.raises(httpx.TransportError),
        client.stream("GET", srv.url(name, 5000, short=10)) as r,
    ):
        assert r.headers["content-length"] == "5000"
        for chunk in r.iter_raw():
            received += chunk
    assert bytes(received) == DataServer.content(name, 5000, 0, 4990)


def test_stall_and_throttle(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    t = time.perf_counter()
    r = client.get(srv.url(name, 10_000, stall=0.5, stall_after=100))
    assert time.perf_counter() - t >= 0.45
    assert r.content == DataServer.content(name, 10_000)

    t = time.perf_counter()
    r = client.get(srv.url(name, 100_000, throttle=250_000))
    elapsed = time.perf_counter() - t
    assert 0.3 < elapsed < 3
    assert r.content == DataServer.content(name, 100_000)


def test_stall_keeps_socket_open_past_read_timeout(srv: DataServer) -> None:
    with httpx.Client(timeout=httpx.Timeout(5, read=0.3)) as c, pytest.raises(httpx.ReadTimeout):
        c.get(srv.url(fresh(), 1000, stall=2, stall_after=10))


def test_delay(srv: DataServer, client: httpx.Client) -> None:
    t = time.perf_counter()
    assert client.get(srv.url(fresh(), 10, delay=0.3)).status_code == 200
    assert time.perf_counter() - t >= 0.25


def test_server_wide_rate_limit_caps_each_connection() -> None:
    """rate_limit paces every response (a per-connection cap): two connections at once
    each take the full time, so together they move twice the cap."""
    name, size = fresh(), 200_000
    with DataServer(rate_limit=400_000) as capped, httpx.Client(timeout=10) as c:
        t = time.perf_counter()
        assert c.get(capped.url(name, size)).content == DataServer.content(name, size)
        one = time.perf_counter() - t
        assert 0.35 < one < 3  # 200 kB at 400 kB/s: about 0.5 s

        def get(tag: str) -> bytes:
            with httpx.Client(timeout=10) as own:
                return own.get(capped.url(name, size, tag=tag)).content

        t = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            bodies = list(pool.map(get, ["a", "b"]))
        two = time.perf_counter() - t
        assert bodies == [DataServer.content(name, size)] * 2
        assert 0.35 < two < 1.6 * one  # side by side, not one after the other
        # a URL's own throttle wins over the server-wide cap
        t = time.perf_counter()
        c.get(capped.url(name, size, throttle=4_000_000, tag="fast"))
        assert time.perf_counter() - t < one


def test_server_wide_latency_delays_every_response() -> None:
    with DataServer(latency=0.2) as slow, httpx.Client(timeout=10) as c:
        for _ in range(2):  # each response, also on a kept-alive connection
            t = time.perf_counter()
            assert c.get(slow.url(fresh(), 10)).status_code == 200
            assert time.perf_counter() - t >= 0.18
        slow.latency = 0.0
        t = time.perf_counter()
        assert c.get(slow.url(fresh(), 10)).status_code == 200
        assert time.perf_counter() - t < 0.18
    with pytest.raises(ValueError, match="rate_limit"):
        DataServer(rate_limit=0)
    with pytest.raises(ValueError, match="latency"):
        DataServer(latency=-1)


def test_status_after_starts_failing(srv: DataServer, client: httpx.Client) -> None:
    url = srv.url(fresh(), 100, status=503, status_after=2)
    assert [client.get(url).status_code for _ in range(4)] == [200, 200, 503, 503]


def test_signed_url_redirects_then_expires(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    url = srv.url(name, 1000, signed=0.3)
    r = client.get(url, follow_redirects=True)
    assert r.status_code == 200 and r.content == DataServer.content(name, 1000)
    assert len(r.history) == 1 and "expires=" in str(r.url)
    signed = str(r.url)
    assert client.get(signed).status_code == 200  # still valid
    time.sleep(0.35)
    assert client.get(signed).status_code == 403  # expired
    r = client.get(url, follow_redirects=True)  # the original URL: a fresh signature
    assert r.status_code == 200 and str(r.url) != signed


def test_header_values_cannot_inject(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.url(fresh(), 10, disposition_raw="attachment\r\nX-Injected: 1"))
    assert "x-injected" not in r.headers
    assert r.content == DataServer.content(r.url.path.rsplit("/", 1)[1], 10)
    r = client.get(srv.url(fresh(), 10, disposition_raw='attachment; filename="\u20ac.txt"'))
    raw = {k.lower(): v for k, v in r.headers.raw}[b"content-disposition"]
    assert raw == 'attachment; filename="\u20ac.txt"'.encode()


def test_ignore_range(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    r = client.get(srv.url(name, 2000, ignore_range=True), headers={"Range": "bytes=100-"})
    assert r.status_code == 200
    assert r.content == DataServer.content(name, 2000)


def test_etag_change_after(srv: DataServer, client: httpx.Client) -> None:
    name, size = fresh(), 3000
    url = srv.url(name, size, etag_change_after=1)
    r1 = client.get(url, headers={"Range": "bytes=0-999"})
    assert r1.status_code == 206
    assert r1.headers["etag"] == DataServer.etag(name, size)
    # the resume: If-Range with the old ETag no longer matches -> 200 with new content
    r2 = client.get(url, headers={"Range": "bytes=1000-", "If-Range": r1.headers["etag"]})
    assert r2.status_code == 200
    assert r2.headers["etag"] == DataServer.etag(name, size, generation=1) != r1.headers["etag"]
    assert r2.headers["last-modified"] == DataServer.last_modified(generation=1)
    assert r2.content == DataServer.content(name, size, generation=1)
    assert r2.content != DataServer.content(name, size)
    mixed = r1.content + r2.content[1000:]
    assert hashlib.sha256(mixed).hexdigest() != DataServer.sha256(name, size, generation=1)


def test_headers_faults(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.url(fresh(), 10, vary="Accept-Language"))
    assert r.headers["vary"] == "Accept-Language"
    r = client.get(srv.url(fresh(), 10, disposition='re"port.csv'))
    assert r.headers["content-disposition"] == 'attachment; filename="re\\"port.csv"'
    for raw in [
        'attachment; filename="../../etc/passwd"',
        "attachment; filename*=UTF-8''%E2%82%AC.txt",
    ]:
        r = client.get(srv.url(fresh(), 10, disposition_raw=raw))
        assert r.headers["content-disposition"] == raw
    r = client.get(srv.url(fresh(), 10, content_type="application/x-parquet"))
    assert r.headers["content-type"] == "application/x-parquet"
    assert client.get(srv.url("x.json", 5)).headers["content-type"] == "application/json"


@pytest.mark.parametrize("mode", ["1", "chunked"])
def test_no_length(srv: DataServer, client: httpx.Client, mode: str) -> None:
    name = fresh()
    r = client.get(srv.url(name, MiB + 5, no_length=mode))
    assert r.status_code == 200
    assert "content-length" not in r.headers
    if mode == "chunked":
        assert r.headers["transfer-encoding"] == "chunked"
    else:
        assert r.headers["connection"] == "close"
    assert r.content == DataServer.content(name, MiB + 5)


def test_redirect(srv: DataServer, client: httpx.Client) -> None:
    name = fresh()
    url = srv.url(name, 100, redirect=3)
    r = client.get(url, follow_redirects=True)
    assert r.status_code == 200
    assert len(r.history) == 3
    assert all(h.status_code == 302 for h in r.history)
    assert r.content == DataServer.content(name, 100)
    assert len(srv.requests_for(url.split("?")[0])) == 4


def test_gzip(srv: DataServer, client: httpx.Client) -> None:
    data = b"a,b\n" + b"1,2\n" * 5000
    url = srv.add_file("/z/table.csv", data, gzip=True)
    r = client.get(url, headers={"Range": "bytes=10-"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) < len(data)
    assert r.content == data  # httpx decodes
    with client.stream("GET", url) as raw:
        assert gzip.decompress(b"".join(raw.iter_raw())) == data
    name = fresh()
    assert client.get(srv.url(name, 3000, gzip=1)).content == DataServer.content(name, 3000)


def test_bad_fault_value_is_400(srv: DataServer, client: httpx.Client) -> None:
    r = client.get(srv.base_url + "/gen/10/x?drop_after=lots")
    assert r.status_code == 400
    assert b"drop_after" in r.content


def test_url_rejects_unknown_fault(srv: DataServer) -> None:
    with pytest.raises(TypeError, match="drop_aftr"):
        srv.url("x", 1, drop_aftr=3)
    with pytest.raises(ValueError):
        srv.url("x", -1)


def test_not_found_and_index(srv: DataServer, client: httpx.Client) -> None:
    assert client.get(srv.base_url + "/nope").status_code == 404
    assert client.get(srv.base_url + "/").status_code == 200


# -- static files ------------------------------------------------------------------------


def test_add_file(srv: DataServer, client: httpx.Client) -> None:
    data = b"x,y\n1,2\n"
    url = srv.add_file("static/t.csv", data, headers={"X-Extra": "yes"})
    r = client.get(url)
    assert r.content == data
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["x-extra"] == "yes"
    etag = r.headers["etag"]
    r = client.get(url, headers={"Range": "bytes=2-", "If-Range": etag})
    assert (r.status_code, r.content) == (206, data[2:])
    r = client.get(srv.add_file("static/t2.bin", data, "text/plain", status=500, tag="a"))
    assert r.status_code == 500
    srv.add_file("static/t.csv", b"new")
    r = client.get(url)
    assert r.content == b"new"
    assert r.headers["etag"] != etag


# -- echo --------------------------------------------------------------------------------


def test_echo(srv: DataServer, client: httpx.Client) -> None:
    body = os.urandom(3 * MiB + 11)
    r = client.post(srv.echo_url(), content=body)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["x-echo-sha256"] == hashlib.sha256(body).hexdigest()
    assert r.headers["content-type"] == "application/octet-stream"

    def gen() -> Iterator[bytes]:  # chunked upload
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    r = client.put(srv.base_url + "/any/where?echo=1", content=gen())
    assert r.content == body
    assert r.headers["x-echo-method"] == "PUT"
    assert srv.requests[-1].bytes_received == len(body)
    assert client.post(srv.echo_url(), content=b"").content == b""


def test_large_echo_spools(srv: DataServer, client: httpx.Client) -> None:
    body = os.urandom(20 * MiB)
    r = client.post(srv.echo_url(), content=body)
    assert r.content == body
    assert r.headers["x-echo-length"] == str(len(body))


# -- request log ---------------------------------------------------------------------------


def test_request_log() -> None:
    with DataServer() as s, httpx.Client() as c:
        name = "log.bin"
        url = s.url(name, 10_000)
        c.get(url)
        c.get(url, headers={"Range": "bytes=4000-", "If-Range": DataServer.etag(name, 10_000)})
        recs = s.requests
        assert all(isinstance(r, RequestRecord) for r in recs)
        assert [r.status for r in recs] == [200, 206]
        assert recs[1].headers["range"] == "bytes=4000-"
        assert recs[1].headers["if-range"] == DataServer.etag(name, 10_000)
        assert recs[1].method == "GET"
        assert recs[1].path == f"/gen/10000/{name}"
        assert recs[0].time <= recs[1].time
        assert [r.bytes_sent for r in recs] == [10_000, 6000]
        assert s.bytes_sent_total == 16_000
        assert s.bytes_sent_for(url) == 16_000
        c.get(s.url(name, 10_000, tag=1))
        assert s.requests[-1].query == {"tag": "1"}
        assert len(s.requests_for(url)) == 3  # path only
        assert len(s.requests_for(s.url(name, 10_000, tag=1))) == 1  # exact target
        s.reset()
        assert s.requests == [] and s.bytes_sent_total == 0


def test_reset_clears_counters() -> None:
    with DataServer() as s, httpx.Client() as c:
        url = s.url("c", 10, status=503, status_times=1)
        assert c.get(url).status_code == 503
        assert c.get(url).status_code == 200
        s.reset()
        assert c.get(url).status_code == 503


# -- performance and robustness ------------------------------------------------------------


def test_concurrent_connections(srv: DataServer) -> None:
    size = 4 * MiB + 1

    def one(i: int) -> bool:
        with httpx.Client(timeout=20) as c:
            data = c.get(srv.url(f"cc{i}", size)).content
        return hashlib.sha256(data).hexdigest() == DataServer.sha256(f"cc{i}", size)

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(16)))


def test_many_small_requests(srv: DataServer, client: httpx.Client) -> None:
    t = time.perf_counter()
    for i in range(1000):
        assert client.get(srv.url(f"small{i % 50}", 200)).status_code == 200
    assert time.perf_counter() - t < 10


def test_throughput(srv: DataServer, client: httpx.Client) -> None:
    size = 256 * MiB
    t = time.perf_counter()
    with client.stream("GET", srv.url("fast", size)) as r:
        n = sum(len(b) for b in r.iter_raw(CHUNK_SIZE))
    assert n == size
    assert size / (time.perf_counter() - t) > 100 * MiB


def test_client_disconnect_is_quiet_and_stop_is_prompt(capfd: pytest.CaptureFixture[str]) -> None:
    s = DataServer().start()
    with httpx.Client() as c, c.stream("GET", s.url("big", 512 * MiB)) as r:
        next(r.iter_raw(65536))  # read a little, then hang up
    stalled = threading.Thread(
        target=lambda: _quiet_get(s.url("st", 1000, stall=60, stall_after=10)), daemon=True
    )
    stalled.start()
    idle = httpx.Client()
    idle.get(s.url("idle", 10))  # a keep-alive connection left open
    time.sleep(0.3)
    t = time.perf_counter()
    s.stop()
    assert time.perf_counter() - t < 2
    stalled.join(5)
    assert not stalled.is_alive()
    idle.close()
    assert not s.running
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "Error" not in err


def _quiet_get(url: str) -> None:
    try:
        httpx.get(url, timeout=120)
    except httpx.HTTPError:
        pass


def test_start_stop_lifecycle() -> None:
    s = DataServer()
    with pytest.raises(RuntimeError):
        _ = s.base_url
    s.start()
    assert s.base_url.startswith("http://127.0.0.1:")
    assert s.start() is s
    s.stop()
    s.stop()  # idempotent


def test_cli() -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipybgfetch.testing", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        r = httpx.get(base + "/gen/10/cli.bin", timeout=5)
        assert r.content == DataServer.content("cli.bin", 10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
