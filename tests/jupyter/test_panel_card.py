"""The panel's kernel side for issue #16: Retry failed and Clear finished as intents, the
smoothed ETA, and the text/HTML fallback of a failed registration (no "99%").

Real registrations against the loopback DataServer; the widget's comm is ipywidgets'
DummyComm outside a kernel, and intents are delivered as the front end's model.send().
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import ipybgfetch
from ipybgfetch._jupyter.widget import (
    BackgroundFetchPanel,
    _Eta,
    html_status,
    manager_panel,
    registration_panel,
    text_status,
)
from ipybgfetch.testing import DataServer


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _intent(widget: BackgroundFetchPanel, **content: Any) -> None:
    widget._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    )


@pytest.fixture
def panels() -> Iterator[list[BackgroundFetchPanel]]:
    created: list[BackgroundFetchPanel] = []
    yield created
    for widget in created:
        widget.close()


def test_retry_failed_intent_refetches_only_the_failed_record_and_the_panel_follows(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    tag = f"retry-{time.monotonic_ns()}"
    good = server.url("good.csv", 1000, tag=tag)
    flaky = server.url("flaky.csv", 500, status=404, tag=tag)
    reg = mgr.fetch("retry-panel", [good, flaky]).wait(10)
    assert (reg.result, reg.failure_reason) == ("failure", "bad-status")
    widget = registration_panel(reg)
    panels.append(widget)
    _wait_for(lambda: widget.state["state"] == "failure")
    first_finished = widget.state["finished"]
    before = len(server.requests_for(good))
    _intent(widget, type="retry", id="retry-panel", key=widget.state["key"], seq=41)
    assert widget.ack == 41
    assert widget.error == ""
    # The same 404 again: the registration settled anew, and the panel, which had sent
    # its "final" state once, showed the new run (not frozen at the first settle).
    reg.wait(10)
    _wait_for(lambda: (widget.state["finished"] or 0) > first_finished, 5)
    assert widget.state["state"] == "failure" and widget.state["records_failed"] == 1
    assert len(server.requests_for(good)) == before  # the good record was not fetched again
    assert len(server.requests_for(flaky)) >= 2  # the failed one was
    assert reg.match_all()[0].response.status == 200


def test_clear_finished_hides_settled_registrations_only(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    mgr.fetch("done-1", server.url("d1.bin", 10)).wait(10)
    slow = mgr.fetch(
        "running", server.url("r.bin", 4_000_000, throttle=200_000, tag=str(time.time()))
    )
    widget = manager_panel(mgr)
    panels.append(widget)
    _wait_for(lambda: len(widget.registrations) == 2)
    _intent(widget, type="clear", id="", seq=7)
    assert widget.ack == 7 and widget.error == ""
    assert [s["id"] for s in widget.registrations] == ["running"]
    assert mgr.get("running") is slow and len(mgr.registrations()) == 2  # nothing deleted
    # a registration that settles later stays listed until the next clear
    slow.abort()
    _wait_for(lambda: widget.registrations[0]["state"] == "aborted")
    # a registration panel has no list: "clear" there is an error shown, not a crash
    single = registration_panel(slow)
    panels.append(single)
    _intent(single, type="clear", id="", seq=8)
    assert single.error.startswith("clear failed: LookupError")
    assert single.ack == 8


def test_click_intent_goes_through_the_registrations_public_click(
    mgr: ipybgfetch.BackgroundFetchManager, server: DataServer, panels: list[BackgroundFetchPanel]
) -> None:
    got: list[Any] = []
    mgr.add_event_listener("backgroundfetchclick", got.append)
    reg = mgr.fetch("clicked", server.url("c.bin", 10)).wait(10)
    reg.click()
    _wait_for(lambda: len(got) == 1)
    widget = registration_panel(reg)
    panels.append(widget)
    _intent(widget, type="click", id="clicked", seq=3)
    _wait_for(lambda: len(got) == 2)
    assert all(e.registration is reg for e in got)


def test_eta_is_none_during_warmup_then_smoothed_and_reset_when_not_active() -> None:
    now = [100.0]
    eta = _Eta(clock=lambda: now[0])
    snap = {"state": "active", "expected_bytes": 1000, "downloaded": 0, "speed": 1000.0}
    assert eta(snap) is None  # first sight: the opening burst says nothing yet
    now[0] += 1.0
    assert eta({**snap, "downloaded": 500, "speed": 5000.0}) is None  # still warming up
    now[0] += 1.5
    value = eta({**snap, "downloaded": 600, "speed": 100.0})
    assert value is not None
    # smoothed: neither the burst (5000 B/s -> 0.08 s) nor the dip (100 B/s -> 4 s)
    assert 400 / 5000 < value < 400 / 100
    assert eta({**snap, "state": "paused"}) is None
    now[0] += 10
    assert eta(snap) is None  # active again: warm up again
    assert eta({**snap, "expected_bytes": None, "download_total": 0}) is None  # no total


def test_fallback_of_a_failed_registration_shows_no_percentage() -> None:
    snap = {
        "id": "f",
        "state": "failure",
        "result": "failure",
        "failure_reason": "bad-status",
        "downloaded": 99,
        "expected_bytes": 100,
        "records_total": 2,
        "records_done": 1,
        "records_failed": 1,
    }
    assert "%" not in text_status(snap)
    assert "99%" not in html_status(snap)
    assert "1/2 records, 1 failed" in text_status(snap)


def test_static_html_of_an_unsettled_registration_says_when_it_was_taken() -> None:
    base = {"id": "s", "records_total": 1, "records_done": 0, "dest": "/data/<s>"}
    live = html_status({**base, "state": "active", "downloaded": 5}, now=0.0)
    assert "(as of 1970-01-01 00:00:00 UTC)" in live
    assert "Saved to <code>/data/&lt;s&gt;</code>" in live
    done = html_status({**base, "state": "success", "records_done": 1, "downloaded": 5})
    assert "as of" not in done  # a settled state is the last state


def test_no_retry_button_for_an_object_without_retry() -> None:
    from ipybgfetch._jupyter.widget import _panel_snapshot

    class Old:  # a registration-like object from before retry() existed
        pass

    assert _panel_snapshot(Old(), {"id": "x"}, "k")["retry_unavailable"] is True
    assert "retry_unavailable" not in _panel_snapshot(
        type("New", (), {"retry": lambda s: 0})(), {}, "k"
    )
