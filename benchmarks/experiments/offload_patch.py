"""Experiment: write + sha256 of body chunks on a writer thread, in batches, *inside the
product path*, without editing the package (the ``offload`` variant of ``_worker.py``).

How: ``ipybgfetch._engine.transfer`` opens the ``.part`` file with ``open(...)`` and, for every
chunk, calls ``f.write(chunk)`` then ``hashes.update(chunk)`` with no ``await`` between
them. This module shadows ``open`` in that module with :class:`BatchedFile`, whose
``write`` only collects the chunk, and replaces ``IntegrityHasher.update`` with a version that,
when the chunk is the one just handed to a ``BatchedFile``, leaves the hashing to that
file's writer job. Every 2 MiB the batch goes to one writer thread (``os.writev`` + the
hash updates, which release the GIL); at most two batches are in flight, so memory stays
bounded (about 6 MiB per transfer) and the loop blocks only when the disk is slower than
the network. ``flush``/``close`` wait for the writer, so ``fsync``, the size check, the
rename and ``hashes.sha256.hexdigest()`` see every byte. Tied to the engine as of this
commit: if ``_transfer`` changes how it writes, this patch must follow.
"""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import os
from typing import Any

BATCH = 2 << 20
MAX_IN_FLIGHT = 2
_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ipybgfetch-writer")
_last: BatchedFile | None = None


class BatchedFile:
    def __init__(self, path: Any, mode: str) -> None:
        self._f = builtins.open(path, mode)  # noqa: SIM115 - closed by close()
        self._fd = self._f.fileno()
        self._buf: list[bytes] = []
        self._n = 0
        self._inflight: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self.hashes: Any = None
        self.last_chunk: bytes | None = None

    # the file API _transfer uses --------------------------------------------------------
    def write(self, chunk: bytes) -> int:
        global _last
        self._buf.append(chunk)
        self._n += len(chunk)
        self.last_chunk = chunk
        _last = self
        if self._n >= BATCH and self.hashes is not None:
            self._submit()
        return len(chunk)

    def flush(self) -> None:
        if self._buf:
            self._submit()
        while self._inflight:
            self._inflight.popleft().result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._f.close()

    def fileno(self) -> int:
        return self._fd

    def seek(self, *args: Any) -> int:
        self.flush()
        return self._f.seek(*args)

    def truncate(self, *args: Any) -> int:
        self.flush()
        return self._f.truncate(*args)

    def __enter__(self) -> BatchedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ------------------------------------------------------------------------
    def _submit(self) -> None:
        chunks, self._buf, self._n = self._buf, [], 0
        self._inflight.append(_pool.submit(self._job, chunks, self.hashes))
        while len(self._inflight) > MAX_IN_FLIGHT:
            self._inflight.popleft().result()  # backpressure: the disk is behind

    def _job(self, chunks: list[bytes], hashes: Any) -> None:
        self._f.flush()  # nothing buffered in practice; keeps seek()/truncate() consistent
        for i in range(0, len(chunks), 512):  # IOV_MAX is 1024
            part = chunks[i : i + 512]
            done = os.writev(self._fd, part)
            want = sum(len(c) for c in part)
            if done != want:
                rest = memoryview(b"".join(part))[done:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        if hashes is not None:
            for c in chunks:
                _real_update(hashes, c)


_real_update: Any = None


def install() -> None:
    global _real_update
    from ipybgfetch._engine import transfer as _transfer
    from ipybgfetch._integrity import IntegrityHasher

    if _real_update is not None:
        return
    _real_update = IntegrityHasher.update

    def update(self: Any, chunk: bytes) -> None:
        f = _last
        if f is not None and f.last_chunk is chunk:
            if f.hashes is None:
                f.hashes = self
            if f.hashes is self:
                f.last_chunk = None
                return  # the writer thread hashes it, in order, with the write
        _real_update(self, chunk)

    def open_part(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode in ("wb", "r+b") and str(path).endswith(".part") and not args and not kwargs:
            return BatchedFile(path, mode)
        return builtins.open(path, mode, *args, **kwargs)

    IntegrityHasher.update = update  # type: ignore[method-assign]
    _transfer.open = open_part  # type: ignore[attr-defined]
