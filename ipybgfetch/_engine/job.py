"""The engine side of one registration: its records' queue and workers, its counters,
the progress throttle and the resume checkpoints; the one writer of that state.

A :class:`~ipybgfetch.BackgroundFetchRegistration` is the user's view over a job: it
reads the job's attributes from any thread and asks the engine thread to call its methods
(``abort``, ``pause``, ``resume``, ``retry``). Everything here runs on the engine thread.
The transfer of one record (:mod:`.transfer`) uses the job as its context.

The job reports upward only through what it is handed: the :class:`Host` services the
manager builds from its own parts, and the registration's ``on_progress`` / ``on_settled``
callbacks (run on the callback thread).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .._disk import fsync_dir
from .._exceptions import InvalidStateError, NeedsCredentialsError
from .._models import Request
from .._names import NameReservations
from .._secrets import has_redacted_params
from .._vocab import FailureReason, RecordState, RegistrationState, Result
from .loop import Engine
from .record import FAILED_FOLDER, RecordData
from .retry import RetryPolicy
from .segments import DEFAULT_MIN_SEGMENT
from .transfer import LeaseLost, RegistrationStopped, run_record

if TYPE_CHECKING:
    from .._http.transport import Client
    from .store import Store

__all__ = ["Host", "Job"]

log = logging.getLogger("ipybgfetch")

# seconds between progress events: 8 per second, so that the final event (the result
# change, sent at once so that wait() never waits for the throttle) still keeps any 1 s
# window at <= 10 events (the widget's state messages follow these events)
PROGRESS_INTERVAL = 0.125
CHECKPOINT_INTERVAL = 1.0  # seconds between resume checkpoints in the database
# ...or sooner, at a progress event, once this many records changed: many small files
# would otherwise all be written after the last one (~4 ms per 500 records there)
CHECKPOINT_ROWS = 128
MAX_WORKERS = 64  # concurrent records per registration; per-host limits apply inside


@dataclass(frozen=True)
class Host:
    """What a job uses of the layer above it: the manager builds one from its own parts
    and hands it to every job."""

    engine: Engine
    names: NameReservations  # final names reserved across every destination
    home: Path
    per_host: int  # connections per origin
    client_options: dict[str, Any]  # the manager's httpx client options
    manager_class: type  # what a cluster worker builds its manager with
    post: Callable[..., None]  # post(fn, *args): run on the callback thread, in order
    report: Callable[[BaseException, Any], None]  # an error nobody else will see
    client: Callable[[], Awaitable[Client]]  # the shared HTTP client
    host_slot: Callable[[str], asyncio.Semaphore]  # the URL's origin's connection limit
    store: Callable[[], Store | None]  # the open database (None once closed)
    store_records: Callable[[Job, list[RecordData]], None]
    store_registration: Callable[[Job], None]
    release: Callable[[str], None]  # give up the lease of a key
    reopen: Callable[[Job], None]  # take a settled job's lease again (retry)
    closed: Callable[[], bool]  # the manager was closed


def _nothing(*args: Any) -> None:
    pass


class Job:
    """The engine side of one registration (see the module docstring)."""

    # segmented downloads (fetch's segments= and min_segment_size=; a registration
    # restored from an earlier process uses the defaults)
    segments: int | None = None
    min_segment_size: int = DEFAULT_MIN_SEGMENT

    def __init__(
        self,
        host: Host,
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
        self.host = host
        # what the registration (the view) hands it: see bind()
        self.on_progress: Callable[[], None] = _nothing
        self.on_settled: Callable[[str], None] = _nothing
        self.listening: Callable[[], bool] = bool
        self.key = key
        self.id = id
        self.title = title
        self.icons = [dict(i) for i in icons]
        self.download_total = download_total
        self.dest = dest
        self.dest_made = False
        self.unsynced_dirs: set[Path] = set()
        self.requests_carry_credentials: bool | None = None  # computed once, when stored
        # names of the headers not stored (restored from the database: the new process
        # must be given them again), for the needs-credentials message
        self.withheld_headers: list[str] = []
        self.headers = headers
        self.auth = auth
        self.policy = policy
        self.timeout = policy.timeout()
        self.created = created
        self.finished: float | None = None
        self.records = [RecordData(id, i, r) for i, r in enumerate(requests)]
        self.upload_total = sum(r.body_size for r in requests)
        self.downloaded = 0
        # bytes received, restarts included (what download_total limits; downloaded
        # counts what is on disk and goes down when a record starts again)
        self.received = 0
        self.uploaded = 0
        self.result: Result = ""
        self.failure_reason: FailureReason = ""
        self.state: RegistrationState = "active"
        self.stopping = False
        self.reused_at: float | None = None  # when a re-run last returned it (no download)
        self.read_only = False
        self.done_count = 0
        self.failed_count = 0
        self.tasks: set[asyncio.Task[None]] = set()  # the workers
        self.queue: collections.deque[RecordData] = collections.deque()
        self.settled_state = threading.Event()  # result/failure_reason are final
        self.done = threading.Event()  # ...and the success/fail/abort handlers have run
        self.done_future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.progress_handle: asyncio.TimerHandle | None = None
        self.last_progress = float("-inf")  # time.monotonic() of the last progress event emitted
        self.last_dispatch = float("-inf")  # ...and of the last one run on the callback thread
        self.progress_queued = False
        self.last_checkpoint = 0.0
        self.dirty: set[int] = set()
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=50)
        self.remote: Any = None  # an object-storage dest (cloud.RemoteDest), else None
        # False once the user deleted the registration: its records are gone
        self.records_available = True
        # an object at a record's name may be overwritten (force=True, or this job replaces
        # a settled registration with the same id and dest); otherwise it is refused
        self.replace_objects = False
        self.runner: Any = None  # a cluster run (_cluster.ClusterRun), else local workers

    def bind(
        self,
        on_progress: Callable[[], None],
        on_settled: Callable[[str], None],
        listening: Callable[[], bool],
    ) -> None:
        """The registration's callbacks, run on the callback thread: the progress event,
        the success/fail/abort event; and whether anyone listens to progress."""
        self.on_progress = on_progress
        self.on_settled = on_settled
        self.listening = listening

    @property
    def settled(self) -> bool:
        return self.settled_state.is_set()

    @property
    def public_dest(self) -> Path | str:
        """The destination folder, or the object-storage URL (``"s3://bucket/prefix/"``)."""
        return self.remote.url if self.remote is not None else self.dest

    def check_lease(self) -> None:
        """Before each request and each irreversible step (rename, failing a record):
        raises LeaseLost when another process took this registration over."""
        store = self.host.store()
        if self.read_only or (store is not None and not store.holds(self.key)):
            raise LeaseLost()

    def update_ui(self, title: str | None, icons: list[dict[str, str]] | None) -> None:
        """From a success/fail handler (the callback thread): plain attribute swaps (atomic);
        the database write happens on the engine."""
        if title is not None:
            self.title = title
        if icons is not None:
            self.icons = icons
        self.host.engine.call_soon(self.persist_registration)

    def progress_dispatched(self) -> None:
        """The callback thread ran a progress event (the throttle spaces the next one)."""
        self.last_dispatch = time.monotonic()  # before the flag: the engine reads both
        self.progress_queued = False

    def start(self) -> None:
        """Queue the unsettled records and start enough workers to drain the queue."""
        if self.state in ("paused", "needs-credentials") or self.settled:
            return
        self.state = "active"
        engine = self.host.engine
        if self.runner is not None:  # a cluster runs the records; one task follows it
            self.runner.start(self)
            self.touch()
            return
        self.queue = collections.deque(d for d in self.records if not d.settled)
        if self.queue:
            log.info(
                "%s: starting %d of %d records into %s",
                self.id,
                len(self.queue),
                len(self.records),
                self.dest,
            )
        wanted = min(len(self.queue), MAX_WORKERS) - len(self.tasks)
        for _ in range(max(0, wanted)):
            self.tasks.add(engine.spawn(self._worker(), name=f"bgfetch:{self.id}"))
        self.touch()
        self._maybe_settle()

    async def _worker(self) -> None:
        task = asyncio.current_task()
        try:
            while self.queue:
                await self._run(self.queue.popleft())
        finally:
            self.tasks.discard(task)

    async def _run(self, data: RecordData) -> None:
        try:
            await run_record(self, data)
        except asyncio.CancelledError:
            if not data.settled and data.state == "active":
                data.state = "paused"
                self.mark_dirty(data)
            raise
        except RegistrationStopped as stop:
            data.error = str(stop)
            self.fail_now(data, stop.reason, str(stop))
        except LeaseLost:
            self.lose_lease()  # the new owner decides this record's fate
        except Exception as exc:  # never silent: the record fails and says why
            data.error = f"internal error: {exc!r}"
            self.host.report(exc, self._run)
            self.settle_record(data, "failure", "fetch-error")

    def settle_record(self, data: RecordData, state: RecordState, failure: FailureReason) -> None:
        if data.settled:
            return
        data.state = state
        data.failure = failure
        data.finished = time.time()
        self.done_count += 1
        if state != "success":
            self.failed_count += 1
            self._remove_part(data)  # a settled record is never resumed
        data.resolve_ready()
        self._log_record(data)
        self.mark_dirty(data)
        self.touch()
        self._maybe_settle()

    def _log_record(self, data: RecordData) -> None:
        if data.state == "success":
            log.info(
                "%s: %s done (%d bytes, status %s) -> %s",
                self.id,
                data.request.url,
                data.downloaded,
                data.status,
                data.final_path,
            )
        else:
            log.info(
                "%s: %s failed (%s): %s",
                self.id,
                data.request.url,
                data.failure or data.state,
                data.error or "no detail",
            )

    def _maybe_settle(self) -> None:
        if self.settled or self.stopping:
            return
        if self.done_count < len(self.records):
            return
        failed = next((d for d in self.records if d.state != "success"), None)
        if failed is None:
            self.settle("success", "")
        else:
            self.settle("failure", failed.failure or "fetch-error")

    def fail_now(self, culprit: RecordData, reason: FailureReason, message: str) -> None:
        """download_total exceeded or disk full: stop every record, fail the registration."""
        if self.settled or self.stopping:
            return
        self.stopping = True
        self.queue.clear()  # no worker picks up another record meanwhile
        self.host.engine.spawn(self.stop_all(culprit, reason, message))

    async def stop_all(
        self, culprit: RecordData | None, reason: FailureReason, message: str
    ) -> None:
        current = asyncio.current_task()
        self.queue.clear()
        tasks = [t for t in self.tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for d in self.records:
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
            self.done_count += 1
            self.failed_count += 1
            self._remove_part(d)
            d.resolve_ready()
            self._log_record(d)
            self.mark_dirty(d)
        self.stopping = False
        self.settle("failure", reason)

    async def hand_over(self) -> None:
        """Another process asked to take this registration over (to resume it with its
        credentials): stop the transfers, checkpoint, and mirror it from now on. The
        store then hands the lease to the asker."""
        if self.settled or self.read_only:
            return
        self.queue.clear()
        tasks = list(self.tasks)
        self.tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.state == "active":  # the new owner resumes it, with its credentials
            self.state = "paused"
        for d in self.records:
            if not d.settled:
                d.state = "paused"
                self.mark_dirty(d)
        self.checkpoint(force=True)
        self.persist_registration()
        self.read_only = True

    def lose_lease(self) -> None:
        """Another process took this registration over (this one was stopped or stalled
        longer than the lease): stop transferring at once and mirror it from now on."""
        if self.settled or self.read_only:
            return
        self.read_only = True
        self.queue.clear()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()

    def _remove_part(self, d: RecordData) -> None:
        if d.part_path is not None:
            with contextlib.suppress(OSError):
                d.part_path.unlink()

    async def abort(self) -> bool:
        if self.settled or self.stopping:
            return False
        self.stopping = True
        await self.stop_all(None, "aborted", "aborted")
        return True

    async def pause(self) -> bool:
        if self.settled or self.stopping or self.state != "active":
            return False
        self.state = "paused"
        self.queue.clear()
        tasks = list(self.tasks)
        self.tasks.clear()  # a resume() during the wait below starts fresh workers
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.state != "paused":
            return True  # resumed (or stopped) while the workers were winding down
        for d in self.records:
            if not d.settled:
                d.state = "paused"
                self.mark_dirty(d)
        self.persist_registration()
        self.touch()
        return True

    async def resume(
        self, headers: dict[str, str] | None, auth: Any, storage: bool = False
    ) -> bool:
        if self.settled or self.stopping:
            return False
        if headers:
            self.headers.update(headers)
        if auth is not None:
            self.auth = auth
        if self.state == "needs-credentials":
            redacted = [
                d.request.url
                for d in self.records
                if not d.settled and has_redacted_params(d.request.url)
            ]
            if redacted:
                raise NeedsCredentialsError(
                    f"registration {self.id!r} was restored from an earlier kernel and "
                    f"its URLs carried secret query parameters (e.g. {redacted[0]}), which "
                    f"are never stored; abort it (mgr.get({self.id!r}).abort()) and fetch "
                    "the full URLs again"
                )
        if self.state == "needs-credentials" and not (headers or auth is not None or storage):
            names = self.withheld_headers
            if names:
                given = ", ".join(f"{n!r}: ..." for n in names)
                what = f"its requests carried the header{'s' if len(names) > 1 else ''} "
                what += ", ".join(names)
                how = f"reg.resume(headers={{{given}}})"
            else:
                what = "its requests carried credentials"
                how = "reg.resume(headers={'Authorization': ...}) or reg.resume(auth=...)"
            raise NeedsCredentialsError(
                f"registration {self.id!r} was restored from an earlier kernel and {what} "
                f"(credentials are never stored); call {how}"
            )
        if self.state not in ("paused", "needs-credentials"):
            return False
        self.state = "active"
        self.persist_registration()
        self.start()
        return True

    async def retry(self) -> int:
        if not self.settled:
            return 0
        failed = [d for d in self.records if d.state != "success"]
        if not failed:
            return 0
        self.host.reopen(self)  # raises if another registration took the id meanwhile
        self.read_only = False  # this process holds it again
        for d in failed:
            self.downloaded -= d.downloaded
            self.uploaded -= d.uploaded
            if isinstance(d.final_path, Path) and d.final_path.parent != self.dest:
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
            self.mark_dirty(d)
        self.done_count -= len(failed)
        self.failed_count = 0
        self.reused_at = None  # downloading again: no longer "already downloaded"
        self.result = ""
        self.failure_reason = ""
        self.finished = None
        self.state = "active"
        self.settled_state.clear()
        self.done.clear()
        self.done_future = concurrent.futures.Future()
        self.last_progress = float("-inf")
        self.samples.clear()
        log.info("%s: retrying %d failed records", self.id, len(failed))
        self.persist_registration()
        self.checkpoint(force=True)
        self.start()
        return len(failed)

    def settle(self, result: Result, reason: FailureReason) -> None:
        self.result = result
        self.failure_reason = reason
        self.state = (
            "success" if result == "success" else ("aborted" if reason == "aborted" else "failure")
        )
        self.finished = time.time()
        log.info(
            "%s: settled %s%s: %d of %d records succeeded, %d bytes",
            self.id,
            result,
            f" ({reason})" if reason else "",
            self.done_count - self.failed_count,
            len(self.records),
            self.downloaded,
        )
        if self.progress_handle is not None:
            self.progress_handle.cancel()
            self.progress_handle = None
        try:
            self.checkpoint(force=True)
            self.persist_registration()
            self.host.release(self.key)
        except Exception as exc:  # e.g. the disk holding the database is full
            self.host.report(exc, self.settle)
        self.settled_state.set()
        event_type = {
            "success": "backgroundfetchsuccess",
            "aborted": "backgroundfetchabort",
        }.get(self.state, "backgroundfetchfail")
        # The final progress event (for the result change), then the manager's event,
        # then wake the waiters: all in order on the callback thread.
        self.host.post(self.on_progress)
        self.host.post(self.on_settled, event_type)
        self.host.post(self.mark_done)

    def wake_waiters_on_close(self) -> None:
        """The manager closed before this registration settled: nobody waits forever."""
        error = InvalidStateError(
            f"registration {self.id!r} did not settle: its manager was closed (it stays "
            "resumable by a new manager on the same home)"
        )
        for d in self.records:
            if not d.ready.done():
                d.ready.set_exception(error)
        if not self.done_future.done():
            self.done_future.set_exception(error)
        self.done.set()  # wait() wakes, sees the closed manager and raises

    def mark_done(self) -> None:
        self.done.set()
        if not self.done_future.done():
            self.done_future.set_result(None)

    # -- progress --------------------------------------------------------------------------
    def add_downloaded(self, data: RecordData, n: int) -> None:
        data.downloaded += n
        self.downloaded += n
        self.dirty.add(data.index)  # checkpointed: other processes mirror live progress
        if self.progress_handle is None:
            self.touch()

    def add_uploaded(self, data: RecordData, n: int) -> None:
        data.uploaded += n
        self.uploaded += n
        if self.progress_handle is None:
            self.touch()

    def record_changed(self, data: RecordData, checkpoint: bool = False) -> None:
        self.mark_dirty(data)
        if checkpoint:
            self.checkpoint(force=True)
        self.touch()

    def mark_dirty(self, data: RecordData) -> None:
        self.dirty.add(data.index)

    def touch(self) -> None:
        """Something changed: emit a progress event now or within PROGRESS_INTERVAL."""
        if self.progress_handle is not None or self.settled:
            return
        # spaced from the last event emitted *and* the last one listeners actually got
        last = max(self.last_progress, self.last_dispatch)
        wait = last + PROGRESS_INTERVAL - time.monotonic()
        if wait <= 0:
            self._emit_progress()
        else:
            self.progress_handle = asyncio.get_running_loop().call_later(wait, self._emit_progress)

    def _emit_progress(self) -> None:
        self.progress_handle = None
        if self.settled:
            return
        now = time.monotonic()
        early = self.last_dispatch + PROGRESS_INTERVAL - now
        if early > 0:  # the previous event reached listeners late: keep the spacing
            loop = asyncio.get_running_loop()
            self.progress_handle = loop.call_later(early, self._emit_progress)
            return
        self.last_progress = now
        self.samples.append((now, self.downloaded))
        self.checkpoint()
        if self.progress_queued:
            return  # the queued event reads the live state when it runs
        if self.listening():
            self.progress_queued = True
            self.host.post(self.on_progress)

    # -- persistence -----------------------------------------------------------------------
    def checkpoint(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.dirty:
            return
        if (
            not force
            and now - self.last_checkpoint < CHECKPOINT_INTERVAL
            and len(self.dirty) < CHECKPOINT_ROWS
        ):
            return
        self.last_checkpoint = now
        dirty = [self.records[i] for i in sorted(self.dirty)]
        self.dirty.clear()
        for folder in self.unsynced_dirs:  # a row never says "done" before its rename
            fsync_dir(folder)  # is durable; one fsync per folder covers every rename
        self.unsynced_dirs.clear()
        self.host.store_records(self, dirty)

    def renamed_in(self, folder: Path) -> None:
        self.unsynced_dirs.add(folder)

    def persist_registration(self) -> None:
        self.host.store_registration(self)

    # -- used by transfers -----------------------------------------------------------------
    def host_slot(self, url: str) -> asyncio.Semaphore:
        """``async with reg._host_slot(url):`` one of the origin's connections."""
        return self.host.host_slot(url)

    def reserve_name(self, name: str) -> tuple[Path, int]:
        """A final path for ``name`` in the destination, and its new ``.part`` file's
        descriptor (open for writing; the caller closes it)."""
        if not self.dest_made:  # once: mkdir(exist_ok=True) costs an exception per call
            self.make_dest()
        return self.host.names.reserve_open(self.dest, name)

    def release_name(self, path: Path) -> None:
        """A reserved final path this registration no longer uses (a failed record's
        body was moved out of dest)."""
        self.host.names.release(path)

    def make_dest(self) -> None:
        """(Re)create the destination folder (again if the user deleted it meanwhile)."""
        self.dest.mkdir(parents=True, exist_ok=True)
        self.dest_made = True

    async def shutdown(self) -> None:
        """The manager closes: stop the transfers, checkpoint and give the lease back; an
        unsettled job stays resumable by the next manager on the home, and its waiters
        wake. A failing step (a full disk) is raised after the rest is done."""
        self.queue.clear()
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if not self.read_only:
                self.checkpoint(force=True)
                self.host.release(self.key)
        finally:
            if not self.settled:
                self.state = "paused"  # resumable by the next manager on this home
                self.wake_waiters_on_close()

    def mark_settled(self, result: Result, reason: FailureReason) -> None:
        """Settled in the database (by an earlier process, or the one mirrored)."""
        self.result = result
        self.failure_reason = reason
        self.settled_state.set()
        self.done.set()
        if not self.done_future.done():
            self.done_future.set_result(None)
