"""Prototype: ways to stream one large body to a file with a sha256, measured side by side.

    python benchmarks/experiments/stream_strategies.py [--size-mib 1024] [--reps 5]
                                                        [--only a,b,...]

Not the product: each strategy is the *core loop* of a download (request, read, write to a
``.part`` file, sha256, fsync), run on an asyncio loop in a background thread while the main
thread waits, as ipybgfetch's engine does. No registration, SQLite, progress or retries, so
the gap between ``httpx64`` and the product (``run.py`` case 1) is the product's own cost,
and the gaps between strategies are what an engine change could win. Each run is a fresh
process; strategies alternate; medians. Same nginx and data as ``run.py``.

Strategies
  httpx64           httpx AsyncClient, aiter_raw, write + hash inline (ipybgfetch today)
  httpx256          ... with httpcore's READ_NUM_BYTES = 256 KiB instead of 64 KiB
  httpx256-nohash   ... without the sha256 (what hashing costs on the loop)
  httpx256-offload  ... write + hash in batches of >= 2 MiB on a writer thread
                        (os.writev, one batch in flight: bounded memory)
  httpxaio-offload  httpx with the httpx-aiohttp transport (reads: whatever is buffered)
                        + the writer thread
  aiohttp           aiohttp directly, content.iter_any(), write + hash inline
  aiohttp-offload   ... + the writer thread
  protocol-offload  a raw asyncio BufferedProtocol receiving into 1 MiB buffers + the
                        writer thread (an upper bound for an asyncio design)
  thread-sync       blocking http.client readinto(1 MiB) + write + hash in one thread
                        (what requests does; a transfer thread instead of the loop)
  curl              curl -o (reference)
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import http.client
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
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

BATCH = 2 << 20
BUF = 1 << 20


class OffloadSink:
    """Write + hash on one writer thread, in batches; at most one batch in flight."""

    def __init__(self, path: str, hashing: bool = True) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.h = hashlib.sha256() if hashing else None
        self.buf: list[bytes] = []
        self.n = 0
        self.pending: asyncio.Future[None] | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="writer")

    def _write(self, chunks: list[bytes]) -> None:
        for i in range(0, len(chunks), 512):  # IOV_MAX is 1024 on Linux
            part = chunks[i : i + 512]
            want = sum(len(c) for c in part)
            done = os.writev(self.fd, part)
            if done != want:  # short write: finish it the slow way
                rest = b"".join(part)[done:]
                while rest:
                    rest = rest[os.write(self.fd, rest) :]
        if self.h is not None:
            for c in chunks:
                self.h.update(c)

    async def feed(self, chunk: bytes) -> None:
        self.buf.append(chunk)
        self.n += len(chunk)
        if self.n >= BATCH:
            await self._flush()

    async def _flush(self) -> None:
        data, self.buf, self.n = self.buf, [], 0
        if self.pending is not None:
            await self.pending
        self.pending = asyncio.wrap_future(self.pool.submit(self._write, data))

    async def close(self) -> str:
        if self.buf:
            await self._flush()
        if self.pending is not None:
            await self.pending
        await asyncio.wrap_future(self.pool.submit(os.fsync, self.fd))
        os.close(self.fd)
        self.pool.shutdown()
        return self.h.hexdigest() if self.h else ""


class InlineSink:
    def __init__(self, path: str, hashing: bool = True) -> None:
        self.f = open(path, "wb")  # noqa: SIM115
        self.h = hashlib.sha256() if hashing else None

    async def feed(self, chunk: bytes) -> None:
        self.f.write(chunk)
        if self.h is not None:
            self.h.update(chunk)

    async def close(self) -> str:
        self.f.flush()
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, self.f.fileno())
        self.f.close()
        return self.h.hexdigest() if self.h else ""


async def via_httpx(url: str, sink: Any, read_size: int = 0, aio: bool = False) -> None:
    import httpx

    if read_size:
        import httpcore._async.http11 as m

        m.AsyncHTTP11Connection.READ_NUM_BYTES = read_size
    kwargs: dict[str, Any] = {}
    if aio:
        from httpx_aiohttp import AiohttpTransport
        from httpx_aiohttp import transport as t

        async def iter_any(self: Any) -> Any:
            with t.map_aiohttp_exceptions():
                async for chunk in self._aiohttp_response.content.iter_any():
                    yield chunk

        t.AiohttpResponseStream.__aiter__ = iter_any
        kwargs["transport"] = AiohttpTransport()
    async with (
        httpx.AsyncClient(**kwargs) as client,
        client.stream("GET", url) as resp,
    ):
        async for chunk in resp.aiter_raw():
            await sink.feed(chunk)


async def via_aiohttp(url: str, sink: Any) -> None:
    import aiohttp

    async with aiohttp.ClientSession(auto_decompress=False) as s, s.get(url) as resp:
        async for chunk in resp.content.iter_any():
            await sink.feed(chunk)


class _Body(asyncio.BufferedProtocol):
    def __init__(self, sink: OffloadSink) -> None:
        self.sink = sink
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.pos = 0
        self.header = b""
        self.remaining: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.flushing: asyncio.Task[None] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.pos :]

    def buffer_updated(self, nbytes: int) -> None:
        start = self.pos
        self.pos += nbytes
        if self.remaining is None:
            data = bytes(self.view[: self.pos])
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            head = data[:end].decode("latin-1").split("\r\n")
            length = next(
                int(h.split(":")[1]) for h in head if h.lower().startswith("content-length")
            )
            body = data[end + 4 :]
            self.remaining = length - len(body)
            self.view[: len(body)] = body
            self.pos = len(body)
        else:
            self.remaining -= self.pos - start
        if self.pos == len(self.buf) or self.remaining <= 0:
            chunk = bytes(self.view[: self.pos])  # hand a copy to the writer; reuse buffer
            self.pos = 0
            assert self.transport is not None
            self.transport.pause_reading()
            self.flushing = asyncio.ensure_future(self._feed(chunk))

    async def _feed(self, chunk: bytes) -> None:
        await self.sink.feed(chunk)
        assert self.transport is not None and self.remaining is not None
        if self.remaining <= 0:
            self.done.set_result(None)
        else:
            self.transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed early"))


async def via_protocol(url: str, sink: OffloadSink) -> None:
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(lambda: _Body(sink), u.hostname, u.port)
    transport.write(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    await proto.done
    transport.close()


def via_thread_sync(url: str, path: str) -> str:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.request("GET", u.path)
    resp = conn.getresponse()
    h = hashlib.sha256()
    buf = bytearray(BUF)
    view = memoryview(buf)
    with open(path, "wb") as f:
        while n := resp.readinto(buf):
            f.write(view[:n])
            h.update(view[:n])
        f.flush()
        os.fsync(f.fileno())
    conn.close()
    return h.hexdigest()


def run_one(name: str, url: str, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def engine() -> None:
        if name == "thread-sync":
            out["sha"] = via_thread_sync(url, path)
            return

        async def main() -> None:
            hashing = not name.endswith("nohash")
            offload = "offload" in name
            sink: Any = OffloadSink(path, hashing) if offload else InlineSink(path, hashing)
            if name.startswith("httpxaio"):
                await via_httpx(url, sink, aio=True)
            elif name.startswith("httpx256"):
                await via_httpx(url, sink, 256 * 1024)
            elif name.startswith("httpx64"):
                await via_httpx(url, sink)
            elif name.startswith("aiohttp"):
                await via_aiohttp(url, sink)
            elif name.startswith("protocol"):
                await via_protocol(url, sink)
            else:
                raise SystemExit(f"unknown strategy {name}")
            out["sha"] = await sink.close()

        asyncio.run(main())

    # import outside the timed region, as a running kernel would have
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401
    import httpx_aiohttp  # noqa: F401

    c0, t0 = time.process_time(), time.perf_counter()
    th = threading.Thread(target=engine, name="engine")
    th.start()
    th.join()
    out.update(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)
    return out


STRATEGIES = [
    "curl",
    "httpx64",
    "httpx256",
    "httpx256-nohash",
    "httpx256-offload",
    "httpxaio-offload",
    "aiohttp",
    "aiohttp-offload",
    "protocol-offload",
    "thread-sync",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=3, metavar=("NAME", "URL", "PATH"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one)))
        return

    import run as bench
    from _servers import StaticServer

    size = args.size_mib << 20
    work = bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    data.root.mkdir(parents=True, exist_ok=True)
    rel, sha = data.big(size)
    names = [s for s in STRATEGIES if not args.only or s in args.only.split(",")]
    srv = StaticServer(data.root, work / "server").start()
    url = f"{srv.base_url}/{rel}"
    dest = work / "runs" / "strategies"
    dest.mkdir(parents=True, exist_ok=True)
    res: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for n in order:
                path = dest / "out.bin"
                if n == "curl":
                    r = bench.run_tool(["curl", "-sS", "-o", str(path), url])
                    got = {"wall": r.wall, "cpu": r.cpu, "sha": sha, "foreign": r.foreign_cores}
                else:
                    load = bench.Load()
                    p = subprocess.run(
                        [sys.executable, __file__, "--one", n, url, str(path)],
                        capture_output=True,
                        text=True,
                    )
                    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
                    if line is None:
                        print(n, "FAILED", p.stderr[-1500:], file=sys.stderr)
                        continue
                    got = json.loads(line[7:])
                    got["foreign"] = load.foreign_cores(got["cpu"])
                ok = got["sha"] in (sha, "") and path.stat().st_size == size
                path.unlink()
                if not ok:
                    print(n, "WRONG CONTENT", file=sys.stderr)
                    continue
                res[n].append(got)
                print(f"rep {rep + 1} {n:<18} {got['wall']:.3f} s", file=sys.stderr)
    finally:
        srv.stop()
        shutil.rmtree(dest, ignore_errors=True)
    curl = statistics.median(r["wall"] for r in res.get("curl", [])) if res.get("curl") else None
    gib = size / (1 << 30)
    print(f"\n{args.size_mib} MiB, {args.reps} reps, medians\n")
    print("| strategy | wall s | × curl | CPU s/GiB | other load |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for n in names:
        if not res[n]:
            print(f"| {n} | failed | | | |")
            continue
        w = statistics.median(r["wall"] for r in res[n])
        c = statistics.median(r["cpu"] for r in res[n])
        f = statistics.median(r["foreign"] for r in res[n])
        x = f"{w / curl:.2f}×" if curl else "–"
        print(f"| {n} | {w:.3f} | {x} | {c / gib:.2f} | {f:.2f} |")
        summary[n] = {"wall_s": w, "cpu_s_per_gib": c / gib, "runs": res[n]}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "stream_strategies.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
