"""ipybgfetch inside real Jupyter kernels (ipykernel 7, and ipykernel 6 when available).

Run ``.ci/kernels.sh`` first to get the ipykernel 6 kernelspec (``ipybgfetch-ipk6``);
without it only ``python3`` (the current environment's ipykernel) is tested.

What is proven here, per kernel:
- a notebook (executed by nbclient) that loads the extension, starts a throttled download
  and runs a busy cell sees ``reg.downloaded`` grow *during* the busy cell;
- interrupting the kernel during a busy cell does not stop (or corrupt) a download;
- ``await reg`` leaves the kernel's event loop free; ``reg.wait()`` blocks;
- the text repr is a one-line status;
- where output from background threads lands (see ``test_output_from_threads``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_support import KernelSession, kernel_env, kernel_params
from nbclient import NotebookClient

from ipybgfetch.testing import DataServer

pytestmark = pytest.mark.kernel

KERNELS = kernel_params()  # a missing ipykernel 6 kernelspec: a skip with its reason

SETUP = """\
%load_ext ipybgfetch
import asyncio, hashlib, sys, threading, time
import ipykernel, ipybgfetch
def sha256_of(reg):
    h = hashlib.sha256()
    with reg.match_all()[0].response.open() as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
print(ipykernel.__version__)
"""

# 20 MB at 4 MB/s: about 5 s, long enough to overlap busy cells, short enough for CI.
BIG = 20_000_000
RATE = 4_000_000


@pytest.fixture(scope="module", params=KERNELS)
def kernel(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KernelSession]:
    name = request.param
    home = tmp_path_factory.mktemp(f"home-{name}")
    session = KernelSession(name, cwd=home, env=kernel_env(home))
    try:
        setup = session.run(SETUP, timeout=60)
        session.version = setup.stdout.strip()
        yield session
    finally:
        session.shutdown()


def major(session: KernelSession) -> int:
    return int(session.version.split(".")[0])


def lines(cell: Any) -> list[str]:
    return cell.stdout.strip().splitlines()


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_notebook_progress_during_busy_cell(
    kernel_name: str, server: DataServer, tmp_path: Path
) -> None:
    """The issue's notebook: load, start a throttled download, busy cell, progress grew."""
    url = server.url("busy.bin", BIG, throttle=RATE, tag=f"nb-{kernel_name}")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext ipybgfetch\nimport time"),
        nbformat.v4.new_code_cell(f'reg = %bgfetch busy-nb {url} --title "Busy"'),
        nbformat.v4.new_code_cell(
            "before = reg.downloaded\n"
            "t0 = time.monotonic()\n"
            "time.sleep(3)  # the kernel's main thread is busy\n"
            "after = reg.downloaded\n"
            "print(before, after, round(time.monotonic() - t0, 2))"
        ),
        nbformat.v4.new_code_cell("reg.wait(60)\nprint(reg.result, reg.downloaded)"),
        nbformat.v4.new_code_cell("reg"),
    ]
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=90,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=kernel_env(tmp_path / "home"))

    busy_out = nb.cells[2].outputs[0]["text"].split()
    before, after = int(busy_out[0]), int(busy_out[1])
    # ~3 s at 4 MB/s is ~12 MB; demand a third of that to stay robust on slow CI.
    assert after - before >= 4_000_000, busy_out
    assert nb.cells[3].outputs[0]["text"].split() == ["success", str(BIG)]
    text = nb.cells[4].outputs[0]["data"]["text/plain"]
    assert "busy-nb" in text and "\n" not in text.strip()


def test_keyboard_interrupt_does_not_stop_downloads(
    kernel: KernelSession, server: DataServer
) -> None:
    name = f"ki-{kernel.kernel_name}.bin"
    url = server.url(name, BIG, throttle=RATE)
    kernel.run(f"reg = %bgfetch ki {url}")
    busy = kernel.submit("time.sleep(30)")
    kernel.wait_started(busy)
    time.sleep(1.0)
    t0 = time.monotonic()
    kernel.interrupt()
    kernel.wait(busy, timeout=15)
    assert busy.status == "error" and busy.ename == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 10

    check = kernel.run(
        "print(reg.state, reg.downloaded)\n"
        "reg.wait(60)\n"
        "print(reg.result, repr(reg.failure_reason), reg.downloaded)\n"
        "print(sha256_of(reg))",
        timeout=90,
    )
    state_after_interrupt, during, result, reason, total, digest = " ".join(lines(check)).split()
    assert state_after_interrupt == "active"  # not aborted by the interrupt
    assert 0 < int(during) < BIG
    assert (result, reason, int(total)) == ("success", "''", BIG)
    assert digest == DataServer.sha256(name, BIG)


