"""Notebook workflows (issue 16), in one process over real loopback HTTP: a re-run costs
nothing, force re-downloads in place, delete removes one, retry re-fetches only the failed
records, logging, and the text repr. Cross-process and kernel cases: test_kernel_workflow.py.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pytest

import ipybgfetch
from ipybgfetch.testing import DataServer


def _gets(server: DataServer, url: str) -> int:
    return sum(1 for r in server.requests_for(url) if r.method == "GET")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_rerun_returns_the_settled_registration_without_a_request(mgr, server, tmp_path):
    url = server.url("tiny.csv", 335, tag=uuid.uuid4().hex)
    dest = tmp_path / "dl"
    first = mgr.fetch("dl", url, dest=dest).wait(10)
    assert first.result == "success" and not first.reused
    assert first.snapshot()["already_downloaded"] is None
    again = mgr.fetch("dl", url, dest=str(dest))
    assert again is first  # the same settled registration, at once
    assert again.reused and again.settled
    assert again.snapshot()["already_downloaded"] == first.finished
    assert "already downloaded 20" in repr(again) and "\n" not in repr(again)
    assert _gets(server, url) == 1
    assert _files(dest) == ["tiny.csv"]  # no tiny-2.csv
    assert [r.id for r in mgr.registrations()] == ["dl"]


def test_rerun_downloads_again_when_the_file_is_gone_or_changed(mgr, server, tmp_path):
    url = server.url("gone.bin", 2000, tag=uuid.uuid4().hex)
    dest = tmp_path / "dl"
    first = mgr.fetch("g", url, dest=dest).wait(10)
    path = first.match(url).response.path
    path.unlink()
    second = mgr.fetch("g", url, dest=dest).wait(10)
    assert second is not first and second.result == "success"
    assert _gets(server, url) == 2
    assert _files(dest) == ["gone.bin"]  # the same name again, not gone-2.bin
    # same size, other bytes: only checksum=True notices
    path.write_bytes(b"x" * 2000)
    assert mgr.fetch("g", url, dest=dest) is second
    third = mgr.fetch("g", url, dest=dest, checksum=True).wait(10)
    assert third is not second and _gets(server, url) == 3
    assert path.read_bytes() == server.content("gone.bin", 2000)


def test_force_downloads_again_in_place_and_replaces_the_registration(mgr, server, tmp_path):
    url = server.url("f.bin", 5000, tag=uuid.uuid4().hex)
    dest = tmp_path / "dl"
    first = mgr.fetch("f", url, dest=dest).wait(10)
    path = first.match(url).response.path
    old_inode = path.stat().st_ino
    second = mgr.fetch("f", url, dest=dest, force=True).wait(10)
    assert second is not first and second.result == "success"
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one
    second = mgr.fetch("f", url, dest=dest, force=True).wait(10)  # twice: still one
    assert _gets(server, url) == 3
    assert _files(dest) == ["f.bin"]  # replaced, never f-2.bin
    assert second.match(url).response.path == path
    assert path.read_bytes() == server.content("f.bin", 5000)
    # the new one took over every file: the old ones are gone from every listing
    assert mgr.registrations() == [second]
    assert not first.records_available
    assert mgr.delete("f") == 1  # and one delete removes the file
    assert mgr.registrations() == [] and not path.exists()


def test_different_requests_replace_the_old_registration_in_listings(mgr, server, tmp_path):
    tag = uuid.uuid4().hex
    a, b, c = (server.url(f"{n}.bin", 100, tag=tag) for n in "abc")
    dest = tmp_path / "dl"
    old = mgr.fetch("set", [a, c], dest=dest).wait(10)
    new = mgr.fetch("set", [a, b], dest=dest).wait(10)
    assert new is not old
    assert mgr.registrations(replaced=False) == [new]
    assert mgr.registrations() == [old, new]  # old still has c.bin of its own
    assert _files(dest) == ["a.bin", "b.bin", "c.bin"]  # a.bin rewritten in place
    assert mgr.delete("set") == 1  # the latest only; a.bin stays for the old one
    assert mgr.registrations() == [old]
    assert _files(dest) == ["a.bin", "c.bin"]
    assert mgr.delete("set", all=True) == 1
    assert mgr.registrations() == [] and not dest.exists()
    # a superset takes over every file of the old one: one registration
    old = mgr.fetch("sup", [a], dest=dest).wait(10)
    new = mgr.fetch("sup", [a, b], dest=dest).wait(10)
    assert mgr.registrations() == [new]


def test_retry_refetches_only_the_failed_records(mgr, server, tmp_path, caplog):
    tag = uuid.uuid4().hex
    good = server.url("good.csv", 300, tag=tag)
    flaky = server.url("flaky.csv", 400, status=404, status_times=1, tag=tag)
    reg = mgr.fetch("r", [good, flaky], dest=tmp_path / "dl").wait(10)
    assert (reg.result, reg.failure_reason) == ("failure", "bad-status")
    with caplog.at_level(logging.INFO, logger="ipybgfetch"):
        assert reg.retry() == 1
        assert not reg.settled and reg.result == ""
        reg.wait(10)
    assert (reg.result, reg.failure_reason) == ("success", "")
    assert _gets(server, good) == 1 and _gets(server, flaky) == 2
    records = reg.match_all()
    assert [r.response.status for r in records] == [200, 200]
    assert records[1].response.read() == server.content("flaky.csv", 400)
    assert reg.downloaded == 700
    assert _files(tmp_path / "dl") == ["flaky.csv", "good.csv"]
    assert reg.retry() == 0  # nothing failed any more
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying 1 failed records" in m for m in messages)
    assert any("flaky.csv" in m and "done (400 bytes, status 200)" in m for m in messages)
    assert any("settled success" in m for m in messages)
    # an active registration cannot be retried
    slow = mgr.fetch("slow", server.url("s.bin", 500_000, throttle=100_000, tag=tag))
    with pytest.raises(ipybgfetch.InvalidStateError, match="wait"):
        slow.retry()
    slow.abort()


def test_logging_reports_retries_with_reason_and_delay_and_success(mgr, server, caplog):
    url = server.url("r.bin", 1000, status=503, status_times=1, tag=uuid.uuid4().hex)
    with caplog.at_level(logging.DEBUG, logger="ipybgfetch"):
        reg = mgr.fetch("logged", url, retries=ipybgfetch.RetryPolicy(retries=2, backoff=0.01))
        reg.wait(10)
    assert reg.result == "success"
    messages = [r.getMessage() for r in caplog.records if r.name == "ipybgfetch"]
    retry = [m for m in messages if "retrying" in m and "503" in m]
    assert retry and " s (attempt 1 failed" in retry[0]
    assert any("starting 1 of 1 records" in m for m in messages)
    assert any(f"{url} done (1000 bytes, status 200)" in m for m in messages)
    assert any("logged: settled success" in m for m in messages)
    # nothing per chunk at INFO: a handful of lines for one file
    assert len([r for r in caplog.records if r.levelno >= logging.INFO]) < 10


def test_logging_reports_the_resume_offset(mgr, server, caplog):
    url = server.url("d.bin", 200_000, drop_after=50_000, drop_times=1, tag=uuid.uuid4().hex)
    with caplog.at_level(logging.INFO, logger="ipybgfetch"):
        reg = mgr.fetch("resumed", url, retries=ipybgfetch.RetryPolicy(retries=3, backoff=0.01))
        reg.wait(10)
    assert reg.result == "success"
    assert any(
        "resuming" in r.getMessage() and "at byte 50000" in r.getMessage() for r in caplog.records
    )


def test_repr_shows_the_size_and_the_cap_apart(mgr, server):
    reg = mgr.fetch("capped", server.url("c.bin", 8, tag=uuid.uuid4().hex), download_total="2GB")
    reg.wait(10)
    text = repr(reg)
    assert "8 B / 8 B (100%)" in text and "cap 2.0 GB" in text.replace("1.9 GiB", "2.0 GB")
    assert "\n" not in text


def test_wait_draws_nothing_when_not_a_terminal(mgr, server, capfd):
    reg = mgr.fetch("quiet", server.url("q.bin", 100_000, throttle=200_000, tag="q"))
    reg.wait(10)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_lines_render_bytes_rate_eta_and_files(mgr, server):
    import io
    import time

    from ipybgfetch._console import ProgressLines

    reg = mgr.fetch("lines", server.url("l.bin", 400_000, throttle=200_000, tag="l"))
    stream = io.StringIO()
    lines = ProgressLines([reg], stream)
    deadline = time.monotonic() + 10
    while not reg.settled and time.monotonic() < deadline:
        lines.draw()
        time.sleep(0.2)
    lines.draw(final=True)
    text = stream.getvalue()
    frames = [f for f in text.split("\r") if f]
    assert len(frames) >= 5
    assert any("/s" in f and "ETA" in f and "0/1 files" in f for f in frames)
    assert frames[-1].startswith("lines: 390.6 KiB / 390.6 KiB (100%)  1/1 files  success")
    assert os.linesep in text or "\n" in text


def test_progress_lines_keep_one_line_per_registration(mgr, server):
    import io

    from ipybgfetch._console import wait_with_progress

    tag = uuid.uuid4().hex
    regs = [
        mgr.fetch(f"multi{i}", server.url(f"m{i}.bin", 300_000, throttle=300_000, tag=tag))
        for i in range(2)
    ]
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    wait_with_progress(regs, timeout=20, stream=stream)
    text = stream.getvalue()
    assert all(r.result == "success" for r in regs)
    assert text.count("\x1b[1A") >= 2  # redraws go back up to the first of the two lines
    last = text.rsplit("\x1b[1A", 1)[-1]
    lines = [line for line in last.replace("\r", "").split("\n") if line]
    assert [line.split(":")[0] for line in lines] == ["multi0", "multi1"]
    assert all("success" in line for line in lines)


def test_a_timeout_while_drawing_progress_names_the_timeout(mgr, server, monkeypatch):
    monkeypatch.setenv("IPYBGFETCH_PROGRESS", "1")  # draw, even into pytest's capture
    reg = mgr.fetch("slowly", server.url("s.bin", 2_000_000, throttle=200_000, tag="tmo"))
    with pytest.raises(TimeoutError, match=r"'slowly' is still active after 0.5 s"):
        reg.wait(timeout=0.5, progress=True)
    reg.abort()


def test_the_progress_line_shows_a_record_waiting_to_retry(mgr, server):
    import io

    from ipybgfetch._console import ProgressLines

    url = server.url("r.bin", 1000, status=503, retry_after=30, tag=uuid.uuid4().hex)
    reg = mgr.fetch("later", url, retries=ipybgfetch.RetryPolicy(retries=3, max_retry_after=60))
    deadline = time.monotonic() + 10
    while not reg.retrying and time.monotonic() < deadline:
        time.sleep(0.05)
    ((where, why, seconds),) = reg.retrying
    assert where == url and "503" in why and 25 < seconds <= 30
    stream = io.StringIO()
    ProgressLines([reg], stream).draw()
    assert "retrying (" in stream.getvalue() and "503" in stream.getvalue()
    assert " in 30 s" in stream.getvalue() or " in 29 s" in stream.getvalue()
    reg.abort()
    assert reg.retrying == []


def test_record_request_shows_the_headers_given_to_fetch(mgr, server):
    url = server.url("h.bin", 10, tag=uuid.uuid4().hex)
    own = ipybgfetch.Request(url, headers={"Accept": "text/csv"})
    reg = mgr.fetch("hdr", [own], headers={"X-Api-Key": "k", "Accept": "*/*"}).wait(10)
    request = reg.match_all()[0].request
    assert request.headers["X-Api-Key"] == "k"  # in this process, which has it in memory
    assert request.headers["Accept"] == "text/csv"  # the request's own header wins
    sent = server.requests_for(url)[0].headers
    assert sent["x-api-key"] == "k" and sent["accept"] == "text/csv"
