"""Case 2 (500 x 200 KiB, 16 connections) through the product path, with the CPU time of
each thread of the process, the nginx worker's CPU, the machine's idle time and the
process's context switches per run.

    python benchmarks/experiments/thread_cpu.py                  # this checkout, 5 runs
    TREE=/path/to/other/checkout REPS=3 python benchmarks/experiments/thread_cpu.py
    NOHASH=1 python benchmarks/experiments/thread_cpu.py         # sha256 switched off

A/B comparisons of two checkouts alternate runs of this script with TREE set (wall times
on this VM drift by +-15 % between minutes, so A and B must interleave). Needs nginx
(benchmarks/setup.sh). Prints one line per run: wall, process CPU, per-thread (user, sys).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = os.environ.get("TREE", str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent))

import IPython  # noqa: E402, F401  (loaded in a kernel: fetch() looks it up)
import run as bench  # noqa: E402
from _servers import StaticServer  # noqa: E402

sys.path.insert(0, TREE)
sys.modules.pop("ipybgfetch", None)
import ipybgfetch  # noqa: E402

assert ipybgfetch.__file__ and ipybgfetch.__file__.startswith(TREE), ipybgfetch.__file__
if os.environ.get("NOHASH"):
    from ipybgfetch._integrity import IntegrityHasher

    IntegrityHasher.update = lambda self, chunk: None  # type: ignore[method-assign]

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(stat_path: str) -> tuple[float, float]:
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def threads_cpu() -> dict[str, tuple[float, float]]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            out[f"{name}:{tid}"] = _cpu(f"/proc/self/task/{tid}/stat")
        except OSError:
            continue
    return out


def nginx_cpu(pids: list[int]) -> float:
    return sum(sum(_cpu(f"/proc/{p}/stat")) for p in pids)


def machine_idle() -> float:
    with open("/proc/stat") as f:
        return int(f.readline().split()[4]) / TICK


def main() -> None:
    sizes, work = bench.FULL, bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    rels = data.many(sizes.many_n, sizes.many_size)
    srv = StaticServer(data.root, work / "server").start()
    scratch = work / "runs" / "thread_cpu"
    shutil.rmtree(scratch, ignore_errors=True)
    found = subprocess.run(["pgrep", "nginx"], capture_output=True, text=True).stdout
    nginx = [int(p) for p in found.split()]
    try:
        for i in range(int(os.environ.get("REPS", "5"))):
            mgr = ipybgfetch.BackgroundFetchManager(
                home=scratch / f"home{i}", max_connections_per_host=sizes.conns, auto_resume=False
            )
            urls = [f"{srv.base_url}/{r}" for r in rels]
            mgr.fetch("warm", urls[:1], dest=scratch / f"warm{i}").wait()
            n0, i0, c0, r0 = nginx_cpu(nginx), machine_idle(), threads_cpu(), os.times()
            u0 = resource.getrusage(resource.RUSAGE_SELF)
            s0 = u0.ru_nvcsw + u0.ru_nivcsw
            t0 = time.perf_counter()
            reg = mgr.fetch("p", urls, dest=scratch / f"dest{i}").wait()
            wall = time.perf_counter() - t0
            n1, i1, c1, r1 = nginx_cpu(nginx), machine_idle(), threads_cpu(), os.times()
            per_thread = {
                k: (round(u - c0.get(k, (0, 0))[0], 2), round(s - c0.get(k, (0, 0))[1], 2))
                for k, (u, s) in c1.items()
                if u + s > sum(c0.get(k, (0, 0)))
            }
            cpu = r1.user + r1.system - r0.user - r0.system
            usage = resource.getrusage(resource.RUSAGE_SELF)
            faults = usage.ru_minflt
            switches = usage.ru_nvcsw + usage.ru_nivcsw - s0
            print(
                f"wall {wall:.3f} cpu {cpu:.2f} nginx {n1 - n0:.2f} machine-idle {i1 - i0:.2f} "
                f"switches {switches} minflt(total) {faults} "
                f"threads(user, sys) {per_thread} {reg.result}"
            )
            mgr.close()
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
