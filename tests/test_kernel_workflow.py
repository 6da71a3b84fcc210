"""Notebook workflows in real kernels (issue 16), driven through jupyter_client:

- the same ``%bgfetch`` cell run three times, the third in a new kernel on the same home,
  sends one GET (the DataServer's count) and leaves one file;
- two kernels on one home: the first is restarted, and its new kernel pauses, resumes and
  aborts the download, whoever downloads it now;
- a plain script (another process) pauses a kernel's download;
- ``%bgfetch delete`` removes one registration; ``reg = %bgfetch ...;`` binds;
- ``%bgfetch retry`` re-fetches only the failed records (the server's count).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_support import DEFAULT_KERNEL, REPO, KernelSession, available_kernels, kernel_env

from ipybgfetch.testing import DataServer

pytestmark = pytest.mark.kernel

LEASE = "2"  # seconds: a restarted kernel's registration is taken over quickly


def _start(home: Path, name: str = DEFAULT_KERNEL) -> KernelSession:
    env = kernel_env(home, {"IPYBGFETCH_LEASE_TIMEOUT": LEASE})
    session = KernelSession(name, cwd=home.parent, env=env)
    session.run("%load_ext ipybgfetch\nimport ipybgfetch, json", timeout=60)
    return session


@pytest.fixture
def sessions() -> Iterator[list[KernelSession]]:
    started: list[KernelSession] = []
    yield started
    for s in started:
        try:
            s.shutdown()
        except Exception:
            pass


def _state(session: KernelSession, reg_id: str) -> dict[str, Any]:
    """The registration as this kernel sees it ({} while it does not know it yet)."""
    cell = session.run(
        f"m = ipybgfetch.manager()\n"
        f"r = m.get({reg_id!r}) or ([x for x in m.registrations() if x.id == {reg_id!r}] "
        "or [None])[-1]\n"
        "print(json.dumps({} if r is None else dict(state=r.state, result=r.result, "
        "reason=r.failure_reason, downloaded=r.downloaded, read_only=r.read_only)))"
    )
    return json.loads(cell.stdout.strip().splitlines()[-1])


def _wait_state(session: KernelSession, reg_id: str, pred: Any, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = _state(session, reg_id)
        if pred(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{reg_id}: condition not met; last state {state}")
        time.sleep(0.3)


@pytest.mark.parametrize("kernel_name", available_kernels())
def test_the_same_cell_three_times_sends_one_get(
    kernel_name: str, server: DataServer, tmp_path: Path, sessions: list[KernelSession]
) -> None:
    home = tmp_path / "home"
    url = server.url("once.csv", 50_000, tag=uuid.uuid4().hex)
    cell = (
        f"r = %bgfetch once {url} --dest {tmp_path / 'dl'}\nr.wait(30)\nprint(r.result, r.reused)"
    )
    first = _start(home, kernel_name)
    sessions.append(first)
    assert first.run(cell).stdout.split() == ["success", "False"]
    assert first.run(cell).stdout.split() == ["success", "True"]
    first.shutdown()
    sessions.remove(first)
    second = _start(home, kernel_name)  # a new kernel on the same home
    sessions.append(second)
    assert second.run(cell).stdout.split() == ["success", "True"]
    gets = [r for r in server.requests_for(url) if r.method == "GET"]
    assert len(gets) == 1
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["once.csv"]
    listing = second.run("%bgfetch list").results[-1]["text/plain"]
    assert listing.count("once") == 1


def test_restarted_kernel_controls_its_download(
    server: DataServer, tmp_path: Path, sessions: list[KernelSession]
) -> None:
    home = tmp_path / "home"
    url = server.url("big.bin", 12_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    a = _start(home)
    b = _start(home)
    sessions += [a, b]
    a.run(f"reg = %bgfetch big {url}")
    _wait_state(a, "big", lambda s: s.get("downloaded", 0) > 100_000)
    a.km.restart_kernel(now=False)  # a clean restart: the old kernel exits
    a.kc.wait_for_ready(timeout=60)
    a.run("%load_ext ipybgfetch\nimport ipybgfetch, json", timeout=60)
    # someone downloads it again: the new kernel A or B (after the lease)
    _wait_state(b, "big", lambda s: s.get("state") == "active" and s["downloaded"] > 0)
    for verb, expect in (("pause", "paused"), ("resume", "active")):
        out = a.run(f"%bgfetch {verb} big").stdout
        assert out.startswith(("Paused 'big'", "Resumed 'big'")), out
        _wait_state(b, "big", lambda s, e=expect: s["state"] == e, 5)
        _wait_state(a, "big", lambda s, e=expect: s["state"] == e, 5)
    before = _state(b, "big")["downloaded"]
    _wait_state(b, "big", lambda s: s.get("downloaded", 0) > before, 10)  # it really resumed
    out = a.run("%bgfetch abort big").stdout
    assert out.startswith("Aborted 'big'"), out
    for s in (a, b):
        _wait_state(s, "big", lambda st: st["reason"] == "aborted", 10)


def test_a_script_pauses_a_kernels_download(
    server: DataServer, tmp_path: Path, sessions: list[KernelSession]
) -> None:
    home = tmp_path / "home"
    url = server.url("k.bin", 8_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    k = _start(home)
    sessions.append(k)
    k.run(f"reg = %bgfetch kd {url}")
    _wait_state(k, "kd", lambda s: s.get("downloaded", 0) > 100_000)
    script = (
        "import sys, time, ipybgfetch\n"
        f"mgr = ipybgfetch.BackgroundFetchManager(home={str(home)!r})\n"
        "reg = mgr.get('kd')\n"
        "t0 = time.monotonic()\n"
        "print(reg.read_only, reg.pause(), round(time.monotonic() - t0, 2))\n"
        "mgr.close()\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["IPYBGFETCH_LEASE_TIMEOUT"] = LEASE
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    read_only, paused, seconds = done.stdout.split()
    assert (read_only, paused) == ("True", "True")
    assert float(seconds) < 3.0  # the kernel picks intents up every 0.25 s
    state = _state(k, "kd")
    assert state["state"] == "paused" and not state["read_only"]
    k.run("reg.resume()\nreg.wait(30)")
    assert _state(k, "kd")["result"] == "success"


def test_delete_removes_one_and_semicolon_binds(
    server: DataServer, tmp_path: Path, sessions: list[KernelSession]
) -> None:
    k = _start(tmp_path / "home")
    sessions.append(k)
    tag = uuid.uuid4().hex
    cell = k.run(f"reg = %bgfetch my-data {server.url('a.bin', 5000, tag=tag)};")
    assert not cell.results  # nothing displayed
    out = k.run("print(type(reg).__name__)\nawait reg\nprint(reg.result)").stdout.split()
    assert out == ["BackgroundFetchRegistration", "success"]
    k.run(f"%bgfetch my-data {server.url('b.bin', 10, tag=tag)};\n%bgfetch wait my-data")
    out = k.run("%bgfetch delete my-data").stdout
    assert "Deleted the registration 'my-data'" in out and "10 B" in out
    assert "1 older registration with this id remains" in out
    left = k.run("print([r.downloaded for r in ipybgfetch.manager().registrations()])").stdout
    assert left.strip() == "[5000]"


def test_retry_refetches_only_the_failed_records(
    server: DataServer, tmp_path: Path, sessions: list[KernelSession]
) -> None:
    k = _start(tmp_path / "home")
    sessions.append(k)
    tag = uuid.uuid4().hex
    good = [server.url(f"g{i}.csv", 1000, tag=tag) for i in range(3)]
    bad = server.url("bad.csv", 1000, status=404, status_times=1, tag=tag)
    urls = " ".join([*good, bad])
    out = k.run(f"reg = %bgfetch rt {urls}\nreg.wait(30)\nprint(reg.failure_reason)").stdout
    assert out.strip() == "bad-status"
    out = k.run("%bgfetch retry rt\n%bgfetch wait rt\nprint(reg.result)").stdout
    assert "Retrying 1 failed record of 'rt'" in out and out.strip().endswith("success")
    assert [len(server.requests_for(u)) for u in good] == [1, 1, 1]
    assert len(server.requests_for(bad)) == 2
