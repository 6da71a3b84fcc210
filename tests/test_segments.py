"""Segmented downloads (issue 17): one file over several connections, over real loopback HTTP.

The DataServer caps each connection (``rate_limit``/``throttle``) so that connections
overlap long enough to be seen (``srv.peak_responses``); its request log shows every
range asked for, and the bytes sent for each.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from resilience_support import LEASE_TIMEOUT, Worker, sha256_file, wait_until

from ipybgfetch import BackgroundFetchManager, Request, RetryPolicy
from ipybgfetch.testing import DataServer

MiB = 1024 * 1024
FAST = RetryPolicy(retries=5, backoff=0.02, max_backoff=0.1)


@pytest.fixture
def srv():
    with DataServer() as server:
        yield server


def ranges(srv: DataServer, url: str) -> list[tuple[int, int]]:
    out = []
    for r in srv.requests_for(url):
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", r.headers.get("range", ""))
        if m:
            out.append((int(m.group(1)), int(m.group(2) or -1)))
    return out


def open_part_files() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".part"):
            out.append(target)
    return out


def test_a_96_mib_file_over_several_connections_is_exact(srv, tmp_path):
    size = 96 * MiB
    url = srv.url("big.bin", size, throttle=24 * MiB)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=8, retries=FAST) as mgr:
        reg = mgr.fetch("big", url).wait(60)
        assert (reg.result, reg.failure_reason) == ("success", "")
        rec = reg.match_all()[0]
        assert sha256_file(rec.response.path) == DataServer.sha256("big.bin", size)
        assert rec["sha256"] == DataServer.sha256("big.bin", size)
        assert rec.response.status == 200 and rec.response.path.stat().st_size == size
        assert reg.downloaded == size
    assert srv.peak_responses >= 4
    asked = ranges(srv, url)
    assert len(asked) >= 3 and all(a > 0 for a, _ in asked)  # byte 0 came with the first
    # a range cut short for a free connection wastes what was on its way: a few MiB
    assert srv.bytes_sent_for(url) <= size * 1.1
    assert not list(tmp_path.rglob("*.part"))


def test_defaults_split_a_big_file_and_leave_small_ones_alone(srv, tmp_path):
    size = 32 * MiB  # >= 2 x the default minimum segment size (4 MiB)
    big = srv.url("default.bin", size, throttle=32 * MiB)
    small = srv.url("small.bin", 7 * MiB, throttle=64 * MiB)  # under 2 x 4 MiB: one stream
    with BackgroundFetchManager(home=tmp_path, retries=FAST) as mgr:
        reg = mgr.fetch("d", [big, small]).wait(60)
        assert reg.result == "success"
    assert len(srv.requests_for(small)) == 1 and not ranges(srv, small)
    assert len(ranges(srv, big)) >= 2  # up to the per-host budget (6)
    assert sha256_file(tmp_path / "files" / "d" / "default.bin") == DataServer.sha256(
        "default.bin", size
    )


def test_segments_knob_one_means_one_stream(srv, tmp_path):
    url = srv.url("one.bin", 20 * MiB)
    with BackgroundFetchManager(home=tmp_path, retries=FAST) as mgr:
        reg = mgr.fetch("one", url, segments=1, min_segment_size="1MiB").wait(60)
        assert reg.result == "success"
        with pytest.raises(TypeError, match="segments must be an int"):
            mgr.fetch("bad", url, segments=0)
        with pytest.raises(TypeError, match="min_segment_size"):
            mgr.fetch("bad", url, min_segment_size="lots")
    assert len(srv.requests_for(url)) == 1


def test_drops_on_several_segments_are_retried_alone(srv, tmp_path):
    size = 24 * MiB
    # the first 5 requests (the first response and 4 ranges) break after 256 KiB each
    cut = 256 * 1024
    url = srv.url("drops.bin", size, throttle=16 * MiB, drop_after=cut, drop_times=5)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=6, retries=FAST) as mgr:
        reg = mgr.fetch("drops", url, min_segment_size="2MiB").wait(60)
        assert reg.result == "success", reg.match_all()[0]["error"]
        rec = reg.match_all()[0]
        assert sha256_file(rec.response.path) == DataServer.sha256("drops.bin", size)
        assert reg.downloaded == size
    log = srv.requests_for(url)
    dropped = [
        int(re.match(r"bytes=(\d+)", r.headers.get("range", "bytes=0")).group(1)) + cut
        for r in log[:5]
    ]
    resumed = {a for a, _ in ranges(srv, url)}
    assert len(dropped) == 5 and set(dropped) <= resumed  # each went on where it broke
    # nothing fetched twice, but what was on its way when a range was cut short (the
    # first response's, the end's): about a MiB per connection here
    assert srv.bytes_sent_for(url) <= size + 8 * MiB


@pytest.mark.parametrize("how", ["ignore_range", "gzip", "no_length"])
def test_servers_that_cannot_split_get_one_stream(srv, tmp_path, how):
    size = 12 * MiB
    # slow enough to be worth splitting, if the server could
    url = srv.url("plain.bin", size, throttle=8 * MiB, **{how: 1})
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=4, retries=FAST) as mgr:
        reg = mgr.fetch("plain", url, min_segment_size="1MiB").wait(60)
        assert reg.result == "success", reg.match_all()[0]["error"]
        rec = reg.match_all()[0]
        assert sha256_file(rec.response.path) == DataServer.sha256("plain.bin", size)
        assert rec["attempts"] == 1  # never started again
        assert reg.downloaded == size
    log = srv.requests_for(url)
    if how == "ignore_range":
        # it says Accept-Ranges but answers ranges with the whole file: the first
        # response goes on to the end, the others are dropped at once
        assert 2 <= len(log) <= 4 and "range" not in log[0].headers
        assert srv.bytes_sent_for(url) <= size + 3 * 4 * MiB
    else:
        assert len(log) == 1


def test_an_etag_change_midway_gives_one_consistent_version(srv, tmp_path):
    size = 16 * MiB
    # requests after the 3rd see a new version (new ETag, new bytes)
    url = srv.url("moving.bin", size, throttle=16 * MiB, etag_change_after=3)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=6, retries=FAST) as mgr:
        reg = mgr.fetch("moving", url, min_segment_size="1MiB").wait(60)
        assert reg.result == "success", reg.match_all()[0]["error"]
        path = reg.match_all()[0].response.path
        assert sha256_file(path) == DataServer.sha256("moving.bin", size, generation=1)
        assert reg.match_all()[0]["sha256"] == DataServer.sha256("moving.bin", size, generation=1)


def test_a_signed_url_that_expires_midway(srv, tmp_path):
    size = 16 * MiB
    # 4 ranges of 4 MiB at 4 MiB/s; the first one stalls for a second, so free connections
    # take half of it once their own range is done: by then the signature has expired
    url = srv.url(
        "signed.bin", size, throttle=4 * MiB, signed=0.3, stall=1.0, stall_after=MiB, stall_times=1
    )
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=4, retries=FAST) as mgr:
        reg = mgr.fetch("signed", url, min_segment_size="2MiB").wait(60)
        assert reg.result == "success", reg.match_all()[0]["error"]
        rec = reg.match_all()[0]
        assert sha256_file(rec.response.path) == DataServer.sha256("signed.bin", size)
        assert rec.response.url != url and "expires=" in rec.response.url
    log = srv.requests
    expired = [r for r in log if r.status == 403]
    assert expired, "the signature never expired during the download"
    fresh = [r for r in log if "expires" not in r.query and r.time > expired[0].time]
    assert fresh, "no segment went back to the original URL for a fresh signature"
    before = [r for r in log if "range" in r.headers and r.time < expired[0].time]
    assert before and all("expires" in r.query for r in before)  # to the final URL


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
def test_integrity_holds_over_segments(srv, tmp_path, algo):
    size = 24 * MiB
    good = srv.url("sri.bin", size, throttle=16 * MiB)
    bad = srv.url("sri.bin", size, throttle=16 * MiB, tag="bad")
    wrong = DataServer.sri("other.bin", 10, algo)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=6, retries=FAST) as mgr:
        ok = mgr.fetch(
            "ok",
            Request(good, integrity=DataServer.sri("sri.bin", size, algo)),
            min_segment_size="1MiB",
        ).wait(60)
        assert ok.result == "success", ok.match_all()[0]["error"]
        assert ok.match_all()[0]["sha256"] == DataServer.sha256("sri.bin", size)
        failed = mgr.fetch("bad", Request(bad, integrity=wrong), min_segment_size="1MiB").wait(60)
        assert (failed.result, failed.failure_reason) == ("failure", "fetch-error")
        assert "integrity" in failed.match_all()[0]["error"]
    assert len(ranges(srv, good)) >= 3  # it was split
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("sri*.bin"))[1:]


def test_one_big_file_does_not_starve_other_registrations(srv, tmp_path):
    """The host's budget is shared: a split file takes free slots only, and gives an
    extra one back after its piece when others wait; its own connection keeps going."""
    size = 64 * MiB  # at 2 MiB/s per connection: 8 s on 4 connections, in 4 MiB pieces
    big = srv.url("hog.bin", size, throttle=2 * MiB)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=4, retries=FAST) as mgr:
        hog = mgr.fetch("hog", big, min_segment_size="1MiB")
        wait_until(lambda: srv.active_responses >= 4, 20, "the big file on 4 connections")
        small = [srv.url(f"s{i}.csv", 50_000) for i in range(20)]
        t = time.monotonic()
        many = mgr.fetch("many", small).wait(30)
        took = time.monotonic() - t
        assert many.result == "success"
        # a slot came free at the end of a piece (<= 2 s), not when the big file ran out
        # of work to hand out (~7 s)
        assert took < 4.5, took
        assert hog.state == "active"
        assert hog._job.records[0].connections >= 1  # and the big file went on meanwhile
        before = hog.downloaded
        wait_until(lambda: hog.downloaded > before + MiB, 10, "the big file going on")
        hog.abort()


def test_ranges_that_keep_failing_fail_the_record_plainly(srv, tmp_path):
    # the first response streams; every request after it answers 503
    url = srv.url("failing.bin", 16 * MiB, throttle=8 * MiB, status=503, status_after=1)
    policy = RetryPolicy(retries=2, backoff=0.02, max_backoff=0.05)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=4, retries=policy) as mgr:
        reg = mgr.fetch("failing", url, min_segment_size="1MiB").wait(60)
        assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
        error = reg.match_all()[0]["error"]
        assert "503" in error and "internal error" not in error, error
    assert len(ranges(srv, url)) >= 3  # it was split, and the ranges were retried


def test_download_total_counts_bytes_of_every_segment(srv, tmp_path):
    # two files each under the cap (a Content-Length over it alone is refused before a
    # byte is fetched, issue #15), together over it: the segments' bytes add up
    size = 8 * MiB
    urls = [srv.url(f"capped{i}.bin", size, throttle=16 * MiB) for i in range(2)]
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=8, retries=FAST) as mgr:
        reg = mgr.fetch("capped", urls, min_segment_size="1MiB", download_total=12 * MiB).wait(60)
        assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded")
        assert reg.downloaded <= 12 * MiB
    assert srv.peak_responses >= 4  # the bytes came over several connections
    assert not list(tmp_path.rglob("*.part"))


def test_abort_with_16_segments_in_flight_leaves_no_writer(srv, tmp_path):
    size = 64 * MiB
    url = srv.url("abort.bin", size, throttle=2 * MiB)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=16, retries=FAST) as mgr:
        reg = mgr.fetch("abort", url, min_segment_size="1MiB")
        wait_until(lambda: srv.active_responses >= 16, 20, "16 connections at once")
        assert reg._snapshot()["records"][0]["connections"] == 16  # what the panel shows
        assert reg.abort() is True
        reg.wait(10)
        assert reg.failure_reason == "aborted"
        assert open_part_files() == []  # no descriptor left open on the .part
        time.sleep(0.3)
        assert not list(tmp_path.rglob("*.part"))  # and no late write brought it back
        wait_until(lambda: srv.active_responses == 0, 5, "every connection closed")


def test_pause_stops_every_segment_and_resume_requests_only_what_is_missing(srv, tmp_path):
    size = 32 * MiB
    url = srv.url("paused.bin", size, throttle=8 * MiB)
    with BackgroundFetchManager(home=tmp_path, max_connections_per_host=8, retries=FAST) as mgr:
        reg = mgr.fetch("paused", url, min_segment_size="1MiB")
        wait_until(lambda: reg.downloaded > 8 * MiB, 20, "8 MiB downloaded")
        assert reg.pause() is True
        wait_until(lambda: srv.active_responses == 0, 5, "every connection closed")
        sent_before = srv.bytes_sent_for(url)
        assert reg.resume() is True
        reg.wait(60)
        assert reg.result == "success"
        assert sha256_file(reg.match_all()[0].response.path) == DataServer.sha256(
            "paused.bin", size
        )
    assert srv.bytes_sent_for(url) - sent_before <= size - sent_before + 8 * MiB


@pytest.mark.slow
def test_kill9_then_a_new_process_requests_only_what_is_missing(srv, tmp_path, monkeypatch):
    monkeypatch.setenv("IPYBGFETCH_LEASE_TIMEOUT", str(LEASE_TIMEOUT))
    home = tmp_path / "home"
    size = 96 * MiB
    url = srv.url("killed.bin", size, throttle=8 * MiB)
    spec = {
        "home": str(home),
        "manager": {"max_connections_per_host": 8},
        "fetches": [{"id": "big", "urls": [url], "options": {"min_segment_size": 4 * MiB}}],
    }
    with Worker(spec) as w:
        w.wait_for_registration("big", lambda r: r["downloaded"] > 40 * MiB, 30)
        time.sleep(1.2)  # a checkpoint (every second) has the written ranges
        w.kill()
    sent_first = srv.bytes_sent_total
    srv.reset()
    with BackgroundFetchManager(home=home, retries=FAST, max_connections_per_host=8) as mgr:
        reg = mgr.registrations()[0]
        reg.wait(60)
        assert reg.result == "success", reg.match_all()[0]["error"]
        path = reg.match_all()[0].response.path
        assert sha256_file(path) == DataServer.sha256("killed.bin", size)
    sent_again = srv.bytes_sent_total
    assert sent_again < size - 30 * MiB, (sent_first, sent_again)
    assert all("if-range" in r.headers for r in srv.requests)  # only ranges, with validators
    assert not Path(str(path) + ".part").exists()
