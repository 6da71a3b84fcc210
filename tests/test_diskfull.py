"""Disk full while writing: a real, tiny filesystem (tmpfs, and a loop-mounted ext4).

Mounting needs root (we are root in CI). Where mounting is refused, a real per-process
file-size limit (``RLIMIT_FSIZE``: the kernel answers ``EFBIG``) in a worker process still
exercises the same write path; only if neither works is the test skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from resilience_support import files_under, sha256_file

from ipybgfetch import BackgroundFetchManager, QuotaExceededError, RetryPolicy
from ipybgfetch.testing import DataServer

KiB = 1024
MiB = 1024 * 1024
FS_SIZE = 2 * MiB
FAST = RetryPolicy(retries=3, backoff=0.02, max_backoff=0.1)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tiny_filesystem(kind: str, where: Path):
    """Mount a FS_SIZE filesystem of ``kind`` at ``where``; skip (with why) if refused."""
    mnt = where / f"{kind}-mnt"
    mnt.mkdir()
    if kind == "tmpfs":
        r = _run("mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mnt))
    else:
        if not shutil.which("mkfs.ext4"):
            pytest.skip("mkfs.ext4 is not installed")
        image = where / "ext4.img"
        with open(image, "wb") as f:
            f.truncate(4 * MiB)  # ext4 needs some room for its own metadata
        r = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        if r.returncode == 0:
            r = _run("mount", "-o", "loop", str(image), str(mnt))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a {kind} here ({r.stderr.strip() or r.returncode})")
    try:
        yield mnt
    finally:
        r = _run("umount", str(mnt))
        if r.returncode != 0:
            _run("umount", "-l", str(mnt))


@pytest.fixture(scope="module")
def srv():
    with DataServer() as server:
        yield server


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_disk_full_fails_with_quota_exceeded_and_keeps_everything_complete(srv, tmp_path, kind):
    with tiny_filesystem(kind, tmp_path) as mnt:
        free = shutil.disk_usage(mnt).free
        big = free + 512 * KiB  # can never fit
        with BackgroundFetchManager(home=tmp_path / "home", retries=FAST) as mgr:
            # Complete files on the small disk, from an earlier registration...
            done_url = srv.url("kept.csv", 200 * KiB)
            done = mgr.fetch("done", done_url, dest=mnt / "done").wait(20)
            assert done.result == "success"
            kept = done.match(done_url).response.path
            # ...then a registration that fills it: a big file plus a slow one that is
            # stopped with it.
            big_url = srv.url("big.bin", big)
            slow_url = srv.url("slow.bin", 300 * KiB, throttle=100 * KiB)
            full = mgr.fetch("full", [slow_url, big_url], dest=mnt / "full").wait(30)
            assert full.result == "failure"
            assert full.failure_reason == "quota-exceeded"
            big_record = full.match(big_url)
            assert big_record.state == "failure"
            assert "disk is full" in big_record.error or "No space" in big_record.error
            slow_record = full.match(slow_url)
            assert slow_record.state == "failure"
            assert slow_record.error.startswith("stopped")
            # Nothing complete removed; no partial file anywhere, at a final path or not.
            assert kept.exists() and sha256_file(kept) == DataServer.sha256("kept.csv", 200 * KiB)
            assert files_under(mnt / "full") == {}
            assert big_record.path is None or not big_record.path.exists()
            # The space was given back and the process keeps working, on both disks.
            assert shutil.disk_usage(mnt).free >= free - 256 * KiB
            again = mgr.fetch("again", srv.url("after.bin", 100 * KiB), dest=mnt / "again")
            assert again.wait(20).result == "success"
            elsewhere = mgr.fetch("elsewhere", srv.url("else.bin", 3 * MiB))
            assert elsewhere.wait(20).result == "success"
            # The settled state is in the database (on the big disk).
            assert [r.id for r in mgr.registrations()] == ["done", "full", "again", "elsewhere"]


def test_download_total_larger_than_the_free_space_is_refused_up_front(srv, tmp_path):
    with (
        tiny_filesystem("tmpfs", tmp_path) as mnt,
        BackgroundFetchManager(home=tmp_path / "home") as mgr,
    ):
        with pytest.raises(QuotaExceededError, match="free"):
            mgr.fetch("huge", srv.url("x.bin", 10), download_total=FS_SIZE * 4, dest=mnt)
        assert mgr.get_ids() == []


_FSIZE_WORKER = textwrap.dedent(
    """
    import json, resource, signal, sys
    from ipybgfetch import BackgroundFetchManager, RetryPolicy
    home, dest, small, big, limit = sys.argv[1:6]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    mgr = BackgroundFetchManager(home=home, retries=RetryPolicy(retries=2, backoff=0.01))
    mgr.registrations()  # the database exists before the limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    a = mgr.fetch("small", small, dest=dest).wait(20)
    b = mgr.fetch("big", big, dest=dest).wait(20)
    rec = b.match_all()[0]
    print(json.dumps({"small": a.result, "big": [b.result, b.failure_reason, rec.error]}))
    mgr.close()
    """
)


def test_file_size_limit_fails_with_quota_exceeded(srv, tmp_path):
    """Without mounting: the kernel's per-process file-size limit gives EFBIG on write."""
    dest = tmp_path / "dest"
    small = srv.url("fs-small.bin", 10 * KiB)
    big = srv.url("fs-big.bin", 2 * MiB)
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _FSIZE_WORKER,
            str(tmp_path / "home"),
            str(dest),
            small,
            big,
            str(1 * MiB),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["small"] == "success"
    assert out["big"][:2] == ["failure", "quota-exceeded"], out
    assert sorted(files_under(dest)) == ["fs-small.bin"]


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_disk_full_with_the_database_on_the_same_disk(srv, tmp_path, kind):
    """The default layout: home (database) and files on one disk that fills up."""
    with tiny_filesystem(kind, tmp_path) as mnt:
        big = shutil.disk_usage(mnt).free + 512 * KiB
        with BackgroundFetchManager(home=mnt / "home", retries=FAST) as mgr:
            first = mgr.fetch("first", srv.url("first.bin", 100 * KiB)).wait(20)
            assert first.result == "success"
            kept = first.match_all()[0].response.path
            full = mgr.fetch("full", [srv.url("big.bin", big)]).wait(30)
            assert (full.result, full.failure_reason) == ("failure", "quota-exceeded")
            assert files_under(full.dest) == {}
            assert sha256_file(kept) == DataServer.sha256("first.bin", 100 * KiB)
            after = mgr.fetch("after", srv.url("after.bin", 100 * KiB)).wait(20)
            assert after.result == "success"
        # A new manager (a new kernel) reads the true, settled state back.
        with BackgroundFetchManager(home=mnt / "home") as mgr2:
            states = {r.id: (r.result, r.failure_reason) for r in mgr2.registrations()}
            assert states == {
                "first": ("success", ""),
                "full": ("failure", "quota-exceeded"),
                "after": ("success", ""),
            }
            assert mgr2.registrations()[0].match_all()[0].response.read()[:10] == (
                DataServer.content("first.bin", 100 * KiB, 0, 10)
            )


@pytest.mark.parametrize("kind", ["tmpfs"])
def test_fetch_on_a_full_home_says_so_and_close_stops_cleanly(srv, tmp_path, kind):
    """The home's disk is already full when fetch() writes the registration: the error
    is QuotaExceededError saying where (SQLite's own message, not a failed ROLLBACK's),
    and the manager keeps working once there is room again."""
    with tiny_filesystem(kind, tmp_path) as mnt:
        with BackgroundFetchManager(home=mnt / "home", retries=FAST) as mgr:
            mgr.fetch("warm", srv.url("warm.bin", 10)).wait(20)
            filler = mnt / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 64 * KiB)
                    f.flush()
            urls = [srv.url(f"{i:04d}-" + "n" * 200 + ".bin", 10) for i in range(300)]
            with pytest.raises(QuotaExceededError, match="is full") as info:
                mgr.fetch("nospace", urls)
            assert "rollback" not in str(info.value).lower()
            assert str(mnt / "home") in str(info.value)
            assert mgr.get("nospace") is None
            filler.unlink()
            again = mgr.fetch("again", srv.url("again.bin", 10)).wait(20)
            assert again.result == "success"
            engine = mgr._engine._thread
        assert engine is not None and not engine.is_alive()