def test_await_reg_keeps_the_event_loop_free(kernel: KernelSession, server: DataServer) -> None:
    url = server.url(f"await-{kernel.kernel_name}.bin", 2_000_000, throttle=1_000_000)
    cell = kernel.run(
        f"r = %bgfetch aw {url}\n"
        "ticks = 0\n"
        "async def ticker():\n"
        "    global ticks\n"
        "    while True:\n"
        "        ticks += 1\n"
        "        await asyncio.sleep(0.05)\n"
        "task = asyncio.ensure_future(ticker())\n"
        "t0 = time.monotonic()\n"
        "res = await r\n"
        "task.cancel()\n"
        "print(res is r, r.result, ticks, round(time.monotonic() - t0, 2))",
        timeout=60,
    )
    same, result, ticks, seconds = cell.stdout.split()
    assert (same, result) == ("True", "success")
    assert float(seconds) >= 1.0
    # the loop ran the ticker while the cell awaited: about 20 ticks a second
    assert int(ticks) >= 5 * float(seconds), cell.stdout


def test_wait_blocks_and_repr_is_one_line(kernel: KernelSession, server: DataServer) -> None:
    url = server.url(f"wait-{kernel.kernel_name}.bin", 1_000_000, throttle=2_000_000)
    cell = kernel.run(
        f"w = %bgfetch wt {url} --download-total 5MB\n"
        "t0 = time.monotonic()\n"
        "w.wait(30)\n"
        "print(w.result, w.downloaded, time.monotonic() - t0 > 0.2)\n"
        "w",
        timeout=60,
    )
    assert cell.stdout.split() == ["success", "1000000", "True"]
    (data,) = cell.results
    text = data["text/plain"].strip()
    assert "\n" not in text
    assert "wt" in text and "%" in text  # state, bytes and percent in one line

    listing = kernel.run("%bgfetch list")
    assert "wt" in listing.results[0]["text/plain"]
    missing = kernel.run("%bgfetch get no-such-id", allow_error=True)
    assert missing.ename == "UsageError"
    assert "no registration with the id 'no-such-id'" in missing.error
    assert "%bgfetch get my-data" in missing.error  # the example
    assert "Traceback" not in missing.stderr + str(missing.reply["content"]["traceback"])


def test_output_from_threads(kernel: KernelSession) -> None:
    """Where print() from a background thread lands, and what output_to() changes.

    - ipykernel 7: a thread's output goes to the cell running *now* (else the last one).
    - ipykernel 6 (6.29+): to the cell that was running when the thread was *created*.
    - ``with output_to(output_target()-from-cell-A):`` sends it to cell A on both.
    """
    a = kernel.run(
        "from ipybgfetch._output import output_target, output_to\n"
        "go = threading.Event()\n"
        "target = output_target()\n"
        "def worker():\n"
        "    go.wait(20)\n"
        "    with output_to(target):\n"
        "        print('ROUTED')\n"
        "    print('PLAIN')\n"
        "th = threading.Thread(target=worker, daemon=True)\n"
        "th.start()\n"
        "print('A')"
    )
    b = kernel.run("go.set()\nth.join(10)\ntime.sleep(0.3)\nprint('B')")
    kernel.drain()
    assert "ROUTED" in a.stdout and "ROUTED" not in b.stdout
    if major(kernel) >= 7:
        assert "PLAIN" in b.stdout and "PLAIN" not in a.stdout
    else:
        assert "PLAIN" in a.stdout and "PLAIN" not in b.stdout


def test_event_handler_output_goes_to_the_starting_cell(
    kernel: KernelSession, server: DataServer
) -> None:
    """ipybgfetch's rule: a registration's callbacks print into the cell that started it."""
    url = server.url(f"routed-{kernel.kernel_name}.bin", 1_000_000, throttle=1_000_000)
    start = kernel.run(
        "mgr = ipybgfetch.manager()\n"
        "def on_success(event):\n"
        "    print('SUCCESS', event.registration.id)\n"
        "mgr.add_event_listener('backgroundfetchsuccess', on_success)\n"
        f"rr = %bgfetch routed {url}\n"
        "print('started')"
    )
    later = kernel.run("rr.wait(30)\ntime.sleep(0.5)\nprint('later')")
    kernel.drain()
    kernel.run("mgr.remove_event_listener('backgroundfetchsuccess', on_success)")
    assert "SUCCESS routed" in start.stdout
    assert "SUCCESS" not in later.stdout
