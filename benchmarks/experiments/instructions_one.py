"""One case-2 style download (N files of 200 KiB from nginx), for instruction counting.

Run by ``instructions.sh`` under ``valgrind --tool=callgrind --instr-atstart=no``; the
script switches instrumentation on (``callgrind_control -i on``) only around
``mgr.fetch(...).wait()``, after imports and a warm-up fetch. Instruction counts are
repeatable to ~0.2 % here, where wall times on this shared 2-core VM vary by +-15 %, so
per-record changes too small to see in ``run.py`` can still be measured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import IPython  # noqa: F401  (loaded in a kernel: fetch() looks it up)
import run as bench
from _servers import StaticServer

import ipybgfetch


def instrument(state: str) -> None:
    if os.environ.get("CG"):
        cmd = ["callgrind_control", "-i", state, str(os.getpid())]
        subprocess.run(cmd, capture_output=True, check=False)


def main() -> None:
    sizes, work = bench.FULL, bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    rels = data.many(sizes.many_n, sizes.many_size)[: int(os.environ.get("N", "500"))]
    srv = StaticServer(data.root, work / "server").start()
    scratch = work / "runs" / "instructions"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        mgr = ipybgfetch.BackgroundFetchManager(
            home=scratch / "home", max_connections_per_host=sizes.conns, auto_resume=False
        )
        urls = [f"{srv.base_url}/{r}" for r in rels]
        mgr.fetch("warm", urls[:1], dest=scratch / "warm").wait()
        instrument("on")
        t0 = time.perf_counter()
        reg = mgr.fetch("p", urls, dest=scratch / "dest")
        if os.environ.get("FETCH_ONLY"):  # count fetch() alone
            instrument("off")
        reg.wait()
        wall = time.perf_counter() - t0
        instrument("off")
        print(f"wall {wall:.3f} s, {reg.result}", file=sys.stderr)
        mgr.close()
    finally:
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
