"""Segmented downloads: one file over several connections at once (issue 17).

Servers, hubs and CDNs often cap each connection (16-40 MB/s); several connections on
byte ranges of one file pass the cap, as aria2 (``-x/-s/-k``), hf_transfer and parfive
do. The transfer asks :func:`split_count` about every response big enough; when the
answer is more than one, :func:`download` takes the body over. The transfer lends its own
rules (validators, Content-Range, lease, errors) as :class:`Rules`: one definition of
each, and no import back into the transfer.

- The first response's body is segment 0: it keeps streaming from byte 0 (no second
  request for it), while other connections fetch the other ranges with
  ``Range: bytes=a-b`` and ``If-Range`` (the strong validator), to the redirect's final URL.
- Each range is written at its offset of the one ``.part`` file (``pwritev`` on the
  process's writer thread, in batches, as ``sink`` does for one stream).
- A connection that finishes its range takes half of the largest range still being
  fetched (``ranges.Splitter.steal``), so the slowest connection never decides the end.
- Extra connections come from the host's budget (``max_connections_per_host``) only while
  no other request waits for it: one huge file never starves 500 small ones, and when
  they are done it takes the free connections (checked every :data:`RECRUIT_INTERVAL`).
  An extra connection that finishes a range gives its slot back when others wait.
- Every segment must carry the same strong validator and total length; a change, a
  ``200`` to a ``Range`` or a ``416`` restarts the whole file from byte 0, so two
  versions are never mixed. A ``401``/``403``/``410`` on a segment sent to the
  redirect's final URL (an expired signed URL) goes back to the original URL for a fresh
  one, without counting as a failure. Other failures are retried per segment, as the
  registration's :class:`~ipybgfetch.RetryPolicy` allows, only for that segment's range.
- The map of written ranges (``RecordData.segment_map``) is checkpointed with the record:
  after ``kill -9`` a new process requests only what is missing, with ``If-Range``.
- The sha256 and integrity hashes are fed in file order without holding the file in
  memory: the writer thread hashes each batch that continues the hashed prefix directly,
  and reads back (``pread``, from the page cache) the ranges that arrived ahead of it once
  the gap before them is filled. The bytes read back are counted (``read_back``).
- ``fsync`` once, at the end; then the transfer checks the hashes and renames.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from .._http.http11 import Body
from . import sink
from .ranges import RangeSet, Segment, Splitter
from .retry import SpeedCheck, parse_retry_after
from .sink import _IOV_MAX, MAX_DELAY, _Job, _timed_fsync, _writer, open_part

if TYPE_CHECKING:
    from .record import RecordData
    from .transfer import RecordContext

__all__ = ["DEFAULT_MIN_SEGMENT", "Rules", "download", "resume_count", "split_count"]

log = logging.getLogger("ipybgfetch")

# bytes: a file under twice this is one stream. Measured (docs/benchmarks.md, issue 17):
# 16/32 MiB from a server capping connections at 16 MiB/s take 0.21 s split at 4 MiB,
# 0.53/0.61 s at 8 MiB, 0.94/0.72 s at 16 MiB; an uncapped 16 MiB file takes the same
# 35 ms either way (its first connection is fast: not split)
DEFAULT_MIN_SEGMENT = 4 * 1024 * 1024
STEAL_MIN = 1024 * 1024  # bytes: a range is halved for a free connection only above 2x this
# The first connection runs alone (in the transfer's own loop, then in the segments'
# when resuming) until it brings PROBE_BYTES or PROBE_TIME passes; if it brings
# PROBE_BYTES in time, the file is not split (issue 17: one uncapped loopback stream
# is CPU-bound at ~900 MiB/s here, and splitting it only costs CPU and memory; capped
# connections bring 16-40 MB/s)
PROBE_TIME = 0.05  # seconds
PROBE_BYTES = 4 * 1024 * 1024  # within PROBE_TIME: >= 80 MiB/s on one connection
PROBE_TICK = 0.005
# Pieces: a connection asks for the next piece in file order, of about PIECE_RTTS round
# trips of its own transfer (at most MAX_PIECE), so the bytes in flight stay within
# connections x piece of the hashed front of the file (what is read back at the end).
PIECES_PER_CONNECTION = 4
MIN_PIECE = 1024 * 1024
MAX_PIECE = 64 * 1024 * 1024
PIECE_RTTS = 20
RECRUIT_INTERVAL = 0.2  # seconds between looks for a free slot of the host's budget
RERESOLVE_LIMIT = 3  # fresh URLs in a row for one range before its failure counts
HASH_CHUNK = 1024 * 1024
# per connection, batches for the writer thread: smaller than one stream's (sink.BATCH,
# sink.MAX_IN_FLIGHT) so that memory for N connections stays near one stream's
BATCH = 1024 * 1024
MAX_IN_FLIGHT = 1
_EXPIRED = frozenset({401, 403, 410})


class Rules(NamedTuple):
    """What the transfer lends the segments (its definitions, not copies)."""

    headers: Callable[[RecordContext, RecordData], httpx.Headers]  # a request's
    count_received: Callable[[RecordContext, RecordData, int], None]
    validator: Callable[[RecordData], str]  # what If-Range carries
    same_version: Callable[[httpx.Headers, RecordData], bool]  # a part of the stored version
    encoded: Callable[[str | None], bool]  # a Content-Encoding other than identity
    content_range: Callable[[str | None], tuple[int, int, int | None] | None]
    permanent: Callable[[BaseException], bool]  # no retry can fix it
    check_lease: Callable[[RecordContext], None]
    attach_request: Callable[[httpx.RequestError, httpx.Response], None]
    restart: Callable[[RecordContext, RecordData, Any], None]  # from byte 0
    retry: type[Exception]  # (message, retry_after=None): the transfer tries the record again


class _Changed(Exception):
    """The file on the server is not the one the segments started on."""


class _NoRanges(Exception):
    """The server answered a segment's Range with the whole (same) file."""


