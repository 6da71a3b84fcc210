"""The engine's state of one record (:class:`RecordData`), and its response-or-error
(:class:`Outcome`).

The engine owns a :class:`RecordData` per request and is the only writer of it; the
public :class:`~ipybgfetch.BackgroundFetchRecord` objects are read-only views over it.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .._exceptions import AbortError, FetchError
from .._models import Request, Response
from .._vocab import SETTLED_STATES, FailureReason, RecordState
from .ranges import RangeSet

__all__ = ["FAILED_FOLDER", "Outcome", "RecordData"]

FAILED_FOLDER = ".ipybgfetch-failed"  # in dest: bodies of records that did not succeed

_OUTCOME_LOCK = threading.Lock()


class Outcome:
    """A record's response-or-error, with a ``concurrent.futures.Future`` made only when
    someone asks for one (``record.response_ready``): most records never need it, and a
    Future (a Condition and its lock) per record was a third of ``fetch()``'s time for
    10,000 URLs. Set once, by the engine; read from any thread."""

    __slots__ = ("_future", "_outcome")

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[Response] | None = None
        self._outcome: tuple[bool, Any] | None = None  # (ok, response or exception)

    def done(self) -> bool:
        return self._outcome is not None

    def set_result(self, response: Response) -> None:
        self._settle((True, response))

    def set_exception(self, error: BaseException) -> None:
        self._settle((False, error))

    def _settle(self, outcome: tuple[bool, Any]) -> None:
        with _OUTCOME_LOCK:
            if self._outcome is not None:
                return
            self._outcome = outcome
            future = self._future
        if future is not None:
            _apply(future, outcome)

    def future(self) -> concurrent.futures.Future[Response]:
        with _OUTCOME_LOCK:
            if self._future is None:
                self._future = concurrent.futures.Future()
                if self._outcome is not None:
                    _apply(self._future, self._outcome)
            return self._future


def _apply(future: concurrent.futures.Future[Response], outcome: tuple[bool, Any]) -> None:
    if future.done():  # cancelled by a caller: the engine's outcome stays in the Outcome
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class RecordData:
    """Engine-owned state of one record. Only the engine thread writes it."""

    def __init__(self, registration_id: str, index: int, request: Request) -> None:
        self.registration_id = registration_id
        self.index = index
        self.request = request
        self.state: RecordState = "pending"
        self.failure: FailureReason = ""  # a failure reason of the spec, or ""
        self.status = 0
        self.response_headers = httpx.Headers()
        self.response_url = ""
        self.response: Response | None = None
        self.ready = Outcome()  # the response, or why there is none
        self.downloaded = 0
        self.total: int | None = None
        self.uploaded = 0
        self.attempts = 0
        self.error = ""
        self.sha256 = ""
        self.started: float | None = None
        self.finished: float | None = None
        self.final_path: Path | None = None
        self.part_path: Path | None = None
        self.etag = ""
        self.last_modified = ""
        # a segmented download (issue 17): the byte ranges written so far, else None
        self.segment_map: RangeSet | None = None
        self.connections = 0  # connections open for this record now
        # while it waits to try again: when (time.time()) the next attempt starts
        self.retry_at: float | None = None
        self.split_refused = False  # the server ignored a segment's Range: one stream
        self.restarts = 0  # times its bytes were discarded to start again from byte 0
        self.part_id: tuple[int, int] | None = None  # (st_dev, st_ino) of its .part file

    @property
    def settled(self) -> bool:
        return self.state in SETTLED_STATES

    def reset_for_retry(self) -> None:
        """A failed record about to be fetched again: as new, except its file name (the
        retry writes there, through a ``.part``, instead of beside it)."""
        self.state = "pending"
        self.failure = ""
        self.status = 0
        self.response_headers = httpx.Headers()
        self.response_url = ""
        self.response = None
        self.ready = Outcome()
        self.downloaded = 0
        self.total = None
        self.uploaded = 0
        self.attempts = 0
        self.error = ""
        self.sha256 = ""
        self.started = None
        self.finished = None
        self.etag = ""
        self.last_modified = ""
        self.restarts = 0
        self.part_id = None
        if isinstance(self.final_path, Path):  # (an object's .part stays in the staging folder)
            self.part_path = self.final_path.parent / (self.final_path.name + ".part")

    def resolve_ready(self) -> None:
        """Settle ``response_ready`` from the settled record, as a browser does (Chromium's
        ``BackgroundFetchRecord``): the response once the record succeeded or ended with an
        error status (its body is then on disk), AbortError when it was aborted before it
        finished, FetchError when it failed without a complete response."""
        if self.ready.done() or not self.settled:
            return
        if self.response is not None and (self.state == "success" or self.failure == "bad-status"):
            self.ready.set_result(self.response)
        elif self.state == "aborted":
            self.ready.set_exception(
                AbortError(f"{self.request.url} was aborted before it finished")
            )
        else:
            why = self.error or self.failure
            self.ready.set_exception(FetchError(f"{self.request.url}: {why}"))

    def row(self) -> dict[str, Any]:
        started, finished = self.started, self.finished
        if started is not None:
            elapsed: float | None = (finished or time.time()) - started
        else:
            elapsed = None
        return {
            "id": self.registration_id,
            "index": self.index,
            "url": self.request.url,
            "method": self.request.method,
            "state": self.state,
            "status": self.status or None,
            "ok": self.state == "success",
            "bytes": self.downloaded,
            "content_type": self.response_headers.get("content-type"),
            "path": str(self.final_path)
            if self.final_path and self.state == "success"
            else (str(self.final_path) if self.final_path and self.final_path.exists() else None),
            "sha256": self.sha256 or None,
            "started": _timestamp(started),
            "finished": _timestamp(finished),
            "elapsed_s": None if elapsed is None else round(elapsed, 6),
            "attempts": self.attempts,
            "error": self.error or None,
        }


def _timestamp(t: float | None) -> Any:
    if t is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)
