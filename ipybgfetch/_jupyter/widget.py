"""The progress panel: an anywidget view of registrations, and the text/HTML fallbacks.

The panel is a view only. The engine owns the state; this module turns
``registration.snapshot()`` dicts into widget traits and turns the browser's intents
(abort, pause, resume, click) into calls on the registration:

    engine loop ──progress──▶ callback thread ──request()──▶ _Throttle ──flush──▶ comm
                                                               (≤ 10 Hz per panel)
    browser ──model.send({type, id, key, seq})──▶ on_msg ──▶ reg.abort() / pause() / resume()
                                                        / retry() / click()
            ◀── state + ack=seq (one update message) ──┘

Intents and busy cells: JupyterLab >= 4.4 and Notebook >= 7.4 send comm messages to a
kernel subshell, so with ipykernel >= 7 an intent can run while a cell keeps the main shell
busy. ipykernel 7 re-routes an incoming comm message to the subshell of the parent that
last *published* on that comm, and this panel publishes its progress from background
threads under the main shell's parent, which would queue every click behind the busy cell.
:func:`_route_intents_to_their_subshell` keeps the front end's choice for this panel's
intents only (nothing else of ipykernel is touched). The intent handler then runs on a
subshell thread: it never holds the panel's lock while it calls the registration (the
engine may flush the panel meanwhile), and every trait write goes through that lock.
Where an intent cannot overtake a busy cell (ipykernel 6, subshells off, VS Code), the
front end shows it as pending until ``ack`` reaches its ``seq``.

``registration_mimebundle`` / ``manager_mimebundle`` are what the registration's and the
manager's ``_repr_mimebundle_`` return: the widget view plus text fallbacks inside a
kernel with widget support, and only the fallbacks (``text/plain``, escaped ``text/html``)
anywhere else (plain Python, terminal IPython, nbconvert of a saved notebook).
"""

from __future__ import annotations

import abc
import html
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import anywidget
import traitlets

from .._sizes import format_size
from .._vocab import SETTLED_STATES, Snapshot

__all__ = [
    "MAX_MANAGER_PANELS",
    "MAX_MANAGER_RECORDS",
    "MIN_INTERVAL",
    "BackgroundFetchPanel",
    "html_status",
    "manager_mimebundle",
    "manager_panel",
    "registration_mimebundle",
    "registration_panel",
    "text_status",
]

log = logging.getLogger("ipybgfetch")

STATIC = Path(__file__).parent.parent / "static"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

MIN_INTERVAL = 0.1  # seconds between two state messages of one panel: at most 10 per second
MAX_MANAGER_PANELS = 100  # the manager panel shows the newest N registrations
MAX_MANAGER_RECORDS = 50  # records per registration sent in manager mode (aggregates are exact)
INTENTS = ("abort", "pause", "resume", "click", "retry", "clear")


class _Registration(Protocol):
    """What the panel needs from a registration (see ipybgfetch._registration)."""

    def snapshot(self) -> Snapshot: ...
    def add_event_listener(self, type: str, callback: Callable[[Any], Any]) -> None: ...
    def remove_event_listener(self, type: str, callback: Callable[[Any], Any]) -> None: ...
    def abort(self) -> bool: ...
    def pause(self) -> bool: ...
    def resume(self) -> bool: ...
    def retry(self) -> int: ...
    def click(self) -> None: ...


# ---------------------------------------------------------------------------------------
# Fallbacks without a widget front end
# ---------------------------------------------------------------------------------------


_FAILURE_WORDS = {
    "": "failed",
    "aborted": "aborted",
    "bad-status": "a server answered with an error status",
    "fetch-error": "a network error stopped a download",
    "quota-exceeded": "out of disk space or storage quota",
    "download-total-exceeded": "more data arrived than download_total allows",
}


def _size(n: Any) -> str:
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0:
        return "?"
    return format_size(int(n))


def _total(snap: Mapping[str, Any]) -> int | None:
    expected = snap.get("expected_bytes")
    if isinstance(expected, int) and expected > 0:
        return expected
    limit = snap.get("download_total")
    if isinstance(limit, int) and limit > 0:
        return limit
    return None


