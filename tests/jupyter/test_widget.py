"""The panel's Python side: fallbacks, caching, throttling and intents (no browser).

Real registrations against the loopback DataServer; the widget's comm is ipywidgets'
DummyComm outside a kernel, so sent messages are counted by wrapping ``widget._send``.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import ipybgfetch
from ipybgfetch._jupyter import widget as _widget
from ipybgfetch._jupyter.widget import (
    MAX_MANAGER_RECORDS,
    WIDGET_MIME,
    BackgroundFetchPanel,
    _Throttle,
    html_status,
    manager_mimebundle,
    manager_panel,
    registration_mimebundle,
    registration_panel,
    text_status,
)
from ipybgfetch.testing import DataServer

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
HOSTILE_TAG = '"><svg/onload=alert(2)><script>alert(3)</script>'  # URLs have no spaces


def _wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class _Sent:
    """Counts the comm messages a widget sends (state updates, not custom messages)."""

    def __init__(self, widget: BackgroundFetchPanel) -> None:
        self.updates: list[tuple[float, dict[str, Any]]] = []
        original = widget._send

        def send(msg: dict[str, Any], buffers: Any = None) -> None:
            if msg.get("method") == "update":
                self.updates.append((time.monotonic(), msg["state"]))
            original(msg, buffers=buffers)

        widget._send = send  # type: ignore[method-assign]


@pytest.fixture
def panels() -> Iterator[list[BackgroundFetchPanel]]:
    """Close every panel a test created (listeners off, cache cleared)."""
    created: list[BackgroundFetchPanel] = []
    yield created
    for widget in created:
        widget.close()


def _slow(server: DataServer, name: str, size: int = 400_000, rate: int = 200_000) -> str:
    return server.url(name, size, throttle=rate, tag=f"{name}-{time.monotonic_ns()}")


# -- fallbacks --------------------------------------------------------------------------------


def test_text_and_html_fallbacks_escape_hostile_title_url_and_error(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer
) -> None:
    ok = server.base_url + "/gen/100/a.bin?tag=" + HOSTILE_TAG
    bad = server.url("b.bin", 10, status=404, tag="<b>x</b>")
    reg = mgr.fetch("hostile", [ok, bad], title=HOSTILE_TITLE).wait(10)
    snap = reg._snapshot()
    assert snap["records"][0]["url"].endswith(HOSTILE_TAG) or any(
        r["url"].endswith(HOSTILE_TAG) for r in snap["records"]
    )
    snap["records"][0]["error"] = "<iframe src=javascript:alert(4)>"

    text = text_status(snap)
    assert "\n" not in text
    assert text.startswith("BackgroundFetch 'hostile' (<img src=x onerror=alert(1)>): failed:")
    assert "a server answered with an error status" in text
    assert "1/2 records, 1 failed" in text or "2/2 records, 1 failed" in text

    page = html_status(snap)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "&lt;iframe" in page
    # no markup from the data: the only tags are the ones html_status writes itself
    tags = set(re.findall(r"<\s*([a-zA-Z]+)", page))
    assert tags <= {
        "div",
        "strong",
        "code",
        "progress",
        "span",
        "details",
        "summary",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "p",
    }, tags
    assert "onerror=" not in page.replace("onerror=alert", "")  # only inside escaped text
    assert "&lt;svg/onload=alert(2)&gt;" in page
    assert not re.search(r"<img|<script|<iframe|<svg", page)


def test_fallback_text_for_states() -> None:
    base = {"id": "a", "title": "", "records_total": 3, "records_done": 1}
    assert text_status({**base, "state": "active", "downloaded": 0, "expected_bytes": None}) == (
        "BackgroundFetch 'a': downloading, 0 B downloaded, 1/3 records"
    )
    assert "(50%)" in text_status(
        {**base, "state": "paused", "downloaded": 50, "expected_bytes": 100}
    )
    assert "download_total" in text_status(
        {**base, "state": "failure", "failure_reason": "download-total-exceeded"}
    )
    assert "aborted" in text_status({**base, "state": "aborted", "failure_reason": "aborted"})
    done = text_status({**base, "state": "success", "downloaded": 2048, "expected_bytes": None})
    assert "complete, 2.0 KiB / 2.0 KiB (100%)" in done
    # never 100% before success
    assert "(99%)" in text_status(
        {**base, "state": "active", "downloaded": 100, "expected_bytes": 100}
    )


def test_mimebundle_outside_a_kernel_is_text_only(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer
) -> None:
    reg = mgr.fetch("plain", server.url("p.bin", 1000)).wait(10)
    bundle = registration_mimebundle(reg)
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"].startswith("BackgroundFetch 'plain': complete")
    # the registration's own _repr_mimebundle_ is wired to it
    assert reg._repr_mimebundle_() == bundle
    assert set(reg._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    mbundle = manager_mimebundle(mgr)
    assert set(mbundle) == {"text/plain", "text/html"}
    assert mbundle["text/plain"].splitlines()[0] == (
        "BackgroundFetchManager: 1 registrations, 0 active"
    )
    assert set(mgr._repr_mimebundle_()) == {"text/plain", "text/html"}


def test_mimebundle_in_a_kernel_has_the_widget_and_reuses_it(
    mgr: ipybgfetch.BackgroundFetchManager,
    server: DataServer,
    monkeypatch: pytest.MonkeyPatch,
    panels: list[BackgroundFetchPanel],
) -> None:
    monkeypatch.setattr(_widget, "_in_kernel", lambda: True)
    reg = mgr.fetch("kernel", _slow(server, "k.bin"))
    first = reg._repr_mimebundle_()
    second = reg._repr_mimebundle_()
    widget = registration_panel(reg)
    panels.append(widget)
    assert set(first) == {WIDGET_MIME, "text/plain", "text/html"}
    assert first[WIDGET_MIME]["model_id"] == widget.model_id
    assert second[WIDGET_MIME]["model_id"] == widget.model_id
    assert len(reg._listeners.get("progress")) == 1  # displayed twice, subscribed once
    assert widget.mode == "registration"
    assert widget.state["id"] == "kernel"
    # the static assets are the shipped build
    assert "export" in str(widget._esm) and "ipybgfetch-panel" in str(widget._css)

    m = mgr._repr_mimebundle_()
    mwidget = manager_panel(mgr)
    panels.append(mwidget)
    assert m[WIDGET_MIME]["model_id"] == mwidget.model_id
    assert mwidget.mode == "manager"
    reg.abort()


def test_closed_panel_is_replaced_and_unsubscribed(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    reg = mgr.fetch("closing", _slow(server, "c.bin"))
    widget = registration_panel(reg)
    assert len(reg._listeners.get("progress")) == 1
    widget.close()
    assert len(reg._listeners.get("progress")) == 0
    again = registration_panel(reg)
    panels.append(again)
    assert again is not widget
    assert len(reg._listeners.get("progress")) == 1
    reg.abort()


# -- throttling ---------------------------------------------------------------------------------


def test_throttle_coalesces_to_the_interval_and_flushes_the_latest() -> None:
    calls: list[float] = []
    value = {"n": 0}
    seen: list[int] = []

    def flush() -> None:
        calls.append(time.monotonic())
        seen.append(value["n"])

    throttle = _Throttle(flush, 0.1)
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        value["n"] += 1
        throttle.request()
    last = value["n"]
    _wait_for(lambda: not throttle.pending, 1)
    assert 5 <= len(calls) <= 11, len(calls)  # 10 per second at most (+1 trailing)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.095, gaps
    assert seen[-1] == last  # the trailing flush saw the final value
    throttle.close()
    throttle.request()
    time.sleep(0.15)
    assert seen[-1] == last and len(seen) == len(calls)


def test_throttle_from_many_threads_never_overlaps_flushes() -> None:
    active = {"n": 0, "max": 0}
    lock = threading.Lock()

    def flush() -> None:
        with lock:
            active["n"] += 1
            active["max"] = max(active["max"], active["n"])
        time.sleep(0.01)
        with lock:
            active["n"] -= 1

    throttle = _Throttle(flush, 0.02)
    stop = time.monotonic() + 0.5

    def hammer() -> None:
        while time.monotonic() < stop:
            throttle.request()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _wait_for(lambda: not throttle.pending, 1)
    assert active["max"] == 1


def test_panel_sends_at_most_10_messages_per_second_and_nothing_after_settling(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    # many small chunks (several records) to make the engine emit as much as it can
    urls = [_slow(server, f"t{i}.bin", size=300_000, rate=250_000) for i in range(4)]
    reg = mgr.fetch("throttled", urls)
    widget = registration_panel(reg)
    panels.append(widget)
    sent = _Sent(widget)
    # a throttled flush may have gone out between the panel's creation and the recorder
    unseen = widget.messages_sent
    start = time.monotonic()
    reg.wait(30)
    elapsed = time.monotonic() - start
    _wait_for(lambda: widget.state.get("state") == "success", 5)
    time.sleep(0.5)
    count = len(sent.updates)
    assert count <= widget.messages_sent <= count + unseen  # the recorder saw every later one
    assert count >= 3, "the panel should update while downloading"
    assert count <= 10 * elapsed + 2, (count, elapsed)
    times = [t for t, _ in sent.updates]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert not gaps or min(gaps) >= 0.09, gaps
    # values only grow and the last message is the final state
    downloaded = [s["state"]["downloaded"] for _, s in sent.updates]
    assert downloaded == sorted(downloaded)
    final = sent.updates[-1][1]["state"]
    assert final["state"] == "success" and final["result"] == "success"
    assert final["downloaded"] == 4 * 300_000
    # nothing after the final state
    time.sleep(0.3)
    assert len(sent.updates) == count
    assert widget.state == reg._snapshot() | {"key": widget.state["key"]}


def test_update_ui_after_settling_still_reaches_the_panel(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    done = threading.Event()

    def on_success(event: Any) -> None:
        event.update_ui(title="Finished!", icons=[{"src": "https://e.org/ok.png"}])
        done.set()

    mgr.add_event_listener("backgroundfetchsuccess", on_success)
    reg = mgr.fetch("ui", _slow(server, "u.bin", size=100_000, rate=400_000), title="Working")
    widget = registration_panel(reg)
    panels.append(widget)
    reg.wait(20)
    assert done.wait(5)
    _wait_for(lambda: widget.state.get("title") == "Finished!", 5)
    assert widget.state["state"] == "success"
    assert widget.state["icons"][0]["src"] == "https://e.org/ok.png"


# -- intents ----------------------------------------------------------------------------------


def _intent(widget: BackgroundFetchPanel, **content: Any) -> None:
    """Deliver a message as the front end's model.send() would (through the comm path)."""
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


