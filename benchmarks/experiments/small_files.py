"""Prototype: the per-file floor of the HTTP layer for case 3 (10,000 x 4 KiB, 16 workers).

    python benchmarks/experiments/small_files.py [--n 10000] [--reps 3] [--only a,b]

Not the product: 16 asyncio workers on a loop in a background thread take URLs from a
shared queue, GET each, read the body, write ``name.part``, rename it to ``name`` (the
product's file dance without fsync, SQLite, progress or retries). What is left per file is
the HTTP layer's own cost, which tells how much of ipybgfetch's per-file time
(``run.py`` case 3) is httpx, and how much is the product around it.

Strategies
  httpx              httpx.AsyncClient (default httpcore pool), client.stream() + aiter_raw
  httpx-cheapexpiry  ... with httpcore's per-request socket poll of every pooled
                         connection (has_expired -> is_readable) replaced by the time check
  httpx-aiohttp      httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())
  transport-aiohttp  the same transport called directly (transport.handle_async_request),
                         skipping AsyncClient.send (cookies, redirects, auth, event hooks)
  aiohttp            aiohttp.ClientSession directly
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

WORKERS = 16


def _save(dest: str, name: str, body: bytes) -> None:
    part = os.path.join(dest, name + ".part")
    with open(part, "wb") as f:
        f.write(body)
    os.replace(part, os.path.join(dest, name))


async def _drive(urls: list[str], fetch: Any, dest: str) -> None:
    q = list(reversed(urls))

    async def worker() -> None:
        while q:
            url = q.pop()
            body = await fetch(url)
            _save(dest, url.rsplit("/", 1)[1], body)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))


async def run_httpx(urls: list[str], dest: str, mode: str) -> None:
    import httpx

    if mode == "httpx-cheapexpiry":
        from httpcore._async.http11 import AsyncHTTP11Connection as C

        def has_expired(self: Any) -> bool:
            return self._expire_at is not None and time.monotonic() > self._expire_at

        C.has_expired = has_expired  # type: ignore[method-assign]
    kwargs: dict[str, Any] = {"limits": httpx.Limits(max_connections=None)}
    if mode in ("httpx-aiohttp", "transport-aiohttp"):
        from httpx_aiohttp import AiohttpTransport

        kwargs["transport"] = AiohttpTransport()
    async with httpx.AsyncClient(**kwargs) as client:
        if mode == "transport-aiohttp":
            transport = kwargs["transport"]

            async def fetch(url: str) -> bytes:
                req = httpx.Request("GET", url)
                resp = await transport.handle_async_request(req)
                try:
                    return b"".join([c async for c in resp.stream])
                finally:
                    await resp.aclose()
        else:

            async def fetch(url: str) -> bytes:
                async with client.stream("GET", url) as resp:
                    return b"".join([c async for c in resp.aiter_raw()])

        await _drive(urls, fetch, dest)


async def run_aiohttp(urls: list[str], dest: str) -> None:
    import aiohttp

    conn = aiohttp.TCPConnector(limit=WORKERS)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as s:

        async def fetch(url: str) -> bytes:
            async with s.get(url) as resp:
                return await resp.read()

        await _drive(urls, fetch, dest)


def run_one(mode: str, urls_file: str, dest: str) -> dict[str, Any]:
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401
    import httpx_aiohttp  # noqa: F401

    urls = Path(urls_file).read_text().split()

    def engine() -> None:
        coro = run_aiohttp(urls, dest) if mode == "aiohttp" else run_httpx(urls, dest, mode)
        asyncio.run(coro)

    c0, t0 = time.process_time(), time.perf_counter()
    th = threading.Thread(target=engine)
    th.start()
    th.join()
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


MODES = ["httpx", "httpx-cheapexpiry", "httpx-aiohttp", "transport-aiohttp", "aiohttp"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one)))
        return
    import run as bench
    from _servers import StaticServer

    work = bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    data.root.mkdir(parents=True, exist_ok=True)
    rels = data.many(args.n, 4096)
    srv = StaticServer(data.root, work / "server").start()
    scratch = work / "runs" / "small"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    urls = scratch / "urls.txt"
    urls.write_text("\n".join(f"{srv.base_url}/{r}" for r in rels) + "\n")
    modes = [m for m in MODES if not args.only or m in args.only.split(",")]
    res: dict[str, list[dict[str, Any]]] = {m: [] for m in [*modes, "curl -Z"]}
    try:
        for rep in range(args.reps):
            order = modes[rep % len(modes) :] + modes[: rep % len(modes)]
            for m in ["curl -Z", *order]:
                dest = scratch / "dest"
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir()
                if m == "curl -Z":
                    job = bench.Job(
                        [f"{srv.base_url}/{r}" for r in rels],
                        [Path(r).name for r in rels],
                        4096,
                        conns=WORKERS,
                    )
                    r = bench.curl_parallel(job, dest, scratch)
                    got = {"wall": r.wall, "cpu": r.cpu}
                else:
                    p = subprocess.run(
                        [sys.executable, __file__, "--one", m, str(urls), str(dest)],
                        capture_output=True,
                        text=True,
                    )
                    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), "")
                    if not line:
                        print(m, "FAILED", p.stderr[-1500:], file=sys.stderr)
                        continue
                    got = json.loads(line[7:])
                n_ok = sum(1 for _ in dest.iterdir())
                if n_ok != args.n:
                    print(m, f"only {n_ok} files", file=sys.stderr)
                    continue
                res[m].append(got)
                print(f"rep {rep + 1} {m:<18} {got['wall']:.3f} s", file=sys.stderr)
    finally:
        srv.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{args.n:,} x 4 KiB, {WORKERS} workers, {args.reps} reps, medians\n")
    print("| strategy | wall s | files/s | CPU ms/file |")
    print("|---|---:|---:|---:|")
    summary = {}
    for m, rs in res.items():
        if not rs:
            continue
        w = statistics.median(r["wall"] for r in rs)
        c = statistics.median(r["cpu"] for r in rs)
        print(f"| {m} | {w:.3f} | {args.n / w:,.0f} | {1000 * c / args.n:.3f} |")
        summary[m] = {"wall_s": w, "files_per_s": args.n / w, "cpu_ms_per_file": c / args.n * 1000}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "small_files.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