def _fraction(snap: Mapping[str, Any]) -> float | None:
    if snap.get("state") == "success":
        return 1.0
    total = _total(snap)
    if total is None:
        return None
    return min(max(int(snap.get("downloaded") or 0) / total, 0.0), 1.0)


def _percent(snap: Mapping[str, Any]) -> str:
    fraction = _fraction(snap)
    if fraction is None:
        return ""
    if _settled(snap) and snap.get("state") != "success":
        return ""  # a failed or aborted registration is not "99%" of anything
    pct = int(fraction * 100)
    if snap.get("state") != "success":
        pct = min(pct, 99)
    return f"{pct}%"


def _state_words(snap: Mapping[str, Any]) -> str:
    state = str(snap.get("state") or "")
    reason = str(snap.get("failure_reason") or "")
    if state == "failure" and reason != "aborted":
        return f"failed: {_FAILURE_WORDS.get(reason, reason)}"
    if state == "failure":
        return "aborted"
    return {
        "active": "downloading",
        "paused": "paused",
        "success": "complete",
        "aborted": "aborted",
        "needs-credentials": "needs credentials",
    }.get(state, state)


def _bytes_line(snap: Mapping[str, Any]) -> str:
    done = int(snap.get("downloaded") or 0)
    total = _total(snap)
    if snap.get("state") == "success" and total is None:
        total = done
    if total is None:
        return f"{_size(done)} downloaded"
    pct = _percent(snap)
    return f"{_size(done)} / {_size(total)}" + (f" ({pct})" if pct else "")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def text_status(snap: Mapping[str, Any]) -> str:
    """One line for ``text/plain``: id, state, bytes done/total, percent, records.

    >>> text_status({"id": "a", "state": "active", "downloaded": 512, "expected_bytes": 1024,
    ...              "records_total": 2, "records_done": 1})
    "BackgroundFetch 'a': downloading, 512 B / 1.0 KiB (50%), 1/2 records"
    """
    ident = _one_line(snap.get("id", ""))
    title = _one_line(snap.get("title") or "")
    name = repr(ident) + (f" ({title})" if title and title != ident else "")
    records = f"{int(snap.get('records_done') or 0)}/{int(snap.get('records_total') or 0)} records"
    failed = int(snap.get("records_failed") or 0)
    if failed:
        records += f", {failed} failed"
    return f"BackgroundFetch {name}: {_state_words(snap)}, {_bytes_line(snap)}, {records}"


_HTML_STYLE = (
    "border:1px solid rgba(127,127,127,.35);border-radius:4px;padding:6px 10px;"
    "margin:4px 0;font-family:system-ui,sans-serif;font-size:13px;max-width:56em"
)


def _html_records(snap: Mapping[str, Any], limit: int = 20) -> str:
    records = list(snap.get("records") or [])[:limit]
    if not records:
        return ""
    e = html.escape
    rows = []
    for rec in records:
        status = rec.get("status") or ""
        total = rec.get("total")
        size = _size(rec.get("downloaded") or 0)
        if total is not None:
            size += f" / {_size(total)}"
        rows.append(
            "<tr>"
            f"<td>{e(str(rec.get('index', '')))}</td>"
            f'<td style="word-break:break-all">{e(str(rec.get("url", "")))}</td>'
            f"<td>{e(str(rec.get('state', '')))}</td>"
            f"<td>{e(str(status))}</td>"
            f"<td>{e(size)}</td>"
            f"<td>{e(str(rec.get('error') or ''))}</td>"
            "</tr>"
        )
    total = int(snap.get("records_total") or 0)
    more = ""
    if total > len(records):
        more = f"<p>Showing {len(records)} of {total} records.</p>"
    return (
        "<details><summary>Records</summary>"
        '<table style="font-size:12px;border-collapse:collapse">'
        "<thead><tr><th>#</th><th>URL</th><th>State</th><th>HTTP</th><th>Size</th>"
        "<th>Error</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f"{more}</details>"
    )


