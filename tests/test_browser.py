"""End to end: the panel in a real JupyterLab, in a real (headless) chromium.

JupyterLab runs headless on loopback with a token; Playwright drives Debian's chromium.
The notebook's kernel downloads from a loopback DataServer started by this test process.
Run with ``pytest -m browser tests/test_browser.py`` (about a minute).

Screenshots of the panel in the light and dark theme are always taken; they replace
``docs/panel-light.png`` / ``docs/panel-dark.png`` (used by the README) only with
``IPYBGFETCH_UPDATE_SCREENSHOTS=1``, so a test run leaves the checkout clean.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    JupyterLab,
    LabPage,
    browser_unavailable_reason,
    notebook_json,
)

from ipybgfetch.testing import DataServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        browser_unavailable_reason() is not None, reason=str(browser_unavailable_reason())
    ),
]

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
# URLs may not contain whitespace, so the markup in the URL uses the no-space forms.
HOSTILE_QUERY = '"><svg/onload=alert(2)><script>alert(3)</script>'
DOCS = REPO / "docs"
ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1976d2"/>'
    '<path d="M16 7v13m-6-6 6 6 6-6M9 24h14" stroke="#fff" stroke-width="3"'
    ' fill="none" stroke-linecap="round" stroke-linejoin="round"/></svg>'
)
ICON = "data:image/svg+xml;base64," + base64.b64encode(ICON_SVG.encode()).decode()


@pytest.fixture(scope="module")
def data_server() -> Iterator[DataServer]:
    with DataServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[JupyterLab]:
    with JupyterLab(lab_dir, env={"IPYBGFETCH_HOME": str(lab_dir / "home")}) as server:
        yield server


@pytest.fixture(scope="module")
def nb(lab: JupyterLab, lab_dir: Path, data_server: DataServer) -> Iterator[LabPage]:
    """The notebook, open, with its first two cells run by keyboard (Shift+Enter twice)."""
    from playwright.sync_api import sync_playwright

    slow = data_server.url("e2e.bin", 8_000_000, throttle=400_000)
    cells = [
        "import ipybgfetch\n"
        f"mgr = ipybgfetch.BackgroundFetchManager(home={str(lab_dir / 'home')!r})\n"
        "clicks = []\n"
        "mgr.add_event_listener('backgroundfetchclick',\n"
        "                       lambda e: clicks.append(e.registration.id))",
        f'reg = mgr.fetch("e2e", [{slow!r}], title="E2E download")\nreg',
    ]
    (lab_dir / "panel.ipynb").write_text(notebook_json(cells))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        lp = LabPage(page, lab)
        lp.page_errors = errors  # type: ignore[attr-defined]
        try:
            lp.open("panel.ipynb")
            lp.run_with_keyboard(0)  # Shift+Enter runs cell 0 and moves to cell 1
            lp.wait_idle()
            page.keyboard.press("Shift+Enter")
            lp.wait_idle()
            yield lp
        except Exception:
            print(lab.log())
            raise
        finally:
            context.close()
            browser.close()


def _valuenow(bar: Any) -> int:
    value = bar.get_attribute("aria-valuenow")
    return int(value) if value is not None else -1


def test_progress_increases_and_abort_aborts_kernel_side(nb: LabPage) -> None:
    page = nb.page
    cell = nb.cell(1)
    panel = cell.locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    assert panel.locator(".ipybgfetch-title").inner_text() == "E2E download"
    bar = panel.get_by_role("progressbar", name="Download progress of E2E download")
    assert bar.get_attribute("aria-valuemin") == "0"
    page.wait_for_function(
        "(el) => Number(el.getAttribute('aria-valuenow')) > 0", arg=bar.element_handle()
    )
    assert bar.get_attribute("aria-valuemax") == "8000000"
    first = _valuenow(bar)

    # The panel keeps moving while another cell keeps the kernel busy.
    busy = nb.run("import time\ntime.sleep(2.5)\nprint('slept')", wait=False)
    page.wait_for_timeout(1500)
    during = _valuenow(bar)
    assert during > first, (first, during)
    busy.locator(".jp-OutputArea-output").wait_for(timeout=20_000)
    nb.wait_idle()
    page.wait_for_function(
        "([el, v]) => Number(el.getAttribute('aria-valuenow')) > v",
        arg=[bar.element_handle(), during],
        timeout=10_000,
    )

    badge = panel.locator(".ipybgfetch-badge")

    def wait_badge(text: str) -> None:
        page.wait_for_function(
            "([el, t]) => el.textContent === t",
            arg=[badge.element_handle(), text],
            timeout=15_000,
        )

    # Pause / Resume, by their accessible names.
    panel.get_by_role("button", name="Pause E2E download").click()
    wait_badge("Paused")
    paused_at = _valuenow(bar)
    page.wait_for_timeout(700)
    assert _valuenow(bar) == paused_at
    panel.get_by_role("button", name="Resume E2E download").click()
    wait_badge("Downloading")
    page.wait_for_function(
        "([el, v]) => Number(el.getAttribute('aria-valuenow')) > v",
        arg=[bar.element_handle(), paused_at],
        timeout=10_000,
    )

    # Clicking the title fires backgroundfetchclick kernel-side.
    panel.locator(".ipybgfetch-title").click()

    abort = panel.get_by_role("button", name="Abort E2E download")
    assert abort.is_enabled()
    abort.click()
    page.wait_for_function(
        "(el) => el.textContent === 'Aborted'", arg=badge.element_handle(), timeout=15_000
    )
    assert abort.is_hidden()
    assert panel.get_by_role("button", name="Pause E2E download").is_hidden()

    out = nb.run(
        "reg.wait(30)\nimport time; time.sleep(0.2)\n"
        "print('RESULT', reg.result, reg.failure_reason, clicks)"
    )
    out.locator(".jp-OutputArea-output").wait_for(timeout=20_000)
    assert "RESULT failure aborted ['e2e']" in nb.output_text(out)
    assert _valuenow(bar) < 8_000_000
    assert not nb.page_errors, nb.page_errors  # type: ignore[attr-defined]


def test_hostile_title_and_url_render_as_text(nb: LabPage, data_server: DataServer) -> None:
    page = nb.page
    hostile_url = data_server.base_url + "/gen/1000/x.bin?tag=" + HOSTILE_QUERY
    missing = data_server.url("missing.csv", 10, status=404)
    cell = nb.run(
        f"xss = mgr.fetch('xss', [{hostile_url!r}, {missing!r}], title={HOSTILE_TITLE!r})\n"
        "xss.wait(30)\nxss"
    )
    panel = cell.locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    title = panel.locator(".ipybgfetch-title")
    assert title.text_content() == HOSTILE_TITLE
    badge = panel.locator(".ipybgfetch-badge")
    page.wait_for_function(
        "(el) => el.closest('.ipybgfetch-panel').dataset.tone === 'failure'",
        arg=badge.element_handle(),
    )
    # One file arrived and one got a 404: the card says so (#16), not a wholesale "Failed".
    assert badge.text_content() == "1 of 2 done, 1 failed (404)"

    panel.locator("summary").click()
    urls = panel.locator(".ipybgfetch-rec-url")
    urls.first.wait_for()
    texts = urls.all_text_contents()
    assert hostile_url in texts, texts
    # Nothing was created from the data: no <img src=x>, no injected <script>.
    assert page.locator('img[src="x"]').count() == 0
    assert cell.locator("script").count() == 0
    assert cell.locator("svg[onload]").count() == 0
    assert cell.locator(".ipybgfetch-panel img:not(.ipybgfetch-icon)").count() == 0
    page.wait_for_timeout(300)
    assert nb.dialogs == []


def test_screenshots_light_and_dark(nb: LabPage, data_server: DataServer, tmp_path: Path) -> None:
    page = nb.page
    shots = DOCS if os.environ.get("IPYBGFETCH_UPDATE_SCREENSHOTS") == "1" else tmp_path
    urls = [
        data_server.url("sales-2024-q1.parquet", 9_000_000, throttle=700_000),
        data_server.url("sales-2024-q2.parquet", 9_000_000, throttle=500_000),
        data_server.url("sales-2024-q3.csv.gz", 4_000_000, throttle=300_000),
        data_server.url("stores.csv", 200_000),
        data_server.url("sales-2023-archive.csv", 100, status=404),
    ]
    cell = nb.run(
        f"demo = mgr.fetch('sales-2024', {urls!r}, title='Sales data 2024',\n"
        f"                 icons=[{{'src': {ICON!r}, 'sizes': 'any', 'type': 'image/svg+xml'}}])\n"
        "demo"
    )
    panel = cell.locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    icon = panel.locator("img.ipybgfetch-icon")
    assert icon.get_attribute("alt") == "Icon of Sales data 2024"
    panel.locator("summary").click()
    page.wait_for_function(
        "(el) => el.querySelectorAll('tr.ipybgfetch-record').length === 5",
        arg=panel.element_handle(),
    )
    page.wait_for_timeout(3000)  # some progress, and the 404 has failed
    cell.scroll_into_view_if_needed()
    shots.mkdir(exist_ok=True)
    root = cell.locator(".ipybgfetch-root")
    root.screenshot(path=str(shots / "panel-light.png"), animations="disabled")

    nb.set_theme("JupyterLab Dark", light=False)
    bg = page.evaluate(
        "(el) => getComputedStyle(el).backgroundColor",
        panel.element_handle(),
    )
    root.screenshot(path=str(shots / "panel-dark.png"), animations="disabled")
    nb.set_theme("JupyterLab Light", light=True)
    assert bg != page.evaluate(
        "(el) => getComputedStyle(el).backgroundColor", panel.element_handle()
    )
    nb.run("demo.abort()")
    for name in ("panel-light.png", "panel-dark.png"):
        assert (shots / name).stat().st_size > 5_000


def test_narrow_panel_shows_the_failed_file_and_its_error_then_retry_and_clear_finished(
    nb: LabPage, data_server: DataServer
) -> None:
    # Issue #16: at 360 px the failed record's row still shows its file name and its
    # error; "Retry failed" re-fetches only that record; "Clear finished" empties the
    # manager panel of settled registrations (and deletes nothing).
    page = nb.page
    tag = str(time.time_ns())
    ok = data_server.url("stores.csv", 2_000, tag=tag)
    flaky = data_server.add_file(
        "/exports/2024/q4/regional/very-long-folder-name/sales-2023-archive.csv",
        b"region,total\n" * 50,
        status=404,
        status_times=1,  # the first request fails, the retry succeeds
        tag=tag,
    )
    cell = nb.run(
        f"mixed = mgr.fetch('mixed', [{ok!r}, {flaky!r}], title='Mixed')\nmixed.wait(30)\nmixed"
    )
    panel = cell.locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    badge = panel.locator(".ipybgfetch-badge")
    page.wait_for_function(
        "(el) => el.textContent === '1 of 2 done, 1 failed (404)'", arg=badge.element_handle()
    )
    page.set_viewport_size({"width": 360, "height": 800})
    try:
        page.wait_for_timeout(500)
        cell.scroll_into_view_if_needed()
        panel.locator("summary").click()
        row = panel.locator("tr.ipybgfetch-record[data-state='failure']")
        row.wait_for(state="visible")
        box = row.bounding_box()
        assert box is not None and box["width"] <= 360, box
        name = row.locator(".ipybgfetch-url-name")
        assert name.inner_text() == "sales-2023-archive.csv"
        name_box = name.bounding_box()
        assert name_box is not None and name_box["width"] > 0
        assert name_box["x"] >= box["x"] - 1
        assert name_box["x"] + name_box["width"] <= box["x"] + box["width"] + 1, (name_box, box)
        # not cut: the whole file name is rendered
        assert name.evaluate("(e) => e.scrollWidth <= e.clientWidth + 1")
        url = row.locator(".ipybgfetch-rec-url")
        assert url.get_attribute("title") == flaky  # the full URL on hover
        error = row.locator(".ipybgfetch-rec-error")
        assert error.is_visible()
        assert "404" in error.inner_text()
        err_box = error.bounding_box()
        assert (
            err_box is not None and err_box["x"] + err_box["width"] <= box["x"] + box["width"] + 1
        )
        shots = DOCS if os.environ.get("IPYBGFETCH_UPDATE_SCREENSHOTS") == "1" else None
        if shots is not None:
            cell.locator(".ipybgfetch-root").screenshot(path=str(shots / "panel-narrow.png"))
    finally:
        page.set_viewport_size({"width": 1200, "height": 900})

    dest = panel.locator(".ipybgfetch-dest-path")
    assert dest.inner_text().endswith("mixed") or "mixed" in dest.inner_text()
    # "Copy path" puts the folder on the clipboard
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    panel.get_by_role("button", name="Copy the folder of Mixed").click()
    panel.locator(".ipybgfetch-copy-status").filter(has_text="Copied").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == dest.inner_text()
    before_ok = len(data_server.requests_for(ok))
    panel.get_by_role("button", name="Retry failed Mixed").click()
    page.wait_for_function(
        "(el) => el.textContent === 'Complete'", arg=badge.element_handle(), timeout=20_000
    )
    assert len(data_server.requests_for(flaky)) == 2
    assert len(data_server.requests_for(ok)) == before_ok  # the good file was kept

    keep = data_server.url("keep.bin", 20_000_000, throttle=300_000, ignore_range=True, tag=tag)
    listing = nb.run(f"keep = mgr.fetch('keep', [{keep!r}], title='Keep')\nmgr")
    manager = listing.locator(".ipybgfetch-manager")
    manager.wait_for(state="visible", timeout=30_000)
    items = manager.locator(".ipybgfetch-panel")
    page.wait_for_function(
        "(el) => el.querySelectorAll('.ipybgfetch-panel').length >= 2",
        arg=manager.element_handle(),
    )
    total = items.count()
    # settled ones are folded to their header, the running ones are not
    fold = manager.evaluate(
        """(el) => [...el.querySelectorAll('.ipybgfetch-panel')].map((p) =>
             [p.dataset.state, p.dataset.collapsed === 'true'])"""
    )
    settled = {"success", "failure", "aborted"}
    assert all(collapsed == (state in settled) for state, collapsed in fold), fold
    running = sum(1 for state, _ in fold if state not in settled)
    assert 1 <= running < total
    manager.get_by_role("button", name="Clear finished").click()
    page.wait_for_function(
        "([el, n]) => el.querySelectorAll('.ipybgfetch-panel').length === n",
        arg=[manager.element_handle(), running],
        timeout=10_000,
    )
    titles = manager.locator(".ipybgfetch-title").all_inner_texts()
    assert "Keep" in titles and "Mixed" not in titles, titles
    out = nb.run("keep.abort()\nprint('LISTED', len(mgr.registrations()))")
    out.locator(".jp-OutputArea-output").wait_for(timeout=20_000)
    assert f"LISTED {total}" in nb.output_text(out)  # nothing was deleted
    assert not nb.page_errors, nb.page_errors  # type: ignore[attr-defined]


def test_a_panel_from_before_a_kernel_restart_says_so_at_once(
    nb: LabPage, data_server: DataServer
) -> None:
    # Last in this module: it restarts the kernel the other tests share. After a restart
    # the old panel's comm is closed; a click used to throw "Cannot send" silently. Now
    # the panel says so as soon as the kernel restarts, before anyone clicks.
    page = nb.page
    url = data_server.url("stale.bin", 20_000_000, throttle=300_000, ignore_range=True)
    cell = nb.run(f"stale = mgr.fetch('stale', [{url!r}], title='Stale')\nstale")
    panel = cell.locator(".ipybgfetch-panel")
    panel.wait_for(state="visible", timeout=30_000)
    errors_before = len(nb.page_errors)  # type: ignore[attr-defined]
    page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()"
    )
    page.wait_for_timeout(1000)
    nb.wait_idle(60)
    pause = panel.locator("button.ipybgfetch-pause")
    banner = cell.locator(".ipybgfetch-error")
    banner.wait_for(state="visible", timeout=10_000)
    assert "lost its kernel" in banner.inner_text()
    assert pause.is_disabled()
    assert panel.locator(".ipybgfetch-notice").inner_text().startswith("Kernel gone")
    pause.click(force=True)  # a click on the disabled button changes nothing, throws nothing
    assert pause.is_disabled()
    assert nb.page_errors[errors_before:] == []  # type: ignore[attr-defined]
