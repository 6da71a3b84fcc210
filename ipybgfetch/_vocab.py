"""The shared vocabulary, defined once: record and registration states, results, failure
reasons, the settled states, and the snapshot the panel reads.

Every layer uses these names (a bottom module: it imports nothing of the package). The
``Literal`` types make mypy check every state and reason the code writes; the panel's
JavaScript reads a generated copy, ``js/src/vocab.js`` (``python tools/vocab_js.py``
writes it, and a test keeps the committed copy equal to a fresh generation).
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict, get_args

__all__ = [
    "FAILURE_REASONS",
    "RECORD_STATES",
    "REGISTRATION_STATES",
    "RESULTS",
    "SETTLED_STATES",
    "ClusterSnapshot",
    "ClusterWorkerSnapshot",
    "FailureReason",
    "RecordSnapshot",
    "RecordState",
    "RegistrationState",
    "Result",
    "Snapshot",
]

#: A record: queued, transferring, stopped (pause, shutdown), then settled.
RecordState = Literal["pending", "active", "paused", "success", "failure", "aborted"]
#: A registration; ``needs-credentials``: restored from an earlier kernel, waiting for
#: ``reg.resume(headers=..., auth=...)`` (credentials are never stored).
RegistrationState = Literal[
    "active", "paused", "needs-credentials", "success", "failure", "aborted"
]
#: ``registration.result`` (the spec's BackgroundFetchResult; "" while active).
Result = Literal["", "success", "failure"]
#: ``registration.failure_reason`` and a record's failure (the spec's
#: BackgroundFetchFailureReason; "" when none).
FailureReason = Literal[
    "", "aborted", "bad-status", "fetch-error", "quota-exceeded", "download-total-exceeded"
]

RECORD_STATES: Final[tuple[RecordState, ...]] = get_args(RecordState)
REGISTRATION_STATES: Final[tuple[RegistrationState, ...]] = get_args(RegistrationState)
RESULTS: Final[tuple[Result, ...]] = get_args(Result)
FAILURE_REASONS: Final[tuple[FailureReason, ...]] = get_args(FailureReason)
#: The states a record or registration never leaves.
SETTLED_STATES: Final[frozenset[str]] = frozenset({"success", "failure", "aborted"})


class RecordSnapshot(TypedDict):
    """One record as the panel shows it."""

    index: int
    url: str
    status: int  # 0: no response yet
    state: RecordState
    downloaded: int
    total: int | None  # the body's size, once known
    error: str
    attempts: int
    connections: int  # open now: >1 while a big file downloads in segments (issue 17)


class ClusterWorkerSnapshot(TypedDict):
    """One Dask worker of a registration running on a cluster (``fetch(..., cluster=)``)."""

    worker: str  # the worker's address
    downloaded: int  # bytes of the shards it ran or runs
    files: int  # records of those shards settled
    rate: float  # bytes per second, recent
    shards: int  # shards running there now


class ClusterSnapshot(TypedDict):
    """A registration's cluster run: its shards and the per-worker breakdown."""

    scheduler: str  # the scheduler's address
    shards_total: int
    shards_done: int
    workers: list[ClusterWorkerSnapshot]


class Snapshot(TypedDict):
    """A registration as the panel shows it (``registration._snapshot()``), at most
    ~10 times a second; the browser side only renders it."""

    key: str
    id: str
    title: str
    icons: list[dict[str, str]]
    state: RegistrationState
    result: Result
    failure_reason: FailureReason
    downloaded: int
    download_total: int  # 0: no limit
    expected_bytes: int | None  # the sum of the records' sizes, once all are known
    uploaded: int
    upload_total: int
    speed: float  # bytes per second, recent
    eta: float | None  # seconds
    records_total: int
    records_done: int
    records_failed: int
    records_active: int
    records: list[RecordSnapshot]  # active and failed first, at most SNAPSHOT_RECORDS
    records_truncated: bool
    started: float  # seconds since the epoch
    finished: float | None
    dest: str
    # when a re-run of fetch() returned it as it was (no download): the time it finished
    already_downloaded: float | None
    # a registration running on a Dask cluster (fetch(..., cluster=client)), else None
    cluster: ClusterSnapshot | None