def html_status(snap: Mapping[str, Any], *, now: float | None = None) -> str:
    """A static, fully escaped HTML summary (for nbconvert, untrusted notebooks, etc.).

    It is the state when the panel was displayed: a saved notebook keeps it as it was (the
    live panel is a widget). An unsettled one therefore says when it was taken
    ("as of 19:30:05 UTC"), so a saved "downloading 3%" is not read as live.
    """
    e = html.escape
    ident = str(snap.get("id", ""))
    title = str(snap.get("title") or "") or ident
    fraction = _fraction(snap)
    if fraction is None:
        bar = '<progress aria-label="Download progress"></progress>'
    else:
        bar = (
            f'<progress max="1000" value="{round(fraction * 1000)}" '
            f'aria-label="Download progress">{e(_percent(snap))}</progress>'
        )
    id_html = f" <code>{e(ident)}</code>" if title != ident else ""
    done, total = int(snap.get("records_done") or 0), int(snap.get("records_total") or 0)
    records = f"{done} / {total} records"
    failed = int(snap.get("records_failed") or 0)
    if failed:
        records += f", {failed} failed"
    as_of = ""
    if not _settled(snap):
        stamp = time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if now is None else now)
        )
        as_of = f' <span class="ipybgfetch-static-asof">(as of {e(stamp)})</span>'
    dest = str(snap.get("dest") or "")
    dest_html = f"<div>Saved to <code>{e(dest)}</code></div>" if dest else ""
    return (
        f'<div class="ipybgfetch-static" style="{_HTML_STYLE}">'
        f"<div><strong>{e(title)}</strong>{id_html} — {e(_state_words(snap))}{as_of}</div>"
        f"<div>{bar} <span>{e(_bytes_line(snap))}</span> · <span>{e(records)}</span></div>"
        f"{dest_html}{_html_records(snap)}</div>"
    )


_FALLBACK_ROWS = 20  # registrations listed by the manager's text/HTML fallbacks


def _manager_text(newest: list[Mapping[str, Any]], total: int, active: int) -> str:
    lines = [f"BackgroundFetchManager: {total} registrations, {active} active"]
    lines += [f"  {text_status(s)}" for s in reversed(newest)]
    if total > len(newest):
        lines.append(f"  ... and {total - len(newest)} older")
    return "\n".join(lines)


def _manager_html(newest: list[Mapping[str, Any]], total: int, active: int) -> str:
    head = f"<div><strong>Background fetches</strong> ({total}, {active} active)</div>"
    if not total:
        head += "<div>No background fetches yet.</div>"
    body = "".join(html_status(s) for s in reversed(newest))
    more = f"<div>and {total - len(newest)} older</div>" if total > len(newest) else ""
    return f'<div class="ipybgfetch-static-manager">{head}{body}{more}</div>'


# ---------------------------------------------------------------------------------------
# Throttling
# ---------------------------------------------------------------------------------------


