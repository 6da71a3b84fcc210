"""``BackgroundFetchRegistration``: one fetch() call, its records and its life cycle.

Public attributes are read from any thread; every change happens on the engine thread.
Methods that change state (abort, pause, resume) hop to the engine and wait there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._display import mimebundle
from ._engine.job import Job
from ._engine.loop import Engine
from ._events import BackgroundFetchEvent, CallbackThread, ListenerSet
from ._exceptions import FetchError, InvalidStateError
from ._models import Request
from ._output import output_target, output_to
from ._records import (
    BackgroundFetchRecord,
    RecordList,
    await_shared,
    query_request,
    request_matches,
)
from ._vocab import FailureReason, RegistrationState, Result, Snapshot

if TYPE_CHECKING:
    from ._manager import BackgroundFetchManager

__all__ = ["BackgroundFetchRegistration", "RegistrationHost"]

log = logging.getLogger("ipybgfetch")

SNAPSHOT_RECORDS = 200  # records included in a panel snapshot


@dataclass(frozen=True)
class RegistrationHost:
    """What a registration asks of the manager that made it, handed to it by the manager
    (so the registration calls these, never the manager's private members)."""

    engine: Engine
    callbacks: CallbackThread
    is_closed: Callable[[], bool]
    notify_change: Callable[[BackgroundFetchRegistration], None]
    has_change_listeners: Callable[[], bool]
    dispatch_settled: Callable[[BackgroundFetchRegistration, str], None]
    dispatch_click: Callable[[BackgroundFetchRegistration], None]
    control_elsewhere: Callable[[BackgroundFetchRegistration, str], bool | None]
    take_over: Callable[[BackgroundFetchRegistration], None]


class BackgroundFetchRegistration:
    """A set of requests downloading in the background. Created by ``manager.fetch()``.

    A view over the engine's :class:`~ipybgfetch._engine.job.Job`, which owns the state.
    """

    def __init__(
        self,
        manager: BackgroundFetchManager,
        job: Job,
        host: RegistrationHost,
        *,
        restored: bool = False,
    ) -> None:
        """Made by the manager, over the job it made."""
        self._manager = manager  # for the panel's change subscription
        self._host = host
        self._job = job
        job.bind(self._dispatch_progress, self._on_settled, self._listening)
        self._listeners = ListenerSet(("progress",))
        # the cell that started it gets its output; restored from an earlier kernel: none
        # (its output goes to the latest cell)
        self._output_target = None if restored else output_target()

    # -- the spec's attributes -----------------------------------------------------------
    @property
    def id(self) -> str:
        return self._job.id

    @property
    def upload_total(self) -> int:
        return self._job.upload_total

    @property
    def uploaded(self) -> int:
        return self._job.uploaded

    @property
    def download_total(self) -> int:
        return self._job.download_total

    @property
    def downloaded(self) -> int:
        return self._job.downloaded

    @property
    def result(self) -> Result:
        """``""`` while active, then ``"success"`` or ``"failure"``."""
        return self._job.result

    @property
    def failure_reason(self) -> FailureReason:
        return self._job.failure_reason

    @property
    def records_available(self) -> bool:
        return self._job.records_available

    # -- beyond the spec ------------------------------------------------------------------
    @property
    def title(self) -> str:
        return self._job.title

    @property
    def icons(self) -> list[dict[str, str]]:
        return [dict(i) for i in self._job.icons]

    @property
    def state(self) -> RegistrationState:
        """active | paused | needs-credentials | success | failure | aborted"""
        return self._job.state

    @property
    def dest(self) -> Path | str:
        """The destination folder, or the object-storage URL (``"s3://bucket/prefix/"``)."""
        return self._job.public_dest

    @property
    def created(self) -> float:
        """When fetch() made it (seconds since the epoch)."""
        return self._job.created

    @property
    def finished(self) -> float | None:
        """When it settled (seconds since the epoch), else None."""
        return self._job.finished

    @property
    def reused(self) -> bool:
        """True when a re-run of fetch() returned this settled registration as it was
        ("already downloaded": nothing was fetched again)."""
        return self._job.reused_at is not None

    @property
    def settled(self) -> bool:
        return self._job.settled

    @property
    def expected_bytes(self) -> int | None:
        """The size of the download: the sum of the sizes the server announced, once
        every record's is known, else None. (``download_total`` is only a cap.)"""
        return self._expected_bytes()

    @property
    def records_total(self) -> int:
        return len(self._job.records)

    @property
    def records_done(self) -> int:
        """Records that settled (succeeded or not)."""
        return self._job.done_count

    @property
    def retrying(self) -> list[tuple[str, str, float]]:
        """Records waiting to try again: (url, why the last attempt failed, seconds until
        the next one), soonest first."""
        now = time.time()
        waiting = [
            (d.request.url, d.error, max(0.0, d.retry_at - now))
            for d in list(self._job.records)
            if d.retry_at is not None
        ]
        return sorted(waiting, key=lambda w: w[2])

    @property
    def records_failed(self) -> int:
        return self._job.failed_count

    @property
    def read_only(self) -> bool:
        """True when another process owns this registration (its state is mirrored)."""
        return self._job.read_only

    # -- control --------------------------------------------------------------------------
    def abort(self) -> bool:
        """Abort the unfinished records. True if this call aborted an active registration."""
        if self._job.settled:
            return False
        self._check_writable("abort")
        if self._job.read_only:  # another process downloads it: ask it (through the store)
            done = self._host.control_elsewhere(self, "abort")
            if done is not None:
                return done
        return self._host.engine.run(self._job.abort())

    def pause(self) -> bool:
        """Stop transfers, keeping the bytes on disk. True if this call paused it."""
        if self._job.settled:
            return False
        self._check_writable("pause")
        if self._job.read_only:  # another process downloads it: ask it (through the store)
            done = self._host.control_elsewhere(self, "pause")
            if done is not None:
                return done
        return self._host.engine.run(self._job.pause())

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
        if self._job.settled:
            return False
        self._check_writable("resume")
        if self._job.read_only:
            if headers or auth is not None or storage_options is not None:
                # credentials never go through the store: this process takes the
                # registration over and continues it with them
                self._host.take_over(self)
            else:
                done = self._host.control_elsewhere(self, "resume")
                if done is not None:
                    return done
        if storage_options is not None:
            if self._job.remote is None:
                raise FetchError("storage_options applies to an object-storage dest only")
            self._job.remote.set_options(storage_options)
        resume = self._job.resume(headers, auth, storage_options is not None)
        return self._host.engine.run(resume)

    def retry(self) -> int:
        """Fetch the failed (or aborted) records of a settled registration again; the
        records that succeeded keep their files. The registration is active again and
        settles anew. Returns how many records are fetched again (0: none had failed)."""
        if not self._job.settled:
            raise InvalidStateError(
                f"registration {self._job.id!r} is still {self._job.state}; reg.retry() re-fetches "
                "the failed records once it has settled: reg.wait() for it first"
            )
        self._check_writable("retry")
        return self._host.engine.run(self._job.retry())

    def click(self) -> None:
        """Fire ``backgroundfetchclick`` for this registration, as clicking its title in
        the panel does (in a browser only its download UI can; here the panel or code)."""
        self._host.dispatch_click(self)

    def _check_writable(self, what: str) -> None:
        if self._host.is_closed():
            raise InvalidStateError(
                f"cannot {what}() {self._job.id!r}: its manager was closed. Unfinished "
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

            progress = progress_enabled() and not self._host.callbacks.is_current()
        if progress and not self.settled:
            from ._console import wait_with_progress

            wait_with_progress([self], timeout)
            return self
        event = self._job.done
        if self._host.callbacks.is_current():
            event = self._job.settled_state  # a handler waiting for its own event's end
        woke = self._host.is_closed() or event.wait(timeout)
        if self._host.is_closed() and not self.settled:
            raise InvalidStateError(
                f"registration {self._job.id!r} cannot settle here: its manager was closed "
                "(it stays resumable by a new manager on the same home)"
            )
        if not woke:
            raise TimeoutError(
                f"registration {self._job.id!r} is still {self._job.state} after {timeout} s "
                f"({self._job.downloaded} bytes downloaded); wait longer or abort() it"
            )
        return self

    def __await__(self) -> Generator[Any, None, BackgroundFetchRegistration]:
        yield from await_shared(self._job.done_future)
        return self

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
        if not self._job.records_available:
            raise InvalidStateError(
                f"the records of {self._job.id!r} are no longer available (it was deleted)"
            )
        if url_or_request is None:
            return RecordList(
                BackgroundFetchRecord(d, self._job.headers) for d in self._job.records
            )
        query = query_request(url_or_request)
        return RecordList(
            BackgroundFetchRecord(d, self._job.headers)
            for d in self._job.records
            if request_matches(
                query,
                d,
                ignore_search=ignore_search,
                ignore_method=ignore_method,
                ignore_vary=ignore_vary,
                sent_headers=self._job.headers,
            )
        )

    # -- display ----------------------------------------------------------------------------
    def _expected_bytes(self) -> int | None:
        """The sum of the records' sizes once every size is known, else None."""
        expected = 0
        for d in self._job.records:
            if d.total is None:
                return None
            expected += d.total
        if expected == 0 and self._job.records and not self.settled:
            return None
        return expected

    def snapshot(self) -> Snapshot:
        """The registration as its panel shows it: a plain dict taken now (the keys are
        ``ipybgfetch._vocab.Snapshot``), for displays of its progress."""
        return self._snapshot()

    def _snapshot(self) -> Snapshot:
        records = self._job.records
        expected = self._expected_bytes()
        speed = self._speed()
        remaining_total = self._job.download_total or expected
        eta = None
        if speed > 0 and remaining_total and not self.settled:
            eta = max(0.0, (remaining_total - self._job.downloaded) / speed)
        # active and failed records first, then the rest, each in request order
        interesting = [d for d in records if d.state in ("active", "failure")]
        shown = interesting[:SNAPSHOT_RECORDS]
        for d in records:
            if len(shown) >= SNAPSHOT_RECORDS:
                break
            if d.state not in ("active", "failure"):
                shown.append(d)
        return {
            "key": self._job.key,
            "id": self._job.id,
            "title": self._job.title,
            "icons": self.icons,
            "state": self._job.state,
            "result": self._job.result,
            "failure_reason": self._job.failure_reason,
            "downloaded": self._job.downloaded,
            "download_total": self._job.download_total,
            "expected_bytes": expected,
            "uploaded": self._job.uploaded,
            "upload_total": self._job.upload_total,
            "speed": speed,
            "eta": eta,
            "records_total": len(records),
            "records_done": self._job.done_count,
            "records_failed": self._job.failed_count,
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
            "started": self._job.created,
            "finished": self._job.finished,
            "dest": str(self.dest),
            # "already downloaded <when>": the time it finished, when a re-run of fetch()
            # returned it as it was; else None
            "already_downloaded": self._job.finished if self._job.reused_at is not None else None,
            "cluster": self._job.runner.snapshot() if self._job.runner is not None else None,
        }

    def _speed(self) -> float:
        samples = list(self._job.samples)
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
        job = self._job
        expected = self._expected_bytes()
        done = format_size(job.downloaded)
        if expected:
            done = f"{done} / {format_size(expected)} ({100 * job.downloaded / expected:.0f}%)"
        cap = f", cap {format_size(job.download_total)}" if job.download_total else ""
        reason = f": {job.failure_reason}" if job.failure_reason else ""
        again = ""
        if job.reused_at is not None and job.finished is not None and job.settled:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.finished))
            again = f", already downloaded {when}"
        return (
            f"<BackgroundFetchRegistration {job.id!r} {job.state}{reason}, {done}{cap}, "
            f"{job.done_count}/{len(job.records)} records{again}>"
        )

    # -- called back by the job, on the callback thread ---------------------------------
    def _dispatch_progress(self) -> None:
        """On the callback thread: run progress listeners, then the manager's."""
        self._job.progress_dispatched()
        event = BackgroundFetchEvent("progress", self)
        with output_to(self._output_target):
            for cb in self._listeners.get("progress"):
                try:
                    cb(event)
                except BaseException as exc:  # a user's listener: even SystemExit
                    self._host.callbacks.report(exc, cb)
        self._host.notify_change(self)

    def _listening(self) -> bool:
        return bool(self._listeners.get("progress")) or self._host.has_change_listeners()

    def _on_settled(self, event_type: str) -> None:
        """On the callback thread, after the final progress event: the manager's
        success/fail/abort event."""
        self._host.dispatch_settled(self, event_type)

    def _update_ui(self, title: str | None, icons: Sequence[dict[str, str]] | None) -> None:
        if title is not None and not isinstance(title, str):
            raise TypeError(f"title must be a str, got {type(title).__name__}")
        new_icons = check_icons(icons) if icons is not None else None
        self._job.update_ui(title, new_icons)
        self._host.notify_change(self)


def check_icons(icons: Any) -> list[dict[str, str]]:
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
