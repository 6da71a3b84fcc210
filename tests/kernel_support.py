"""Drive a real Jupyter kernel from tests: execute cells, interrupt, and see where output lands.

Every IOPub message is filed under the ``msg_id`` of the request it answers (its parent), so
a test can ask "what did cell A print?" even for output that arrived while cell B ran, or
after cell A had finished.
"""

from __future__ import annotations

import os
import queue
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[1]

#: The kernelspec the current environment always provides (ipykernel 7 in CI).
DEFAULT_KERNEL = "python3"
#: The kernelspec ``.ci/kernels.sh`` registers: a venv with ipykernel 6.
IPK6_KERNEL = os.environ.get("IPK6_NAME", "ipybgfetch-ipk6")


def missing_kernel(name: str) -> str | None:
    """Why the kernelspec ``name`` cannot be used (None: it is installed)."""
    if name == DEFAULT_KERNEL:
        return None  # jupyter_client always provides the current environment's kernel
    try:
        specs = KernelSpecManager().find_kernel_specs()
    except Exception as exc:  # pragma: no cover
        return f"cannot list the kernelspecs: {exc!r}"
    if name in specs:
        return None
    return (
        f"kernelspec {name!r} (ipykernel 6) is not installed: run `bash .ci/kernels.sh` "
        "(it needs network access to install ipykernel 6) to test on ipykernel 6 too"
    )


def available_kernels() -> list[str]:
    """``python3`` and, when ``.ci/kernels.sh`` has run, the ipykernel 6 kernelspec."""
    return [n for n in (DEFAULT_KERNEL, IPK6_KERNEL) if missing_kernel(n) is None]


def kernel_params() -> list[Any]:
    """Every kernel the tests run on, as pytest params: a missing one is reported as a skip
    with its reason, never left out silently."""
    params: list[Any] = []
    for name in (DEFAULT_KERNEL, IPK6_KERNEL):
        reason = missing_kernel(name)
        params.append(
            name if reason is None else pytest.param(name, marks=pytest.mark.skip(reason=reason))
        )
    return params


def kernel_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a test kernel: the repo importable, a private IPYBGFETCH_HOME."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["IPYBGFETCH_HOME"] = str(home)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiet the debugger's frozen-modules warning
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


@dataclass
class Cell:
    """One execute request: its reply and every IOPub message sent on its behalf."""

    msg_id: str
    code: str
    messages: list[dict[str, Any]]
    reply: dict[str, Any] | None = None
    submitted: float = field(default_factory=time.monotonic)

    @property
    def status(self) -> str | None:
        return None if self.reply is None else self.reply["content"]["status"]

    @property
    def ename(self) -> str | None:
        return None if self.reply is None else self.reply["content"].get("ename")

    def _streams(self, name: str) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self._streams("stdout")

    @property
    def stderr(self) -> str:
        return self._streams("stderr")

    @property
    def results(self) -> list[dict[str, Any]]:
        """``data`` of every execute_result and display_data, in order."""
        return [
            m["content"]["data"]
            for m in self.messages
            if m["msg_type"] in ("execute_result", "display_data")
        ]

    @property
    def error(self) -> str:
        errors = [m["content"] for m in self.messages if m["msg_type"] == "error"]
        if not errors and self.reply is not None and self.status == "error":
            errors = [self.reply["content"]]  # a UsageError sends no error message
        return "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)


class KernelSession:
    """A started kernel plus a client; ``run()`` a cell, ``submit()`` + ``wait()`` for control."""

    def __init__(
        self, kernel_name: str, *, cwd: Path, env: Mapping[str, str], startup: float = 60
    ) -> None:
        self.kernel_name = kernel_name
        self.version = ""  # ipykernel's version, for tests that set it
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel(cwd=str(cwd), env=dict(env))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=startup)
        except Exception:
            self.shutdown()
            raise
        self.iopub: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.replies: dict[str, dict[str, Any]] = {}
        self.cells: dict[str, Cell] = {}

    # -- message plumbing ------------------------------------------------------------------
    def _pump_iopub(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        parent = msg.get("parent_header", {}).get("msg_id", "")
        self.iopub[parent].append(msg)
        return msg

    def _pump_shell(self, timeout: float) -> None:
        try:
            msg = self.kc.get_shell_msg(timeout=timeout)
        except queue.Empty:
            return
        parent = msg.get("parent_header", {}).get("msg_id", "")
        self.replies[parent] = msg
        if parent in self.cells:
            self.cells[parent].reply = msg

    def drain(self, quiet: float = 0.3, limit: float = 5.0) -> None:
        """Read IOPub until nothing arrives for ``quiet`` seconds (at most ``limit``)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._pump_iopub(timeout=quiet) is None:
                return

    # -- cells -----------------------------------------------------------------------------
    def submit(self, code: str) -> Cell:
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False)
        cell = Cell(msg_id, code, self.iopub[msg_id])
        self.cells[msg_id] = cell
        return cell

    def wait_started(self, cell: Cell, timeout: float = 10) -> None:
        """Until the kernel says it is busy with ``cell``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                m["msg_type"] == "status" and m["content"]["execution_state"] == "busy"
                for m in cell.messages
            ):
                return
            self._pump_iopub(timeout=0.05)
        raise TimeoutError(f"cell did not start within {timeout} s:\n{cell.code}")

    def wait(self, cell: Cell, timeout: float = 60) -> Cell:
        """Until ``cell`` is idle and replied."""
        deadline = time.monotonic() + timeout
        idle = False
        while time.monotonic() < deadline and not idle:
            msg = self._pump_iopub(timeout=0.1)
            if msg is not None and (
                msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == cell.msg_id
            ):
                idle = True
        while cell.reply is None and time.monotonic() < deadline:
            self._pump_shell(timeout=0.1)
        if not idle or cell.reply is None:
            raise TimeoutError(
                f"cell did not finish within {timeout} s:\n{cell.code}\n"
                f"stdout so far: {cell.stdout!r}\nstderr so far: {cell.stderr!r}"
            )
        return cell

    def run(self, code: str, timeout: float = 60, allow_error: bool = False) -> Cell:
        cell = self.wait(self.submit(code), timeout=timeout)
        if not allow_error and cell.status != "ok":
            raise AssertionError(
                f"cell failed on {self.kernel_name}:\n{code}\n--- error ---\n{cell.error}\n"
                f"--- stderr ---\n{cell.stderr}"
            )
        return cell

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)