class _Throttle:
    """Coalesce requests into calls of ``flush`` at most once per ``interval`` seconds.

    ``request()`` may come from any thread, as often as it likes. The first request after a
    quiet period flushes at once; the ones inside the interval schedule one flush at the end
    of the interval (which then reads the latest state). Flushes never overlap.
    """

    def __init__(
        self,
        flush: Callable[[], Any],
        interval: float = MIN_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last = -float("inf")
        self._timer: threading.Timer | None = None
        self._closed = False

    def request(self) -> None:
        with self._lock:
            if self._closed or self._timer is not None:
                return
            wait = self._last + self._interval - self._clock()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = self._clock()
        self._run()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            self._last = self._clock()
        self._run()

    def _run(self) -> None:
        with self._flush_lock:
            if self._closed:
                return
            try:
                self._flush()
            except Exception:
                log.exception("ipybgfetch: updating the panel failed")
            finally:
                # A flush that took long still counts from its end: keeps the rate bound.
                with self._lock:
                    self._last = max(self._last, self._clock())

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


# ---------------------------------------------------------------------------------------
# The widget
# ---------------------------------------------------------------------------------------


def _key(reg: object) -> str:
    """A per-object key: ids are reusable, so the manager list keys by object identity."""
    return f"r{id(reg):x}"


def _settled(snap: Mapping[str, Any]) -> bool:
    return snap.get("state") in SETTLED_STATES or snap.get("result") in ("success", "failure")


def _describe(exc: BaseException) -> str:
    """The error as "InvalidStateError: ..." (its public class name, not its module)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BackgroundFetchPanel(anywidget.AnyWidget):
    """The progress panel. ``mode`` is "registration" (trait ``state``) or "manager"
    (trait ``registrations``, oldest first; the front end shows newest first).

    Create it with :func:`registration_panel` or :func:`manager_panel`, which keep it fed.
    """

    _esm = STATIC / "panel.js"
    _css = STATIC / "panel.css"

    mode = traitlets.Unicode("registration").tag(sync=True)
    state = traitlets.Dict().tag(sync=True)
    registrations: traitlets.List[Any] = traitlets.List().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    # The ``seq`` of the newest intent carried out; sent with the state it produced.
    ack = traitlets.Int(0).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages_sent = 0  # state updates pushed after creation (benchmarks, tests)
        self.controller: _Controller | None = None
        self.intents_overtake_busy_cells = _route_intents_to_their_subshell(self.comm)
        self.on_msg(self._on_front_end_msg)

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if self.controller is not None:
            self.controller.handle_intent(content)

    def close(self) -> None:
        controller, self.controller = self.controller, None
        if controller is not None:
            controller.detach()
        super().close()


def _is_intent(data: Any) -> bool:
    """True for a comm message's ``data`` that carries one of this panel's intents."""
    if not isinstance(data, Mapping) or data.get("method") != "custom":
        return False
    content = data.get("content")
    return isinstance(content, Mapping) and content.get("type") in INTENTS


def _route_intents_to_their_subshell(comm: Any) -> bool:
    """Let this comm's intents run on the subshell the front end sent them to.

    The only place that knows an ipykernel internal. ipykernel >= 7 calls
    ``comm._reply_subshell_for(data, subshell_id)`` on the shell-channel thread for each
    incoming comm message and routes it to the subshell it returns: by default the one of
    the parent that last published on the comm (here: the main shell, busy with a cell).
    For this panel's intents the front end's own ``subshell_id`` is kept (``None`` when
    it sent none: the main shell, as before); any other message on the comm is routed as
    ipykernel decides. Feature-detected per comm instance: on ipykernel 6, or any comm
    without the hook, this does nothing and returns False.
    """
    route = getattr(comm, "_reply_subshell_for", None)
    if not callable(route):
        return False

    def reply_subshell_for(data: Any, default: Any) -> Any:
        if _is_intent(data):
            return default
        return route(data, default)

    try:
        comm._reply_subshell_for = reply_subshell_for
    except (AttributeError, TypeError):  # a comm class with slots or a read-only hook
        return False
    return True


def _intent_seq(content: Mapping[str, Any]) -> int:
    seq = content.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return 0
    return min(seq, 2**53)  # a JS number


class _Controller(abc.ABC):
    """Feeds one panel and carries out its intents."""

    def __init__(self, widget: BackgroundFetchPanel, interval: float) -> None:
        self.widget = widget
        # Serialises every trait write of this panel (flushes run on the callback or timer
        # thread, intents on the kernel's shell thread): one hold_sync at a time.
        self.lock = threading.RLock()
        self.throttle = _Throttle(self._locked_flush, interval)

    def _locked_flush(self) -> None:
        with self.lock:
            self.flush()

    def set_error(self, text: str) -> None:
        with self.lock:
            if self.widget.error != text:
                self.widget.error = text

    @abc.abstractmethod
    def flush(self) -> None:
        """Push the latest state to the widget (under the lock)."""

    def detach(self) -> None:
        self.throttle.close()

    @abc.abstractmethod
    def resolve(self, content: Mapping[str, Any]) -> Any:
        """The registration a front-end intent is about."""

    def handle_intent(self, content: Any) -> None:
        """Carry out one intent. Runs on whichever thread the kernel delivers comm messages
        on: the main shell, or a subshell thread while a cell keeps the main shell busy.

        The panel's lock is NOT held while the registration acts: the engine may flush this
        panel meanwhile (from its own thread) and must not wait for us. Afterwards the state
        the intent produced and ``ack = seq`` go to the front end in one message, so its
        pending button clears together with the new state.
        """
        if not isinstance(content, Mapping) or content.get("type") not in INTENTS:
            log.warning("ipybgfetch: ignoring unknown message from the panel: %r", content)
            return
        kind = content["type"]
        error = ""
        reg = None
        try:
            if kind != "clear":
                reg = self.resolve(content)
                if reg is None:
                    raise LookupError(f"no registration {content.get('id')!r} behind this panel")
            if reg is None:
                self.clear_finished()
            elif kind == "click":
                reg.click()
            else:
                getattr(reg, kind)()
        except Exception as exc:
            log.exception("ipybgfetch: %s from the panel failed", kind)
            error = f"{kind} failed: {_describe(exc)}"
        else:
            if reg is not None:
                self.changed(reg)
        self.confirm(_intent_seq(content), error)
        self.throttle.request()  # and whatever the engine still reports after the call

    def changed(self, reg: Any) -> None:  # noqa: B027 - a hook; most panels need nothing
        """``reg`` changed (an intent acted on it): its next snapshot must be fresh."""

    def clear_finished(self) -> None:
        """The manager panel's "Clear finished"; a registration's panel has no list."""
        raise LookupError("only the manager panel (%bgfetch) has a list to clear")

    def confirm(self, seq: int, error: str) -> None:
        """Push the current state, the error line and the ack of ``seq`` in one message."""
        widget = self.widget
        with self.lock:
            try:
                with widget.hold_sync():
                    try:
                        self.flush()
                    finally:
                        if widget.error != error:
                            widget.error = error
                        if seq > widget.ack:
                            widget.ack = seq
            except Exception:
                log.exception("ipybgfetch: updating the panel failed")


class _RegistrationController(_Controller):
    def __init__(
        self,
        widget: BackgroundFetchPanel,
        reg: _Registration,
        interval: float,
        eta: _Eta | None = None,
    ) -> None:
        super().__init__(widget, interval)
        self.reg = reg
        self.key = _key(reg)
        self.eta = eta or _Eta()
        self.final_sent = False
        self._on_progress = lambda _event: self.throttle.request()
        self._on_change = lambda r: self.throttle.request() if r is self.reg else None
        reg.add_event_listener("progress", self._on_progress)
        manager = getattr(reg, "_manager", None)
        self._manager = manager if hasattr(manager, "_add_change_listener") else None
        if self._manager is not None:
            # update_ui() from a success/fail handler and registration changes arrive here.
            self._manager._add_change_listener(self._on_change)

    def snapshot(self) -> dict[str, Any]:
        return _panel_snapshot(self.reg, self.reg.snapshot(), self.key, self.eta)

    def flush(self) -> None:
        snap = self.snapshot()
        widget = self.widget
        old = widget.state
        if snap == old:
            return
        if self.final_sent and not _settled(snap):
            self.final_sent = False  # retry() made it active again
        if self.final_sent:
            # After the final state only update_ui() (title/icons) may still change the panel.
            if snap.get("title") == old.get("title") and snap.get("icons") == old.get("icons"):
                return
            snap = {**old, "title": snap.get("title"), "icons": snap.get("icons")}
        with widget.hold_sync():
            widget.state = snap
        widget.messages_sent += 1
        if _settled(snap):
            self.final_sent = True

    def resolve(self, content: Mapping[str, Any]) -> Any:
        return self.reg

    def detach(self) -> None:
        super().detach()
        try:
            self.reg.remove_event_listener("progress", self._on_progress)
        except Exception:
            log.debug("ipybgfetch: removing the progress listener failed", exc_info=True)
        if self._manager is not None:
            self._manager._remove_change_listener(self._on_change)


class _Eta:
    """A steadier ETA than ``remaining / recent speed``: nothing until the registration has
    been active for :attr:`WARMUP` seconds (the first chunks arrive in a burst and promise
    "1 s left" for a 20 s job), then the speed smoothed by an exponential moving average
    with time constant :attr:`TAU`. Reset when it stops being active."""

    WARMUP = 2.0
    TAU = 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None
        self._at = 0.0
        self._rate = 0.0

    def __call__(self, snap: Mapping[str, Any]) -> float | None:
        total = snap.get("expected_bytes") or snap.get("download_total") or 0
        speed = snap.get("speed") or 0.0
        if snap.get("state") != "active" or not isinstance(total, int) or total <= 0:
            self._since = None
            return None
        now = self._clock()
        if self._since is None:
            self._since, self._at, self._rate = now, now, float(speed)
            return None
        dt = max(0.0, now - self._at)
        self._at = now
        alpha = 1.0 - math.exp(-dt / self.TAU) if dt > 0 else 0.0
        self._rate += alpha * (float(speed) - self._rate)
        if now - self._since < self.WARMUP or self._rate <= 0:
            return None
        remaining = max(0, total - int(snap.get("downloaded") or 0))
        return remaining / self._rate


def _panel_snapshot(
    reg: Any, snap: Mapping[str, Any], key: str, eta: _Eta | None = None
) -> dict[str, Any]:
    """The registration's snapshot plus what only the panel needs: its key and the
    smoothed ETA. (A registration another process downloads keeps working buttons: its
    pause/resume/abort go to that process through the store.)"""
    out = dict(snap)
    out["key"] = key
    if eta is not None:
        out["eta"] = eta(out)
    if not callable(getattr(reg, "retry", None)):
        out["retry_unavailable"] = True  # no "Retry failed" button for such an object
    return out


def _trim(snap: dict[str, Any], limit: int) -> dict[str, Any]:
    records = snap.get("records") or []
    if len(records) <= limit:
        return snap
    return {**snap, "records": records[:limit], "records_truncated": True}


class _ManagerController(_Controller):
    def __init__(self, widget: BackgroundFetchPanel, mgr: Any, interval: float) -> None:
        super().__init__(widget, interval)
        self.mgr = mgr
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._cache: dict[str, dict[str, Any]] = {}
        self._regs: dict[str, Any] = {}
        self._etas: dict[str, _Eta] = {}
        self._cleared: set[str] = set()  # settled ones hidden by "Clear finished"
        mgr._add_change_listener(self._on_change)

    def _on_change(self, reg: Any) -> None:
        self.changed(reg)
        self.throttle.request()

    def changed(self, reg: Any) -> None:
        with self._lock:
            self._dirty.add(_key(reg))

    def clear_finished(self) -> None:
        """Hide the settled registrations from this panel (nothing is deleted; one that
        becomes active again, by retry(), shows again)."""
        with self._lock:
            self._cleared.update(k for k, r in self._regs.items() if getattr(r, "settled", False))

    def build(self) -> list[dict[str, Any]]:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            cleared = set(self._cleared)
        regs = [
            r
            for r in self.mgr.registrations()
            if not (_key(r) in cleared and getattr(r, "settled", False))
        ][-MAX_MANAGER_PANELS:]
        cache: dict[str, dict[str, Any]] = {}
        keyed: dict[str, Any] = {}
        etas: dict[str, _Eta] = {}
        out = []
        for reg in regs:
            key = _key(reg)
            keyed[key] = reg
            etas[key] = self._etas.get(key) or _Eta()
            snap = self._cache.get(key)
            if snap is None or key in dirty:
                snap = _panel_snapshot(
                    reg, _trim(reg.snapshot(), MAX_MANAGER_RECORDS), key, etas[key]
                )
            cache[key] = snap
            out.append(snap)
        self._cache, self._regs, self._etas = cache, keyed, etas
        return out

    def flush(self) -> None:
        snaps = self.build()
        widget = self.widget
        if snaps == widget.registrations:
            return
        with widget.hold_sync():
            widget.registrations = snaps
        widget.messages_sent += 1

    def resolve(self, content: Mapping[str, Any]) -> Any:
        key = content.get("key")
        if isinstance(key, str) and key in self._regs:
            return self._regs[key]
        wanted = content.get("id")
        matches = [r for r in self.mgr.registrations() if getattr(r, "id", None) == wanted]
        active = [r for r in matches if not getattr(r, "settled", False)]
        return (active or matches or [None])[-1]

    def detach(self) -> None:
        super().detach()
        self.mgr._remove_change_listener(self._on_change)


_panels: dict[int, BackgroundFetchPanel] = {}
_panels_lock = threading.Lock()


def _cached(obj: object) -> BackgroundFetchPanel | None:
    widget = _panels.get(id(obj))
    if widget is None:
        return None
    controller = widget.controller
    owner = getattr(controller, "reg", getattr(controller, "mgr", None))
    if widget.comm is None or owner is not obj:  # closed, or id() reused by a new object
        _panels.pop(id(obj), None)
        return None
    return widget


def registration_panel(
    reg: _Registration, *, interval: float = MIN_INTERVAL
) -> BackgroundFetchPanel:
    """The panel of ``reg``: created once, then the same widget (one set of listeners)."""
    with _panels_lock:
        widget = _cached(reg)
        if widget is not None:
            return widget
        eta = _Eta()  # the first state sent already has the smoothed ETA (none yet)
        snap = _panel_snapshot(reg, reg.snapshot(), _key(reg), eta)
        widget = BackgroundFetchPanel(mode="registration", state=snap)
        controller = _RegistrationController(widget, reg, interval, eta)
        controller.final_sent = _settled(snap)
        widget.controller = controller
        _panels[id(reg)] = widget
    # Catch a change that happened between the snapshot and the subscription.
    controller.throttle.request()
    return widget


def manager_panel(mgr: Any, *, interval: float = MIN_INTERVAL) -> BackgroundFetchPanel:
    """One panel listing every registration of ``mgr``, newest first."""
    with _panels_lock:
        widget = _cached(mgr)
        if widget is not None:
            return widget
        widget = BackgroundFetchPanel(mode="manager")
        controller = _ManagerController(widget, mgr, interval)
        widget.controller = controller
        widget.registrations = controller.build()
        _panels[id(mgr)] = widget
    controller.throttle.request()
    return widget


# ---------------------------------------------------------------------------------------
# Mime bundles
# ---------------------------------------------------------------------------------------


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where a widget front end may exist)."""
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _filter(
    data: dict[str, Any], include: Iterable[str] | None, exclude: Iterable[str] | None
) -> dict[str, Any]:
    if include:
        data = {k: v for k, v in data.items() if k in set(include)}
    if exclude:
        data = {k: v for k, v in data.items() if k not in set(exclude)}
    return data


def _with_widget(data: dict[str, Any], make: Callable[[], BackgroundFetchPanel]) -> dict[str, Any]:
    if not _in_kernel():
        return data
    widget = make()
    bundle: Any = widget._repr_mimebundle_()
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    if bundle and WIDGET_MIME in bundle:
        data = {WIDGET_MIME: bundle[WIDGET_MIME], **data}
    return data


def registration_mimebundle(
    reg: _Registration,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    **_kwargs: Any,
) -> dict[str, Any]:
    """What ``registration._repr_mimebundle_`` returns: widget view + text/HTML fallbacks."""
    snap = reg.snapshot()
    data = {"text/plain": text_status(snap), "text/html": html_status(snap)}
    data = _with_widget(data, lambda: registration_panel(reg))
    return _filter(data, include, exclude)


def manager_mimebundle(
    mgr: Any,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    **_kwargs: Any,
) -> dict[str, Any]:
    """What ``manager._repr_mimebundle_`` returns: the manager panel + fallbacks."""
    regs = list(mgr.registrations())
    active = sum(1 for r in regs if not getattr(r, "settled", False))
    newest = [r.snapshot() for r in regs[-_FALLBACK_ROWS:]]
    data = {
        "text/plain": _manager_text(newest, len(regs), active),
        "text/html": _manager_html(newest, len(regs), active),
    }
    data = _with_widget(data, lambda: manager_panel(mgr))
    return _filter(data, include, exclude)
