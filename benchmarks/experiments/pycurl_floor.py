"""What a C receive loop could reach on case 2: libcurl's multi interface (pycurl), 16
connections, each body hashed (sha256) and written to a ``.part`` file from pycurl's write
callback, then renamed. No registration, no records, no retries: a floor, not a product.

    pip install pycurl && python benchmarks/experiments/pycurl_floor.py

Measured 2026-11-25 (docs/benchmarks.md): 0.14-0.19 s wall, 0.14-0.16 s CPU, where the
product path takes ~0.28 s and aria2c ~0.21 s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402
from _servers import StaticServer  # noqa: E402

try:
    import pycurl  # type: ignore[import-not-found]
except ImportError:
    sys.exit("pycurl is not installed (pip install pycurl): nothing to measure")

DEST = Path("/dev/shm/ipybgfetch-pycurl-floor")


class Sink:
    __slots__ = ("fd", "hash")

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        os.write(self.fd, chunk)


def download(urls: list[str], conns: int = 16) -> None:
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, conns)
    pending = list(enumerate(urls))[::-1]
    sinks: dict[int, tuple[int, Sink]] = {}

    def start(handle: pycurl.Curl) -> None:
        i, url = pending.pop()
        sink = Sink(DEST / f"{i}.part")
        sinks[id(handle)] = (i, sink)
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.WRITEFUNCTION, sink.write)
        handle.setopt(pycurl.BUFFERSIZE, 512 * 1024)
        multi.add_handle(handle)

    active = 0
    for handle in [pycurl.Curl() for _ in range(conns)]:
        if pending:
            start(handle)
            active += 1
    while active:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = multi.info_read()
            if failed:
                raise RuntimeError(failed[0][2])
            for handle in ok:
                multi.remove_handle(handle)
                i, sink = sinks.pop(id(handle))
                os.close(sink.fd)
                os.replace(DEST / f"{i}.part", DEST / str(i))
                active -= 1
                if pending:
                    start(handle)
                    active += 1
            if not queued:
                break
        if active:
            multi.select(1.0)


def main() -> None:
    sizes, work = bench.FULL, bench.DEFAULT_WORK
    data = bench.Data(work / "www")
    rels = data.many(sizes.many_n, sizes.many_size)
    srv = StaticServer(data.root, work / "server").start()
    urls = [f"{srv.base_url}/{r}" for r in rels]
    try:
        for _ in range(5):
            shutil.rmtree(DEST, ignore_errors=True)
            DEST.mkdir(parents=True)
            r0, t0 = os.times(), time.perf_counter()
            download(urls, sizes.conns)
            wall, r1 = time.perf_counter() - t0, os.times()
            cpu = r1.user + r1.system - r0.user - r0.system
            print(f"pycurl multi floor: wall {wall:.3f} s, CPU {cpu:.2f} s")
    finally:
        srv.stop()
        shutil.rmtree(DEST, ignore_errors=True)


if __name__ == "__main__":
    main()
