"""Helpers for the end-to-end browser tests: a headless JupyterLab (or Notebook 7) and a
Playwright page.

``JupyterLab`` starts ``jupyter lab`` (``Notebook7``: ``jupyter notebook``, same options)
on loopback with a token, an isolated config,
settings and workspace dir (the default data dirs stay, so the anywidget and ipywidgets
lab extensions are found), and no network features (news, update checks). ``LabPage``
drives a notebook through JupyterLab's own command registry (``window.jupyterapp``, exposed
with ``--LabApp.expose_app_in_browser``): it inserts cells, runs them and reads outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TOKEN = "ipybgfetch-e2e-token"


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notebook_unavailable_reason() -> str | None:
    """Why the Notebook 7 browser tests cannot run here, or None."""
    reason = browser_unavailable_reason()
    if reason:
        return reason
    try:
        import notebook
    except ImportError:
        return "notebook (Notebook 7) is not installed: pip install 'notebook>=7.4'"
    major = int(str(getattr(notebook, "__version__", "0")).split(".")[0])
    if major < 7:
        return f"notebook {notebook.__version__} is not Notebook 7"
    return None


def notebook_json(cells: list[str] | None = None, kernel: str = "python3") -> str:
    """A minimal nbformat 4 notebook with code cells, bound to the kernel ``kernel``."""
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"cell-{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for i, source in enumerate(cells or [""])
            ],
            "metadata": {
                "kernelspec": {"display_name": kernel, "language": "python", "name": kernel},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


class JupyterLab:
    """``jupyter lab`` in a subprocess, serving ``root`` on 127.0.0.1."""

    module = "jupyterlab"
    app_class = "LabApp"

    def __init__(
        self,
        root: Path,
        env: dict[str, str] | None = None,
        settings: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        state = root / ".lab-state"
        for sub in ("config", "runtime", "settings", "workspaces"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            # The kernel imports ipybgfetch from this checkout.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **(env or {}),
        }
        self.log_path = state / "lab.log"
        self.settings_dir = state / "settings"
        # No news/update requests and no toasts covering the page (or the screenshots).
        notification = self.settings_dir / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
        )
        # Extra user settings: {"@jupyterlab/apputils-extension/kernels-settings": {...}}.
        for plugin, values in (settings or {}).items():
            folder, _, name = plugin.rpartition("/")
            (self.settings_dir / folder).mkdir(parents=True, exist_ok=True)
            (self.settings_dir / folder / f"{name}.jupyterlab-settings").write_text(
                json.dumps(values)
            )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> JupyterLab:
        cmd = [
            sys.executable,
            "-m",
            self.module,
            "--no-browser",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.allow_remote_access=False",
            f"--{self.app_class}.expose_app_in_browser=True",
            f"--{self.app_class}.user_settings_dir={self.settings_dir}",
            f"--{self.app_class}.workspaces_dir={self.settings_dir.parent / 'workspaces'}",
            "--ServerApp.terminals_enabled=False",
            *self.app_options(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        status = f"{self.url}/api/status?token={TOKEN}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(status, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter lab did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.2)

    def app_options(self) -> list[str]:
        return [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={TOKEN}&reset"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # Shut down kernels properly first, then the server.
            with contextlib.suppress(OSError):
                req = urllib.request.Request(
                    f"{self.url}/api/shutdown?token={TOKEN}", method="POST", data=b""
                )
                urllib.request.urlopen(req, timeout=5).close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Notebook7(JupyterLab):
    """``jupyter notebook`` (Notebook 7) in a subprocess; same page API as JupyterLab's."""

    module = "notebook"
    app_class = "JupyterNotebookApp"

    def app_options(self) -> list[str]:
        return []

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/notebooks/{name}?token={TOKEN}"


# JavaScript run in the page; `window.jupyterapp` is the JupyterLab application.
_JS_NOTEBOOK = "() => { const w = window.jupyterapp.shell.currentWidget; return w && w.content; }"

_JS_INSERT_AND_RUN = """
async ([source, wait]) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const nb = panel.content;
  const index = nb.model.cells.length;
  nb.model.sharedModel.insertCell(index, {cell_type: "code", source});
  nb.activeCellIndex = index;
  nb.deselectAll();
  // The command's promise ends with the cell's execution: only await it when asked to.
  const done = app.commands.execute("notebook:run-cell");
  if (wait) await done;
  return index;
}
"""

_JS_KERNEL_IDLE = """
() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const ctx = panel && panel.sessionContext;
  const kernel = ctx && ctx.session && ctx.session.kernel;
  return Boolean(kernel && kernel.connectionStatus === "connected" && kernel.status === "idle");
}
"""

_JS_THEME = """
async ([theme]) => {
  await window.jupyterapp.commands.execute("apputils:change-theme", {theme});
}
"""


class LabPage:
    """A Playwright page showing one notebook in JupyterLab."""

    def __init__(self, page: Any, lab: JupyterLab) -> None:
        self.page = page
        self.lab = lab
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(Exception):
            dialog.dismiss()

    def open(self, name: str, timeout: float = 60) -> None:
        page = self.page
        page.goto(self.lab.notebook_url(name), wait_until="domcontentloaded")
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext",
            timeout=timeout * 1000,
        )
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
        # A wide notebook: the file browser's sidebar only takes room from the panel.
        page.evaluate("() => window.jupyterapp.shell.collapseLeft?.()")
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 60) -> None:
        self.page.wait_for_function(_JS_KERNEL_IDLE, timeout=timeout * 1000, polling=100)

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run(self, source: str, *, wait: bool = True, timeout: float = 60) -> Any:
        """Append a code cell with ``source``, run it, return its locator."""
        index = self.page.evaluate(_JS_INSERT_AND_RUN, [source, wait])
        cell = self.cell(index)
        if wait:
            self.wait_idle(timeout)
        return cell

    def run_with_keyboard(self, index: int) -> None:
        """Run cell ``index`` the way a user does: click into it and press Shift+Enter."""
        cell = self.cell(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")

    def output_text(self, cell: Any) -> str:
        return cell.locator(".jp-OutputArea").inner_text()

    def set_theme(self, theme: str, light: bool, timeout: float = 20) -> None:
        self.page.evaluate(_JS_THEME, [theme])
        self.page.wait_for_function(
            "([light]) => document.body.dataset.jpThemeLight === String(light)",
            arg=[light],
            timeout=timeout * 1000,
        )
        # let the theme CSS apply and transitions settle
        self.page.wait_for_timeout(400)
