"""Moving one record's bytes: request, stream to a ``.part`` file, verify, rename.

Runs on the engine loop only. One call of :func:`run_record` takes a record from pending
(or paused, or restored from disk) to a settled state, retrying and resuming as the
registration's :class:`~ipybgfetch.RetryPolicy` allows. The body streams to
``<final>.part``; only after the length and integrity checks pass is it fsync'd and
renamed to the final path, so a final path never holds a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from .._http.decode import ContentDecoder, CorruptEncoding, IncompleteEncoding, decoder_for
from .._http.errors import MalformedResponse
from .._http.http11 import Body
from .._integrity import IntegrityHasher
from .._models import Response
from .._names import filename_from_disposition, filename_from_url
from .._secrets import has_redacted_params
from .._vocab import FailureReason, RecordState
from . import segments
from .failures import classify
from .record import FAILED_FOLDER
from .retry import SpeedCheck, parse_retry_after
from .sink import PartFile, PartReplaced, file_id, open_for_reading, open_part, same_file

if TYPE_CHECKING:
    from .job import Host
    from .record import RecordData
    from .retry import RetryPolicy

__all__ = ["LeaseLost", "RecordContext", "RegistrationStopped", "run_record"]

log = logging.getLogger("ipybgfetch")


class RecordContext(Protocol):
    """What the transfer of one record (this module, :mod:`.segments`, :mod:`.cloud`) may
    use of its registration: these members of its :class:`~.job.Job`, nothing else
    (mypy holds the transfer to them)."""

    id: str
    key: str
    records: list[RecordData]
    policy: RetryPolicy
    headers: httpx.Headers
    auth: Any
    timeout: httpx.Timeout
    download_total: int
    downloaded: int
    received: int
    remote: Any
    segments: int | None
    min_segment_size: int
    dest: Path
    host: Host

    def check_lease(self) -> None: ...
    def host_slot(self, url: str) -> asyncio.Semaphore: ...
    def reserve_name(self, name: str) -> tuple[Path, int]: ...
    def release_name(self, path: Path) -> None: ...
    def make_dest(self) -> None: ...
    def renamed_in(self, folder: Path) -> None: ...
    def add_downloaded(self, data: RecordData, n: int) -> None: ...
    def add_uploaded(self, data: RecordData, n: int) -> None: ...
    def record_changed(self, data: RecordData, checkpoint: bool = False) -> None: ...
    def mark_dirty(self, data: RecordData) -> None: ...
    def settle_record(
        self, data: RecordData, state: RecordState, failure: FailureReason
    ) -> None: ...


UPLOAD_CHUNK = 256 * 1024
# bytes still on their way to the disk when a body has arrived, at most, for its
# connection to be released before they are written (more: the disk is behind, and holding
# the connection keeps memory bounded by the number of connections)
EARLY_RELEASE_LIMIT = 1024 * 1024
SMALL_BODY = 1024 * 1024  # bytes: re-fetched whole after a crash rather than checkpointed
HASH_CHUNK = 1024 * 1024
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_QUOTA_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
MAX_SIZE = 2**63 - 1  # bytes: the largest size a file (and the database) can hold


class RegistrationStopped(Exception):
    """The whole registration ends now (download_total exceeded, disk full)."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Retry(Exception):
    """This attempt failed in a way worth another attempt."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _IntegrityMismatch(Exception):
    pass


class LeaseLost(Exception):
    """Another process took this registration over: this one must not touch it. Raised
    to the registration, which stops its transfers and mirrors it from then on."""


def _check_lease(job: RecordContext) -> None:
    """Before each request and each irreversible step (rename, failing the record)."""
    job.check_lease()


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes a-b/total`` -> (a, b, total or None); None if absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    start, end = _size(m.group(1)), _size(m.group(2))
    total = None if m.group(3) == "*" else _size(m.group(3))
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


def _size(text: str) -> int:
    """A size the server announced; one no file can hold is a clear protocol error."""
    value = int(text)
    if value > MAX_SIZE:
        raise MalformedResponse(
            f"the server announced a size of {text} bytes (2^63 or more), which no file "
            "can hold: the server is broken or hostile"
        )
    return value


def _content_length(headers: dict[str, str]) -> int | None:
    """The body's length from Content-Length (``10, 10`` repeated identically counts
    once); None when absent, unusable, or when Transfer-Encoding frames the body (it
    wins over Content-Length, RFC 9112 6.3)."""
    value = headers.get("content-length")
    if value is None or "transfer-encoding" in headers:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        return None
    text = values.pop()
    return _size(text) if text.isdigit() else None


def _encoding(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "identity")


async def _upload_stream(job: RecordContext, data: RecordData, size: int) -> AsyncIterator[bytes]:
    body = data.request.body
    job.add_uploaded(data, -data.uploaded)  # a retry sends the body again
    if isinstance(body, (bytes, str)):
        raw = body.encode("utf-8") if isinstance(body, str) else body
        view = memoryview(raw)
        for i in range(0, len(view), UPLOAD_CHUNK):
            chunk = bytes(view[i : i + UPLOAD_CHUNK])
            job.add_uploaded(data, len(chunk))
            yield chunk
        return
    assert body is not None
    path = os.fspath(body)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below; the open's own error is told apart)
    except OSError as exc:
        why = exc.strerror or exc
        raise _BadBody(f"cannot read the request body file {path!r}: {why}") from None
    with f:  # exactly the announced Content-Length, or a clear error (never a cut body)
        left = size
        while left:
            chunk = f.read(min(UPLOAD_CHUNK, left))
            if not chunk:
                raise _BadBody(
                    f"the request body file {path!r} shrank while it was being sent "
                    f"({size - left} of the {size} bytes announced); send it again once "
                    "the file is final"
                )
            left -= len(chunk)
            job.add_uploaded(data, len(chunk))
            yield chunk
        if f.read(1):
            raise _BadBody(
                f"the request body file {path!r} grew while it was being sent (more than "
                f"the {size} bytes announced); send it again once the file is final"
            )


class _BadBody(Exception):
    """The request body file cannot be sent as announced (gone, unreadable, changed)."""


class _Upload:
    """The request body; each iteration (a 307/308 redirect, an auth round) reads it anew,
    and sends exactly ``size`` bytes (the Content-Length)."""

    def __init__(self, job: RecordContext, data: RecordData, size: int) -> None:
        self._reg, self._data, self._size = job, data, size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _upload_stream(self._reg, self._data, self._size)


async def run_record(job: RecordContext, data: RecordData) -> None:
    """Take ``data`` to a settled state (success or failure), or raise CancelledError."""
    policy = job.policy
    hashes = IntegrityHasher(data.request.integrity)
    integrity_failures = 0
    failures_without_progress = 0
    if data.downloaded and data.part_path is not None and data.segment_map is None:
        await _rehash_part(job, data, hashes)
    best = data.downloaded  # progress for the retry budget: past the furthest offset yet
    if has_redacted_params(data.request.url):
        # restored from disk, where its secret query values were never written: the
        # placeholder is never sent (a resume, a retry, a takeover by another process)
        _settle_failure(
            job,
            data,
            "fetch-error",
            f"the secret query parameters of {data.request.url} were never stored, so it "
            "cannot be fetched from here; fetch the full URL again (not retried)",
        )
        return
    # Only a GET is retried or resumed after a network error (docs/architecture.md §3,
    # from the spec): any other request may have had its effect on the server already, so
    # it is sent once unless the user opts in.
    retryable = policy.retry_non_idempotent or data.request.method == "GET"
    if job.remote is not None:
        from .cloud import prepare_record

        if await prepare_record(job, data):  # its object is there already, complete
            return
    while True:
        data.attempts += 1
        try:
            await _attempt(
                job, data, hashes, retryable and failures_without_progress < policy.retries
            )
            return
        except _IntegrityMismatch:
            integrity_failures += 1
            log.info(
                "%s: %s does not match its integrity %s; fetching it again",
                job.id,
                data.request.url,
                data.request.integrity,
            )
            if integrity_failures >= 2:
                _settle_failure(
                    job,
                    data,
                    "fetch-error",
                    f"integrity check failed twice: expected {data.request.integrity}",
                )
                return
            _restart_from_zero(job, data, hashes)
            continue
        except PartReplaced as exc:
            _settle_failure(job, data, "fetch-error", f"the partial file was tampered with: {exc}")
            return
        except (httpx.TooManyRedirects, httpx.DecodingError, httpx.InvalidURL) as exc:
            failure = classify(exc)
            _settle_failure(job, data, failure.reason, failure.message)
            return
        except _BadBody as exc:
            _settle_failure(job, data, "fetch-error", f"{exc} (not retried)")
            return
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            raise RegistrationStopped(
                "quota-exceeded",
                f"the disk holding the database is full ({exc}); free some space",
            ) from exc
        except (_Retry, httpx.TransportError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, httpx.TransportError):
                if exc.errno in _QUOTA_ERRNOS:
                    raise RegistrationStopped(
                        "quota-exceeded",
                        f"the disk is full while writing {data.part_path} "
                        f"({exc.strerror or exc}); free some space or pick another dest",
                    ) from exc
                _settle_failure(job, data, "fetch-error", f"cannot write the file: {exc}")
                return
            failure = classify(exc)
            message = failure.message
            data.error = message
            if not failure.retryable:  # the same request can only fail the same way again
                _settle_failure(job, data, failure.reason, message + " (not retried)")
                return
            if data.downloaded > best:
                best = data.downloaded
                failures_without_progress = 0
            failures_without_progress += 1
            if data.restarts > policy.max_restarts:
                _settle_failure(
                    job,
                    data,
                    "fetch-error",
                    f"{message} (not retried: started again from byte 0 {data.restarts} "
                    "times, as the file changed on the server or the server ignored Range; "
                    "retries=RetryPolicy(max_restarts=...) allows more)",
                )
                return
            if not retryable or failures_without_progress > policy.retries:
                why = (
                    ""
                    if retryable
                    else f" (not retried: only GET requests are, since a {data.request.method} "
                    "may have had its effect already; pass "
                    "retries=RetryPolicy(retry_non_idempotent=True) to allow it)"
                )
                _settle_failure(job, data, "fetch-error", message + why)
                return
            retry_after = exc.retry_after if isinstance(exc, _Retry) else None
            delay = policy.delay(failures_without_progress, retry_after)
            log.info(
                "%s: retrying %s in %.1f s (attempt %d failed: %s)",
                job.id,
                data.request.url,
                delay,
                data.attempts,
                message,
            )
            job.record_changed(data)
            data.retry_at = time.time() + delay
            try:
                await asyncio.sleep(delay)
            finally:
                data.retry_at = None


async def _rehash_part(job: RecordContext, data: RecordData, hashes: IntegrityHasher) -> None:
    """Resuming (after a pause or in a new process): the integrity and sha256 checks cover
    the whole file, so hash the bytes already on disk first. Only what is really in the
    ``.part`` file counts as downloaded."""
    assert data.part_path is not None
    opened = open_for_reading(data.part_path)  # never through a symlink
    hashes.reset()
    if opened is None:
        hashed = 0
    else:
        fd, data.part_id = opened  # the file whose bytes are hashed is the one continued
        f = os.fdopen(fd, "rb")
        keep = min(os.fstat(fd).st_size, data.downloaded)

        def work() -> int:
            done = 0
            with f:
                while done < keep:
                    chunk = f.read(min(HASH_CHUNK, keep - done))
                    if not chunk:
                        break
                    hashes.update(chunk)
                    done += len(chunk)
            return done

        if keep:
            hashed = await asyncio.get_running_loop().run_in_executor(None, work)
        else:
            f.close()
            hashed = 0
    if hashed != data.downloaded:
        job.add_downloaded(data, hashed - data.downloaded)


def _restart_from_zero(job: RecordContext, data: RecordData, hashes: IntegrityHasher) -> None:
    """Discard the bytes received so far. The ``.part`` file is kept (truncated when it is
    opened again): deleting it would leave its name free for anyone until the retry."""
    if data.downloaded:
        data.restarts += 1
    job.add_downloaded(data, -data.downloaded)
    data.segment_map = None
    hashes.reset()


def _settle_failure(
    job: RecordContext, data: RecordData, reason: FailureReason, message: str
) -> None:
    _check_lease(job)  # raises LeaseLost: the new owner decides this record's fate
    data.error = message
    job.settle_record(data, "failure", reason)


def _validator(data: RecordData) -> str:
    """What ``If-Range`` may carry (RFC 9110 13.1.5): a strong ETag; with no ETag at all,
    a strong Last-Modified (one at least a second before the response's Date); else ""
    (a weak validator only: the record starts again instead of resuming)."""
    if data.etag:
        return "" if data.etag.startswith("W/") else data.etag
    if data.last_modified and _strong_date(data):
        return data.last_modified
    return ""


def _same_version(headers: Mapping[str, str], data: RecordData) -> bool:
    """Whether an answer's validators are those of the bytes stored: a part of another
    version is never spliced (a changed or new ETag, or another Last-Modified)."""
    modified = headers.get("last-modified", "")
    return headers.get("etag", "") == data.etag and (not modified or modified == data.last_modified)


def _strong_date(data: RecordData) -> bool:
    modified = _http_date(data.last_modified)
    date = _http_date(data.response_headers.get("date", ""))
    return modified is not None and date is not None and date - modified >= 1


def _http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed is not None else None


def _resumable(data: RecordData, offset: int) -> bool:
    """Can the bytes on disk be continued with ``Range: bytes=offset-``?"""
    if data.request.method != "GET" or not _validator(data):
        return False
    if _encoding(data.response_headers.get("content-encoding")):
        return False  # offsets would count decoded bytes, ranges count encoded ones
    return data.part_path is not None and same_file(data.part_path, data.part_id)


async def _attempt(
    job: RecordContext, data: RecordData, hashes: IntegrityHasher, retry_status: bool
) -> None:
    _check_lease(job)
    request = data.request
    headers = _request_headers(job, data)
    offset = data.downloaded
    if data.segment_map is not None:  # a segmented download to continue
        if data.total is not None and _resumable(data, 0):
            async with job.host_slot(request.url):
                _activate(job, data)
                wanted = segments.resume_count(job, data)
                await segments.download(job, data, hashes, None, wanted, _SEGMENT_RULES)
            await _finish(job, data, hashes)
            return
        _restart_from_zero(job, data, hashes)
        offset = 0
    if offset and not _resumable(data, offset):
        _restart_from_zero(job, data, hashes)
        offset = 0
    if offset and offset == data.total and 200 <= data.status <= 299:
        # Every byte is on disk already (the process stopped before the rename).
        await _finish(job, data, hashes)
        return
    if offset:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = _validator(data)
    content = None
    if request.body is not None:
        try:
            size = request.body_size
        except OSError as exc:
            raise _BadBody(f"cannot read the request body file: {exc}") from None
        headers["Content-Length"] = str(size)
        content = _Upload(job, data, size)

    async with job.host_slot(request.url):
        _activate(job, data)
        client = await job.host.client()
        resp = await client.open(
            request.method,
            request.url,
            headers=headers,
            content=content,
            timeout=job.timeout,
            auth=job.auth,
        )
        try:
            part, total = await _receive(job, data, hashes, resp, offset, retry_status)
            # The disk is behind: finish while holding the slot, so that memory stays
            # bounded by the number of connections.
            release_first = part is None or part.unwritten <= EARLY_RELEASE_LIMIT
            if part is not None and not release_first:
                await _finish_part(part, data, total)
        finally:
            await _close_if_ambiguous(resp)
            await resp.aclose()
    if part is None:  # the body came in segments: written, hashed and fsync'd already
        await _finish(job, data, hashes)
        return
    if release_first:
        # Every byte has arrived and the connection is back in the pool: the next request
        # goes out on it while the writer thread writes the tail of this body (8 % off
        # case 2's wall time, benchmarks/experiments: 0.298 -> 0.275 s).
        await _finish_part(part, data, total)
    await _finish(job, data, hashes)


async def _close_if_ambiguous(resp: httpx.Response) -> None:
    """An answer framed by both Transfer-Encoding and Content-Length (RFC 9112 6.3: the
    chunked framing wins) leaves the connection in doubt: it is not used again.
    ipybgfetch's own transport sees to that itself; httpx's is told by closing the
    connection's stream (httpcore then drops the connection from its pool)."""
    headers = resp.headers
    if "transfer-encoding" not in headers or "content-length" not in headers:
        return
    if isinstance(resp.stream, Body):
        return
    stream = resp.extensions.get("network_stream")
    if stream is not None:
        with contextlib.suppress(Exception):
            await stream.aclose()


def _activate(job: RecordContext, data: RecordData) -> None:
    if data.started is None:
        data.started = time.time()  # when the first request goes out, not queue time
    if data.state != "active":
        data.state = "active"
        job.record_changed(data)


def _request_headers(job: RecordContext, data: RecordData) -> httpx.Headers:
    """The headers of a request for ``data`` (a whole answer or a segment): the
    registration's, the request's, and ``Accept-Encoding: identity`` unless the user set
    it, so that byte offsets and ranges are the file's own."""
    headers = httpx.Headers(job.headers)
    if data.request.headers:
        headers.update(data.request.headers)
    if "accept-encoding" not in headers and not _client_sets(job, "accept-encoding"):
        headers["Accept-Encoding"] = "identity"
    return headers


def _client_sets(job: RecordContext, name: str) -> bool:
    """Whether the user set header ``name`` on the manager's client (client_options)."""
    headers = job.host.client_options.get("headers")
    return bool(headers) and name in httpx.Headers(headers)


async def _finish_part(part: PartFile, data: RecordData, total: int | None) -> None:
    """Every byte of the body written, hashed and fsync'd; then the size checked."""
    try:
        await part.finish()
    finally:
        part.close()
    if total is not None and data.downloaded != total:
        raise _Retry(f"the body was truncated: got {data.downloaded} of {total} bytes")


async def _receive(
    job: RecordContext,
    data: RecordData,
    hashes: IntegrityHasher,
    resp: httpx.Response,
    offset: int,
    retry_status: bool,
) -> tuple[PartFile | None, int | None]:
    """Check the answer, then take its body into a ``.part`` file (not yet finished: the
    caller finishes it once the connection is released). Returns the file and the size
    the body should have, if known; no file when the body came in segments (finished)."""
    policy = job.policy
    status = resp.status_code
    headers = dict(resp.headers.items())  # lower-case names, repeated values joined: one pass
    if status in policy.statuses and retry_status:
        retry_after = parse_retry_after(headers.get("retry-after"))
        raise _Retry(f"the server answered {status} {resp.reason_phrase}", retry_after)

    etag = headers.get("etag", "")
    last_modified = headers.get("last-modified", "")
    encoded = _encoding(headers.get("content-encoding"))
    length: int | None
    if data.request.method == "HEAD" or status in (204, 304):
        length = 0  # no body, whatever Content-Length says (RFC 9110 8.6)
    else:
        length = None if encoded else _content_length(headers)
    resumed = False
    if offset:
        content_range = parse_content_range(headers.get("content-range"))
        same_version = _same_version(headers, data)
        if (
            status == 206
            and content_range is not None
            and content_range[0] == offset
            and same_version
            and not encoded
            and (data.total is None or content_range[2] in (None, data.total))
        ):
            resumed = True
            log.info("%s: resuming %s at byte %d", job.id, data.request.url, offset)
            total = content_range[2]
            if total is None and length is not None:
                total = offset + length
        elif status in (206, 416):
            # A partial answer that does not continue our bytes (another range, another
            # version, or a file now shorter): start again from byte 0, without Range.
            _restart_from_zero(job, data, hashes)
            raise _Retry(f"the server's range answer did not match ({status}); restarting")
        else:
            # A whole answer: a 200 (Range ignored, or If-Range saw a new version) starts
            # the file again from byte 0; an error status replaces the partial body.
            _restart_from_zero(job, data, hashes)
            offset = 0
            total = length
    else:
        total = length
        if status == 206:
            content_range = parse_content_range(headers.get("content-range"))
            if content_range is None or content_range[0] != 0:
                raise _Retry(f"the server sent a part ({status}) that was not asked for")
            total = content_range[2]

    limit = job.download_total
    if limit and total is not None and max(job.received, job.downloaded) + total - offset > limit:
        # refused before a byte of it is taken
        raise RegistrationStopped(
            "download-total-exceeded",
            f"download_total of {limit} bytes would be exceeded by {data.request.url} "
            f"({total - offset} bytes announced)",
        )
    if not (resumed and 200 <= data.status <= 299):
        # A resumed body keeps the status and headers of the response it continues.
        data.status = status
        data.response_headers = resp.headers
        data.response_url = str(resp.url)
    data.etag, data.last_modified = etag, last_modified
    data.total = total
    claimed = -1  # the new .part file's descriptor, when the name was reserved just now
    try:
        if data.final_path is None:
            name = filename_from_disposition(headers.get("content-disposition"))
            name = name or filename_from_url(data.response_url or str(resp.url))
            data.final_path, claimed = job.reserve_name(name)
            data.part_path = data.final_path.parent / (data.final_path.name + ".part")
            data.part_id = file_id(os.fstat(claimed))
        if data.response is None:
            data.response = Response(data)  # record.response: the head, before the body
        # The name, validators and size must be on disk before the bytes, so that a killed
        # process can resume; a small body is simply fetched again.
        job.record_changed(data, checkpoint=total is None or total > SMALL_BODY)

        assert data.part_path is not None
        if claimed < 0:
            # Opened again (a resume, a restart): never through a symlink, never another
            # file than the one this record claimed (see open_part).
            claimed, opened_at, data.part_id = open_part(
                data.part_path, offset, data.part_id, job.make_dest
            )
            if opened_at != offset:
                os.close(claimed)
                claimed = -1
                _restart_from_zero(job, data, hashes)
                raise _Retry("the partial file was replaced or disappeared; restarting")
        part = PartFile(data.part_path, offset, hashes, job.make_dest, fd=claimed)
    except BaseException:
        if claimed >= 0:
            os.close(claimed)
        raise
    split = 1  # a big file from a server that serves ranges: maybe several connections
    if not offset and total is not None and total >= 2 * job.min_segment_size:
        split = segments.split_count(job, data, status, headers, _SEGMENT_RULES)
    decoder: ContentDecoder | None = None
    try:
        if encoded:
            decoder = decoder_for(headers.get("content-encoding", ""))
        if encoded and decoder is None:
            chunks = resp.aiter_bytes()  # a coding only httpx knows
        elif isinstance(resp.stream, Body):
            chunks = resp.stream.__aiter__()  # the transport's chunks, without httpx's layer
        else:
            chunks = resp.aiter_raw()
        speed = SpeedCheck(policy)
        if split > 1 and not await _fast_alone(job, data, part, chunks, speed):
            part.close()  # what came so far stays, written and hashed: the segments go on
            await segments.download(job, data, hashes, resp, split, _SEGMENT_RULES, chunks)
            return None, total
        async for raw in chunks:
            slow = speed.slow(len(raw))
            if slow is not None:
                raise _Retry(slow)
            chunk = decoder.feed(raw) if decoder is not None else raw
            n = len(chunk)
            _count_received(job, data, n)
            backlog = part.write(chunk)
            job.add_downloaded(data, n)
            if backlog is not None:  # the disk is behind the network: let it catch up
                await backlog
        if decoder is not None:
            decoder.finish()  # the stream's end and trailer are there (nothing after them)
    except IncompleteEncoding as exc:
        part.close()
        raise _Retry(f"the compressed body is incomplete: {exc}") from None
    except CorruptEncoding as exc:
        part.close()
        raise httpx.DecodingError(str(exc)) from None
    except BaseException as exc:
        part.close()
        if isinstance(exc, httpx.RequestError):
            _attach_request(exc, resp)
        raise
    return part, total


async def _fast_alone(
    job: RecordContext,
    data: RecordData,
    part: PartFile,
    chunks: AsyncIterator[bytes],
    speed: SpeedCheck,
) -> bool:
    """The start of a body that could come in segments, on its one connection: True if
    it brings segments.PROBE_BYTES within segments.PROBE_TIME (one stream is enough: more
    connections would cost CPU and memory, not time), False to split. The loop below in
    :func:`_receive`, then or the segments, go on with the same ``chunks``."""
    got = 0
    deadline = time.monotonic() + segments.PROBE_TIME
    async for chunk in chunks:
        slow = speed.slow(len(chunk))
        if slow is not None:
            raise _Retry(slow)
        n = len(chunk)
        _count_received(job, data, n)
        backlog = part.write(chunk)
        job.add_downloaded(data, n)
        if backlog is not None:
            await backlog
        got += n
        if got >= segments.PROBE_BYTES:
            return True
        if time.monotonic() > deadline:
            return False
    return True  # the whole body came already


def _count_received(job: RecordContext, data: RecordData, n: int) -> None:
    """``n`` more bytes received for ``data``: counted against ``download_total`` before
    they are stored. Every byte received counts, restarts and segments included (what
    the browser limits; ``downloaded`` only counts what is on disk now)."""
    limit = job.download_total
    if limit and max(job.received, job.downloaded) + n > limit:
        raise RegistrationStopped(
            "download-total-exceeded",
            f"download_total of {limit} bytes exceeded by {data.request.url}",
        )
    job.received += n


def _attach_request(exc: httpx.RequestError, resp: httpx.Response) -> None:
    """Give a body error its request, as httpx's aiter_raw does (a body read straight
    from the transport has not been through it)."""
    try:
        exc.request  # noqa: B018
    except RuntimeError:
        exc.request = resp.request


async def _finish(job: RecordContext, data: RecordData, hashes: IntegrityHasher) -> None:
    assert data.part_path is not None and data.final_path is not None
    _check_lease(job)
    ok = 200 <= data.status <= 299
    if ok and not hashes.matches():
        raise _IntegrityMismatch()
    data.sha256 = hashes.sha256.hexdigest()
    if not same_file(data.part_path, data.part_id):
        # Gone, or replaced by a symlink or another file since it was written: never
        # rename or upload that. Start again (a new .part is claimed).
        _restart_from_zero(job, data, hashes)
        raise _Retry("the partial file was replaced or disappeared before its rename; restarting")
    if job.remote is not None:  # object storage: upload the verified file
        from .cloud import ObjectTaken, publish

        try:
            await publish(job, data)
        except FileNotFoundError as exc:
            raise _Retry(f"{exc.strerror}; restarting") from None
        except ObjectTaken as exc:
            _settle_failure(job, data, "fetch-error", str(exc))
            return
        _check_lease(job)
    else:
        # A record that did not succeed never takes a final name in dest (a glob over
        # dest must not find an error page next to the data): its body goes to a hidden
        # folder, still readable through record.response.
        target = data.final_path if ok else _failed_path(job, data.final_path)
        os.replace(data.part_path, target)
        if not ok:
            job.release_name(data.final_path)  # free again: a retry may claim it
        if not same_file(target, data.part_id):  # swapped between the check and the rename
            with contextlib.suppress(OSError):
                os.unlink(target)  # the name only: whatever it points to is left alone
            _restart_from_zero(job, data, hashes)
            raise _Retry("the partial file was replaced during its rename; restarting")
        data.final_path = target
        job.renamed_in(target.parent)  # made durable before the record's row is
    if ok:
        data.error = ""
        job.settle_record(data, "success", "")
    else:
        data.error = f"the server answered {data.status}"
        job.settle_record(data, "failure", "bad-status")


def _failed_path(job: RecordContext, final: Path) -> Path:
    """Where the body of a record that did not succeed is kept: ``dest/.ipybgfetch-failed/
    <registration key>/<name>`` (the name is unique among the registration's records)."""
    folder = final.parent / FAILED_FOLDER / job.key
    folder.mkdir(parents=True, exist_ok=True)
    return folder / final.name


_SEGMENT_RULES = segments.Rules(
    headers=_request_headers,
    count_received=_count_received,
    validator=_validator,
    same_version=_same_version,
    encoded=_encoding,
    content_range=parse_content_range,
    permanent=lambda exc: not classify(exc).retryable,
    check_lease=_check_lease,
    attach_request=_attach_request,
    restart=_restart_from_zero,
    retry=_Retry,
)
