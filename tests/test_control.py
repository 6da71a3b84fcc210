"""Any process sharing a home controls any registration (issue 16): pause, resume and abort
from a process that does not download it reach the owner through the store within about a
second; credentials are never written there, so resuming with them takes the registration
over. Two managers on one home stand for two processes here (each has its own owner id and
database connection); tests/test_kernel_workflow.py does it with real kernels and scripts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from resilience_support import wait_until

import ipybgfetch
from ipybgfetch.testing import DataServer


@pytest.fixture
def pair(tmp_path: Path):
    home = tmp_path / "home"
    a = ipybgfetch.BackgroundFetchManager(home=home)
    b = ipybgfetch.BackgroundFetchManager(home=home)
    yield a, b
    for m in (b, a):
        for reg in m.registrations():
            if not reg.settled and not reg.read_only:
                reg.abort()
        m.close()


def _mirror(
    mgr: ipybgfetch.BackgroundFetchManager, id: str
) -> ipybgfetch.BackgroundFetchRegistration:
    mgr.registrations()  # starts it: the database is read
    mgr._engine.run(_restore(mgr))
    reg = mgr.get(id)
    assert reg is not None and reg.read_only
    return reg


async def _restore(mgr) -> None:
    mgr._restore()


def test_pause_resume_abort_from_a_process_that_does_not_own_it(pair, server: DataServer) -> None:
    a, b = pair
    url = server.url("c.bin", 4_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    owned = a.fetch("ctl", url)
    wait_until(lambda: owned.downloaded > 0, 10)
    mirror = _mirror(b, "ctl")
    t0 = time.monotonic()
    assert mirror.pause() is True
    assert time.monotonic() - t0 < 3.0  # the owner picks intents up every 0.25 s
    assert owned.state == "paused" and mirror.state == "paused"
    assert mirror.pause() is False  # nothing to do: the owner says so
    assert mirror.resume() is True
    assert owned.state == "active"
    wait_until(lambda: owned.downloaded > 1_500_000, 10)
    assert mirror.abort() is True
    owned.wait(10)
    assert owned.failure_reason == "aborted"
    b._engine.run(_restore(b))
    assert mirror.settled and mirror.failure_reason == "aborted"


def test_resume_with_credentials_takes_the_registration_over(pair, server: DataServer) -> None:
    a, b = pair
    url = server.url("k.bin", 2_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    owned = a.fetch("cred", url, headers={"Authorization": "Bearer one"})
    wait_until(lambda: owned.downloaded > 0, 10)
    mirror = _mirror(b, "cred")
    mirror.pause()
    assert mirror.resume(headers={"Authorization": "Bearer two"}) is True
    assert not mirror.read_only and owned.read_only  # b downloads it now
    mirror.wait(20)
    assert mirror.result == "success"
    assert mirror.match(url).response.read() == server.content("k.bin", 2_000_000)
    last = server.requests_for(url)[-1]
    assert last.headers.get("authorization") == "Bearer two"
    assert last.headers.get("range", "").startswith("bytes=")  # continued, not restarted


def test_messages_name_the_owning_process(pair, server: DataServer) -> None:
    import os

    a, b = pair
    url = server.url("m.bin", 2_000_000, throttle=500_000, tag=uuid.uuid4().hex)
    a.fetch("named", url)
    with pytest.raises(ipybgfetch.FetchError) as info:
        b.fetch("named", url)
    assert f"process {os.getpid()} on " in str(info.value)


def test_needs_credentials_is_resolved_from_any_process_that_has_them(
    tmp_path: Path, server: DataServer
) -> None:
    """A's kernel restarts; B (no credentials) adopts the registration and waits in
    needs-credentials; A's new kernel resumes it with the header: it takes it over."""
    home = tmp_path / "home"
    url = server.url("secret.bin", 3_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    a = ipybgfetch.BackgroundFetchManager(home=home)
    b = ipybgfetch.BackgroundFetchManager(home=home)
    new_a = None
    try:
        b.registrations()  # B runs, mirroring
        reg = a.fetch("secret", url, headers={"Authorization": "Bearer s3cret"})
        wait_until(lambda: reg.downloaded > 0, 10)
        a.close()  # the kernel restarts: its lease is released
        b._engine.run(_restore(b))
        held = b.get("secret")
        assert held is not None and not held.read_only
        assert held.state == "needs-credentials"
        new_a = ipybgfetch.BackgroundFetchManager(home=home)
        mine = new_a.get("secret")
        assert mine is not None and mine.read_only  # B holds it
        with pytest.raises(ipybgfetch.InvalidStateError, match="credentials"):
            mine.resume()  # B cannot continue it without them, and says so
        assert mine.resume(headers={"Authorization": "Bearer s3cret"}) is True
        assert not mine.read_only
        assert mine.wait(20).result == "success"
        assert mine.match(url).response.read() == server.content("secret.bin", 3_000_000)
        assert server.requests_for(url)[-1].headers["authorization"] == "Bearer s3cret"
        b._engine.run(_restore(b))
        assert held.read_only or held.settled
        for db in home.glob("state.sqlite3*"):  # the database and its WAL
            assert b"s3cret" not in db.read_bytes()  # never went through the store
    finally:
        for m in (new_a, b, a):
            if m is not None:
                m.close()


def test_a_delete_in_one_process_reaches_the_others(pair, server: DataServer) -> None:
    a, b = pair
    a.fetch("gone", server.url("g.bin", 100, tag=uuid.uuid4().hex)).wait(10)
    b.registrations()
    b._engine.run(_restore(b))
    assert [r.id for r in b.registrations()] == ["gone"]
    assert a.delete("gone") == 1
    wait_until(lambda: b.registrations() == [], 2)  # polled every 0.25 s


def test_needs_credentials_names_the_headers_to_give_again(tmp_path: Path, server: DataServer):
    from ipybgfetch._jupyter.magic import magic_words, parse_line

    home = tmp_path / "home"
    url = server.url("key.bin", 2_000_000, throttle=1_000_000, tag=uuid.uuid4().hex)
    a = ipybgfetch.BackgroundFetchManager(home=home)
    reg = a.fetch("keyed", url, headers={"X-Api-Key": "k3y", "Accept": "*/*"})
    wait_until(lambda: reg.downloaded > 0, 10)
    a.close()
    with ipybgfetch.BackgroundFetchManager(home=home) as b:
        held = b.get("keyed")
        assert held is not None and held.state == "needs-credentials"
        with pytest.raises(ipybgfetch.InvalidStateError) as info:
            held.resume()
        message = str(info.value)
        assert "carried the header X-Api-Key" in message
        assert "reg.resume(headers={'X-Api-Key': ...})" in message
        assert "Authorization" not in message
        said = magic_words(message, parse_line("resume keyed"))
        assert '%bgfetch resume keyed -H "X-Api-Key: ..."' in said
        assert held.resume(headers={"X-Api-Key": "k3y"}) is True
        assert held.wait(20).result == "success"
    for db in home.glob("state.sqlite3*"):
        assert b"k3y" not in db.read_bytes()
