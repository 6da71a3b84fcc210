"""Where a body goes while it downloads: the ``.part`` file, written off the event loop.

The engine loop only collects the chunks it receives. Every :data:`BATCH` bytes (or
:data:`MAX_DELAY` seconds, whichever comes first), one job
on the writer thread writes the batch (``os.writev``) and feeds the hashes; both release
the GIL, so receiving and writing overlap on two cores. At most :data:`MAX_IN_FLIGHT`
batches wait per file (bounded memory); the loop waits only when the disk is slower than
the network. One writer thread for the whole process keeps every file's jobs in order.

A small body (all of it under :data:`INLINE_LIMIT`) is written and hashed on the loop in
one go: a thread hop would cost more than the work.

``fsync`` is where a real disk spends its time with many small files (about 1 ms each on
ext4 here, where tmpfs takes microseconds). Each folder's recent fsync time is tracked:
where it is slow, the fsync goes to a pool of :data:`FLUSH_THREADS` threads, so that
fsyncs of many files run side by side (a journaling filesystem commits them together)
and neither the loop nor the writer thread waits for the disk (10,000 x 4 KiB into ext4
on this VM, fsync ~0.25 ms: 10.7 -> 9.6 s). Where it is quick (under :data:`FAST_FSYNC`),
the loop runs it itself once the writes are done: every system call on the writer thread
is a GIL hand-off with the loop, which costs more than a tmpfs fsync (case 2: 0.202 ->
0.195 s, 6 interleaved rounds).

Measured (docs/benchmarks.md, 1 GiB over loopback into tmpfs): 1.63 s -> 1.18 s at the
same peak memory. The hand-off is a :class:`_Job` on a queue rather than an executor's
Future: 5 % fewer instructions per small file (benchmarks/experiments/instructions.sh).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import stat
import threading
import time
import weakref
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BATCH", "PartFile", "PartReplaced", "file_id", "open_part", "same_file"]

BATCH = 2 * 1024 * 1024  # bytes handed to the writer thread at once
MAX_DELAY = 0.1  # seconds: a slow download still reaches the disk (and survives kill -9)
MAX_IN_FLIGHT = 2  # batches per file waiting for the writer: <= ~6 MiB per transfer
INLINE_LIMIT = 64 * 1024  # a body this small is written on the loop when it completes
_IOV_MAX = 512

FLUSH_THREADS = 8  # fsyncs of different files at the same time
FAST_FSYNC = 200e-6  # seconds: a folder whose fsyncs take less keeps them inline

_fsync_time: dict[str, float] = {}  # folder -> recent fsync duration in seconds (EWMA)


class _Job:
    """One batch for the writer thread. Cheaper than a ``concurrent.futures.Future`` (no
    Condition): a lock held until the job is done, and an asyncio waiter made only when
    the loop must wait for it. ``await job`` waits without blocking the loop; ``wait()``
    blocks (used when a transfer stops)."""

    __slots__ = ("_args", "_done", "_fn", "_waiter", "_waker", "error")

    def __init__(self, fn: Callable[..., None], *args: object) -> None:
        self._fn, self._args = fn, args
        self._done = threading.Lock()
        self._done.acquire()
        self.error: BaseException | None = None
        self._waker: _Waker | None = None
        self._waiter: asyncio.Future[None] | None = None

    def run(self) -> None:  # on the writer thread
        try:
            self._fn(*self._args)
        except BaseException as exc:
            self.error = exc
        self._done.release()
        waiter = self._waiter  # set after _waker: seeing it means _waker is set too
        if waiter is not None and self._waker is not None:
            self._waker.wake(waiter)

    @property
    def finished(self) -> bool:
        return not self._done.locked()

    def wait(self) -> BaseException | None:
        """Block until done; the job's error, if any."""
        with self._done:
            pass
        return self.error

    def __await__(self) -> Generator[Any, None, None]:
        if not self.finished:
            loop = asyncio.get_running_loop()
            self._waker = _waker(loop)  # looked up here, on the loop: not on the writer
            self._waiter = waiter = loop.create_future()
            if not self.finished:  # else it ended in between: no callback may come
                yield from waiter.__await__()
        if self.error is not None:
            raise self.error


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Waker:
    """Wakes futures of one event loop from the writer and fsync threads: one
    ``call_soon_threadsafe`` (a write to the loop's self-pipe, a system call and so a GIL
    hand-off) for all the wakes that pile up while the loop is busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[asyncio.Future[None]] = []

    def wake(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            self._ready.append(waiter)
            if len(self._ready) > 1:
                return  # the loop has not drained the earlier ones yet: it will take this too
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for waiter in ready:
            _wake(waiter)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()
_wakers_lock = threading.Lock()


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        with _wakers_lock:
            waker = _wakers.get(loop)
            if waker is None:
                waker = _wakers[loop] = _Waker(loop)
    return waker


class _Workers:
    """Daemon threads running queued jobs, started on first use: one thread runs its jobs
    in order (the writer), several run them side by side (the fsync pool)."""

    def __init__(self, name: str, count: int) -> None:
        self._name, self._count = name, count
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: object) -> _Job:
        jobs = self._jobs
        if jobs is None:
            with self._lock:
                if self._jobs is None:
                    self._jobs = self._start()
                jobs = self._jobs
        job = _Job(fn, *args)
        jobs.put(job)
        return job

    def _start(self) -> queue.SimpleQueue[_Job]:
        jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        for i in range(self._count):
            label = self._name if self._count == 1 else f"{self._name}-{i}"
            threading.Thread(target=_work, args=(jobs,), name=label, daemon=True).start()
        return jobs


def _work(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        jobs.get().run()


_writer = _Workers("ipybgfetch-writer", 1)  # every file's writes, in order
_flushes = _Workers("ipybgfetch-fsync", FLUSH_THREADS)  # fsyncs of slow folders


def _timed_fsync(fd: int, folder: str) -> None:
    started = time.perf_counter()
    os.fsync(fd)
    took = time.perf_counter() - started
    before = _fsync_time.get(folder)
    if before is None and len(_fsync_time) >= 1024:
        _fsync_time.clear()  # many folders over a long session: forget, measure again
    _fsync_time[folder] = took if before is None else 0.75 * before + 0.25 * took


def fsync_is_quick(folder: str) -> bool:
    """Whether fsyncs in ``folder`` took under :data:`FAST_FSYNC` lately (unknown: no)."""
    return _fsync_time.get(folder, FAST_FSYNC) < FAST_FSYNC


class PartReplaced(Exception):
    """The ``.part`` path no longer holds the file this record wrote (a symlink, a hard
    link, another file put there): it is never written or renamed through."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def file_id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _own_file(fd: int, expected: tuple[int, int] | None, size: int = 0) -> bool:
    """Whether ``fd`` is a plain file with one name, the expected one (if known), holding
    at least ``size`` bytes."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size < size:
        return False
    return expected is None or file_id(st) == expected


def open_part(
    path: str | os.PathLike[str],
    offset: int,
    expected: tuple[int, int] | None,
    make_folder: Callable[[], None] | None = None,
    *,
    keep: bool = False,
) -> tuple[int, int, tuple[int, int]]:
    """The ``.part`` file at ``path`` open for writing at ``offset`` (truncated there):
    ``(fd, offset, file id)``. Never through a symlink (``O_NOFOLLOW``), never a file
    with another name too (a hard link), never another inode than ``expected`` (the one
    this record claimed): such a file is left alone, its name is removed and a new empty
    file is claimed with ``O_EXCL`` (the offset is then 0: the caller starts again).
    The file is never deleted before it is reopened, so no other file can take its place
    while the record waits for a retry. ``keep``: the file is opened for reading and
    writing as it is (a segmented download's ranges), neither truncated nor positioned;
    ``offset`` is then 1 if it is this record's file, 0 if it was claimed anew."""
    access = os.O_RDWR if keep else os.O_WRONLY
    fd = -1
    if offset >= 0:
        try:
            fd = os.open(path, access | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            offset = 0
        except OSError:  # ELOOP: a symlink; anything else: claim the name anew below
            offset = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            try:
                ours = _own_file(fd, expected)
                ok = ours and (keep or _own_file(fd, expected, offset))
            except OSError:
                ours = ok = False
            if not ours:
                os.close(fd)
                fd, offset = -1, 0
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # the name only: another file's data is never touched
            elif not ok:
                offset = 0  # shorter than the bytes counted: start again in the same file
    if fd < 0:
        flags = access | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if make_folder is None:
                raise
            make_folder()
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise PartReplaced(f"{path} was created by someone else meanwhile") from None
    try:
        if not keep:
            os.ftruncate(fd, offset)
            if offset:
                os.lseek(fd, offset, os.SEEK_SET)
        ident = file_id(os.fstat(fd))
    except OSError:
        os.close(fd)
        raise
    return fd, offset, ident


def same_file(path: str | os.PathLike[str], expected: tuple[int, int] | None) -> bool:
    """Whether ``path`` itself (not a symlink's target) is the plain file ``expected``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (expected is None or file_id(st) == expected)


def open_for_reading(path: str | os.PathLike[str]) -> tuple[int, tuple[int, int]] | None:
    """A ``.part`` file open for reading, never through a symlink; None if it is gone or
    is not a plain file of its own."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        if _own_file(fd, None):
            return fd, file_id(os.fstat(fd))
    except OSError:
        pass
    os.close(fd)
    return None


class Hasher(Protocol):
    def update(self, chunk: bytes) -> None: ...


class PartFile:
    """A ``.part`` file receiving a body from ``offset`` on; feeds ``hashes`` in order.

    ``fd``, if given, is the file already open for writing at ``offset`` (a new, empty
    ``.part`` claimed with its name); otherwise the first write job opens it, on the
    writer thread. ``make_folder`` re-creates a destination folder that was deleted
    meanwhile. The file is closed by :meth:`finish` or :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        hashes: Hasher,
        make_folder: Callable[[], None] | None = None,
        fd: int = -1,
    ) -> None:
        self._path = path
        self._folder = os.path.dirname(path)
        self._offset = offset
        self._make_folder = make_folder
        self._fd = fd
        self._closed = False
        self._hashes = hashes
        self._buf: list[bytes] = []
        self._size = 0
        self._submitted = False
        self._last_submit = time.monotonic()
        self._inflight: collections.deque[_Job] = collections.deque()

    def _open(self) -> int:
        """Open the path (no descriptor was given): never through a symlink or into a
        file that is not this record's (see :func:`open_part`)."""
        fd, offset, _ = open_part(self._path, self._offset, None, self._make_folder)
        if offset != self._offset:
            os.close(fd)
            raise PartReplaced(f"{self._path} is not the partial file written before")
        self._fd = fd
        return fd

    def write(self, chunk: bytes) -> _Job | None:
        """Take a chunk. Returns a job to await first when too much is in flight."""
        self._buf.append(chunk)
        self._size += len(chunk)
        if self._size < BATCH and time.monotonic() - self._last_submit < MAX_DELAY:
            return None
        self._submit()
        if len(self._inflight) > MAX_IN_FLIGHT:
            return self._inflight.popleft()
        return None

    @property
    def unwritten(self) -> int:
        """Bytes taken but not yet written, at most (a batch still queued counts whole)."""
        return self._size + BATCH * sum(not job.finished for job in self._inflight)

    async def finish(self) -> None:
        """Every byte written, hashed and fsync'd; then the file is closed. Once: a call
        after the file was closed returns at once."""
        if self._closed:
            return
        try:
            quick = fsync_is_quick(self._folder)
            if not self._submitted and self._size <= INLINE_LIMIT:
                self._job(self._take(), fsync=quick)
                fsync_here = False
            else:
                self._inflight.append(_writer.submit(self._job, self._take(), False))
                fsync_here = quick  # on the loop, after the writes (see the module doc)
            if not quick:  # behind the writes: the pool's job starts once they are done
                self._inflight.append(_flushes.submit(self._flush_after, list(self._inflight)))
            while self._inflight:
                await self._inflight[0]  # still listed: a cancel here leaves it to close()
                self._inflight.popleft()
            if fsync_here:
                _timed_fsync(self._fd, self._folder)
        finally:
            self.close()

    def _flush_after(self, writes: list[_Job]) -> None:
        """On the fsync pool: wait for this file's write jobs, then fsync it."""
        if any(job.wait() is not None for job in writes):
            return  # the write failed: its error is raised; nothing to make durable
        _timed_fsync(self._fd, self._folder)

    def close(self) -> None:
        """Stop early (pause, a dropped connection): keep every byte received so far on
        disk and in the hashes, so that a resume continues exactly; then close."""
        if self._closed:
            return
        self._closed = True
        try:
            errors = [job.wait() for job in self._inflight]  # all: none may outlive the fd
            failed = any(e is not None for e in errors)
            if self._buf and not failed:
                with contextlib.suppress(OSError):  # best effort: a shorter file only
                    self._job(self._take(), fsync=False)  # means a resume restarts it
        finally:
            self._inflight.clear()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _take(self) -> list[bytes]:
        chunks, self._buf, self._size = self._buf, [], 0
        return chunks

    def _submit(self) -> None:
        self._submitted = True
        self._last_submit = time.monotonic()
        self._inflight.append(_writer.submit(self._job, self._take(), False))

    def _job(self, chunks: list[bytes], fsync: bool) -> None:
        fd = self._fd if self._fd >= 0 else self._open()
        for i in range(0, len(chunks), _IOV_MAX):
            part = chunks[i : i + _IOV_MAX]
            done = os.writev(fd, part) if part else 0
            want = sum(map(len, part))
            if done < want:  # a short write: finish it plainly
                rest = memoryview(b"".join(part))[done:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        update = self._hashes.update
        for chunk in chunks:
            update(chunk)
        if fsync:
            _timed_fsync(fd, self._folder)