def test_intents_pause_resume_abort(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    reg = mgr.fetch("intents", _slow(server, "i.bin", size=2_000_000, rate=200_000))
    widget = registration_panel(reg)
    panels.append(widget)
    _wait_for(lambda: reg.downloaded > 0)
    _intent(widget, type="pause", id="intents", key=widget.state["key"])
    assert reg._snapshot()["state"] == "paused"
    _wait_for(lambda: widget.state["state"] == "paused", 3)
    _intent(widget, type="resume", id="intents")
    _wait_for(lambda: widget.state["state"] == "active", 3)
    _intent(widget, type="abort", id="intents")
    assert reg.result == "failure"
    assert reg.failure_reason == "aborted"
    _wait_for(lambda: widget.state["state"] == "aborted", 3)
    assert widget.error == ""


def test_click_intent_fires_backgroundfetchclick(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    got: list[Any] = []
    mgr.add_event_listener("backgroundfetchclick", got.append)
    reg = mgr.fetch("clicky", server.url("c.bin", 100)).wait(10)
    widget = registration_panel(reg)
    panels.append(widget)
    _intent(widget, type="click", id="clicky")
    _wait_for(lambda: bool(got), 5)
    assert got[0].type == "backgroundfetchclick"
    assert got[0].registration is reg


def test_manager_panel_lists_newest_last_trims_records_and_routes_intents_by_key(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    old = mgr.fetch("same-id", server.url("o.bin", 10)).wait(10)
    many = mgr.fetch("many", [server.url(f"m{i}.bin", 10) for i in range(MAX_MANAGER_RECORDS + 30)])
    many.wait(30)
    widget = manager_panel(mgr)
    panels.append(widget)
    assert manager_panel(mgr) is widget
    new = mgr.fetch("same-id", _slow(server, "n.bin", size=2_000_000, rate=100_000))
    _wait_for(lambda: len(widget.registrations) == 3, 5)
    ids = [s["id"] for s in widget.registrations]
    assert ids == ["same-id", "many", "same-id"]
    big = widget.registrations[1]
    assert big["records_total"] == MAX_MANAGER_RECORDS + 30
    assert len(big["records"]) == MAX_MANAGER_RECORDS
    assert big["records_truncated"] is True
    # the key tells the two "same-id" registrations apart
    _intent(widget, type="abort", id="same-id", key=widget.registrations[2]["key"])
    assert new.failure_reason == "aborted"
    assert old.result == "success"
    _wait_for(lambda: widget.registrations[2]["state"] == "aborted", 3)


def test_failed_intent_is_shown_not_swallowed(
    mgr: ipybgfetch.BackgroundFetchManager,
    server: DataServer,
    panels: list[BackgroundFetchPanel],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mgr.fetch("known", server.url("k.bin", 10)).wait(10)
    widget = manager_panel(mgr)
    panels.append(widget)
    with caplog.at_level("ERROR", logger="ipybgfetch"):
        _intent(widget, type="abort", id="no-such-fetch", key="r0")
    assert widget.error.startswith("abort failed: LookupError")
    assert "no-such-fetch" in widget.error
    assert any("abort from the panel failed" in r.getMessage() for r in caplog.records)
    # the next successful intent clears it
    _intent(widget, type="click", id="known")
    assert widget.error == ""
    # unknown message types are ignored (logged), never executed
    _intent(widget, type="__class__", id="known")
    assert widget.error == ""


def test_registration_snapshot_is_bounded_with_many_records(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    urls = [server.url(f"r{i}.bin", 1) for i in range(260)]
    reg = mgr.fetch("lots", urls)
    widget = registration_panel(reg)
    panels.append(widget)
    reg.wait(60)
    _wait_for(lambda: widget.state["state"] == "success", 5)
    assert widget.state["records_total"] == 260
    assert len(widget.state["records"]) <= 200
    assert widget.state["records_truncated"] is True
