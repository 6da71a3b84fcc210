"""Bringing registrations back from the database: after a kernel restart, or to mirror
one that another process (sharing the home) is downloading.

Runs on the engine thread. A registration whose owner stopped beating is taken over:
GET records continue from their ``.part`` files; uploads cannot (their bodies are not
stored) and fail with a clear error; registrations whose requests carried credentials
wait in the ``needs-credentials`` state for ``reg.resume(headers=..., auth=...)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .._vocab import RegistrationState
from .record import RecordData
from .rows import json_headers, load_registration, request_from_row

if TYPE_CHECKING:
    from .job import Job
    from .store import Store

__all__ = ["restore_into"]


def restore_into(
    store: Store,
    jobs: Mapping[str, Job],
    new: Callable[..., Job],
    added: Callable[[Job], None],
    *,
    home: Path,
    auto_resume: bool,
) -> None:
    """Load the database's registrations: ``jobs`` are those this process knows (by key);
    ``new(**fields)`` makes the registration of one it has not seen yet and returns its
    job; ``added(job)`` announces it once loaded. Settled ones are marked so, abandoned
    ones (their owner stopped beating) are taken over, the others are mirrored."""
    for row in store.registrations():
        key = row["key"]
        job = jobs.get(key)
        if job is not None and not job.read_only:
            continue
        records = store.records(key)
        if job is None:
            job = _build(new, row, records, home)
            added(job)
        else:
            _refresh(job, row, records)  # a mirror: show the owner's live state
            job.host.post(job.on_progress)
        if row["result"]:
            job.mark_settled(row["result"], row["failure_reason"])
            job.read_only = False
            continue
        if store.try_take(key):
            # the state it will have first, then read_only: another thread that waits for
            # read_only to clear never sees the old owner's state ("active") in between
            job.state = _adopted_state(row, auto_resume)
            job.read_only = False
            _adopt(job, row, auto_resume)
        else:
            job.read_only = True


def _build(
    new: Callable[..., Job], row: sqlite3.Row, records: list[sqlite3.Row], home: Path
) -> Job:
    requests = [request_from_row(r) for r in records]
    job = new(
        key=row["key"],
        id=row["id"],
        requests=requests,
        title=row["title"],
        icons=json.loads(row["icons"]),
        download_total=row["download_total"],
        dest=Path(row["dest"]) if "://" not in row["dest"] else home / "staging" / row["key"],
        headers=httpx.Headers(json_headers(row)),  # credentials were never stored
        auth=None,
        created=row["created"],
    )
    job.upload_total = row["upload_total"]
    if "://" in row["dest"]:  # an object-storage dest
        from .cloud import RemoteDest

        job.remote = RemoteDest.restored(row["dest"])
    _refresh(job, row, records)
    for d in job.records:
        for path in (d.final_path, d.part_path):
            if isinstance(path, Path):
                job.host.names.claim(path)
    return job


def _refresh(job: Job, row: sqlite3.Row, records: list[sqlite3.Row]) -> None:
    load_registration(job, row, records)
    if job.remote is not None:
        from .cloud import restore_paths

        restore_paths(job)


def _adopt(job: Job, row: sqlite3.Row, auto_resume: bool) -> None:
    """This process now owns an unfinished registration: continue it."""
    for d in job.records:
        if d.settled:
            continue
        if d.request.method != "GET":
            d.error = (
                "interrupted: the process sending this request stopped, and request "
                "bodies are not stored, so it cannot be resumed; fetch it again"
            )
            job.settle_record(d, "failure", "fetch-error")
            continue
        size = _part_size(d.part_path)
        if size is None and _complete_but_unsettled(d):
            # The process stopped between the rename and the checkpoint: put the file
            # back as the .part; the transfer verifies it and renames it without a request.
            with contextlib.suppress(OSError):
                os.replace(d.final_path, d.part_path)  # type: ignore[arg-type]
                size = _part_size(d.part_path)
        if size is None or not (d.etag or d.last_modified):
            job.downloaded -= d.downloaded
            d.downloaded = 0
            d.segment_map = None
        elif d.segment_map is not None:  # segmented: only the ranges known written count
            job.downloaded += d.segment_map.size - d.downloaded
            d.downloaded = d.segment_map.size
        else:
            job.downloaded += size - d.downloaded
            d.downloaded = size
        d.state = "pending"
        job.mark_dirty(d)
    job.received = max(job.received, job.downloaded)
    if job.settled:
        return
    if row["needs_credentials"]:
        job.withheld_headers = _withheld(row)
    job.state = _adopted_state(row, auto_resume)
    if job.state != "active":
        for d in job.records:
            if not d.settled:
                d.state = "paused"
    job.persist_registration()
    job.start()


def _adopted_state(row: sqlite3.Row, auto_resume: bool) -> RegistrationState:
    """What an unfinished registration taken over from its row becomes here."""
    if row["needs_credentials"]:
        return "needs-credentials"  # its credentials were never written down
    if row["state"] == "paused" or not auto_resume:
        return "paused"
    return "active"


def _complete_but_unsettled(d: RecordData) -> bool:
    if not isinstance(d.final_path, Path) or d.part_path is None or d.total is None:
        return False
    if not 200 <= d.status <= 299:
        return False
    try:
        return d.final_path.stat().st_size == d.total
    except OSError:
        return False


def _part_size(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        st = path.lstat()  # a symlink is not a partial file of ours
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _withheld(row: sqlite3.Row) -> list[str]:
    """The names of the headers an earlier process kept in memory only."""
    try:
        names = json.loads(row["withheld_headers"] or "[]")
    except (IndexError, KeyError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
