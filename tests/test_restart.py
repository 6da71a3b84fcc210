"""Surviving a dead kernel, and several kernels on one home: real processes, SIGKILL.

A *worker* (``tests/resilience_support.py`` run as a script) opens a
``BackgroundFetchManager`` on a home folder and downloads from the loopback
``DataServer`` that runs in this test process, so the server's request log shows what
every process asked for. The lease timeout is shortened to ``LEASE_TIMEOUT`` seconds
(``IPYBGFETCH_LEASE_TIMEOUT``) in every process so takeovers happen within a second or two.
Tests that start worker processes are marked ``slow`` (2-5 s each); they run by default.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from resilience_support import LEASE_TIMEOUT, Worker, files_under, sha256_file, wait_until

from ipybgfetch import (
    BackgroundFetchManager,
    FetchError,
    InvalidStateError,
    NeedsCredentialsError,
    Request,
    RetryPolicy,
)
from ipybgfetch.testing import DataServer

KiB = 1024
MiB = 1024 * 1024
FAST = RetryPolicy(retries=5, backoff=0.02, max_backoff=0.1)


@pytest.fixture(scope="module")
def srv():
    with DataServer() as server:
        yield server


@pytest.fixture(autouse=True)
def short_lease(monkeypatch):
    monkeypatch.setenv("IPYBGFETCH_LEASE_TIMEOUT", str(LEASE_TIMEOUT))


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(spec, **kw):
        w = Worker(spec, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def ranged(srv, url):
    return [r.headers["range"] for r in srv.requests_for(url) if "range" in r.headers]


def part_size(home: Path, id: str, name: str) -> int:
    part = home / "files" / id / f"{name}.part"
    return part.stat().st_size if part.exists() else 0


# ------------------------------------------------------------------------------------------
# kill -9, then a new process with the same home
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_mid_download_then_a_new_process_resumes_from_the_part(srv, tmp_path, workers):
    home = tmp_path / "home"
    size = 3 * MiB
    big = srv.url("killed.bin", size, throttle=2 * MiB)
    small = srv.url("small.csv", 5000)
    missing = srv.url("missing.bin", 100, status=404)
    w = workers(
        {
            "home": str(home),
            "fetches": [
                {"id": "finished", "urls": [small], "wait": True},
                {"id": "notfound", "urls": [missing], "wait": True},
                {"id": "big", "urls": [big]},
            ],
        }
    )
    w.wait_for_registration("big", lambda r: r["downloaded"] > 600 * KiB, 20)
    w.kill()
    on_disk = part_size(home, "big", "killed.bin")
    assert 0 < on_disk < size

    t0 = time.monotonic()
    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        regs = {r.id: r for r in mgr.registrations()}
        # Earlier registrations, listed with their true state.
        assert list(regs) == ["finished", "notfound", "big"]
        assert (regs["finished"].result, regs["finished"].state) == ("success", "success")
        assert (regs["notfound"].result, regs["notfound"].failure_reason) == (
            "failure",
            "bad-status",
        )
        assert regs["big"].result == ""
        assert mgr.get_ids() == ["big"]
        # Settled records of the dead process are readable here.
        rec = regs["finished"].match_all()[0]
        assert rec.response.read() == DataServer.content("small.csv", 5000)
        assert rec["sha256"] == DataServer.sha256("small.csv", 5000)
        assert regs["notfound"].match(missing).response.status == 404
        assert regs["notfound"].match(missing).response.read()  # the 404 body is kept
        # The dead process's lease runs out, then this process resumes (auto_resume).
        big_reg = regs["big"]
        big_reg.wait(30)
        took = time.monotonic() - t0
        assert big_reg.result == "success"
        record = big_reg.match_all()[0]
        assert sha256_file(record.response.path) == DataServer.sha256("killed.bin", size)
        assert not Path(str(record.response.path) + ".part").exists()
        assert record.attempts >= 2
    resumes = ranged(srv, big)
    assert len(resumes) == 1
    resumed_at = int(resumes[0].split("=")[1].rstrip("-"))
    assert resumed_at >= on_disk > 0  # the new process continued from the .part
    last = srv.requests_for(big)[-1]
    assert last.status == 206 and last.bytes_sent == size - resumed_at
    assert took < LEASE_TIMEOUT + 8


@pytest.mark.slow
def test_kill9_then_a_new_worker_finishes_it(srv, tmp_path, workers):
    """Both processes are workers: the second one has no fetches of its own, it only
    restores the home and finishes what the first left."""
    home = tmp_path / "home"
    size = 2 * MiB
    url = srv.url("handover.bin", size, throttle=1536 * KiB)
    first = workers({"home": str(home), "fetches": [{"id": "h", "urls": [url]}]})
    first.wait_for_registration("h", lambda r: r["downloaded"] > 400 * KiB, 20)
    wait_until(lambda: part_size(home, "h", "handover.bin") > 100 * KiB, 10, "bytes on disk")
    first.kill()
    second = workers({"home": str(home), "exit_when_done": True})
    reg = second.wait_for_registration("h", lambda r: r["result"], 30)
    assert reg["result"] == "success", reg
    assert second.wait(10) == 0
    path = Path(reg["records"][0]["path"])
    assert sha256_file(path) == DataServer.sha256("handover.bin", size)
    assert len(ranged(srv, url)) == 1
    assert srv.bytes_sent_for(url) < size + 1 * MiB  # at most what sat in socket buffers


@pytest.mark.slow
def test_kill9_auto_resume_off_waits_paused(srv, tmp_path, workers):
    home = tmp_path / "home"
    size = 2 * MiB
    url = srv.url("manual.bin", size, throttle=2 * MiB)
    w = workers({"home": str(home), "fetches": [{"id": "m", "urls": [url]}]})
    w.wait_for_registration("m", lambda r: r["downloaded"] > 300 * KiB, 20)
    wait_until(lambda: part_size(home, "m", "manual.bin") > 100 * KiB, 10, "bytes on disk")
    w.kill()
    with BackgroundFetchManager(home=home, retries=FAST, auto_resume=False) as mgr:
        reg = mgr.get("m")
        assert reg is not None
        wait_until(lambda: reg.state == "paused", 10, "the takeover")
        assert not reg.read_only
        n = len(srv.requests_for(url))
        time.sleep(0.3)
        assert len(srv.requests_for(url)) == n  # nothing downloads until asked
        assert reg.resume() is True
        reg.wait(20)
        assert reg.result == "success"
        path = reg.match_all()[0].response.path
        assert sha256_file(path) == DataServer.sha256("manual.bin", size)
    assert len(ranged(srv, url)) == 1


@pytest.mark.slow
def test_kill9_while_paused_stays_paused(srv, tmp_path, workers):
    home = tmp_path / "home"
    url = srv.url("paused.bin", 2 * MiB, throttle=MiB // 2)  # ~4 s: time to pause it
    w = workers({"home": str(home), "fetches": [{"id": "p", "urls": [url]}]})
    w.wait_for_registration("p", lambda r: r["downloaded"] > 200 * KiB, 20)
    # Paused from this process: the owner gets the intent through the store (issue 16).
    with BackgroundFetchManager(home=home) as viewer:
        mirror = viewer.get("p")
        assert mirror is not None and mirror.read_only
        assert mirror.pause() is True
        w.wait_for_registration("p", lambda r: r["state"] == "paused", 10)
    w.kill()
    # Mark it paused the way the owner would have persisted it, then restore.
    import sqlite3

    db = sqlite3.connect(home / "state.sqlite3")
    db.execute("UPDATE registrations SET state = 'paused'")
    db.commit()
    db.close()
    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        reg = mgr.get("p")
        wait_until(lambda: not reg.read_only, 10, "the takeover")
        assert reg.state == "paused"
        assert reg.resume() is True
        assert reg.wait(20).result == "success"


@pytest.mark.slow
def test_upload_interrupted_by_kill9_fails_clearly(srv, tmp_path, workers):
    """Request bodies are not stored: an interrupted POST cannot resume; it says so,
    and the new process does not send it again."""
    home = tmp_path / "home"
    url = srv.echo_url(throttle=MiB, tag="kill9-post")
    post = {"url": url, "method": "POST", "body_size": 2 * MiB}
    w = workers({"home": str(home), "fetches": [{"id": "up", "urls": [post]}]})
    w.wait_for_registration("up", lambda r: r["downloaded"] > 100 * KiB, 20)
    w.kill()
    assert len(srv.requests_for(url)) == 1
    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        reg = mgr.registrations()[0]
        reg.wait(10)
        assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
        record = reg.match_all()[0]
        assert record.request.method == "POST"
        assert "cannot be resumed" in record.error
        assert files_under(home / "files" / "up") == {}
    assert len(srv.requests_for(url)) == 1


# ------------------------------------------------------------------------------------------
# Two processes, one home
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_one_home_only_one_downloads_then_takeover(srv, tmp_path, workers):
    home = tmp_path / "home"
    size = 3 * MiB
    url = srv.url("shared.bin", size, throttle=1 * MiB)
    a = workers({"home": str(home), "fetches": [{"id": "shared", "urls": [url]}]})
    a.wait_for_registration("shared", lambda r: r["downloaded"] > 100 * KiB, 20)
    with BackgroundFetchManager(home=home, retries=FAST) as b:
        reg = b.get("shared")
        assert reg is not None
        assert reg.read_only and not reg._job.tasks  # B mirrors, it does not download
        # Live state: B sees the bytes A downloads (checkpointed about once a second).
        first = reg.downloaded
        wait_until(lambda: reg.downloaded > first, 5, "live progress from A")
        assert reg.state == "active" and reg.result == ""
        # B controls it through the store; A does the work (issue 16).
        assert reg.pause() is True and reg.state == "paused"
        a.wait_for_registration("shared", lambda r: r["state"] == "paused", 10)
        assert reg.resume() is True and reg.state == "active"
        assert reg.read_only  # still A's
        # The hints name the process that owns it.
        with pytest.raises(FetchError, match="another process using the same home"):
            b.fetch("shared", srv.url("other.bin", 10))
        with pytest.raises(InvalidStateError, match="in the process downloading it"):
            b.delete("shared")
        # only A asked for the file: once, and once more (a Range) after B's pause/resume
        asked = srv.requests_for(url)
        assert len(asked) == 2 and asked[1].headers.get("range", "").startswith("bytes=")
        assert not reg._job.tasks
        a_report = a.registration("shared")
        assert a_report["downloading"] and not a_report["read_only"]
        # A dies; B takes over after the lease runs out and finishes from the .part.
        a.kill()
        killed_at = time.monotonic()
        wait_until(lambda: not reg.read_only, LEASE_TIMEOUT + 5, "the takeover")
        took_over = time.monotonic() - killed_at
        reg.wait(30)
        assert reg.result == "success"
        path = reg.match_all()[0].response.path
        assert sha256_file(path) == DataServer.sha256("shared.bin", size)
    log = srv.requests_for(url)  # A's first, A's resume after the pause, B's takeover
    assert len(log) == 3 and all(r.headers["range"].startswith("bytes=") for r in log[1:])
    assert LEASE_TIMEOUT * 0.5 <= took_over <= LEASE_TIMEOUT + 3, took_over


@pytest.mark.slow
def test_a_stalled_owner_loses_its_lease_and_stops(srv, tmp_path, workers):
    """The owner is frozen (SIGSTOP) longer than the lease: another process takes over.
    When the first one wakes up it notices, stops transferring and only mirrors."""
    home = tmp_path / "home"
    size = 3 * MiB
    url = srv.url("frozen.bin", size, throttle=1 * MiB)
    a = workers({"home": str(home), "fetches": [{"id": "frozen", "urls": [url]}]})
    a.wait_for_registration("frozen", lambda r: r["downloaded"] > 200 * KiB, 20)
    with BackgroundFetchManager(home=home, retries=FAST) as b:
        reg = b.get("frozen")
        assert reg is not None and reg.read_only
        a.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: not reg.read_only, LEASE_TIMEOUT + 5, "the takeover")
            wait_until(lambda: len(ranged(srv, url)) == 1, 5, "B resuming")
        finally:
            a.signal(signal.SIGCONT)
        woke = a.wait_for_registration(
            "frozen", lambda r: r["read_only"] and not r["downloading"], 10
        )
        assert woke["result"] == ""
        reg.wait(30)
        assert reg.result == "success"
        path = reg.match_all()[0].response.path
        assert sha256_file(path) == DataServer.sha256("frozen.bin", size)
    mirrored = a.wait_for_registration("frozen", lambda r: r["result"], 10)
    assert mirrored["result"] == "success"  # A never wrote its stale state over B's
    assert len(ranged(srv, url)) == 1
    with BackgroundFetchManager(home=home) as c:
        assert c.registrations()[0].result == "success"
    assert sha256_file(path) == DataServer.sha256("frozen.bin", size)


@pytest.mark.slow
def test_orphan_taken_over_by_exactly_one_of_two_new_processes(srv, tmp_path, workers):
    home = tmp_path / "home"
    size = 2 * MiB
    url = srv.url("orphan.bin", size, throttle=2 * MiB)
    first = workers({"home": str(home), "fetches": [{"id": "o", "urls": [url]}]})
    first.wait_for_registration("o", lambda r: r["downloaded"] > 200 * KiB, 20)
    # received bytes reach the .part within ipybgfetch._engine.sink.MAX_DELAY
    wait_until(lambda: part_size(home, "o", "orphan.bin") > 100 * KiB, 10, "bytes on disk")
    first.kill()
    b = workers({"home": str(home), "exit_when_done": True})
    c = workers({"home": str(home), "exit_when_done": True})
    rb = b.wait_for_registration("o", lambda r: r["result"], 30)
    rc = c.wait_for_registration("o", lambda r: r["result"], 30)
    assert rb["result"] == rc["result"] == "success"
    assert len(ranged(srv, url)) == 1  # exactly one process resumed it
    downloaders = [
        w for w in (b, c) if any(rep["registrations"][0]["downloading"] for rep in w.reports)
    ]
    assert len(downloaders) == 1
    mirror = c if downloaders[0] is b else b
    assert any(rep["registrations"][0]["read_only"] for rep in mirror.reports)
    path = Path(rb["records"][0]["path"])
    assert sha256_file(path) == DataServer.sha256("orphan.bin", size)


def test_clean_shutdown_hands_over_without_waiting_for_the_lease(srv, tmp_path):
    home = tmp_path / "home"
    size = 2 * MiB
    url = srv.url("clean.bin", size, throttle=2 * MiB)
    with BackgroundFetchManager(home=home, retries=FAST) as first:
        reg = first.fetch("clean", url)
        wait_until(lambda: reg.downloaded > 200 * KiB, 10, "some bytes")
    # close() checkpointed and released the lease: a new manager adopts at once.
    with BackgroundFetchManager(home=home, retries=FAST) as second:
        reg2 = second.get("clean")
        assert reg2 is not None and not reg2.read_only
        reg2.wait(20)
        assert sha256_file(reg2.match_all()[0].response.path) == DataServer.sha256(
            "clean.bin", size
        )
    assert len(ranged(srv, url)) == 1


# ------------------------------------------------------------------------------------------
# Credentials: never on disk; a restored registration waits for them
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_restored_registration_with_credentials_waits_for_them(srv, tmp_path, workers, monkeypatch):
    from ipybgfetch._engine import restore

    # What another thread sees the moment read_only clears: already "needs-credentials",
    # never the dead owner's mirrored "active" (a script polling read_only then reading
    # state saw "active" in a loaded CI run).
    seen = []
    adopt = restore._adopt

    def watched(job, row, auto_resume):
        seen.append((job.read_only, job.state))
        adopt(job, row, auto_resume)

    monkeypatch.setattr(restore, "_adopt", watched)
    home = tmp_path / "home"
    token = "Bearer TOPSECRET-" + "q" * 30
    cookie = "sid=COOKIESECRET-123"
    size = 2 * MiB
    url = srv.url("private.bin", size, throttle=2 * MiB)
    w = workers(
        {
            "home": str(home),
            "fetches": [
                {
                    "id": "private",
                    "urls": [url],
                    "headers": {"Authorization": token, "Cookie": cookie, "Accept-Language": "t1"},
                }
            ],
        }
    )
    w.wait_for_registration("private", lambda r: r["downloaded"] > 200 * KiB, 20)
    wait_until(lambda: part_size(home, "private", "private.bin") > 100 * KiB, 10, "bytes on disk")
    w.kill()
    assert srv.requests_for(url)[0].headers["authorization"] == token
    blobs = b"".join(p.read_bytes() for p in sorted(home.glob("state.sqlite3*")))
    assert any(p.name.endswith("-wal") for p in home.glob("state.sqlite3*"))
    assert b"private.bin" in blobs
    for secret in (b"TOPSECRET", b"COOKIESECRET"):
        assert secret not in blobs

    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        reg = mgr.get("private")
        wait_until(lambda: reg.state == "needs-credentials", LEASE_TIMEOUT + 5, "takeover")
        assert not reg.read_only and not reg._job.tasks
        assert seen and seen[0] == (False, "needs-credentials"), seen
    # Still waiting for them in the next kernel too (the flag is never lost).
    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        reg = mgr.get("private")
        assert reg.state == "needs-credentials" and not reg.read_only
        n = len(srv.requests_for(url))
        time.sleep(0.2)
        assert len(srv.requests_for(url)) == n  # nothing sent without the credentials
        with pytest.raises(NeedsCredentialsError, match="resume"):
            reg.resume()
        assert reg.state == "needs-credentials"
        assert reg.resume(headers={"Authorization": token, "Cookie": cookie}) is True
        reg.wait(20)
        assert reg.result == "success"
        assert sha256_file(reg.match_all()[0].response.path) == DataServer.sha256(
            "private.bin", size
        )
    resumed = srv.requests_for(url)[-1]
    assert resumed.headers["range"].startswith("bytes=")
    assert resumed.headers["authorization"] == token
    assert resumed.headers["cookie"] == cookie
    assert resumed.headers.get("accept-language") == "t1"  # allowlisted headers are restored
    blobs = b"".join(p.read_bytes() for p in sorted(home.glob("state.sqlite3*")))
    for secret in (b"TOPSECRET", b"COOKIESECRET"):
        assert secret not in blobs


def test_restored_registration_with_per_request_credentials(srv, tmp_path):
    home = tmp_path / "home"
    url = srv.url("perreq.bin", 2 * MiB, throttle=2 * MiB)
    with BackgroundFetchManager(home=home, retries=FAST) as first:
        reg = first.fetch("perreq", Request(url, headers={"Authorization": "Bearer PERREQ"}))
        wait_until(lambda: reg.downloaded > 100 * KiB, 10, "some bytes")
    with BackgroundFetchManager(home=home, retries=FAST) as second:
        reg2 = second.get("perreq")
        assert reg2.state == "needs-credentials"
        assert reg2.resume(headers={"Authorization": "Bearer PERREQ"})
        assert reg2.wait(20).result == "success"
    assert srv.requests_for(url)[-1].headers["authorization"] == "Bearer PERREQ"
    assert b"PERREQ" not in b"".join(p.read_bytes() for p in home.glob("state.sqlite3*"))
    assert files_under(home / "files" / "perreq") == {"perreq.bin": 2 * MiB}


# ------------------------------------------------------------------------------------------
# Killed at the worst moments: all bytes written but not renamed; renamed, not recorded
# ------------------------------------------------------------------------------------------


def _unsettle(home: Path, id: str) -> None:
    """Make the database say what it said just before the end of the transfer."""
    import sqlite3

    db = sqlite3.connect(home / "state.sqlite3")
    db.execute(
        "UPDATE registrations SET state = 'active', result = '', failure_reason = '', "
        "finished = NULL, owner = NULL, heartbeat = NULL WHERE id = ?",
        (id,),
    )
    db.execute(
        "UPDATE records SET state = 'active', sha256 = '', finished = NULL "
        "WHERE key = (SELECT key FROM registrations WHERE id = ?)",
        (id,),
    )
    db.commit()
    db.close()


@pytest.mark.parametrize("moment", ["before-rename", "after-rename"])
def test_stopped_with_every_byte_on_disk_finishes_without_downloading(srv, tmp_path, moment):
    home = tmp_path / "home"
    size = 300 * KiB
    url = srv.url(f"complete-{moment}.bin", size)
    with BackgroundFetchManager(home=home, retries=FAST) as first:
        reg = first.fetch("complete", url).wait(20)
        path = reg.match_all()[0].response.path
    _unsettle(home, "complete")
    if moment == "before-rename":
        path.rename(str(path) + ".part")
    n = len(srv.requests_for(url))
    with BackgroundFetchManager(home=home, retries=FAST) as second:
        reg2 = second.get("complete")
        assert reg2 is not None
        reg2.wait(20)
        assert reg2.result == "success"
        record = reg2.match_all()[0]
        assert record.response.status == 200
        assert sha256_file(record.response.path) == DataServer.sha256(
            f"complete-{moment}.bin", size
        )
        assert record["sha256"] == DataServer.sha256(f"complete-{moment}.bin", size)
    assert len(srv.requests_for(url)) == n  # verified from disk, nothing downloaded again
    assert files_under(home / "files" / "complete") == {f"complete-{moment}.bin": size}


@pytest.mark.slow
def test_a_corrupted_part_from_a_dead_process_is_caught(srv, tmp_path, workers):
    """Integrity after resume in a new process: the whole file is checked; a bad .part
    is downloaded again (once) and the record succeeds."""
    home = tmp_path / "home"
    size = 2 * MiB
    url = srv.url("rot.bin", size, throttle=2 * MiB)
    sri = DataServer.sri("rot.bin", size)
    w = workers({"home": str(home), "fetches": [{"id": "rot", "urls": [url]}]})
    w.wait_for_registration("rot", lambda r: r["downloaded"] > 300 * KiB, 20)
    wait_until(lambda: part_size(home, "rot", "rot.bin") > 100 * KiB, 10, "bytes on disk")
    w.kill()
    import sqlite3

    db = sqlite3.connect(home / "state.sqlite3")
    db.execute("UPDATE records SET integrity = ?", (sri,))
    db.commit()
    db.close()
    part = home / "files" / "rot" / "rot.bin.part"
    with open(part, "r+b") as f:
        f.write(b"\0" * 100)
    with BackgroundFetchManager(home=home, retries=FAST) as mgr:
        reg = mgr.get("rot")
        reg.wait(30)
        assert reg.result == "success", reg.match_all()[0].error
        assert sha256_file(reg.match_all()[0].response.path) == DataServer.sha256("rot.bin", size)
    log = srv.requests_for(url)
    assert log[-2].headers["range"].startswith("bytes=")  # resumed from the part...
    assert "range" not in log[-1].headers  # ...caught by the whole-file check, fetched again


def test_restored_registration_with_an_auth_object_waits_for_it(srv, tmp_path):
    import httpx

    home = tmp_path / "home"
    url = srv.url("authobj.bin", 2 * MiB, throttle=2 * MiB)
    with BackgroundFetchManager(home=home, retries=FAST) as first:
        reg = first.fetch("authobj", url, auth=httpx.BasicAuth("ann", "AUTHOBJSECRET"))
        wait_until(lambda: reg.downloaded > 100 * KiB, 10, "some bytes")
    sent = srv.requests_for(url)[0].headers["authorization"]
    with BackgroundFetchManager(home=home, retries=FAST) as second:
        reg2 = second.get("authobj")
        assert reg2.state == "needs-credentials"
        assert reg2.resume(auth=httpx.BasicAuth("ann", "AUTHOBJSECRET"))
        assert reg2.wait(20).result == "success"
    last = srv.requests_for(url)[-1]
    assert last.headers["authorization"] == sent and last.headers["range"].startswith("bytes=")
    blobs = b"".join(p.read_bytes() for p in home.glob("state.sqlite3*"))
    assert b"AUTHOBJSECRET" not in blobs and sent.split()[1].encode() not in blobs


def test_an_id_active_in_another_process_of_the_home_is_refused_at_once(srv, tmp_path):
    # Two managers on one home stand for two kernels: each has its own memory, only the
    # database is shared. The second used to accept the id until its next rescan (10 s),
    # and both downloaded into files/x/.
    home = tmp_path / "home"
    with BackgroundFetchManager(home=home) as first, BackgroundFetchManager(home=home) as other:
        other.get_ids()  # started (and scanned the home) before the first fetch
        slow = first.fetch("x", srv.url("x.bin", 2_000_000, throttle=200_000, tag="shared-id"))
        with pytest.raises(FetchError, match="another process using the same home") as info:
            other.fetch("x", srv.url("y.bin", 10))
        assert isinstance(info.value, TypeError)
        assert slow.abort() is True
        slow.wait(10)
        again = other.fetch("x", srv.url("z.bin", 10)).wait(10)  # settled: reusable
        assert again.result == "success"