class _SegmentRetry(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Expired(Exception):
    """A segment's URL no longer works (401/403/410): ask the original URL again."""


def split_count(
    job: RecordContext,
    data: RecordData,
    status: int,
    headers: dict[str, str],
    rules: Rules,
) -> int:
    """How many connections this response's file may use (1: one stream, as before).

    Only a GET of a file of known length >= twice the minimum segment size, from a
    server that shows it serves ranges (a 206, or ``Accept-Ranges: bytes``), without a
    ``Content-Encoding``, with a strong validator (a strong ETag, else Last-Modified)."""
    total = data.total
    cap = job.segments
    if cap is None:
        cap = job.host.per_host
    min_size = job.min_segment_size
    if cap < 2 or total is None or total < 2 * min_size or data.split_refused:
        return 1
    if data.request.method != "GET" or data.request.body is not None:
        return 1
    if status != 206 and not (status == 200 and _accepts_ranges(headers)):
        return 1
    if rules.encoded(headers.get("content-encoding")) or not rules.validator(data):
        return 1
    return min(cap, Splitter.pieces(total, cap, min_size))


def resume_count(job: RecordContext, data: RecordData) -> int:
    """Connections for a segmented download that continues (after a pause or a crash)."""
    cap = job.host.per_host if job.segments is None else job.segments
    return max(1, cap)


def _same_file(headers: httpx.Headers, data: RecordData) -> bool:
    etag: str = headers.get("etag", "")
    if data.etag and not data.etag.startswith("W/"):
        return etag == data.etag
    modified: str = headers.get("last-modified", "")
    return bool(data.last_modified) and modified == data.last_modified


def _accepts_ranges(headers: dict[str, str]) -> bool:
    return "bytes" in headers.get("accept-ranges", "").lower()


# --------------------------------------------------------------------------------------
# Writing: ranges at their offsets, the hashes fed in file order
# --------------------------------------------------------------------------------------


class _File:
    """The ``.part`` file shared by the segments. ``_write`` and ``_hash_prefix`` run on
    the writer thread only (one thread: they never race); the loop reads ``completed``."""

    def __init__(self, fd: int, path: str, written: RangeSet, hashes: Any, total: int) -> None:
        self.fd = fd  # opened by sink.open_part: never through a symlink, always ours
        self.folder = os.path.dirname(path)
        self.total = total
        self._written = RangeSet(written)  # the writer thread's copy
        self._hashed = 0
        self._hashes = hashes
        self.read_back = 0  # bytes hashed by reading them back
        # per connection: one stream's batches while alone, smaller ones once split
        self.batch, self.in_flight = sink.BATCH, sink.MAX_IN_FLIGHT
        self.completed: collections.deque[tuple[int, int]] = collections.deque()

    def submit(self, offset: int, chunks: list[bytes]) -> _Job:
        return _writer.submit(self._write, offset, chunks)

    def _write(self, offset: int, chunks: list[bytes]) -> None:
        fd, pos = self.fd, offset
        for i in range(0, len(chunks), _IOV_MAX):
            part = chunks[i : i + _IOV_MAX]
            want = sum(map(len, part))
            done = os.pwritev(fd, part, pos)
            if done < want:
                rest = memoryview(b"".join(part))[done:]
                at = pos + done
                while rest:
                    n = os.pwrite(fd, rest, at)
                    rest, at = rest[n:], at + n
            pos += want
        self._written.add(offset, pos)
        if offset == self._hashed:  # continues the hashed prefix: hash these bytes now
            for chunk in chunks:
                self._hashes.update(chunk)
            self._hashed = pos
        self._hash_prefix()
        self.completed.append((offset, pos))

    def hashed_already(self, n: int) -> None:
        """The hashes have the file's first ``n`` bytes (before any job: no race)."""
        self._hashed = n

    def _hash_prefix(self) -> None:
        """Hash the bytes written ahead of the hashed prefix once they join it."""
        target = self._written.prefix()
        while self._hashed < target:
            chunk = os.pread(self.fd, min(HASH_CHUNK, target - self._hashed), self._hashed)
            if not chunk:
                raise OSError(f"the .part file is shorter than its written ranges ({target})")
            self._hashes.update(chunk)
            self._hashed += len(chunk)
            self.read_back += len(chunk)

    def _finish(self) -> None:
        self._hash_prefix()
        if self._hashed != self.total:
            raise OSError(f"hashed {self._hashed} of {self.total} bytes: a range is missing")
        _timed_fsync(self.fd, self.folder)

    def start(self) -> _Job:
        """Resuming: hash the ranges already on disk from byte 0 (on the writer thread)."""
        return _writer.submit(self._hash_prefix)

    def finish(self) -> _Job:
        """Every range written: the rest of the hashes, then one fsync."""
        return _writer.submit(self._finish)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Buffer:
    """One connection's bytes on their way to the file, in batches (as ``_sink.PartFile``)."""

    __slots__ = ("_buf", "_file", "_inflight", "_last", "_offset", "_size")

    def __init__(self, file: _File, offset: int) -> None:
        self._file = file
        self._offset = offset  # where the first buffered byte goes
        self._buf: list[bytes] = []
        self._size = 0
        self._last = time.monotonic()
        self._inflight: collections.deque[_Job] = collections.deque()

    def write(self, chunk: bytes) -> _Job | None:
        self._buf.append(chunk)
        self._size += len(chunk)
        file = self._file  # its batch sizes change when the file is split
        if self._size < file.batch and time.monotonic() - self._last < MAX_DELAY:
            return None
        self._submit()
        if len(self._inflight) > file.in_flight:
            return self._inflight.popleft()
        return None

    def _submit(self) -> None:
        if self._buf:
            self._inflight.append(self._file.submit(self._offset, self._buf))
            self._offset += self._size
            self._buf, self._size = [], 0
        self._last = time.monotonic()

    async def flush(self) -> None:
        self._submit()
        while self._inflight:
            await self._inflight[0]
            self._inflight.popleft()

    def close(self) -> None:
        """Stopping early: what arrived is written all the same (a resume keeps it), and
        no job of this buffer is left running."""
        errors = [job.wait() for job in self._inflight]
        self._inflight.clear()
        if self._buf and not any(errors):
            self._submit()
            self._inflight.popleft().wait()
        self._buf, self._size = [], 0


# --------------------------------------------------------------------------------------
# The download
# --------------------------------------------------------------------------------------


class _Pace:
    """One connection's speed and time to first byte: its next piece is about
    :data:`PIECE_RTTS` round trips' worth of bytes, so a new request costs a few percent
    of its time, while the pieces in flight (all connections') stay near the front of the
    file, where the hashes are."""

    __slots__ = ("base", "bytes", "seconds", "ttfb")

    def __init__(self, base: int) -> None:
        self.base = base  # the file's share: total / (connections x PIECES_PER_CONNECTION)
        self.bytes = 0  # over its life: a burst at the start of a response counts little
        self.seconds = 0.0
        self.ttfb = 0.0  # seconds from its last request to the answer's head

    def measured(self, n: int, seconds: float) -> None:
        self.bytes += n
        self.seconds += seconds + self.ttfb

    def piece(self) -> int:
        size = self.base
        if self.seconds > 0:  # a far server: pieces worth many round trips
            size = max(size, int(self.bytes / self.seconds * self.ttfb * PIECE_RTTS))
        return min(MAX_PIECE, max(MIN_PIECE, size))


class _Download:
    def __init__(
        self,
        job: RecordContext,
        data: RecordData,
        hashes: Any,
        file: _File,
        splitter: Splitter,
        wanted: int,
        rules: Rules,
    ) -> None:
        self.job, self.data, self.hashes = job, data, hashes
        self.rules = rules
        self.file = file
        self.splitter = splitter
        self.wanted = wanted  # connections at most
        self.original = data.request.url
        self.url = data.response_url or data.request.url  # segments go to the final URL
        self.sem = job.host_slot(data.request.url)
        self.tasks: set[asyncio.Task[None]] = set()
        self.error: BaseException | None = None
        self.changed = asyncio.Event()  # a worker ended (or failed): look again
        # the first response (a whole body from byte 0) while its connection reads it:
        # if the server turns out to ignore Range, it simply goes on to the end
        self.first_resp: httpx.Response | None = None
        self.first_chunks: AsyncIterator[bytes] | None = None  # its body, partly read
        self.first_seg: Segment | None = None
        self.reading_first = False

    # -- connections ---------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        self.data.connections = len(self.tasks)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.data.connections = len(self.tasks)
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()
        self.changed.set()

    async def recruit(self) -> None:
        """Take free slots of the host's budget for more connections, if there is work.
        Only while nobody waits for the host (``not locked()``: acquire() returns at once)."""
        while len(self.tasks) < self.wanted and self.splitter.has_work and not self.sem.locked():
            await self.sem.acquire()
            self.spawn(self.worker(None, None, extra=True))

    async def worker(self, seg: Segment | None, resp: httpx.Response | None, extra: bool) -> None:
        """One connection: its range, then piece after piece in file order (sized to its
        own pace), then halves of the largest ranges left."""
        holding = extra
        pace = _Pace(self.file.total // (self.wanted * PIECES_PER_CONNECTION))
        try:
            while True:
                if seg is None:
                    seg = self.splitter.take(pace.piece())
                    if seg is None:
                        return
                try:
                    await self.fetch(seg, resp, pace)
                except _NoRanges:
                    if not self.keep_first_stream():
                        raise
                    return  # the first response brings the rest
                resp = None
                self.splitter.done(seg)
                seg = None
                if extra:
                    self.sem.release()
                    holding = False
                    if self.sem.locked():
                        return  # others wait for the host: they get this slot
                    await self.sem.acquire()  # free: not locked() means no wait
                    holding = True
        finally:
            if resp is not None:
                await resp.aclose()
            if holding:
                self.sem.release()

    # -- one range ---------------------------------------------------------------------
    async def fetch(self, seg: Segment, resp: httpx.Response | None, pace: _Pace) -> None:
        policy = self.job.policy
        failures = 0
        expired = 0
        progress = seg.pos
        while seg.pos < seg.end:
            before = seg.pos
            if seg.pos > progress:  # bytes came since the last fresh URL
                progress, expired = seg.pos, 0
            try:
                if resp is None:
                    asked = time.monotonic()
                    resp = await self.request(seg)
                    pace.ttfb = time.monotonic() - asked
                    self.check(resp, seg)
                started = time.monotonic()
                await self.receive(seg, resp)
                pace.measured(seg.pos - before, time.monotonic() - started)
            except _Expired as exc:
                expired += 1
                if expired > RERESOLVE_LIMIT:
                    raise self.rules.retry(str(exc)) from None
                log.info("ipybgfetch: %s; asking %s again", exc, self.original)
                self.url = self.original
            except (httpx.TransportError, _SegmentRetry) as exc:
                if seg.pos > before:
                    failures = 0
                failures += 1
                retry_after = exc.retry_after if isinstance(exc, _SegmentRetry) else None
                if failures > policy.retries or self.rules.permanent(exc):
                    if isinstance(exc, _SegmentRetry):  # the transfer's kind of failure
                        raise self.rules.retry(str(exc), retry_after) from None
                    raise
                await asyncio.sleep(policy.delay(failures, retry_after))
            finally:
                if resp is not None:
                    await resp.aclose()
                    resp = None

    async def request(self, seg: Segment) -> httpx.Response:
        self.rules.check_lease(self.job)
        job, data = self.job, self.data
        headers = self.rules.headers(job, data)
        headers["Range"] = f"bytes={seg.pos}-{seg.end - 1}"
        headers["If-Range"] = self.rules.validator(data)
        client = await job.host.client()
        return await client.open(
            "GET", self.url, headers=headers, timeout=job.timeout, auth=job.auth
        )

    def check(self, resp: httpx.Response, seg: Segment) -> None:
        """A segment's answer must continue the same file, or the file starts again."""
        status = resp.status_code
        data = self.data
        if status == 206:
            headers = resp.headers
            cr = self.rules.content_range(headers.get("content-range"))
            etag = headers.get("etag", "")
            if (
                cr is None
                or cr[0] != seg.pos
                or cr[2] != data.total
                or not self.rules.same_version(headers, data)
                or self.rules.encoded(headers.get("content-encoding"))
            ):
                raise _Changed(
                    f"a segment's answer ({headers.get('content-range')}, ETag {etag!r}) "
                    "is not a range of the same file"
                )
            if self.url != str(resp.url):
                self.url = str(resp.url)  # a fresh signed URL, after going back
            return
        if status == 200 and _same_file(resp.headers, data):
            raise _NoRanges(f"the server ignored a segment's Range header (200, same {data.etag})")
        if status in _EXPIRED and str(resp.url) != self.original:  # sent to a signed URL
            raise _Expired(f"a segment's URL answered {status} (expired?)")
        if status in self.job.policy.statuses:
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            raise _SegmentRetry(f"the server answered {status} to a segment", retry_after)
        raise _Changed(f"the server answered {status} to a segment's range")

    async def receive(self, seg: Segment, resp: httpx.Response) -> None:
        stream = resp.stream
        first = resp is self.first_resp
        if first and self.first_chunks is not None:
            chunks = self.first_chunks  # the transfer read its start already
        else:
            chunks = stream.__aiter__() if isinstance(stream, Body) else resp.aiter_raw()
        buf = _Buffer(self.file, seg.pos)
        self.reading_first = self.reading_first or first
        try:
            try:
                await self._take(seg, chunks, buf)
            finally:
                if first:
                    self.reading_first = False
            await buf.flush()
        except BaseException as exc:
            buf.close()
            if isinstance(exc, httpx.RequestError):
                self.rules.attach_request(exc, resp)
            raise
        if seg.pos < seg.end:
            raise _SegmentRetry(
                f"a segment's body ended early, at byte {seg.pos} of its range to {seg.end}"
            )

    async def _take(self, seg: Segment, chunks: AsyncIterator[bytes], buf: _Buffer) -> None:
        """The body's chunks into ``buf`` up to the segment's end (which may move)."""
        job, data = self.job, self.data
        completed = self.file.completed
        done = data.segment_map
        assert done is not None
        speed = SpeedCheck(job.policy)
        async for chunk in chunks:
            slow = speed.slow(len(chunk))
            if slow is not None:
                raise _SegmentRetry(slow)
            room = seg.end - seg.pos  # end shrinks when another connection steals
            if len(chunk) >= room:
                chunk = chunk[:room]
            n = len(chunk)
            self.rules.count_received(job, data, n)  # download_total, before storing
            backlog = buf.write(chunk)
            seg.pos += n
            job.add_downloaded(data, n)
            while completed:
                done.add(*completed.popleft())
            if backlog is not None:
                await backlog
            if seg.pos >= seg.end:
                break

    def split_now(self, seg0: Segment | None) -> None:
        """From one connection to several: smaller batches each; the first response (if
        any) goes on with one piece, the others take the next pieces in order."""
        if self.wanted < 2:
            return
        self.file.batch, self.file.in_flight = BATCH, MAX_IN_FLIGHT
        if seg0 is not None:
            share = self.file.total // (self.wanted * PIECES_PER_CONNECTION)
            self.splitter.cut(seg0, seg0.pos + max(MIN_PIECE, share))

    def keep_first_stream(self) -> bool:
        """A range was answered with the whole file (the server ignores Range): if the
        first response is still being read, it brings the rest, and nothing else is
        asked (no restart, nothing lost). False: too late, the file starts again."""
        seg0 = self.first_seg
        if seg0 is None:
            return False
        if self.wanted == 1 and seg0.end == self.file.total:
            return True  # done already, by another connection's answer
        if not self.reading_first or seg0.pos >= seg0.end:
            return False
        log.info("ipybgfetch: %s ignores Range: one stream", self.url)
        self.data.split_refused = True  # a retry of this record does not try again
        self.wanted = 1
        self.file.batch, self.file.in_flight = sink.BATCH, sink.MAX_IN_FLIGHT
        seg0.end = self.file.total  # bytes others wrote meanwhile are the same file's
        self.splitter = Splitter([], STEAL_MIN)
        self.splitter.active.append(seg0)
        return True

    # -- all of it -------------------------------------------------------------------------
    async def run(self, first: httpx.Response | None) -> None:
        seg0 = None
        if first is not None:  # the transfer found its connection slow: split at once
            seg0 = self.splitter.take(self.file.total)
            assert seg0 is not None
            self.first_resp, self.first_seg = first, seg0
            self.split_now(seg0)
            self.spawn(self.worker(seg0, first, extra=False))
        else:
            # Resuming: this record's own connection alone first; if it brings PROBE_BYTES
            # within PROBE_TIME, more would cost CPU and memory, not time.
            self.spawn(self.worker(None, None, extra=False))
            start = self.data.downloaded
            probe_end = time.monotonic() + PROBE_TIME
            while (
                self.data.downloaded - start < PROBE_BYTES
                and time.monotonic() < probe_end
                and self.tasks
            ):
                await asyncio.sleep(PROBE_TICK)
            if self.error is not None:
                raise self.error
            if self.data.downloaded - start >= PROBE_BYTES:
                self.wanted = 1
                log.debug("ipybgfetch: %s is fast on one connection: not split", self.url)
            else:
                self.split_now(None)
        await self.recruit()
        while self.tasks:
            self.changed.clear()
            if self.error is not None:
                raise self.error
            try:
                await asyncio.wait_for(self.changed.wait(), RECRUIT_INTERVAL)
            except asyncio.TimeoutError:
                pass
            if self.error is not None:
                raise self.error
            await self.recruit()
            if not self.tasks and not self.splitter.finished:
                # every connection ended (gave its slot to others): continue on our own
                self.spawn(self.worker(None, None, extra=False))

    async def stop(self) -> None:
        """Cancel every connection and wait until none runs (even if cancelled again)."""
        for task in self.tasks:
            task.cancel()
        cancelled = False
        while self.tasks:
            try:
                await asyncio.wait(list(self.tasks))
            except asyncio.CancelledError:
                cancelled = True
                for task in self.tasks:
                    task.cancel()
        if cancelled:
            raise asyncio.CancelledError()


async def download(
    job: RecordContext,
    data: RecordData,
    hashes: Any,
    first: httpx.Response | None,
    wanted: int,
    rules: Rules,
    first_chunks: AsyncIterator[bytes] | None = None,
) -> None:
    """Fetch the rest of ``data``'s file over up to ``wanted`` connections.

    ``first``: the response that showed the server can split, and ``first_chunks`` its
    body, read up to ``data.downloaded`` already (those bytes written and hashed): the
    rest of it becomes the first segment. None: resume from ``data.segment_map``. Returns once
    every byte is written, hashed and fsync'd; the caller checks and renames. Raises
    ``rules.retry`` to start the file again from byte 0 (it changed on the server), or
    the error of a range that failed more often than the policy allows."""
    assert data.part_path is not None and data.total is not None
    total = data.total
    have = data.downloaded if first is not None else 0  # written and hashed, in order
    if data.segment_map is None or first is not None:
        data.segment_map = RangeSet([(0, have)])
    done = data.segment_map
    job.record_changed(data, checkpoint=True)  # a new process must know the file is split
    fd, mine, data.part_id = open_part(data.part_path, 1, data.part_id, job.make_dest, keep=True)
    if done and not mine:  # the file was replaced or removed: its ranges are gone
        os.close(fd)
        rules.restart(job, data, hashes)
        raise rules.retry("the partial file was replaced or disappeared; restarting")
    file = _File(fd, str(data.part_path), done, hashes, total)
    if not done:
        os.ftruncate(file.fd, 0)  # no byte of an earlier attempt may survive past the end
    io_job: _Job | None = None
    splitter = Splitter(done.missing(total), STEAL_MIN)
    dl = _Download(job, data, hashes, file, splitter, wanted, rules)
    dl.first_chunks = first_chunks
    started = time.perf_counter()
    if have:
        file.hashed_already(have)
    else:
        hashes.reset()
    try:
        if done and not have:
            io_job = file.start()
            await io_job
        io_job = None
        try:
            await dl.run(first)
        finally:
            await dl.stop()
        while file.completed:
            done.add(*file.completed.popleft())
        io_job = file.finish()
        await io_job
        io_job = None
    except (_Changed, _NoRanges) as exc:
        await dl.stop()
        _abandon(file, io_job)
        rules.restart(job, data, hashes)
        if isinstance(exc, _NoRanges):
            data.split_refused = True  # from now on one stream, as before
            raise rules.retry(f"{exc}; fetching it as one stream") from None
        raise rules.retry(f"{exc}: the file changed on the server; restarting") from None
    except BaseException:
        _abandon(file, io_job)
        while file.completed:
            done.add(*file.completed.popleft())
        job.mark_dirty(data)
        raise
    finally:
        data.connections = 0
        file.close()
    log.debug(
        "ipybgfetch: %s in segments: %.2f s, %d bytes hashed by reading back",
        data.request.url,
        time.perf_counter() - started,
        file.read_back,
    )


def _abandon(file: _File, job: _Job | None) -> None:
    if job is not None:
        job.wait()  # never close the descriptor under a running job
