"""Kernel responsiveness: execute round-trips to a real ipykernel, idle and during a download.

A ``jupyter_client`` ``KernelManager`` starts the current environment's ``python3`` kernel.
A *ping* is one trivial ``execute_request`` (code ``pass``, plus a one-attribute
``user_expressions`` that tells the pinger whether the download has settled), timed from
sending it to receiving its ``execute_reply`` on the shell channel. The download runs in that
kernel through the product path (``_reg = _mgr.fetch(...)`` in a cell), exactly as a user's
would; pings go out back to back with ``gap`` seconds between them, first with the kernel
idle (ipybgfetch imported, a manager built, nothing downloading), then while it downloads.
"""

from __future__ import annotations

import contextlib
import queue
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SETUP = """\
import time as _time
import ipybgfetch as _ipybgfetch
_options = {{}}
if {variant!r}:
    import sys as _sys
    _sys.path.insert(0, {bench!r})
    import _worker as _bench_worker
    _bench_worker._apply_patches({variant!r})
    _options = _bench_worker._variant_client_options({variant!r})
_mgr = _ipybgfetch.BackgroundFetchManager(
    home={home!r}, auto_resume=False, client_options=_options
)
_reg = None
_done_at = []
_mgr.add_event_listener("backgroundfetchsuccess", lambda e: _done_at.append(_time.perf_counter()))
_mgr.add_event_listener("backgroundfetchfail", lambda e: _done_at.append(_time.perf_counter()))
def _bench_state():
    return "idle" if _reg is None else (_reg.result or "active")
"""

START = """\
_t0 = _time.perf_counter()
_reg = _mgr.fetch({id!r}, {url!r}, dest={dest!r})
"""

PING_EXPR = {"s": "_bench_state()"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def summarize(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    ms = [x * 1000 for x in samples]
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


class _Kernel:
    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(
        self, code: str, expressions: dict[str, str] | None = None, timeout: float = 120
    ) -> dict[str, Any]:
        msg_id = self.kc.execute(
            code, store_history=False, user_expressions=expressions or {}, allow_stdin=False
        )
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                content = reply["content"]
                if content.get("status") != "ok":
                    raise RuntimeError(
                        f"kernel error in {code!r}: {content.get('ename')}: {content.get('evalue')}"
                    )
                return content

    def drain(self) -> None:
        # Not iopub_channel.get_msgs(): in jupyter_client 8 it blocks when the queue is empty.
        with contextlib.suppress(queue.Empty):
            while True:
                self.kc.iopub_channel.get_msg(timeout=0)

    def expr(self, content: dict[str, Any], name: str) -> str:
        value = content["user_expressions"][name]
        if value.get("status") != "ok":
            raise RuntimeError(f"user expression failed: {value}")
        return str(value["data"]["text/plain"]).strip("'\"")

    def ping(self) -> tuple[float, str]:
        t0 = time.perf_counter()
        content = self.execute("pass", PING_EXPR)
        dt = time.perf_counter() - t0
        self.drain()
        return dt, self.expr(content, "s")

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return getattr(proc, "pid", None)

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


class _LoadProbe:
    """Other processes' CPU (in cores) between construction and ``done()``."""

    def __init__(self, factory: Callable[[], Any] | None, kernel_pid: int | None) -> None:
        from run import _pids_cpu

        self._cpu = _pids_cpu
        self.pid = kernel_pid
        self.load = factory() if factory is not None else None
        self.k0 = _pids_cpu([kernel_pid]) if kernel_pid else 0.0

    def done(self) -> float | None:
        if self.load is None:
            return None
        kernel_cpu = (self._cpu([self.pid]) if self.pid else 0.0) - self.k0
        return float(self.load.foreign_cores(kernel_cpu))


def measure(
    url: str,
    size: int,
    home: str,
    dest_root: str,
    reps: int,
    gap: float = 0.01,
    idle_pings: int = 300,
    log: Any = print,
    variant: dict[str, Any] | None = None,
    load_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run the download ``reps`` times in one kernel; return idle and busy ping statistics.

    ``variant``: an experiment of ``_worker.py`` (patches and client options) applied in the
    kernel before the manager is built. ``load_factory``: ``run.Load``, to record how much
    CPU other processes used while the pings ran (the kernel's own CPU subtracted).
    """
    k = _Kernel()
    try:
        bench = str(Path(__file__).resolve().parent)
        k.execute(SETUP.format(home=home, variant=variant or {}, bench=bench))
        for _ in range(20):  # warm up: first executes pay for lazy imports
            k.ping()
        idle: list[float] = []
        idle_load = _LoadProbe(load_factory, k.pid)
        for _ in range(idle_pings):
            dt, _state = k.ping()
            idle.append(dt)
            time.sleep(gap)
        idle_other = idle_load.done()
        busy: list[float] = []
        walls: list[float] = []
        busy_other: list[float] = []
        for rep in range(reps):
            reg_id = f"kernel-{rep}"
            dest = f"{dest_root}/{reg_id}"
            probe = _LoadProbe(load_factory, k.pid)
            k.execute(START.format(id=reg_id, url=url, dest=dest))
            state = "active"
            per_rep = 0
            while state == "active":
                dt, state = k.ping()
                busy.append(dt)
                per_rep += 1
                time.sleep(gap)
            other = probe.done()
            if other is not None:
                busy_other.append(other)
            content = k.execute("_reg.wait()", {"w": "_done_at[-1] - _t0", "d": "_reg.downloaded"})
            wall = float(k.expr(content, "w"))
            downloaded = int(k.expr(content, "d"))
            if state != "success" or downloaded != size:
                raise RuntimeError(f"kernel download ended {state} with {downloaded} bytes")
            walls.append(wall)
            k.execute(f"_mgr.delete({reg_id!r})")
            log(f"    kernel rep {rep + 1}: download {wall:.2f} s, {per_rep} pings during it")
        return {
            "idle": summarize(idle),
            "during_download": summarize(busy),
            "download_wall_s": statistics.median(walls),
            "download_walls_s": walls,
            "gap_s": gap,
            "size": size,
            "reps": reps,
            "variant": variant or {},
            "other_load_idle": idle_other,
            "other_load_during": statistics.median(busy_other) if busy_other else None,
        }
    finally:
        k.close()
