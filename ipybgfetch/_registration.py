"""``BackgroundFetchRegistration``: one fetch() call, its records and its life cycle.

Public attributes are read from any thread; every change happens on the engine thread.
Methods that change state (abort, pause, resume) hop to the engine and wait there.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ._disk import fsync_dir
from ._display import mimebundle
from ._engine.record import FAILED_FOLDER, RecordData
from ._engine.retry import RetryPolicy
from ._engine.segments import DEFAULT_MIN_SEGMENT
from ._engine.transfer import LeaseLost, RegistrationStopped, run_record
from ._events import BackgroundFetchEvent, ListenerSet
from ._exceptions import FetchError, InvalidStateError, NeedsCredentialsError
from ._models import Request
from ._output import output_target, output_to
from ._records import (
    BackgroundFetchRecord,
    RecordList,
    await_shared,
    query_request,
    request_matches,
)
from ._secrets import has_redacted_params
from ._vocab import FailureReason, RecordState, RegistrationState, Result, Snapshot

if TYPE_CHECKING:
    from ._manager import BackgroundFetchManager

__all__ = ["BackgroundFetchRegistration"]

log = logging.getLogger("ipybgfetch")

# seconds between progress events: 8 per second, so that the final event (the result
# change, sent at once so that wait() never waits for the throttle) still keeps any 1 s
# window at <= 10 events (the widget's state messages follow these events)
PROGRESS_INTERVAL = 0.125
CHECKPOINT_INTERVAL = 1.0  # seconds between resume checkpoints in the database
# ...or sooner, at a progress event, once this many records changed: many small files
# would otherwise all be written after the last one (~4 ms per 500 records there)
CHECKPOINT_ROWS = 128
SNAPSHOT_RECORDS = 200  # records included in a panel snapshot
MAX_WORKERS = 64  # concurrent records per registration; per-host limits apply inside


class BackgroundFetchRegistration:
    """A set of requests downloading in the background. Created by ``manager.fetch()``."""

    # segmented downloads (fetch's segments= and min_segment_size=; a registration
    # restored from an earlier process uses the defaults)
    _segments: int | None = None
    _min_segment_size: int = DEFAULT_MIN_SEGMENT

    def __init__(
        self,
        manager: BackgroundFetchManager,
        *,
        key: str,
        id: str,
        requests: Sequence[Request],
        title: str,
        icons: Sequence[dict[str, str]],
        download_total: int,
        dest: Path,
        headers: httpx.Headers,
        auth: Any,
        policy: RetryPolicy,
        created: float,
    ) -> None:
        self._manager = manager
        self._key = key
        self._id = id
        self._title = title
        self._icons = [dict(i) for i in icons]
        self._download_total = download_total
        self._dest = dest
        self._dest_made = False
        self._unsynced_dirs: set[Path] = set()
        self._requests_carry_credentials: bool | None = None  # computed once, when stored
        self._headers = headers
        self._auth = auth
        self._policy = policy
        self._timeout = policy.timeout()
        self._created = created
        self._finished: float | None = None
        self._records = [RecordData(id, i, r) for i, r in enumerate(requests)]
        self._upload_total = sum(r.body_size for r in requests)
        self._downloaded = 0
        # bytes received, restarts included (what download_total limits; _downloaded
        # counts what is on disk and goes down when a record starts again)
        self._received = 0
        self._uploaded = 0
        self._result: Result = ""
        self._failure_reason: FailureReason = ""
        self._state: RegistrationState = "active"
        self._stopping = False
        self._read_only = False
        self._reused_at: float | None = None  # when a re-run last returned it (no download)
        self._records_available = True
        self._done_count = 0
        self._failed_count = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the workers
        self._queue: collections.deque[RecordData] = collections.deque()
        self._listeners = ListenerSet(("progress",))
        self._settled_state = threading.Event()  # result/failure_reason are final
        self._done = threading.Event()  # ...and the success/fail/abort handlers have run
        self._done_future: concurrent.futures.Future[BackgroundFetchRegistration] = (
            concurrent.futures.Future()
        )
        self._progress_handle: asyncio.TimerHandle | None = None
        self._last_progress = float("-inf")  # time.monotonic() of the last progress event emitted
        self._last_dispatch = float("-inf")  # ...and of the last one run on the callback thread
        self._progress_queued = False
        self._last_checkpoint = 0.0
        self._dirty: set[int] = set()
        self._output_target = output_target()  # the cell that started it gets its output
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=50)
        self._remote: Any = None  # an object-storage dest (_cloud.RemoteDest), else None
        self._runner: Any = None  # a cluster run (_cluster.ClusterRun), else local workers

    # -- the spec's attributes -----------------------------------------------------------
    @property
    def id(self) -> str:
        return self._id

    @property
    def upload_total(self) -> int:
        return self._upload_total

    @property
    def uploaded(self) -> int:
        return self._uploaded

    @property
    def download_total(self) -> int:
        return self._download_total

    @property
    def downloaded(self) -> int:
        return self._downloaded

    @property
    def result(self) -> Result:
        """``""`` while active, then ``"success"`` or ``"failure"``."""
        return self._result

    @property
    def failure_reason(self) -> FailureReason:
        return self._failure_reason

    @property
    def records_available(self) -> bool:
        return self._records_available

    # -- beyond the spec ------------------------------------------------------------------
    @property
    def title(self) -> str:
        return self._title

    @property
    def icons(self) -> list[dict[str, str]]:
        return [dict(i) for i in self._icons]

    @property
    def state(self) -> RegistrationState:
        """active | paused | needs-credentials | success | failure | aborted"""
        return self._state

    @property
    def dest(self) -> Path | str:
        """The destination folder, or the object-storage URL (``"s3://bucket/prefix/"``)."""
        return self._remote.url if self._remote is not None else self._dest

    @property
    def created(self) -> float:
        """When fetch() made it (seconds since the epoch)."""
        return self._created

    @property
    def finished(self) -> float | None:
        """When it settled (seconds since the epoch), else None."""
        return self._finished

    @property
    def reused(self) -> bool:
        """True when a re-run of fetch() returned this settled registration as it was
        ("already downloaded": nothing was fetched again)."""
        return self._reused_at is not None

    @property
    def settled(self) -> bool:
        return self._settled_state.is_set()

    @property
    def expected_bytes(self) -> int | None:
        """The size of the download: the sum of the sizes the server announced, once
        every record's is known, else None. (``download_total`` is only a cap.)"""
        return self._expected_bytes()

    @property
    def records_total(self) -> int:
        return len(self._records)

    @property
    def records_done(self) -> int:
        """Records that settled (succeeded or not)."""
        return self._done_count

    @property
    def records_failed(self) -> int:
        return self._failed_count

    @property
    def read_only(self) -> bool:
        """True when another process owns this registration (its state is mirrored)."""
        return self._read_only

    # -- control --------------------------------------------------------------------------
    def abort(self) -> bool:
        """Abort the unfinished records. True if this call aborted an active registration."""
        if self._settled_state.is_set():
            return False
        self._check_writable("abort")
        if self._read_only:  # another process downloads it: ask it (through the store)
            done = self._manager._control_elsewhere(self, "abort")
            if done is not None:
                return done
        return self._manager._engine.run(self._abort())

    def pause(self) -> bool:
        """Stop transfers, keeping the bytes on disk. True if this call paused it."""
        if self._settled_state.is_set():
            return False
        self._check_writable("pause")
        if self._read_only:  # another process downloads it: ask it (through the store)
            done = self._manager._control_elsewhere(self, "pause")
            if done is not None:
                return done
        return self._manager._engine.run(self._pause())

    def resume(
        self,
        *,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        storage_options: dict[str, Any] | None = None,
    ) -> bool:
        """Continue a paused (or needs-credentials) registration from the bytes on disk.

        ``headers``/``auth`` (and ``storage_options`` for an object-storage dest) supply
        credentials again for a registration restored from an earlier kernel: they are
        never written to disk, so a new kernel must be told.
        """
        if self._settled_state.is_set():
            return False
        self._check_writable("resume")
        if self._read_only:
            if headers or auth is not None or storage_options is not None:
                # credentials never go through the store: this process takes the
                # registration over and continues it with them
                self._manager._take_over(self)
            else:
                done = self._manager._control_elsewhere(self, "resume")
                if done is not None:
                    return done
        if storage_options is not None:
            if self._remote is None:
                raise FetchError("storage_options applies to an object-storage dest only")
            self._remote.set_options(storage_options)
        return self._manager._engine.run(self._resume(headers, auth, storage_options is not None))

    def retry(self) -> int:
        """Fetch the failed (or aborted) records of a settled registration again; the
        records that succeeded keep their files. The registration is active again and
        settles anew. Returns how many records are fetched again (0: none had failed)."""
        if not self._settled_state.is_set():
            raise InvalidStateError(
                f"registration {self._id!r} is still {self._state}; reg.retry() re-fetches "
                "the failed records once it has settled: reg.wait() for it first"
            )
        self._check_writable("retry")
        return self._manager._engine.run(self._retry())

    def click(self) -> None:
        """Fire ``backgroundfetchclick`` for this registration, as clicking its title in
        the panel does (in a browser only its download UI can; here the panel or code)."""
        self._manager._dispatch_click(self)

    def _check_writable(self, what: str) -> None:
        if self._manager._closed:
            raise InvalidStateError(
                f"cannot {what}() {self._id!r}: its manager was closed. Unfinished "
                "registrations stay resumable: a new manager on the same home picks them up"
            )

    def wait(
        self, timeout: float | None = None, *, progress: bool | None = None
    ) -> BackgroundFetchRegistration:
        """Block the calling thread until settled (and its event handlers ran).

        ``progress``: draw a live progress line on standard error meanwhile. The default
        (None) draws it when standard error is a terminal (terminal IPython, a script in
        a shell), never in a notebook, a pipe or a log.
        """
        if progress is None:
            from ._console import progress_enabled

            progress = progress_enabled() and not self._manager._callbacks.is_current()
        if progress and not self.settled:
            from ._console import wait_with_progress

            wait_with_progress([self], timeout)
            return self
        event = self._done
        if self._manager._callbacks.is_current():
            event = self._settled_state  # a handler waiting for its own event's end
        woke = self._manager._closed or event.wait(timeout)
        if self._manager._closed and not self.settled:
            raise InvalidStateError(
                f"registration {self._id!r} cannot settle here: its manager was closed "
                "(it stays resumable by a new manager on the same home)"
            )
        if not woke:
            raise TimeoutError(
                f"registration {self._id!r} is still {self._state} after {timeout} s "
                f"({self._downloaded} bytes downloaded); wait longer or abort() it"
            )
        return self

    def __await__(self) -> Generator[Any, None, BackgroundFetchRegistration]:
        return await_shared(self._done_future)

    def add_event_listener(
        self, type: str, callback: Callable[[BackgroundFetchEvent], Any]
    ) -> None:
        """``reg.add_event_listener("progress", cb)``: cb(event) at most ~10 times a second."""
        self._listeners.add(type, callback)

    def remove_event_listener(
        self, type: str, callback: Callable[[BackgroundFetchEvent], Any]
    ) -> None:
        self._listeners.remove(type, callback)

    # -- records ----------------------------------------------------------------------------
    def match(
        self,
        url_or_request: Request | str,
        *,
        ignore_search: bool = False,
        ignore_method: bool = False,
        ignore_vary: bool = False,
    ) -> BackgroundFetchRecord | None:
        """The first record matching ``url_or_request`` (the spec's matching rule), or None."""
        found = self.match_all(
            url_or_request,
            ignore_search=ignore_search,
            ignore_method=ignore_method,
            ignore_vary=ignore_vary,
        )
        return found[0] if found else None

    def match_all(
        self,
        url_or_request: Request | str | None = None,
        *,
        ignore_search: bool = False,
        ignore_method: bool = False,
        ignore_vary: bool = False,
    ) -> RecordList:
        """Every record (no argument) or the records matching ``url_or_request``."""
        if not self._records_available:
            raise InvalidStateError(
                f"the records of {self._id!r} are no longer available (it was deleted)"
            )
        if url_or_request is None:
            return RecordList(BackgroundFetchRecord(d) for d in self._records)
        query = query_request(url_or_request)
        return RecordList(
            BackgroundFetchRecord(d)
            for d in self._records
            if request_matches(
                query,
                d,
                ignore_search=ignore_search,
                ignore_method=ignore_method,
                ignore_vary=ignore_vary,
                sent_headers=self._headers,
            )
        )

    # -- display ----------------------------------------------------------------------------
    def _expected_bytes(self) -> int | None:
        """The sum of the records' sizes once every size is known, else None."""
        expected = 0
        for d in self._records:
            if d.total is None:
                return None
            expected += d.total
        if expected == 0 and self._records and not self.settled:
            return None
        return expected

    def snapshot(self) -> Snapshot:
        """The registration as its panel shows it: a plain dict taken now (the keys are
        ``ipybgfetch._vocab.Snapshot``), for displays of its progress."""
        return self._snapshot()

    def _snapshot(self) -> Snapshot:
        records = self._records
        expected = self._expected_bytes()
        speed = self._speed()
        remaining_total = self._download_total or expected
        eta = None
        if speed > 0 and remaining_total and not self.settled:
            eta = max(0.0, (remaining_total - self._downloaded) / speed)
        # active and failed records first, then the rest, each in request order
        interesting = [d for d in records if d.state in ("active", "failure")]
        shown = interesting[:SNAPSHOT_RECORDS]
        for d in records:
            if len(shown) >= SNAPSHOT_RECORDS:
                break
            if d.state not in ("active", "failure"):
                shown.append(d)
        return {
            "key": self._key,
            "id": self._id,
            "title": self._title,
            "icons": self.icons,
            "state": self._state,
            "result": self._result,
            "failure_reason": self._failure_reason,
            "downloaded": self._downloaded,
            "download_total": self._download_total,
            "expected_bytes": expected,
            "uploaded": self._uploaded,
            "upload_total": self._upload_total,
            "speed": speed,
            "eta": eta,
            "records_total": len(records),
            "records_done": self._done_count,
            "records_failed": self._failed_count,
            "records_active": sum(1 for d in records if d.state == "active"),
            "records": [
                {
                    "index": d.index,
                    "url": d.request.url,
                    "status": d.status,
                    "state": d.state,
                    "downloaded": d.downloaded,
                    "total": d.total,
                    "error": d.error,
                    "attempts": d.attempts,
                    "connections": d.connections or int(d.state == "active"),
                }
                for d in shown
            ],
            "records_truncated": len(records) > len(shown),
            "started": self._created,
            "finished": self._finished,
            "dest": str(self.dest),
            # "already downloaded <when>": the time it finished, when a re-run of fetch()
            # returned it as it was; else None
            "already_downloaded": self._finished if self._reused_at is not None else None,
            "cluster": self._runner.snapshot() if self._runner is not None else None,
        }

    def _speed(self) -> float:
        samples = list(self._samples)
        if self.settled or len(samples) < 2:
            return 0.0
        now = time.monotonic()
        recent = [s for s in samples if now - s[0] <= 3.0] or samples[-2:]
        if len(recent) < 2:
            recent = samples[-2:]
        (t0, b0), (t1, b1) = recent[0], recent[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return mimebundle("registration", self, include, exclude)

    def __repr__(self) -> str:
        from ._sizes import format_size

        # The real size is the sum the server announced (when every size is known);
        # download_total is only a cap, shown apart.
        expected = self._expected_bytes()
        done = format_size(self._downloaded)
        if expected:
            done = f"{done} / {format_size(expected)} ({100 * self._downloaded / expected:.0f}%)"
        cap = f", cap {format_size(self._download_total)}" if self._download_total else ""
        reason = f": {self._failure_reason}" if self._failure_reason else ""
        n_done = self._done_count
        again = ""
        if self._reused_at is not None and self._finished is not None and self.settled:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self._finished))
            again = f", already downloaded {when}"
        return (
            f"<BackgroundFetchRegistration {self._id!r} {self._state}{reason}, {done}{cap}, "
            f"{n_done}/{len(self._records)} records{again}>"
        )

    # ======================================================================================
    # Engine side: everything below runs on the engine thread only.
    # ======================================================================================
    def _start(self) -> None:
        """Queue the unsettled records and start enough workers to drain the queue."""
        if self._state in ("paused", "needs-credentials") or self.settled:
            return
        self._state = "active"
        engine = self._manager._engine
        if self._runner is not None:  # a cluster runs the records; one task follows it
            self._runner.start(self)
            self._touch()
            return
        self._queue = collections.deque(d for d in self._records if not d.settled)
        if self._queue:
            log.info(
                "%s: starting %d of %d records into %s",
                self._id,
                len(self._queue),
                len(self._records),
                self.dest,
            )
        wanted = min(len(self._queue), MAX_WORKERS) - len(self._tasks)
        for _ in range(max(0, wanted)):
            self._tasks.add(engine.spawn(self._worker(), name=f"bgfetch:{self._id}"))
        self._touch()
        self._maybe_settle()

    async def _worker(self) -> None:
        task = asyncio.current_task()
        try:
            while self._queue:
                await self._run(self._queue.popleft())
        finally:
            self._tasks.discard(task)

    async def _run(self, data: RecordData) -> None:
        try:
            await run_record(self, data)
        except asyncio.CancelledError:
            if not data.settled and data.state == "active":
                data.state = "paused"
                self._mark_dirty(data)
            raise
        except RegistrationStopped as stop:
            data.error = str(stop)
            self._fail_now(data, stop.reason, str(stop))
        except LeaseLost:
            self._lose_lease()  # the new owner decides this record's fate
        except Exception as exc:  # never silent: the record fails and says why
            data.error = f"internal error: {exc!r}"
            self._manager._callbacks.report(exc, self._run)
            self._settle_record(data, "failure", "fetch-error")

    def _settle_record(self, data: RecordData, state: RecordState, failure: FailureReason) -> None:
        if data.settled:
            return
        data.state = state
        data.failure = failure
        data.finished = time.time()
        self._done_count += 1
        if state != "success":
            self._failed_count += 1
            self._remove_part(data)  # a settled record is never resumed
        data.resolve_ready()
        self._log_record(data)
        self._mark_dirty(data)
        self._touch()
        self._maybe_settle()

    def _log_record(self, data: RecordData) -> None:
        if data.state == "success":
            log.info(
                "%s: %s done (%d bytes, status %s) -> %s",
                self._id,
                data.request.url,
                data.downloaded,
                data.status,
                data.final_path,
            )
        else:
            log.info(
                "%s: %s failed (%s): %s",
                self._id,
                data.request.url,
                data.failure or data.state,
                data.error or "no detail",
            )

    def _maybe_settle(self) -> None:
        if self.settled or self._stopping:
            return
        if self._done_count < len(self._records):
            return
        failed = next((d for d in self._records if d.state != "success"), None)
        if failed is None:
            self._settle("success", "")
        else:
            self._settle("failure", failed.failure or "fetch-error")

    def _fail_now(self, culprit: RecordData, reason: FailureReason, message: str) -> None:
        """download_total exceeded or disk full: stop every record, fail the registration."""
        if self.settled or self._stopping:
            return
        self._stopping = True
        self._queue.clear()  # no worker picks up another record meanwhile
        self._manager._engine.spawn(self._stop_all(culprit, reason, message))

    async def _stop_all(
        self, culprit: RecordData | None, reason: FailureReason, message: str
    ) -> None:
        current = asyncio.current_task()
        self._queue.clear()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for d in self._records:
            if d.settled:
                continue
            d.state = "aborted" if reason == "aborted" else "failure"
            d.failure = reason
            d.finished = time.time()
            if d is culprit or reason == "aborted" or not d.error:
                d.error = (
                    message
                    if d is culprit
                    else ("aborted" if reason == "aborted" else f"stopped: {message}")
                )
            self._done_count += 1
            self._failed_count += 1
            self._remove_part(d)
            d.resolve_ready()
            self._log_record(d)
            self._mark_dirty(d)
        self._stopping = False
        self._settle("failure", reason)

    async def _hand_over(self) -> None:
        """Another process asked to take this registration over (to resume it with its
        credentials): stop the transfers, checkpoint, and mirror it from now on. The
        store then hands the lease to the asker."""
        if self.settled or self._read_only:
            return
        self._queue.clear()
        tasks = list(self._tasks)
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._state == "active":  # the new owner resumes it, with its credentials
            self._state = "paused"
        for d in self._records:
            if not d.settled:
                d.state = "paused"
                self._mark_dirty(d)
        self._checkpoint(force=True)
        self._persist_registration()
        self._read_only = True

    def _lose_lease(self) -> None:
        """Another process took this registration over (this one was stopped or stalled
        longer than the lease): stop transferring at once and mirror it from now on."""
        if self.settled or self._read_only:
            return
        self._read_only = True
        self._queue.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    def _remove_part(self, d: RecordData) -> None:
        if d.part_path is not None:
            with contextlib.suppress(OSError):
                d.part_path.unlink()

    async def _abort(self) -> bool:
        if self.settled or self._stopping:
            return False
        self._stopping = True
        await self._stop_all(None, "aborted", "aborted")
        return True

    async def _pause(self) -> bool:
        if self.settled or self._stopping or self._state != "active":
            return False
        self._state = "paused"
        self._queue.clear()
        tasks = list(self._tasks)
        self._tasks.clear()  # a resume() during the wait below starts fresh workers
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._state != "paused":
            return True  # resumed (or stopped) while the workers were winding down
        for d in self._records:
            if not d.settled:
                d.state = "paused"
                self._mark_dirty(d)
        self._persist_registration()
        self._touch()
        return True

    async def _resume(
        self, headers: dict[str, str] | None, auth: Any, storage: bool = False
    ) -> bool:
        if self.settled or self._stopping:
            return False
        if headers:
            self._headers.update(headers)
        if auth is not None:
            self._auth = auth
        if self._state == "needs-credentials":
            redacted = [
                d.request.url
                for d in self._records
                if not d.settled and has_redacted_params(d.request.url)
            ]
            if redacted:
                raise NeedsCredentialsError(
                    f"registration {self._id!r} was restored from an earlier kernel and "
                    f"its URLs carried secret query parameters (e.g. {redacted[0]}), which "
                    f"are never stored; abort it (mgr.get({self._id!r}).abort()) and fetch "
                    "the full URLs again"
                )
        if self._state == "needs-credentials" and not (headers or auth is not None or storage):
            raise NeedsCredentialsError(
                f"registration {self._id!r} was restored from an earlier kernel and its "
                "requests carried credentials, which are never stored; call "
                "reg.resume(headers={'Authorization': ...}) or reg.resume(auth=...)"
            )
        if self._state not in ("paused", "needs-credentials"):
            return False
        self._state = "active"
        self._persist_registration()
        self._start()
        return True

    async def _retry(self) -> int:
        if not self.settled:
            return 0
        failed = [d for d in self._records if d.state != "success"]
        if not failed:
            return 0
        self._manager._reopen(self)  # raises if another registration took the id meanwhile
        for d in failed:
            self._downloaded -= d.downloaded
            self._uploaded -= d.uploaded
            if isinstance(d.final_path, Path) and d.final_path.parent != self._dest:
                # a failed body kept aside (not under its final name): drop it, and let
                # the retry reserve the final name again
                with contextlib.suppress(OSError):
                    d.final_path.unlink()
                if d.final_path.parent.parent.name == FAILED_FOLDER:
                    for empty in (d.final_path.parent, d.final_path.parent.parent):
                        with contextlib.suppress(OSError):
                            empty.rmdir()  # dest/.ipybgfetch-failed/<key>/, once empty
                d.final_path = d.part_path = None
            d.reset_for_retry()
            self._mark_dirty(d)
        self._done_count -= len(failed)
        self._failed_count = 0
        self._reused_at = None  # downloading again: no longer "already downloaded"
        self._result = ""
        self._failure_reason = ""
        self._finished = None
        self._state = "active"
        self._settled_state.clear()
        self._done.clear()
        self._done_future = concurrent.futures.Future()
        self._last_progress = float("-inf")
        self._samples.clear()
        log.info("%s: retrying %d failed records", self._id, len(failed))
        self._persist_registration()
        self._checkpoint(force=True)
        self._start()
        return len(failed)

    def _settle(self, result: Result, reason: FailureReason) -> None:
        self._result = result
        self._failure_reason = reason
        self._state = (
            "success" if result == "success" else ("aborted" if reason == "aborted" else "failure")
        )
        self._finished = time.time()
        log.info(
            "%s: settled %s%s: %d of %d records succeeded, %d bytes",
            self._id,
            result,
            f" ({reason})" if reason else "",
            self._done_count - self._failed_count,
            len(self._records),
            self._downloaded,
        )
        if self._progress_handle is not None:
            self._progress_handle.cancel()
            self._progress_handle = None
        try:
            self._checkpoint(force=True)
            self._persist_registration()
            self._manager._store_release(self._key)
        except Exception as exc:  # e.g. the disk holding the database is full
            self._manager._callbacks.report(exc, self._settle)
        self._settled_state.set()
        event_type = {
            "success": "backgroundfetchsuccess",
            "aborted": "backgroundfetchabort",
        }.get(self._state, "backgroundfetchfail")
        # The final progress event (for the result change), then the manager's event,
        # then wake the waiters: all in order on the callback thread.
        callbacks = self._manager._callbacks
        callbacks.post(self._dispatch_progress)
        callbacks.post(self._manager._dispatch_settled, self, event_type)
        callbacks.post(self._mark_done)

    def _wake_waiters_on_close(self) -> None:
        """The manager closed before this registration settled: nobody waits forever."""
        error = InvalidStateError(
            f"registration {self._id!r} did not settle: its manager was closed (it stays "
            "resumable by a new manager on the same home)"
        )
        for d in self._records:
            if not d.ready.done():
                d.ready.set_exception(error)
        if not self._done_future.done():
            self._done_future.set_exception(error)
        self._done.set()  # wait() wakes, sees the closed manager and raises

    def _mark_done(self) -> None:
        self._done.set()
        if not self._done_future.done():
            self._done_future.set_result(self)

    # -- progress --------------------------------------------------------------------------
    def _add_downloaded(self, data: RecordData, n: int) -> None:
        data.downloaded += n
        self._downloaded += n
        self._dirty.add(data.index)  # checkpointed: other processes mirror live progress
        if self._progress_handle is None:
            self._touch()

    def _add_uploaded(self, data: RecordData, n: int) -> None:
        data.uploaded += n
        self._uploaded += n
        if self._progress_handle is None:
            self._touch()

    def _record_changed(self, data: RecordData, checkpoint: bool = False) -> None:
        self._mark_dirty(data)
        if checkpoint:
            self._checkpoint(force=True)
        self._touch()

    def _mark_dirty(self, data: RecordData) -> None:
        self._dirty.add(data.index)

    def _touch(self) -> None:
        """Something changed: emit a progress event now or within PROGRESS_INTERVAL."""
        if self._progress_handle is not None or self.settled:
            return
        # spaced from the last event emitted *and* the last one listeners actually got
        last = max(self._last_progress, self._last_dispatch)
        wait = last + PROGRESS_INTERVAL - time.monotonic()
        if wait <= 0:
            self._emit_progress()
        else:
            self._progress_handle = asyncio.get_running_loop().call_later(wait, self._emit_progress)

    def _emit_progress(self) -> None:
        self._progress_handle = None
        if self.settled:
            return
        now = time.monotonic()
        early = self._last_dispatch + PROGRESS_INTERVAL - now
        if early > 0:  # the previous event reached listeners late: keep the spacing
            loop = asyncio.get_running_loop()
            self._progress_handle = loop.call_later(early, self._emit_progress)
            return
        self._last_progress = now
        self._samples.append((now, self._downloaded))
        self._checkpoint()
        if self._progress_queued:
            return  # the queued event reads the live state when it runs
        if self._listeners.get("progress") or self._manager._has_change_listeners():
            self._progress_queued = True
            self._manager._callbacks.post(self._dispatch_progress)

    def _dispatch_progress(self) -> None:
        """On the callback thread: run progress listeners, then the manager's."""
        self._last_dispatch = time.monotonic()  # before the flag: the engine reads both
        self._progress_queued = False
        event = BackgroundFetchEvent("progress", self)
        with output_to(self._output_target):
            for cb in self._listeners.get("progress"):
                try:
                    cb(event)
                except BaseException as exc:  # a user's listener: even SystemExit
                    self._manager._callbacks.report(exc, cb)
        self._manager._notify_change(self)

    # -- persistence -----------------------------------------------------------------------
    def _checkpoint(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty:
            return
        if (
            not force
            and now - self._last_checkpoint < CHECKPOINT_INTERVAL
            and len(self._dirty) < CHECKPOINT_ROWS
        ):
            return
        self._last_checkpoint = now
        dirty = [self._records[i] for i in sorted(self._dirty)]
        self._dirty.clear()
        for folder in self._unsynced_dirs:  # a row never says "done" before its rename
            fsync_dir(folder)  # is durable; one fsync per folder covers every rename
        self._unsynced_dirs.clear()
        self._manager._store_records(self, dirty)

    def _renamed_in(self, folder: Path) -> None:
        self._unsynced_dirs.add(folder)

    def _persist_registration(self) -> None:
        self._manager._store_registration(self)

    # -- used by transfers -----------------------------------------------------------------
    def _host_slot(self, url: str) -> asyncio.Semaphore:
        """``async with reg._host_slot(url):`` one of the origin's connections."""
        return self._manager._host_semaphore(url)

    def _reserve_name(self, name: str) -> tuple[Path, int]:
        """A final path for ``name`` in the destination, and its new ``.part`` file's
        descriptor (open for writing; the caller closes it)."""
        if not self._dest_made:  # once: mkdir(exist_ok=True) costs an exception per call
            self._make_dest()
        return self._manager._names.reserve_open(self._dest, name)

    def _release_name(self, path: Path) -> None:
        """A reserved final path this registration no longer uses (a failed record's
        body was moved out of dest)."""
        self._manager._names.release(path)

    def _make_dest(self) -> None:
        """(Re)create the destination folder (again if the user deleted it meanwhile)."""
        self._dest.mkdir(parents=True, exist_ok=True)
        self._dest_made = True

    def _update_ui(self, title: str | None, icons: Sequence[dict[str, str]] | None) -> None:
        if title is not None and not isinstance(title, str):
            raise TypeError(f"title must be a str, got {type(title).__name__}")
        new_icons = _check_icons(icons) if icons is not None else None
        # Plain attribute swaps (atomic); the database write happens on the engine.
        if title is not None:
            self._title = title
        if new_icons is not None:
            self._icons = new_icons
        self._manager._engine.call_soon(self._persist_registration)
        self._manager._notify_change(self)


def _check_icons(icons: Any) -> list[dict[str, str]]:
    if isinstance(icons, (str, bytes)) or not isinstance(icons, (list, tuple)):
        raise FetchError(
            "icons must be a list of dicts like [{'src': 'https://…/i.png', "
            "'sizes': '64x64', 'type': 'image/png'}]"
        )
    out = []
    for icon in icons:
        if isinstance(icon, str):
            icon = {"src": icon}
        if not isinstance(icon, dict) or not isinstance(icon.get("src"), str):
            raise FetchError(f"each icon needs a 'src' string, got {icon!r}")
        out.append({k: str(v) for k, v in icon.items() if k in ("src", "sizes", "type", "label")})
    return out
