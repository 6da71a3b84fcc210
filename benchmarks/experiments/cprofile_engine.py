"""Deterministic profile of the engine thread (cProfile) on benchmark case 2 or 3.

    python benchmarks/experiments/cprofile_engine.py [--case 2] [--top 40]

py-spy samples (pyspy_profile.py) show where the time goes across threads; this counts every call
on the engine loop thread, which is what per-record overhead is made of. cProfile slows
Python code ~2x, so read the shares, not the seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import run as bench  # noqa: E402
from _servers import StaticServer  # noqa: E402

import ipybgfetch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="2", choices=["2", "3"])
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    sizes = bench.FULL
    work = bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    data.root.mkdir(parents=True, exist_ok=True)
    if args.case == "2":
        rels = data.many(sizes.many_n, sizes.many_size)
    else:
        rels = data.many(sizes.tiny_n, sizes.tiny_size)
    srv = StaticServer(data.root, work / "server").start()
    scratch = work / "runs" / "cprofile"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        mgr = ipybgfetch.BackgroundFetchManager(
            home=scratch / "home", max_connections_per_host=sizes.conns, auto_resume=False
        )
        prof = cProfile.Profile()
        started = threading.Event()

        def enable() -> None:
            prof.enable()
            started.set()

        mgr._engine.run(_noop())  # start the loop thread
        mgr._engine.loop.call_soon_threadsafe(enable)
        started.wait()
        urls = [f"{srv.base_url}/{r}" for r in rels]
        reg = mgr.fetch("p", urls, dest=scratch / "dest").wait()
        done = threading.Event()
        mgr._engine.loop.call_soon_threadsafe(lambda: (prof.disable(), done.set()))
        done.wait()
        print(reg.result, reg.downloaded)
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
        prof.dump_stats(str(HERE / "profiles" / f"engine-case{args.case}.pstats"))
        mgr.close()
    finally:
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)


async def _noop() -> None:
    return None


if __name__ == "__main__":
    main()
