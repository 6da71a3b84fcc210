"""Issue #13 end to end: the panel's buttons while another cell keeps the kernel busy.

Real JupyterLab and real Notebook 7 in headless chromium (Playwright), each with the
ipykernel 7 kernel (``python3``) and, when ``.ci/kernels.sh`` installed it, the ipykernel 6
kernel (``ipybgfetch-ipk6``). The notebook's first cells start a throttled download and show
its panel; then a ``time.sleep(30)`` cell runs, and the test clicks in the panel.

- ipykernel 7 (front ends send comms to a subshell): Pause, Resume, Abort and a title click
  each show in the panel within 2 s while the sleep still runs, and a watcher thread in the
  kernel saw the same states at the same time; then 200 clicks in 2 s on Pause/Resume.
- ipykernel 6 (no subshells): the button says "Pausing…" at once, after ~1 s the panel says
  the pause takes effect when the running cell finishes and shows ``%bgfetch pause ID``; the
  pause happens after the cell, and the pending state clears.

Run with ``pytest -m browser tests/test_browser_intents.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JupyterLab,
    LabPage,
    Notebook7,
    browser_unavailable_reason,
    notebook_json,
    notebook_unavailable_reason,
)
from kernel_support import IPK6_KERNEL, available_kernels

from ipybgfetch.testing import DataServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        browser_unavailable_reason() is not None, reason=str(browser_unavailable_reason())
    ),
]

KERNELS_SETTINGS = "@jupyterlab/apputils-extension/kernels-settings"
# name: (server class, why it cannot run, extra settings, do comms go to subshells)
FRONT_ENDS: dict[str, tuple[type[JupyterLab], str | None, dict[str, Any], bool]] = {
    "lab": (JupyterLab, None, {}, True),
    "lab-percomm": (JupyterLab, None, {KERNELS_SETTINGS: {"commsOverSubshells": "perComm"}}, True),
    "lab-nosubshells": (
        JupyterLab,
        None,
        {KERNELS_SETTINGS: {"commsOverSubshells": "disabled"}},
        False,
    ),
    "notebook7": (Notebook7, notebook_unavailable_reason(), {}, True),
}
IPK6_MISSING = f"the ipykernel 6 kernelspec {IPK6_KERNEL!r} is not installed (.ci/kernels.sh)"

_JS_KERNEL_BUSY = """
() => {
  const ctx = window.jupyterapp.shell.currentWidget.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  return Boolean(kernel && kernel.status === "busy");
}
"""
_JS_INTERRUPT = (
    "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.interrupt()"
)

# Records every state the registration goes through, with the kernel's monotonic clock,
# from a plain thread: what the kernel did, independent of what the panel shows.
SETUP = """\
import threading, time
import ipybgfetch
mgr = ipybgfetch.BackgroundFetchManager(home={home!r})
clicks = []
mgr.add_event_listener("backgroundfetchclick", lambda e: clicks.append(time.monotonic()))
transitions = []
def _watch(reg):
    last = None
    while True:
        state = reg.state
        if state != last:
            transitions.append((time.monotonic(), state))
            last = state
        if reg.settled:
            return
        time.sleep(0.01)
