"""Registration semantics from docs/architecture.md §3: settling, abort, events, download_total,
matching, progress. All over real loopback HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from resilience_support import wait_until

from ipybgfetch import AbortError, InvalidStateError, Request


def test_success_result_and_records(mgr, server):
    urls = [server.url(f"f{i}.bin", 1000 * (i + 1)) for i in range(3)]
    reg = mgr.fetch("ok", urls).wait(20)
    assert (reg.result, reg.failure_reason) == ("success", "")
    assert reg.downloaded == 1000 + 2000 + 3000
    assert reg.records_available
    for i, rec in enumerate(reg.match_all()):
        assert rec.response.status == 200 and rec.response.ok
        assert rec.response.read() == server.content(f"f{i}.bin", 1000 * (i + 1))
    assert mgr.get_ids() == []  # settled registrations are not listed by get_ids
    assert reg in mgr.registrations()  # but are kept (beyond spec)


def test_404_fails_with_bad_status_but_body_is_readable(mgr, server):
    reg = mgr.fetch("nf", [server.url("a.txt", 10, status=404)]).wait(10)
    assert (reg.result, reg.failure_reason) == ("failure", "bad-status")
    rec = reg.match_all()[0]
    assert rec.response.status == 404 and not rec.response.ok
    assert rec.response.read()  # the error body is still there
    assert rec["state"] == "failure"


def test_first_failed_record_in_request_order_gives_the_reason(mgr, server):
    reqs = [
        server.url("ok.bin", 10),
        # slow to fail with a network error (dead port) ...
        "http://127.0.0.1:9/never",
        # ... while this 404 settles first in time
        server.url("b.bin", 10, status=404),
    ]
    reg = mgr.fetch("order", reqs, retries=0).wait(20)
    assert reg.result == "failure"
    assert reg.failure_reason == "fetch-error"
    states = [r["state"] for r in reg.match_all()]
    assert states == ["success", "failure", "failure"]


def test_one_failed_record_does_not_stop_the_others(mgr, server):
    reqs = [server.url("bad.bin", 10, status=500), server.url("good.bin", 50_000)]
    reg = mgr.fetch("mixed", reqs, retries=0).wait(10)
    good = reg.match(server.url("good.bin", 50_000))
    assert good.response.read() == server.content("good.bin", 50_000)
    assert reg.failure_reason == "bad-status"


def test_download_total_exceeded_stops_the_other_records(mgr, server):
    reqs = [server.url("big.bin", 300_000), server.url("slow.bin", 1_000_000, throttle=100_000)]
    reg = mgr.fetch("cap", reqs, download_total=200_000)
    reg.wait(20)
    assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded")
    assert reg.downloaded <= 200_000
    slow = reg.match_all()[1]
    assert slow.state == "failure"
    for rec in reg.match_all():
        assert rec.response is None or not rec.response.path.exists()
    assert not list(reg.dest.glob("*.part"))


def test_download_total_exactly_enough_succeeds(mgr, server):
    reg = mgr.fetch("exact", [server.url("a.bin", 5000)], download_total=5000).wait(10)
    assert reg.result == "success"


def test_abort_keeps_finished_records_and_rejects_unfinished(mgr, server):
    fast = server.url("fast.bin", 1000)
    slow = server.url("slow.bin", 5_000_000, throttle=100_000)
    never = server.url("hdr.bin", 10, delay=30)  # no headers before the abort
    reg = mgr.fetch("ab", [fast, slow, never])
    fast_rec = reg.match(fast)
    fast_rec.response_ready.result(10)
    deadline = time.time() + 10
    while reg.match_all()[0].state != "success" and time.time() < deadline:
        time.sleep(0.01)
    assert reg.abort() is True
    assert reg.abort() is False
    reg.wait(10)
    assert (reg.result, reg.failure_reason) == ("failure", "aborted")
    assert reg.match(fast).response.read() == server.content("fast.bin", 1000)
    with pytest.raises(AbortError):
        reg.match(never).response_ready.result(5)
    slow_rec = reg.match(slow)
    assert slow_rec.state == "aborted"
    assert not list(reg.dest.glob("*.part"))
    assert reg.abort() is False  # settled


def test_abort_on_settled_returns_false(mgr, server):
    reg = mgr.fetch("s", [server.url("a", 1)]).wait(10)
    assert reg.abort() is False
    assert reg.result == "success"


def test_result_is_set_before_event_handlers_run(mgr, server):
    seen = []
    done = threading.Event()

    def on_success(event):
        reg = event.registration
        seen.append(("success", reg.result, reg.failure_reason))
        done.set()

    def on_fail(event):
        reg = event.registration
        seen.append(("fail", reg.result, reg.failure_reason))
        done.set()

    mgr.add_event_listener("backgroundfetchsuccess", on_success)
    mgr.add_event_listener("backgroundfetchfail", on_fail)
    mgr.fetch("ev1", [server.url("a", 10)]).wait(10)
    mgr.fetch("ev2", [server.url("a", 10, status=404)]).wait(10)
    assert seen == [("success", "success", ""), ("fail", "failure", "bad-status")]


def test_abort_event_sees_aborted(mgr, server):
    seen = []
    mgr.add_event_listener(
        "backgroundfetchabort", lambda e: seen.append(e.registration.failure_reason)
    )
    reg = mgr.fetch("ab2", [server.url("s.bin", 10_000_000, throttle=100_000)])
    reg.abort()
    reg.wait(10)
    assert seen == ["aborted"]


def test_update_ui_once_and_only_during_the_handler(mgr, server):
    outcomes = []
    kept = []

    def handler(event):
        event.update_ui(title="Done!", icons=[{"src": "https://example.org/i.png"}])
        try:
            event.update_ui(title="again")
        except InvalidStateError as exc:
            outcomes.append(str(exc))
        kept.append(event)

    mgr.add_event_listener("backgroundfetchsuccess", handler)
    reg = mgr.fetch("ui", [server.url("a", 10)], title="Start").wait(10)
    assert reg.title == "Done!"
    assert reg.icons == [{"src": "https://example.org/i.png"}]
    assert outcomes and "already" in outcomes[0]
    with pytest.raises(InvalidStateError, match="while the event handler"):
        kept[0].update_ui(title="late")


def test_failing_handler_is_reported_not_fatal(mgr, server, capfd):
    def broken(event):
        raise RuntimeError("boom in handler")

    mgr.add_event_listener("backgroundfetchsuccess", broken)
    mgr.fetch("h1", [server.url("a", 10)]).wait(10)
    reg = mgr.fetch("h2", [server.url("a", 10)]).wait(10)
    assert reg.result == "success"
    assert "boom in handler" in capfd.readouterr().err
    assert any("boom" in str(e) for e in mgr._callbacks.errors)


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()], ids=repr)
def test_a_handler_raising_systemexit_is_reported_and_nothing_hangs(mgr, server, capfd, raised):
    # sys.exit() in a handler must not kill the thread that runs every later callback
    # (wait() and `await reg` are woken from it).
    def quits(event):
        raise raised

    mgr.add_event_listener("backgroundfetchsuccess", quits)
    first = mgr.fetch("q1", [server.url("a", 10)]).wait(10)
    first.add_event_listener("progress", quits)
    second = mgr.fetch("q2", [server.url("b", 10)]).wait(10)
    assert (first.result, second.result) == ("success", "success")
    assert type(raised).__name__ in capfd.readouterr().err
    assert sum(type(e) is type(raised) for e in mgr._callbacks.errors) >= 2


def test_close_reports_a_failing_shutdown_and_still_stops_the_threads(tmp_path, server, capfd):
    import ipybgfetch

    mgr = ipybgfetch.BackgroundFetchManager(home=tmp_path / "home")
    reg = mgr.fetch("slow", [server.url("s.bin", 5_000_000, throttle=200_000)])
    wait_until(lambda: reg.downloaded > 0, what="the first bytes")

    def disk_full(key):
        raise OSError(28, "No space left on device")

    mgr._store_release = disk_full  # the lease release at shutdown hits a full disk
    mgr.close()  # reports, does not raise
    assert "No space left on device" in capfd.readouterr().err
    assert "closed" in repr(mgr)
    assert mgr._engine._thread is None or not mgr._engine._thread.is_alive()
    with pytest.raises(InvalidStateError):
        reg.wait(1)


def test_slow_handler_does_not_stall_transfers(mgr, server):
    release = threading.Event()
    mgr.add_event_listener("backgroundfetchsuccess", lambda e: release.wait(10))
    mgr.fetch("first", [server.url("a", 10)])
    t0 = time.monotonic()
    second = mgr.fetch("second", [server.url("b.bin", 2_000_000)])
    while second.downloaded < 2_000_000 and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    assert second.downloaded == 2_000_000  # finished while the first handler blocks
    release.set()
    second.wait(10)


def test_progress_events_throttled_and_none_after_settle(mgr, server):
    events = []
    reg = mgr.fetch("prog", [server.url("p.bin", 3_000_000, throttle=2_000_000)])
    reg.add_event_listener(
        "progress", lambda e: events.append((time.monotonic(), e.registration.result))
    )
    reg.wait(20)
    time.sleep(0.3)
    assert len(events) >= 3
    assert events[-1][1] == "success"  # the final event carries the result change
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events[:-1])]
    # progress events 0.125 s apart as dispatched; a listener reads the clock a little
    # later (up to a GIL switch interval, 5 ms, while the download runs), hence 0.115.
    # The final event goes out at once (wait() does not wait for the throttle), and any
    # 1 s window still holds at most 10: the widget's limit.
    assert min(gaps) >= 0.115
    times = [t for t, _ in events]
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 10
    assert events[-1][1] == "success"  # a final progress event for the result change
    n = len(events)
    time.sleep(0.3)
    assert len(events) == n


def test_match_rules(mgr, server):
    base = server.url("m.csv", 10)
    with_query = base + ("&" if "?" in base else "?") + "v=2"
    post = Request(server.echo_url(), method="POST", body=b"abc")
    reg = mgr.fetch("match", [base, with_query, post]).wait(10)
    assert len(reg.match_all()) == 3
    assert len(reg.match_all(base)) == 1
    assert len(reg.match_all(base, ignore_search=True)) == 2
    assert reg.match(base + "#fragment") is not None
    assert reg.match(server.echo_url()) is None  # stored POST never matches...
    assert reg.match(server.echo_url(), ignore_method=True) is not None  # ...unless ignored
    assert len(reg.match_all(Request(server.echo_url(), method="POST", body=b"x"))) == 0
    assert reg.match("http://other.example/m.csv") is None
    # fresh record objects each call, over the same data
    a, b = reg.match(base), reg.match(base)
    assert a is not b and a == b


def test_match_vary(mgr, server):
    url = server.url("v.json", 10, vary="Accept-Language")
    star = server.url("s.json", 10, vary="*")
    reg = mgr.fetch(
        "vary",
        [Request(url, headers={"Accept-Language": "fr"}), Request(star)],
    ).wait(10)
    assert reg.match(Request(url, headers={"Accept-Language": "fr"})) is not None
    assert reg.match(Request(url, headers={"Accept-Language": "en"})) is None
    assert reg.match(url) is None
    assert reg.match(url, ignore_vary=True) is not None
    assert reg.match(star) is None
    assert reg.match(star, ignore_vary=True) is not None


def test_in_flight_record_matches_on_url_and_method(mgr, server):
    slow = server.url("inflight.bin", 100, delay=2, vary="*")
    reg = mgr.fetch("flight", [slow])
    rec = reg.match(slow)
    assert rec is not None and rec.response is None
    reg.abort()


def test_await_registration_and_response_ready(mgr, server):
    url = server.url("aw.bin", 20_000)

    async def main():
        reg = mgr.fetch("await", [url])
        response = await reg.match(url).response_ready
        assert response.status == 200
        settled = await reg
        return settled

    reg = asyncio.run(main())
    assert reg.result == "success"


def test_a_cancelled_await_does_not_break_the_registration_or_other_waiters(mgr, server):
    # asyncio.wait_for timing out cancels the awaiting task. That must end that wait only:
    # the record and the registration still settle, and every other await gets them.
    url = server.url("cancelled.bin", 300_000, throttle=1_000_000, tag="cancelled-await")

    async def main():
        reg = mgr.fetch("cancelled-await", [url])
        record = reg.match(url)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(record.response_ready, 0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reg, 0.05)
        other = asyncio.ensure_future(reg)  # a second waiter, alive through the cancels
        response = await record.response_ready
        assert (await other) is reg and (await reg) is reg
        return reg, response

    reg, response = asyncio.run(main())
    assert reg.result == "success" and response.status == 200
    assert reg.match(url).response_ready.result(1) is not None
    assert reg.wait(1) is reg


def test_wait_timeout_raises(mgr, server):
    reg = mgr.fetch("tw", [server.url("t.bin", 1_000_000, throttle=50_000)])
    with pytest.raises(TimeoutError, match="still active"):
        reg.wait(0.2)
    reg.abort()


def test_keeps_downloading_while_main_thread_sleeps(mgr, server):
    reg = mgr.fetch("sleepy", [server.url("z.bin", 4_000_000, throttle=2_000_000)])
    before = reg.downloaded
    time.sleep(1.0)  # the main thread is blocked; the engine thread is not
    during = reg.downloaded
    assert during - before > 500_000
    reg.wait(20)


def test_response_body_api(mgr, server):
    server.add_file("/doc.json", b'{"a": [1, 2]}', content_type="application/json; charset=utf-8")
    reg = mgr.fetch("body", [server.base_url + "/doc.json"]).wait(10)
    resp = reg.match_all()[0].response
    assert resp.json() == {"a": [1, 2]}
    assert resp.text() == '{"a": [1, 2]}'
    with resp.open() as f:
        assert f.read(1) == b"{"
    with pytest.raises(ValueError):
        resp.open("w")
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.path.name == "doc.json"


def test_body_not_readable_while_downloading(mgr, server):
    url = server.url("r.bin", 2_000_000, throttle=500_000)
    reg = mgr.fetch("early", [url])
    record = reg.match(url)
    wait_until(lambda: record.response is not None, what="the head")
    resp = record.response  # the head is there before the body
    assert resp is not None and resp.status == 200
    with pytest.raises(InvalidStateError, match="still downloading"):
        resp.read()
    assert not resp.path.exists()  # only the .part exists while in flight
    reg.abort()


def test_response_ready_waits_for_the_body_like_a_browser(mgr, server):
    # Chromium resolves responseReady once the record is settled, so the awaited
    # response's body is on disk and readable at once.
    url = server.url("whole.bin", 600_000, throttle=1_000_000)
    reg = mgr.fetch("whole", [url])
    record = reg.match(url)
    wait_until(lambda: record.response is not None, what="the head")
    assert record.response is not None and reg.downloaded < 600_000
    with pytest.raises(concurrent.futures.TimeoutError):
        record.response_ready.result(0.05)  # headers alone do not resolve it
    resp = record.response_ready.result(10)
    assert resp.read() == server.content("whole.bin", 600_000)


def test_abort_mid_body_rejects_response_ready_with_abort_error(mgr, server):
    url = server.url("mid.bin", 1_000_000, stall=10, stall_after=1000)
    reg = mgr.fetch("midabort", [url])
    record = reg.match(url)
    wait_until(lambda: reg.downloaded >= 1000, what="the first 1000 bytes")
    assert record.response is not None  # the head arrived; the body did not
    assert reg.abort() is True
    with pytest.raises(AbortError):
        record.response_ready.result(5)
    assert record.state == "aborted"


def test_match_takes_url_or_request_by_keyword(mgr, server):
    url = server.url("kw.bin", 10)
    reg = mgr.fetch("kw", [url, server.url("other.bin", 10)]).wait(10)
    assert reg.match(url_or_request=url).request.url == url
    assert [r.request.url for r in reg.match_all(url_or_request=url)] == [url]
    assert len(reg.match_all(url_or_request=None)) == 2


def test_listener_validation(mgr, server):
    with pytest.raises(ValueError, match="unknown event type"):
        mgr.add_event_listener("success", lambda e: None)
    with pytest.raises(TypeError, match="callable"):
        mgr.add_event_listener("backgroundfetchsuccess", "nope")  # type: ignore[arg-type]


def test_click_event(mgr, server):
    got = threading.Event()
    mgr.add_event_listener("backgroundfetchclick", lambda e: got.set())
    reg = mgr.fetch("click", [server.url("a", 1)]).wait(10)
    mgr._dispatch_click(reg)
    assert got.wait(5)


def test_delete_forgets_records_and_files(mgr, server):
    reg = mgr.fetch("del", [server.url("d.bin", 100)]).wait(10)
    path = reg.match_all()[0].response.path
    assert path.exists()
    assert mgr.delete("del") == 1
    assert not path.exists()
    assert reg not in mgr.registrations()
    assert not reg.records_available
    with pytest.raises(InvalidStateError):
        reg.match_all()
    with pytest.raises(KeyError):
        mgr.delete("del")


def test_repr_is_one_line_status(mgr, server):
    reg = mgr.fetch("repr", [server.url("r.bin", 2048)]).wait(10)
    text = repr(reg)
    assert "\n" not in text and "'repr'" in text and "success" in text and "100%" in text


def test_closed_manager_gives_clear_errors_and_keeps_work_resumable(tmp_path, server):
    from ipybgfetch import BackgroundFetchManager

    home = tmp_path / "h"
    first = BackgroundFetchManager(home=home)
    reg = first.fetch("c", [server.url("c.bin", 3_000_000, throttle=1_000_000)])
    while reg.downloaded == 0:
        time.sleep(0.01)
    first.close()
    assert reg.state == "paused"
    for call in (reg.abort, reg.pause, reg.resume, reg.wait):
        with pytest.raises(InvalidStateError, match="manager was closed"):
            call()
    with pytest.raises(InvalidStateError, match="closed"):
        first.fetch("d", [server.url("d", 1)])
    assert list(reg.dest.glob("*.part"))  # the bytes are kept for the next manager
    with BackgroundFetchManager(home=home) as second:
        again = next(r for r in second.registrations() if r.id == "c")
        again.wait(20)
        assert again.result == "success"
        assert again.match_all()[0]["sha256"] == server.sha256("c.bin", 3_000_000)


def test_failed_records_are_not_read_as_data(mgr, server):
    server.add_file("/t.csv", b"a,b\n1,2\n", content_type="text/csv")
    reqs = [server.base_url + "/t.csv", server.url("missing.csv", 10, status=404)]
    records = mgr.fetch("frames", reqs).wait(10).match_all()
    with pytest.raises(InvalidStateError, match="did not succeed"):
        records[1].to_pandas()
    with pytest.raises(InvalidStateError, match=r"records\.successful\(\)"):
        records.to_pandas(concat=True)
    ok = records.successful()
    assert len(ok) == 1 and len(records.failed()) == 1
    frame = ok.to_pandas(concat=True)
    assert list(frame.columns) == ["source_url", "a", "b"]
    table = records.to_pandas()
    assert table["ok"].tolist() == [True, False]
    assert table["status"].tolist() == [200, 404]


def test_pause_and_resume_racing_never_strand_the_registration(mgr, server):
    reg = mgr.fetch("race", [server.url("race.bin", 2_000_000, throttle=4_000_000)])
    engine = mgr._engine
    for _ in range(5):  # a resume() arriving while pause() waits for its workers
        paused = engine.submit(reg._job.pause())
        resumed = engine.submit(reg._job.resume(None, None))
        paused.result(5), resumed.result(5)
        if reg.settled:
            break
        assert reg.state == "active"
        assert reg._job.tasks or reg._job.done_count == len(reg._job.records)
    reg.wait(20)
    assert reg.result == "success"


def test_close_wakes_every_waiter(tmp_path, server):
    from ipybgfetch import BackgroundFetchManager

    m = BackgroundFetchManager(home=tmp_path / "h")
    url = server.url("late.bin", 100, delay=30)
    reg = m.fetch("w", [url])
    errors = []

    def waiter():
        try:
            reg.wait()
        except InvalidStateError as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    m.close()
    t.join(5)
    assert not t.is_alive() and errors
    with pytest.raises(InvalidStateError):
        reg.match(url).response_ready.result(1)

    async def awaiting():
        await reg

    with pytest.raises(InvalidStateError):
        asyncio.run(awaiting())


def test_icons_must_be_a_list(mgr, server):
    from ipybgfetch import FetchError

    with pytest.raises(FetchError, match="icons must be a list"):
        mgr.fetch("i", [server.url("a", 1)], icons="https://example.org/i.png")
    with pytest.raises(FetchError, match="icons must be a list"):
        mgr.fetch("i", [server.url("a", 1)], icons=5)


def test_vary_compares_the_registration_headers_that_were_sent(mgr, server):
    url = server.url("lang.json", 10, vary="Accept-Language")
    reg = mgr.fetch("vary2", [url], headers={"Accept-Language": "fr"}).wait(10)
    assert reg.match(Request(url, headers={"Accept-Language": "fr"})) is not None
    assert reg.match(url) is None


def test_a_failed_update_ui_call_does_not_use_up_the_one_allowed(mgr, server):
    outcomes = []

    def handler(event):
        try:
            event.update_ui(title=42)
        except TypeError:
            outcomes.append("rejected")
        event.update_ui(title="fine")
        outcomes.append("updated")

    mgr.add_event_listener("backgroundfetchsuccess", handler)
    reg = mgr.fetch("ui2", [server.url("a", 10)]).wait(10)
    assert outcomes == ["rejected", "updated"] and reg.title == "fine"


def test_a_new_records_short_row_stores_what_the_full_row_would(tmp_path):
    """fetch() stores only the request columns of new records; the schema's defaults must
    be exactly what a full row of a record that has not started would hold."""
    import sqlite3

    from ipybgfetch._engine.record import RecordData
    from ipybgfetch._engine.rows import new_record_row, record_row
    from ipybgfetch._engine.store import Store

    store = Store(tmp_path / "state.sqlite3")
    records = [
        RecordData("r", 0, Request("http://127.0.0.1:9/a.csv")),
        RecordData(
            "r",
            1,
            Request(
                "http://127.0.0.1:9/b",
                method="POST",
                body=b"x",
                headers={"X-Tag": "1", "Authorization": "secret"},
                integrity="sha256-" + "A" * 43 + "=",
            ),
        ),
    ]
    registration = {
        "key": "k",
        "id": "r",
        "title": "",
        "icons": "[]",
        "dest": str(tmp_path),
        "download_total": 0,
        "upload_total": 0,
        "state": "active",
        "result": "",
        "failure_reason": "",
        "needs_credentials": 0,
        "headers": "{}",
        "created": 0.0,
        "finished": None,
    }
    store.add_registration(registration, [new_record_row(d) for d in records])
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.row_factory = sqlite3.Row
    for d in records:
        stored = dict(
            db.execute("SELECT * FROM records WHERE key = 'k' AND idx = ?", (d.index,)).fetchone()
        )
        full = record_row(d, full=True)
        assert {k: stored[k] for k in full} == full
    assert "secret" not in str(stored)
    db.close()
    store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=12,
    )
)
def test_the_stores_json_is_compact_json(value):
    import json

    from ipybgfetch._engine.store import dumps

    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_a_refused_fetch_then_close_stops_the_engine_it_started(tmp_path):
    """fetch() starts the engine before it checks its requests; a refused fetch() followed
    by close() must still close the database and stop the engine thread."""
    import sqlite3

    from ipybgfetch import BackgroundFetchManager, FetchError

    mgr = BackgroundFetchManager(home=tmp_path / "h")
    with pytest.raises(FetchError):
        mgr.fetch("x", ["https://example.org/a.csv", "ftp://example.org/b.csv"])
    engine_thread = mgr._engine._thread
    assert engine_thread is not None  # started by the refused fetch()
    mgr.close()
    engine_thread.join(5)
    assert not engine_thread.is_alive()
    with pytest.raises(sqlite3.ProgrammingError):  # closed, not left open by the engine
        mgr._store._db.execute("SELECT 1")


def test_close_while_fetch_starts_the_engine_leaves_no_engine_running(tmp_path):
    """fetch() in one thread is held just before _begin_start() takes the lock; close()
    runs meanwhile; then fetch() goes on: it must not start an engine after close()
    (review of session 4: it did, with an open database and a heartbeat)."""
    import inspect
    import sys

    from ipybgfetch import BackgroundFetchManager

    mgr = BackgroundFetchManager(home=tmp_path / "h")
    lines, first = inspect.getsourcelines(BackgroundFetchManager._begin_start)
    lock_line = first + next(i for i, text in enumerate(lines) if "with self._lock" in text)
    at_lock, go = threading.Event(), threading.Event()

    def tracer(frame, event, arg):  # pauses the fetch() thread at that line, nothing else
        if frame.f_code is not BackgroundFetchManager._begin_start.__code__:
            return None

        def line(f, ev, a):
            if ev == "line" and f.f_lineno == lock_line:
                at_lock.set()
                go.wait(10)
            return line

        return line

    outcome: list[BaseException] = []

    def fetch_in_thread() -> None:
        sys.settrace(tracer)
        try:
            mgr.fetch("x", "http://127.0.0.1:9/a.bin", dest=tmp_path / "out")
        except BaseException as exc:
            outcome.append(exc)
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=fetch_in_thread)
    thread.start()
    assert at_lock.wait(10)
    mgr.close()
    go.set()
    thread.join(10)
    assert outcome and isinstance(outcome[0], InvalidStateError)
    time.sleep(0.2)
    assert mgr._engine._thread is None, "an engine was started after close()"
    assert mgr._store is None


def test_many_changed_records_are_checkpointed_before_the_interval(tmp_path, server, monkeypatch):
    """A registration of many small files writes its rows in batches of CHECKPOINT_ROWS as
    it goes, not all after the last file (nor only once a CHECKPOINT_INTERVAL)."""
    from ipybgfetch import BackgroundFetchManager
    from ipybgfetch._engine import job as _job

    monkeypatch.setattr(_job, "CHECKPOINT_INTERVAL", 100.0)  # never, by time
    monkeypatch.setattr(_job, "CHECKPOINT_ROWS", 5)
    batches: list[int] = []
    real = BackgroundFetchManager._store_records

    def counting(self, reg, records):  # type: ignore[no-untyped-def]
        batches.append(len(records))
        return real(self, reg, records)

    monkeypatch.setattr(BackgroundFetchManager, "_store_records", counting)
    urls = [server.url(f"cp{i}.bin", 1000, delay=0.02) for i in range(40)]
    with BackgroundFetchManager(home=tmp_path / "h", max_connections_per_host=1) as mgr:
        reg = mgr.fetch("many", urls).wait(30)
    assert reg.result == "success"
    # ~0.8 s of downloads, a progress event every 0.125 s: several batches before the end
    assert len(batches) >= 4, batches
    assert batches[-1] < 40  # the last checkpoint holds only the last few records
