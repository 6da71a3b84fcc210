"""What an asyncio design can reach on case 2 at best: 16 ``asyncio.Protocol``
connections, the least HTTP parsing that works against nginx, each body handed to one
writer thread (write, sha256, fsync, rename). No httpx, no records, no retries, no
names: a floor for the product's engine, not a client.

    python benchmarks/experiments/asyncio_floor.py             # sha256 on the writer thread
    LOOPHASH=1 python benchmarks/experiments/asyncio_floor.py  # sha256 on the loop, as bytes arrive
    NOHASH=1 python benchmarks/experiments/asyncio_floor.py    # no sha256

Measured 2026-11-25 (docs/benchmarks.md, session 4): 0.13-0.19 s with sha256 (the range
is the machine's drift over minutes), 0.10-0.13 s without; aria2c 0.21 s. Needs nginx
(benchmarks/setup.sh).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run as bench
from _servers import StaticServer

HASH = not os.environ.get("NOHASH")
LOOPHASH = HASH and bool(os.environ.get("LOOPHASH"))


class Connection(asyncio.Protocol):
    """One keep-alive connection; GET only, Content-Length bodies only."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.chunks: list[bytes] = []
        self.hash = hashlib.sha256()
        self.need = self.got = 0
        self.in_head = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            end = data.find(b"\r\n\r\n")
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    self.need = int(value)
            self.in_head = False
            data = data[end + 4 :]
        if data:
            self.chunks.append(data)
            self.got += len(data)
            if LOOPHASH:
                self.hash.update(data)
        if self.got >= self.need and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, host: bytes, path: bytes) -> list[bytes]:
        self.chunks, self.got, self.need, self.in_head = [], 0, 1 << 62, True
        self.hash = hashlib.sha256()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % (path, host))  # type: ignore[attr-defined]
        await self.waiter
        return self.chunks


jobs: queue.SimpleQueue[tuple[list[bytes], str, asyncio.AbstractEventLoop, asyncio.Future[None]]]
jobs = queue.SimpleQueue()


def writer() -> None:
    while True:
        chunks, path, loop, done = jobs.get()
        fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.writev(fd, chunks)
        if HASH and not LOOPHASH:
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
        os.fsync(fd)
        os.close(fd)
        os.replace(path + ".part", path)
        loop.call_soon_threadsafe(done.set_result, None)


async def download(base_url: str, rels: list[str], dest: str) -> None:
    loop = asyncio.get_running_loop()
    host, port = base_url.split("//")[1].split(":")
    todo = rels[::-1]

    async def worker() -> None:
        _, conn = await loop.create_connection(Connection, host, int(port))
        while todo:
            rel = todo.pop()
            chunks = await conn.get(host.encode(), b"/" + rel.encode())
            done = loop.create_future()
            jobs.put((chunks, os.path.join(dest, rel.replace("/", "_")), loop, done))
            await done

    await asyncio.gather(*(worker() for _ in range(16)))


def main() -> None:
    sizes, work = bench.FULL, bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    rels = data.many(sizes.many_n, sizes.many_size)
    srv = StaticServer(data.root, work / "server").start()
    threading.Thread(target=writer, daemon=True).start()
    try:
        for _ in range(5):
            dest = str(work / "runs" / "asyncio-floor")
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            c0, t0 = os.times(), time.perf_counter()
            asyncio.run(download(srv.base_url, rels, dest))
            wall, c1 = time.perf_counter() - t0, os.times()
            cpu = c1.user + c1.system - c0.user - c0.system
            print(f"floor wall {wall:.3f} s, cpu {cpu:.2f} s, files {len(os.listdir(dest))}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