"""
PANEL = """\
reg = mgr.fetch("e2e", [{url!r}], title="Busy test")
threading.Thread(target=_watch, args=(reg,), daemon=True).start()
reg"""
BUSY = "busy_start = time.monotonic()\ntime.sleep({seconds})\nbusy_end = time.monotonic()"


@pytest.fixture(scope="module")
def data_server() -> Iterator[DataServer]:
    with DataServer() as srv:
        yield srv


@pytest.fixture(scope="module", params=sorted(FRONT_ENDS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterLab]:
    cls, unavailable, settings, subshells = FRONT_ENDS[request.param]
    if unavailable:
        pytest.skip(unavailable)
    root = tmp_path_factory.mktemp(f"intents-{request.param}")
    with cls(root, env={"IPYBGFETCH_HOME": str(root / "home")}, settings=settings) as srv:
        srv.variant = request.param  # type: ignore[attr-defined]
        srv.subshells = subshells  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def browser_page(server: JupyterLab) -> Iterator[LabPage]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        lp = LabPage(page, server)
        lp.page_errors = errors  # type: ignore[attr-defined]
        try:
            yield lp
        except Exception:
            print(server.log())
            raise
        finally:
            context.close()
            browser.close()


def _open(lp: LabPage, server: JupyterLab, kernel: str, url: str, name: str) -> Any:
    """Open a new notebook on ``kernel`` with the setup and panel cells run; the panel."""
    home = server.root / "home"
    cells = [SETUP.format(home=str(home)), PANEL.format(url=url)]
    (server.root / name).write_text(notebook_json(cells, kernel=kernel))
    lp.open(name)
    # Notebook 7.6.5 itself throws "reading 'schema'" while loading settings (with or
    # without ipybgfetch): only errors after the page loaded count.
    lp.errors_at_open = len(lp.page_errors)  # type: ignore[attr-defined]
    lp.run_with_keyboard(0)
    lp.wait_idle()
    lp.page.keyboard.press("Shift+Enter")
    lp.wait_idle()
    panel = lp.cell(1).locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    bar = panel.locator(".ipybgfetch-bar").first
    lp.page.wait_for_function(
        "(el) => Number(el.getAttribute('aria-valuenow')) > 0", arg=bar.element_handle()
    )
    return panel


def _start_busy(lp: LabPage, seconds: int) -> Any:
    cell = lp.run(BUSY.format(seconds=seconds), wait=False)
    lp.page.wait_for_function(_JS_KERNEL_BUSY, timeout=10_000, polling=50)
    lp.page.wait_for_timeout(300)  # well inside the sleep
    lp.busy_cell = cell  # type: ignore[attr-defined]
    assert _busy(lp)
    return cell


def _busy(lp: LabPage) -> bool:
    """The busy cell still runs: its prompt shows [*] (the kernel's own status cannot tell:
    with subshells, the idle status after an intent on a subshell is the latest one)."""
    prompt = lp.busy_cell.locator(".jp-InputPrompt").inner_text()  # type: ignore[attr-defined]
    return "*" in prompt


def _wait_cell_done(lp: LabPage, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _busy(lp):
        assert time.monotonic() < deadline, "the busy cell did not end"
        time.sleep(0.1)
    lp.wait_idle()
    lp.page.wait_for_timeout(300)


def _badge_becomes(lp: LabPage, panel: Any, text: str, timeout: float) -> float:
    """Seconds until the panel's badge reads ``text`` (fails after ``timeout``)."""
    t0 = time.monotonic()
    lp.page.wait_for_function(
        "([el, t]) => el.textContent === t",
        arg=[panel.locator(".ipybgfetch-badge").element_handle(), text],
        timeout=timeout * 1000,
        polling=20,
    )
    return time.monotonic() - t0


def _kernel_json(lp: LabPage, expr: str) -> Any:
    """Evaluate ``expr`` in the kernel (once it is idle) and return it, via JSON on stdout."""
    cell = lp.run(f"import json as _j; print('JSON' + _j.dumps({expr}))")
    text = lp.output_text(cell)
    line = next(x for x in text.splitlines() if x.startswith("JSON"))
    return json.loads(line[4:])


def _kernel_version(lp: LabPage) -> int:
    return int(_kernel_json(lp, "__import__('ipykernel').__version__").split(".")[0])


def test_buttons_act_within_2s_while_a_cell_sleeps_ipykernel7(
    browser_page: LabPage, server: JupyterLab, data_server: DataServer
) -> None:
    lp = browser_page
    if not server.subshells:  # type: ignore[attr-defined]
        # commsOverSubshells: disabled: ipykernel 7 then behaves as 6 does, and says so.
        _waits_visibly_then_acts(lp, server, data_server, "python3", expect_major=7)
        return
    url = data_server.url(
        "busy7.bin", 80_000_000, throttle=1_000_000, ignore_range=True, tag=str(time.time())
    )
    panel = _open(lp, server, "python3", url, f"busy7-{time.time_ns()}.ipynb")
    assert _kernel_version(lp) >= 7
    _start_busy(lp, 30)
    took = {}
    panel.get_by_role("button", name="Pause Busy test").click()
    took["pause"] = _badge_becomes(lp, panel, "Paused", 2)
    assert _busy(lp)
    panel.get_by_role("button", name="Resume Busy test").click()
    took["resume"] = _badge_becomes(lp, panel, "Downloading", 2)
    panel.locator(".ipybgfetch-title").click()
    lp.page.wait_for_function(
        "(el) => !el.hasAttribute('aria-busy')",
        arg=panel.locator(".ipybgfetch-title").element_handle(),
        timeout=2000,
    )
    assert _busy(lp)

    # 200 clicks in 2 s on whichever of Pause/Resume is showing (as a user hammering it).
    clicked = lp.page.evaluate(
        """async (el) => {
          let n = 0, hit = 0;
          const t0 = performance.now();
          while (n < 200) {
            const b = [...el.querySelectorAll('.ipybgfetch-pause, .ipybgfetch-resume')]
              .find((x) => !x.hidden);
            if (b && !b.disabled) hit++;
            if (b) b.click();
            n++;
            await new Promise((r) => setTimeout(r, Math.max(0, t0 + n * 9.5 - performance.now())));
          }
          return {n, hit, ms: performance.now() - t0};
        }""",
        panel.element_handle(),
    )
    assert clicked["n"] == 200 and clicked["ms"] < 2100, clicked
    assert clicked["hit"] > 10, clicked  # the buttons kept working while the cell slept
    # Settles: nothing pending, and the badge shows what the kernel says (checked below).
    lp.page.wait_for_function(
        "(el) => !el.hasAttribute('data-pending')", arg=panel.element_handle(), timeout=5000
    )
    after_stress = panel.locator(".ipybgfetch-badge").text_content()
    assert after_stress in ("Paused", "Downloading"), after_stress
    assert _busy(lp)

    panel.get_by_role("button", name="Abort Busy test").click()
    took["abort"] = _badge_becomes(lp, panel, "Aborted", 2)
    assert _busy(lp), "the sleep ended before the checks: they proved nothing"

    lp.page.evaluate(_JS_INTERRUPT)  # end the sleep early: the rest needs the kernel
    _wait_cell_done(lp)
    facts = _kernel_json(
        lp,
        "{'transitions': transitions, 'clicks': clicks, 'busy_start': busy_start,"
        " 'now': time.monotonic(), 'result': reg.result, 'reason': reg.failure_reason}",
    )
    # Kernel side: during the sleep (the interrupt came after the abort) the registration
    # was paused, resumed, hammered, and aborted; the click handler ran.
    in_sleep = [s for t, s in facts["transitions"] if t > facts["busy_start"]]
    assert in_sleep[:2] == ["paused", "active"], in_sleep
    assert in_sleep[-1] == "aborted", in_sleep
    assert len(facts["clicks"]) == 1 and facts["clicks"][0] > facts["busy_start"]
    assert (facts["result"], facts["reason"]) == ("failure", "aborted")
    # The state the panel showed after the stress is the kernel's state at that time.
    assert {"Paused": "paused", "Downloading": "active"}[after_stress] == in_sleep[-2]
    print(server.module, "seconds until the panel showed it:", took, "stress:", clicked)
    assert lp.page_errors[lp.errors_at_open :] == []  # type: ignore[attr-defined]


