"""Helpers for the resilience tests: real worker processes, file digests, polling.

Run as a script, this module is a *worker*: a separate Python process that opens a
``BackgroundFetchManager`` on a home folder, optionally starts fetches, and reports the
state of every registration it knows as one JSON line every ``REPORT_INTERVAL`` seconds
on stdout, until it is killed (or every registration settled, with ``"exit_when_done"``).
The tests drive it with :class:`Worker` and kill it with SIGKILL mid-download::

    python tests/resilience_support.py '{"home": "/tmp/h", "fetches": [...]}'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPORT_INTERVAL = 0.05
LEASE_TIMEOUT = 1.0  # seconds: what the tests' processes use (the default is 10 s)
HERE = Path(__file__).resolve()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def closed_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------------------


class Worker:
    """A worker process and the latest report it printed."""

    def __init__(self, spec: dict[str, Any], *, lease_timeout: float = LEASE_TIMEOUT) -> None:
        env = dict(os.environ)
        env["IPYBGFETCH_LEASE_TIMEOUT"] = str(lease_timeout)
        env["PYTHONUNBUFFERED"] = "1"
        # this checkout's package, not whichever one is installed (sys.path[0] of the
        # worker is tests/, where the package is not)
        root = str(HERE.resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.spec = spec
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.reports: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.reports.append(report)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return self.reports[-1] if self.reports else None

    def registration(self, id: str) -> dict[str, Any] | None:
        last = self.last
        if last is None:
            return None
        return next((r for r in last["registrations"] if r["id"] == id), None)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20.0, what: str = ""
    ) -> dict[str, Any]:
        def check() -> Any:
            if self.proc.poll() is not None and not self.reports:
                raise AssertionError(f"worker exited early:\n{''.join(self.stderr)}")
            last = self.last
            return last if last is not None and predicate(last) else None

        try:
            return wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nlast report: {self.last}\nstderr:\n{''.join(self.stderr)[-3000:]}"
            ) from None

    def wait_for_registration(
        self, id: str, predicate: Callable[[dict[str, Any]], Any], timeout: float = 20.0
    ) -> dict[str, Any]:
        def check(report: dict[str, Any]) -> Any:
            reg = next((r for r in report["registrations"] if r["id"] == id), None)
            return reg is not None and predicate(reg)

        self.wait_for(check, timeout, f"registration {id!r} to satisfy the condition")
        reg = self.registration(id)
        assert reg is not None
        return reg

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, no last checkpoint."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _report(mgr: Any) -> dict[str, Any]:
    regs = []
    for reg in mgr.registrations():
        records = []
        for d in reg._job.records:  # the engine's data: read-only here, for the report
            records.append(
                {
                    "url": d.request.url,
                    "state": d.state,
                    "downloaded": d.downloaded,
                    "attempts": d.attempts,
                    "error": d.error,
                    "sha256": d.sha256,
                    "path": str(d.final_path) if d.final_path else None,
                }
            )
        regs.append(
            {
                "id": reg.id,
                "state": reg.state,
                "result": reg.result,
                "failure_reason": reg.failure_reason,
                "downloaded": reg.downloaded,
                "read_only": reg.read_only,
                "downloading": bool(reg._job.tasks),
                "records": records,
            }
        )
    return {"pid": os.getpid(), "time": time.time(), "registrations": regs}


def worker_main(spec: dict[str, Any]) -> int:
    from ipybgfetch import BackgroundFetchManager, Request, RetryPolicy

    policy = RetryPolicy(**spec.get("retries", {"backoff": 0.05, "max_backoff": 0.5}))
    mgr = BackgroundFetchManager(
        home=spec["home"],
        retries=policy,
        auto_resume=spec.get("auto_resume", True),
        **spec.get("manager", {}),
    )
    for f in spec.get("fetches", []):
        requests = [
            u
            if isinstance(u, str)
            else Request(u["url"], method=u["method"], body=b"u" * u["body_size"])
            for u in f["urls"]
        ]
        mgr.fetch(
            f["id"],
            requests,
            headers=f.get("headers"),
            dest=f.get("dest"),
            **f.get("options", {}),
        )
        if f.get("wait"):
            mgr.get(f["id"]).wait(30)  # type: ignore[union-attr]
    if not spec.get("fetches"):
        mgr.registrations()  # starts the engine: restores and adopts
    deadline = time.monotonic() + spec.get("max_seconds", 60)
    while time.monotonic() < deadline:
        report = _report(mgr)
        print(json.dumps(report), flush=True)
        if spec.get("exit_when_done") and all(r["result"] for r in report["registrations"]):
            mgr.close()
            return 0
        time.sleep(REPORT_INTERVAL)
    mgr.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(json.loads(sys.argv[1])))
