"""Resilience in one process, over real loopback HTTP: resume, retry, stall, pause.

Every test talks to ``ipybgfetch.testing.DataServer`` and checks the bytes on disk
(sha256 against the generated source) and what the server saw (its request log and byte
counters). Nothing is mocked. Retry policies use short backoffs so the suite stays fast.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from resilience_support import closed_port, files_under, sha256_file, wait_until

from ipybgfetch import (
    BackgroundFetchManager,
    FetchError,
    InvalidStateError,
    Request,
    RetryPolicy,
)
from ipybgfetch.testing import DataServer

FAST = RetryPolicy(retries=5, backoff=0.02, max_backoff=0.1)
KiB = 1024
MiB = 1024 * 1024
_unique = itertools.count()


@pytest.fixture(scope="module")
def srv():
    with DataServer() as server:
        yield server


@pytest.fixture
def mgr(tmp_path):
    m = BackgroundFetchManager(home=tmp_path / "home", retries=FAST)
    yield m
    m.close()


def only_record(reg):
    records = reg.match_all()
    assert len(records) == 1
    return records[0]


def assert_file(record, name, size, generation=0):
    assert record.state == "success", (record.state, record.error)
    path = record.response.path
    assert path.exists()
    assert not Path(str(path) + ".part").exists()
    assert path.stat().st_size == size
    assert sha256_file(path) == DataServer.sha256(name, size, generation=generation)
    assert record["sha256"] == DataServer.sha256(name, size, generation=generation)


# ------------------------------------------------------------------------------------------
# Dropped connections: resume with Range at many offsets
# ------------------------------------------------------------------------------------------


def test_resume_after_drops_at_many_offsets(srv, mgr):
    """40 files, each dropped at a different offset (1-3 times): all byte-identical, and
    with Range support nothing is downloaded twice."""
    rng = random.Random(20240501)
    size = 700 * KiB + 13
    offsets = [1, 2, 1000, 64 * KiB, 64 * KiB + 1, size - 1, size - 2, size // 2]
    offsets += [rng.randrange(1, size) for _ in range(32)]
    cases = []
    for i, offset in enumerate(offsets):
        times = 1 + i % 3
        # drop_after applies to each of the first `times` responses: drops at
        # offset, 2*offset, ... (as long as the remainder is longer).
        cases.append(srv.url("drops.bin", size, drop_after=offset, drop_times=times, tag=i))
    reg = mgr.fetch("drops", cases)
    reg.wait(60)
    assert reg.result == "success", [(r.error, r.attempts) for r in reg.match_all()]
    extra_total = 0
    for url, offset, record in zip(cases, offsets, reg.match_all(), strict=True):
        assert record.request.url == url
        assert_file(record, "drops.bin", size)
        log = srv.requests_for(url)
        assert log[0].headers.get("range") is None
        resumed = [r for r in log[1:]]
        assert resumed, "a dropped download must be resumed"
        for r in resumed:
            assert r.headers["range"].startswith("bytes=")
            assert r.headers["if-range"] == DataServer.etag("drops.bin", size)
            assert r.status == 206
        assert record.attempts == len(log)
        extra = srv.bytes_sent_for(url) - size
        extra_total += extra
        # Range is honoured: every byte the server sent was kept (nothing re-downloaded).
        assert extra == 0, (offset, extra)
    assert extra_total == 0
    assert reg.downloaded == size * len(cases)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    size=st.integers(min_value=2, max_value=300 * KiB),
    fraction=st.floats(min_value=0.0, max_value=1.0),
    times=st.integers(min_value=1, max_value=4),
    short=st.booleans(),
)
def test_resume_property(srv, mgr, size, fraction, times, short):
    """Any drop offset, any number of drops, FIN-truncated or short bodies: same bytes."""
    offset = max(1, min(size - 1, int(size * fraction)))
    fault = {"short": size - offset} if short else {"drop_after": offset}
    tag = next(_unique)  # hypothesis replays examples: fresh server counters each time
    url = srv.url("prop.bin", size, drop_times=times, tag=tag, **fault)
    reg = mgr.fetch(f"prop-{tag}", url)
    reg.wait(30)
    record = only_record(reg)
    assert_file(record, "prop.bin", size)
    # With Range support the overhead is bounded by what was lost in flight (nothing here).
    assert srv.bytes_sent_for(url) - size <= 0


def test_gzip_body_dropped_restarts_without_range(srv, mgr):
    """Offsets into a decoded body are not byte offsets of the file: no Range for it."""
    size = 600 * KiB
    url = srv.url("text.csv", size, gzip=1, drop_after=50 * KiB, drop_times=1)
    reg = mgr.fetch("gzip", url).wait(20)
    assert_file(only_record(reg), "text.csv", size)
    log = srv.requests_for(url)
    assert len(log) == 2 and "range" not in log[1].headers


def test_error_status_on_resume_is_a_bad_status_with_its_body(mgr):
    """The file disappears from the server mid-download: the record ends with the 404
    response (readable), not with the stale partial bytes."""
    port = closed_port()
    size = 1 * MiB
    data = DataServer.content("gone.bin", size)
    first = DataServer(port=port).start()
    try:
        url = first.add_file("/files/gone.bin", data, throttle=2 * MiB)
        reg = mgr.fetch("gone", url)
        wait_until(lambda: reg.downloaded > 100 * KiB, 10, "some bytes")
    finally:
        first.stop()
    second = DataServer(port=port).start()
    try:
        reg.wait(20)
        assert (reg.result, reg.failure_reason) == ("failure", "bad-status")
        record = only_record(reg)
        assert record.response.status == 404
        assert record.response.read() != data[: len(record.response.read())]
        assert record.response.read() and len(record.response.read()) < 1000
        assert second.requests_for(url)[0].headers["range"].startswith("bytes=")
        assert not Path(str(record.response.path) + ".part").exists()
    finally:
        second.stop()


def test_chunked_body_dropped_resumes(srv, mgr):
    size = 400 * KiB
    url = srv.url("chunked.bin", size, no_length="chunked", drop_after=100 * KiB, drop_times=1)
    reg = mgr.fetch("chunked", url).wait(20)
    assert_file(only_record(reg), "chunked.bin", size)
    log = srv.requests_for(url)
    assert len(log) == 2 and log[1].headers["range"] == f"bytes={100 * KiB}-"


def test_etag_change_mid_download_restarts_from_zero(srv, mgr):
    size = 500 * KiB
    url = srv.url("changing.bin", size, drop_after=200 * KiB, drop_times=1, etag_change_after=1)
    reg = mgr.fetch("etag", url).wait(20)
    record = only_record(reg)
    # The file changed on the server: the result is the NEW file, never a mix.
    assert_file(record, "changing.bin", size, generation=1)
    log = srv.requests_for(url)
    assert len(log) == 2
    assert log[1].headers["range"] == f"bytes={200 * KiB}-"
    assert log[1].headers["if-range"] == DataServer.etag("changing.bin", size)
    assert log[1].status == 200  # If-Range did not match: the whole new file
    assert record.response.headers["etag"] == DataServer.etag("changing.bin", size, generation=1)
    assert reg.downloaded == size


def test_range_ignored_restarts_from_zero(srv, mgr):
    size = 300 * KiB
    url = srv.url("norange.bin", size, ignore_range=1, drop_after=100 * KiB, drop_times=2)
    seen = []
    reg = mgr.fetch("norange", url)
    reg.add_event_listener("progress", lambda e: seen.append(e.registration.downloaded))
    reg.wait(20)
    assert_file(only_record(reg), "norange.bin", size)
    log = srv.requests_for(url)
    assert [r.status for r in log] == [200, 200, 200]
    assert log[1].headers["range"] == f"bytes={100 * KiB}-"
    assert srv.bytes_sent_for(url) == 2 * 100 * KiB + size
    assert reg.downloaded == size


# ------------------------------------------------------------------------------------------
# Retries: statuses, Retry-After, storms, exhaustion
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(srv, mgr, status):
    size = 10 * KiB
    url = srv.url("transient.bin", size, status=status, status_times=2, tag=status)
    reg = mgr.fetch(f"transient-{status}", url).wait(20)
    record = only_record(reg)
    assert_file(record, "transient.bin", size)
    assert record.attempts == 3
    assert record["attempts"] == 3
    assert [r.status for r in srv.requests_for(url)] == [status, status, 200]


def test_retry_after_seconds_is_honoured(srv, mgr):
    url = srv.url("ra.bin", 1000, status=503, status_times=1, retry_after=1)
    t0 = time.monotonic()
    reg = mgr.fetch("ra", url).wait(20)
    elapsed = time.monotonic() - t0
    assert_file(only_record(reg), "ra.bin", 1000)
    log = srv.requests_for(url)
    gap = log[1].time - log[0].time
    assert 0.9 <= gap < 3.0, gap  # the policy's backoff alone would be ~0.02 s
    assert elapsed >= 0.9


def test_retry_after_http_date_is_honoured(srv, mgr):
    url = srv.url("rad.bin", 1000, status=429, status_times=1, retry_after=2, retry_after_date=1)
    reg = mgr.fetch("rad", url).wait(20)
    assert_file(only_record(reg), "rad.bin", 1000)
    log = srv.requests_for(url)
    gap = log[1].time - log[0].time
    # An HTTP-date has 1 s resolution: now + 2 s becomes a wait of 1..2 s.
    assert 0.9 <= gap < 3.5, gap


def test_retry_after_is_capped_by_the_policy(srv, mgr):
    url = srv.url("racap.bin", 1000, status=503, status_times=1, retry_after=3600)
    policy = RetryPolicy(retries=2, backoff=0.01, max_retry_after=0.3)
    reg = mgr.fetch("racap", url, retries=policy).wait(10)
    assert_file(only_record(reg), "racap.bin", 1000)


def test_503_storm_recovers_and_shows_attempts_and_errors(srv, mgr):
    size = 50 * KiB
    url = srv.url("storm.bin", size, status=503, status_times=6)
    policy = RetryPolicy(retries=8, backoff=0.05, max_backoff=0.1)
    errors = []

    def watch(event):
        for r in event.registration.match_all():
            if r.error:
                errors.append((r.attempts, r.error, r["error"]))

    reg = mgr.fetch("storm", url, retries=policy)
    reg.add_event_listener("progress", watch)
    reg.wait(20)
    record = only_record(reg)
    assert_file(record, "storm.bin", size)
    assert record.attempts == 7
    assert errors, "the last error is visible on the record while it retries"
    assert all("503" in e[1] and e[1] == e[2] for e in errors)
    assert record["attempts"] == 7


def test_exhausted_status_retries_fail_with_bad_status_and_a_readable_body(srv, mgr):
    url = srv.url("always503.bin", 1000, status=503)
    policy = RetryPolicy(retries=2, backoff=0.01)
    reg = mgr.fetch("exhausted", url, retries=policy).wait(20)
    assert reg.result == "failure"
    assert reg.failure_reason == "bad-status"
    record = only_record(reg)
    assert record.attempts == 3
    assert len(srv.requests_for(url)) == 3
    assert record.response.status == 503
    assert not record.response.ok
    body = record.response.read()
    assert body  # the server's text body is kept and readable
    assert b"503" in body or b"Service" in body
    assert record["status"] == 503 and record["attempts"] == 3


def test_exhausted_connection_failures_fail_with_fetch_error(srv, mgr):
    """A server that never sends a byte of the body: no progress, so the policy ends it."""
    url = srv.url("nobody.bin", 5000, drop_after=0)
    policy = RetryPolicy(retries=3, backoff=0.01)
    reg = mgr.fetch("noprogress", url, retries=policy).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 4
    assert len(srv.requests_for(url)) == 4
    assert record.error and record["error"] == record.error
    # The headers did arrive (record.response has them); the body did not, so
    # response_ready is rejected, as in a browser (no complete response).
    assert record.response.status == 200
    with pytest.raises(FetchError, match="truncated"):
        record.response_ready.result(1)
    with pytest.raises(InvalidStateError):
        record.response.read()
    assert files_under(reg.dest) == {}


def test_progress_resets_the_retry_budget(srv, mgr):
    """retries counts failures WITHOUT progress: a flaky link that moves forward wins."""
    size = 200 * KiB
    url = srv.url("flaky.bin", size, drop_after=10 * KiB, drop_times=15)
    policy = RetryPolicy(retries=1, backoff=0.01)
    reg = mgr.fetch("flaky", url, retries=policy).wait(20)
    record = only_record(reg)
    assert_file(record, "flaky.bin", size)
    assert record.attempts == 16
    assert srv.bytes_sent_for(url) == size


def test_manager_wide_policy_applies_to_every_fetch(srv, tmp_path):
    policy = RetryPolicy(retries=1, backoff=0.01, read_timeout=0.3)
    with BackgroundFetchManager(home=tmp_path / "h", retries=policy) as m:
        stalled = srv.url("mgr-stall.bin", 50 * KiB, stall=3, stall_after=10 * KiB, stall_times=1)
        failing = srv.url("mgr-503.bin", 100, status=503)
        reg = m.fetch("mgr-policy", [stalled, failing]).wait(10)
        ok, bad = reg.match_all()
        assert ok.state == "success" and ok.attempts == 2
        assert bad.response.status == 503 and bad.attempts == 2
    with BackgroundFetchManager(home=tmp_path / "h2", retries=0) as m:
        url = srv.url("mgr-int.bin", 100, status=500, status_times=1)
        record = only_record(m.fetch("int-policy", url).wait(10))
        assert record.attempts == 1 and record.response.status == 500


def test_backoff_grows_with_jitter_and_retry_after_parses():
    from ipybgfetch._engine.retry import parse_retry_after

    policy = RetryPolicy(backoff=1.0, max_backoff=8.0)
    for failures, (low, high) in {1: (0.5, 1), 2: (1, 2), 3: (2, 4), 4: (4, 8), 9: (4, 8)}.items():
        delays = {policy.delay(failures) for _ in range(50)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1  # jitter
    assert policy.delay(3, retry_after=7) == 7
    assert RetryPolicy(max_retry_after=2).delay(1, retry_after=60) == 2
    assert parse_retry_after("120") == 120
    now = 1_700_000_000
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)
    with pytest.raises(TypeError):
        BackgroundFetchManager(retries="3")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# Stalls, truncation
# ------------------------------------------------------------------------------------------


def test_stalled_server_is_detected_by_the_read_timeout(srv, mgr):
    size = 300 * KiB
    url = srv.url("stall.bin", size, stall=5, stall_after=100 * KiB, stall_times=1)
    policy = RetryPolicy(retries=3, backoff=0.01, read_timeout=0.5)
    t0 = time.monotonic()
    reg = mgr.fetch("stall", url, retries=policy).wait(20)
    elapsed = time.monotonic() - t0
    record = only_record(reg)
    assert_file(record, "stall.bin", size)
    assert elapsed < 3.0, elapsed  # not the 5 s stall
    log = srv.requests_for(url)
    assert len(log) == 2
    assert log[1].headers["range"] == f"bytes={100 * KiB}-"
    assert record.attempts == 2


def test_stall_before_headers_is_a_timeout_too(srv, mgr):
    url = srv.url("slowheaders.bin", 1000, delay=5)
    policy = RetryPolicy(retries=1, backoff=0.01, read_timeout=0.3)
    t0 = time.monotonic()
    reg = mgr.fetch("slowheaders", url, retries=policy).wait(20)
    assert time.monotonic() - t0 < 3.0
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 2
    assert "timed out" in record.error.lower() or "timeout" in record.error.lower()


def test_truncated_bodies_are_never_marked_success(srv, mgr):
    """Content-Length larger than what is sent, every time: resumes make progress until
    the server sends nothing more; then the record fails. It never 'succeeds' short."""
    size = 100 * KiB
    url = srv.url("short.bin", size, short=30 * KiB)
    policy = RetryPolicy(retries=2, backoff=0.01)
    reg = mgr.fetch("short", url, retries=policy).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.state == "failure"
    assert record["ok"] is False or record["state"] == "failure"
    assert "truncated" in record.error or "closed" in record.error.lower(), record.error
    # No file at a final path (and no leftover .part) for a failed transfer.
    assert files_under(reg.dest) == {}


def test_truncated_once_then_complete(srv, mgr):
    size = 100 * KiB
    url = srv.url("short1.bin", size, short=1, drop_times=1)
    reg = mgr.fetch("short1", url).wait(20)
    assert_file(only_record(reg), "short1.bin", size)
    log = srv.requests_for(url)
    assert log[1].headers["range"] == f"bytes={size - 1}-"


# ------------------------------------------------------------------------------------------
# Non-idempotent requests
# ------------------------------------------------------------------------------------------


def test_post_with_body_is_not_retried_by_default(srv, mgr):
    body = b"x" * 50_000
    url = srv.echo_url(drop_after=1000, tag="post-default")
    reg = mgr.fetch("post", Request(url, method="POST", body=body)).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 1
    assert "retry_non_idempotent" in record.error
    assert len(srv.requests_for(url)) == 1


def test_post_status_is_not_retried_by_default(srv, mgr):
    url = srv.echo_url(status=503, status_times=1, tag="post-503")
    reg = mgr.fetch("post503", Request(url, method="POST", body=b"abc")).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "bad-status")
    record = only_record(reg)
    assert record.attempts == 1 and record.response.status == 503
    assert len(srv.requests_for(url)) == 1


def test_put_with_body_is_not_retried_by_default(srv, mgr):
    url = srv.echo_url(drop_after=10, tag="put-default")
    reg = mgr.fetch("put", Request(url, method="PUT", body=b"y" * 5000)).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    assert only_record(reg).attempts == 1
    assert len(srv.requests_for(url)) == 1


@pytest.mark.parametrize("method", ["DELETE", "PUT", "OPTIONS"])
def test_only_get_is_retried_after_a_network_error(srv, mgr, method):
    # docs/architecture.md §3: a network error is retried/resumed for a GET, otherwise
    # fetch-error (a DELETE or a bodiless PUT may have had its effect already).
    url = srv.url("once.bin", 100_000, drop_after=1000, drop_times=1, tag=f"only-{method}")
    reg = mgr.fetch(f"once-{method}", Request(url, method=method)).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 1 and len(srv.requests_for(url)) == 1
    assert "only GET requests are" in record.error and "retry_non_idempotent" in record.error


def test_a_head_is_not_retried_after_a_network_error(mgr):
    url = f"http://127.0.0.1:{closed_port()}/x.bin"
    reg = mgr.fetch("head-refused", Request(url, method="HEAD")).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 1 and "only GET requests are" in record.error


def test_a_delete_is_retried_when_the_user_opts_in(srv, mgr):
    url = srv.url("optin.bin", 100_000, drop_after=1000, drop_times=1, tag="delete-optin")
    policy = RetryPolicy(retries=2, backoff=0.01, retry_non_idempotent=True)
    reg = mgr.fetch("delete-optin", Request(url, method="DELETE"), retries=policy).wait(20)
    assert reg.result == "success", only_record(reg).error
    assert only_record(reg).attempts == 2


def test_post_is_retried_when_the_user_opts_in(srv, mgr):
    body = bytes(range(256)) * 400
    url = srv.echo_url(drop_after=1000, drop_times=1, tag="post-optin")
    policy = RetryPolicy(retries=3, backoff=0.01, retry_non_idempotent=True)
    reg = mgr.fetch("post-optin", Request(url, method="POST", body=body), retries=policy)
    reg.wait(20)
    assert reg.result == "success", only_record(reg).error
    record = only_record(reg)
    assert record.attempts == 2
    assert record.response.read() == body
    log = srv.requests_for(url)
    assert len(log) == 2
    assert "range" not in log[1].headers  # a POST restarts from zero
    assert [r.bytes_received for r in log] == [len(body), len(body)]
    assert reg.uploaded == reg.upload_total == len(body)


# ------------------------------------------------------------------------------------------
# Offline: connection refused, and a server that comes back
# ------------------------------------------------------------------------------------------


def test_connection_refused_retries_then_fails_with_fetch_error(mgr):
    port = closed_port()
    policy = RetryPolicy(retries=3, backoff=0.05, max_backoff=0.1)
    t0 = time.monotonic()
    reg = mgr.fetch("offline", f"http://127.0.0.1:{port}/data.bin", retries=policy).wait(20)
    elapsed = time.monotonic() - t0
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert record.attempts == 4
    assert "ConnectError" in record.error
    assert elapsed >= 0.05  # it waited between the attempts
    with pytest.raises(FetchError):
        record.response_ready.result(1)


def test_offline_then_online_resumes(mgr):
    """The network goes away mid-download and comes back: the record waits, then
    continues from the bytes it has (the spec's pause on network loss)."""
    port = closed_port()
    size = 1 * MiB
    policy = RetryPolicy(retries=30, backoff=0.05, max_backoff=0.1)
    first = DataServer(port=port).start()
    try:
        url = first.url("netloss.bin", size, throttle=2 * MiB)
        reg = mgr.fetch("netloss", url, retries=policy)
        wait_until(lambda: reg.downloaded > 200 * KiB, 10, "some bytes")
    finally:
        first.stop()  # cuts the connection; new connections are refused
    got = reg.downloaded
    record = only_record(reg)
    wait_until(lambda: record.attempts >= 3, 10, "retries while offline")
    assert reg.result == "" and record.error
    assert reg.downloaded == got
    second = DataServer(port=port).start()
    try:
        reg.wait(20)
        assert_file(record, "netloss.bin", size)
        log = second.requests_for(url)
        assert log[0].headers["range"] == f"bytes={got}-"
        assert second.bytes_sent_for(url) == size - got
    finally:
        second.stop()


# ------------------------------------------------------------------------------------------
# Pause / resume
# ------------------------------------------------------------------------------------------


def test_pause_and_resume_continue_from_the_bytes_on_disk(srv, mgr):
    size = 2 * MiB
    url = srv.url("pause.bin", size, throttle=4 * MiB)
    reg = mgr.fetch("pause", url)
    wait_until(lambda: reg.downloaded > 300 * KiB, 10, "some bytes")
    assert reg.pause() is True
    assert reg.pause() is False
    assert reg.state == "paused"
    record = only_record(reg)
    assert record.state == "paused"
    at_pause = reg.downloaded
    time.sleep(0.3)
    assert reg.downloaded == at_pause  # nothing moves while paused
    part = Path(str(record.response.path) + ".part")
    assert part.stat().st_size == at_pause
    assert not record.response.path.exists()
    assert reg.resume() is True
    assert reg.resume() is False
    reg.wait(20)
    assert_file(record, "pause.bin", size)
    assert record.response.status == 200  # the resumed body keeps its 200 response
    log = srv.requests_for(url)
    assert len(log) == 2
    assert log[1].headers["range"] == f"bytes={at_pause}-"
    # The resumed request sent exactly the missing bytes. (What the server had already
    # pushed into the loopback socket buffers at the pause is lost, as on any network.)
    assert log[1].bytes_sent == size - at_pause


def test_pause_and_resume_many_records(srv, mgr):
    """Pause mid-way through 12 records (6 connections per host): every unfinished one
    resumes from its own .part; finished ones are not fetched again."""
    size = 600 * KiB
    urls = [srv.url(f"multi{i}.bin", size + i, throttle=3 * MiB) for i in range(12)]
    reg = mgr.fetch("multi", urls)
    wait_until(lambda: reg.downloaded > 1 * MiB, 10, "some bytes")
    assert reg.pause()
    states = {r.request.url: r.state for r in reg.match_all()}
    assert "paused" in states.values()
    on_disk = {r.request.url: r._data.downloaded for r in reg.match_all()}
    assert reg.resume()
    reg.wait(30)
    assert reg.result == "success"
    for i, (url, record) in enumerate(zip(urls, reg.match_all(), strict=True)):
        assert_file(record, f"multi{i}.bin", size + i)
        log = srv.requests_for(url)
        if states[url] == "success":
            assert len(log) == 1
        elif on_disk[url]:
            assert log[-1].headers["range"] == f"bytes={on_disk[url]}-"


def test_redirected_download_resumes(srv, mgr):
    size = 300 * KiB
    url = srv.url("moved.bin", size, redirect=2, drop_after=100 * KiB, drop_times=1)
    reg = mgr.fetch("moved", url).wait(20)
    record = only_record(reg)
    assert_file(record, "moved.bin", size)
    assert record.response.url != url  # the final URL of the chain
    log = srv.requests_for("/gen/307200/moved.bin")
    assert sum(r.bytes_sent for r in log if r.status in (200, 206)) == size
    assert [r.status for r in log if r.status in (200, 206)] == [200, 206]


def test_abort_while_paused(srv, mgr):
    url = srv.url("pause-abort.bin", 2 * MiB, throttle=4 * MiB)
    reg = mgr.fetch("pause-abort", url)
    wait_until(lambda: reg.downloaded > 100 * KiB, 10, "some bytes")
    assert reg.pause()
    assert reg.abort() is True
    assert (reg.result, reg.failure_reason) == ("failure", "aborted")
    assert files_under(reg.dest) == {}


# ------------------------------------------------------------------------------------------
# Integrity across resumes
# ------------------------------------------------------------------------------------------


def test_integrity_checked_over_the_whole_resumed_file(srv, mgr):
    size = 300 * KiB
    url = srv.url("sri.bin", size, drop_after=70 * KiB, drop_times=3)
    request = Request(url, integrity=DataServer.sri("sri.bin", size, "sha384"))
    reg = mgr.fetch("sri", request).wait(20)
    assert_file(only_record(reg), "sri.bin", size)
    assert srv.bytes_sent_for(url) == size


def test_integrity_mismatch_downloads_again_once_then_fails(srv, mgr):
    size = 100 * KiB
    url = srv.url("wrong.bin", size)
    request = Request(url, integrity=DataServer.sri("other.bin", size))
    reg = mgr.fetch("wrong", request).wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
    record = only_record(reg)
    assert "integrity" in record.error
    log = srv.requests_for(url)
    assert len(log) == 2 and all("range" not in r.headers for r in log)
    assert files_under(reg.dest) == {}  # no final file, no .part left behind


def test_corrupted_part_is_caught_and_downloaded_again(srv, mgr):
    """A resumed file is verified as a whole: bytes on disk that went bad while paused
    fail the check, and the record downloads again from zero (once) and succeeds."""
    size = 1 * MiB
    url = srv.url("bitrot.bin", size, throttle=3 * MiB)
    request = Request(url, integrity=DataServer.sri("bitrot.bin", size))
    reg = mgr.fetch("bitrot", request)
    wait_until(lambda: reg.downloaded > 200 * KiB, 10, "some bytes")
    assert reg.pause()
    record = only_record(reg)
    part = Path(str(record.response.path) + ".part")
    with open(part, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert reg.resume()
    reg.wait(20)
    assert_file(record, "bitrot.bin", size)
    log = srv.requests_for(url)
    assert len(log) == 3
    assert log[1].headers["range"].startswith("bytes=")
    assert "range" not in log[2].headers  # the whole file again, after the mismatch


# ------------------------------------------------------------------------------------------
# Durable state in this process; credentials never written
# ------------------------------------------------------------------------------------------


def test_credentials_never_reach_the_database(srv, tmp_path):
    home = tmp_path / "home"
    token = "Bearer s3cr3t-T0KEN-" + "x" * 20
    cookie = "session=c00kie-V4LUE-abcdef"
    basic_password = "pa55w0rd-B4SIC-zzz"
    with BackgroundFetchManager(home=home, retries=FAST) as m:
        url = srv.url("cred.bin", 200 * KiB, drop_after=50 * KiB, drop_times=1)
        reg = m.fetch(
            "cred",
            [
                Request(url, headers={"Authorization": token, "Accept-Language": "visible"}),
                Request(srv.url("cred2.bin", 1000), headers={"Cookie": cookie}),
                Request(
                    srv.url("cred3.bin", 1000),
                    headers={"Proxy-Authorization": "Basic cHJveHk6cHJveHktUDQ1Uw=="},
                ),
            ],
            headers={"Authorization": token},
        ).wait(20)
        assert reg.result == "success"
        assert srv.requests_for(url)[0].headers["authorization"] == token
        assert srv.requests_for(url)[1].headers["authorization"] == token  # the resume too
        url4 = srv.url("cred4.bin", 1000)
        reg2 = m.fetch("cred-auth", url4, auth=httpx.BasicAuth("user", basic_password))
        assert reg2.wait(20).result == "success"
        assert srv.requests_for(url4)[0].headers["authorization"].startswith("Basic ")
        m._engine.run(_noop())
        wal = sorted(home.glob("state.sqlite3*"))
        assert any(p.name.endswith("-wal") for p in wal) or wal
        blobs = b"".join(p.read_bytes() for p in wal)
        assert b"visible" in blobs  # a header of the allowlist is stored
        basic = srv.requests_for(url4)[0].headers["authorization"].split()[1]
        for secret in (token, cookie, basic_password, basic, "cHJveHk6cHJveHktUDQ1Uw==", "s3cr3t"):
            assert secret.encode() not in blobs, secret
    blobs = b"".join(p.read_bytes() for p in sorted(home.glob("state.sqlite3*")))
    for secret in (token, cookie, basic_password, "s3cr3t", "c00kie"):
        assert secret.encode() not in blobs, secret


async def _noop():
    return None


def test_many_records_one_flaky_host(srv, mgr):
    """200 small files through 6 connections, a third of them dropped once."""
    urls = [
        srv.url(f"many{i}.csv", 2000 + i, **({"drop_after": 999, "drop_times": 1} if i % 3 else {}))
        for i in range(200)
    ]
    reg = mgr.fetch("many", urls).wait(30)
    assert reg.result == "success"
    for i, record in enumerate(reg.match_all()):
        assert sha256_file(record.response.path) == DataServer.sha256(f"many{i}.csv", 2000 + i)