@pytest.mark.skipif(IPK6_KERNEL not in available_kernels(), reason=IPK6_MISSING)
# the comms setting changes nothing on a kernel without subshells: the two front ends only
@pytest.mark.parametrize("server", ["lab", "notebook7"], indirect=True)
def test_on_ipykernel6_the_button_waits_visibly_and_acts_after_the_cell(
    browser_page: LabPage, server: JupyterLab, data_server: DataServer
) -> None:
    _waits_visibly_then_acts(browser_page, server, data_server, IPK6_KERNEL, expect_major=6)


def _waits_visibly_then_acts(
    lp: LabPage, server: JupyterLab, data_server: DataServer, kernel: str, expect_major: int
) -> None:
    name = f"busy{expect_major}w.bin"
    url = data_server.url(
        name, 80_000_000, throttle=1_000_000, ignore_range=True, tag=str(time.time())
    )
    panel = _open(lp, server, kernel, url, f"waits-{time.time_ns()}.ipynb")
    assert _kernel_version(lp) == expect_major
    _start_busy(lp, 6)
    pause = panel.locator("button.ipybgfetch-pause")
    pause.click()
    # At once: pending, and not an active-looking button.
    lp.page.wait_for_function(
        "(el) => el.textContent === 'Pausing\u2026' && el.disabled",
        arg=pause.element_handle(),
        timeout=300,
    )
    notice = panel.locator(".ipybgfetch-notice")
    notice.wait_for(state="visible", timeout=2500)  # after ~1 s without confirmation
    text = notice.inner_text()
    assert "Pause takes effect when the running cell finishes" in text, text
    assert notice.locator("code").inner_text() == "%bgfetch pause e2e"
    assert panel.locator(".ipybgfetch-badge").text_content() == "Downloading"
    assert _busy(lp)
    # The cell ends; the queued pause is carried out; the pending state clears.
    _wait_cell_done(lp)
    _badge_becomes(lp, panel, "Paused", 15)
    lp.page.wait_for_function(
        "(el) => !el.hasAttribute('data-pending')", arg=panel.element_handle(), timeout=5000
    )
    assert notice.is_hidden()
    resume = panel.locator("button.ipybgfetch-resume")
    assert resume.inner_text() == "Resume" and resume.is_enabled()
    lp.wait_idle()
    facts = _kernel_json(
        lp, "{'t': [[t, s] for t, s in transitions], 'start': busy_start, 'end': busy_end}"
    )
    paused_at = next(t for t, s in facts["t"] if s == "paused")
    assert paused_at >= facts["end"], "paused during the busy cell, without subshells?"
    lp.run("reg.abort()")
    assert lp.page_errors[lp.errors_at_open :] == []  # type: ignore[attr-defined]
