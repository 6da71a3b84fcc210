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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .record import RecordData
from .rows import json_headers, load_registration, request_from_row

if TYPE_CHECKING:
    from .._manager import BackgroundFetchManager
    from .._registration import BackgroundFetchRegistration

__all__ = ["restore_into"]


def restore_into(
    mgr: BackgroundFetchManager, new: Callable[..., BackgroundFetchRegistration]
) -> None:
    """Load the database's registrations into ``mgr``; ``new(**fields)`` makes the
    registration object of one this process has not seen yet."""
    store = mgr._store
    assert store is not None
    for row in store.registrations():
        key = row["key"]
        reg = mgr._registrations.get(key)
        if reg is not None and not reg._read_only:
            continue
        records = store.records(key)
        if reg is None:
            reg = _build(mgr, new, row, records)
            mgr._registrations[key] = reg
            mgr._callbacks.post(mgr._notify_change, reg)
        else:
            _refresh(reg, row, records)  # a mirror: show the owner's live state
            mgr._callbacks.post(reg._dispatch_progress)
        if row["result"]:
            _mark_settled(reg, row)
            reg._read_only = False
            continue
        if store.try_take(key):
            reg._read_only = False
            _adopt(mgr, reg, row)
        else:
            reg._read_only = True


def _build(
    mgr: BackgroundFetchManager,
    new: Callable[..., BackgroundFetchRegistration],
    row: sqlite3.Row,
    records: list[sqlite3.Row],
) -> BackgroundFetchRegistration:
    requests = [request_from_row(r) for r in records]
    reg = new(
        key=row["key"],
        id=row["id"],
        requests=requests,
        title=row["title"],
        icons=json.loads(row["icons"]),
        download_total=row["download_total"],
        dest=Path(row["dest"]) if "://" not in row["dest"] else mgr.home / "staging" / row["key"],
        headers=httpx.Headers(json_headers(row)),  # credentials were never stored
        auth=None,
        policy=mgr._policy,
        created=row["created"],
    )
    reg._output_target = None  # no starting cell in this kernel: output goes to the latest
    reg._upload_total = row["upload_total"]
    if "://" in row["dest"]:  # an object-storage dest
        from .cloud import RemoteDest

        reg._remote = RemoteDest.restored(row["dest"])
    _refresh(reg, row, records)
    for d in reg._records:
        for path in (d.final_path, d.part_path):
            if isinstance(path, Path):
                mgr._names.claim(path)
    return reg


def _refresh(
    reg: BackgroundFetchRegistration, row: sqlite3.Row, records: list[sqlite3.Row]
) -> None:
    load_registration(reg, row, records)
    if reg._remote is not None:
        from .cloud import restore_paths

        restore_paths(reg)


def _mark_settled(reg: BackgroundFetchRegistration, row: sqlite3.Row) -> None:
    reg._result = row["result"]
    reg._failure_reason = row["failure_reason"]
    reg._settled_state.set()
    reg._done.set()
    if not reg._done_future.done():
        reg._done_future.set_result(reg)


def _adopt(mgr: BackgroundFetchManager, reg: BackgroundFetchRegistration, row: sqlite3.Row) -> None:
    """This process now owns an unfinished registration: continue it."""
    for d in reg._records:
        if d.settled:
            continue
        if d.request.method != "GET":
            d.error = (
                "interrupted: the process sending this request stopped, and request "
                "bodies are not stored, so it cannot be resumed; fetch it again"
            )
            reg._settle_record(d, "failure", "fetch-error")
            continue
        size = _part_size(d.part_path)
        if size is None and _complete_but_unsettled(d):
            # The process stopped between the rename and the checkpoint: put the file
            # back as the .part; the transfer verifies it and renames it without a request.
            with contextlib.suppress(OSError):
                os.replace(d.final_path, d.part_path)  # type: ignore[arg-type]
                size = _part_size(d.part_path)
        if size is None or not (d.etag or d.last_modified):
            reg._downloaded -= d.downloaded
            d.downloaded = 0
            d.segment_map = None
        elif d.segment_map is not None:  # segmented: only the ranges known written count
            reg._downloaded += d.segment_map.size - d.downloaded
            d.downloaded = d.segment_map.size
        else:
            reg._downloaded += size - d.downloaded
            d.downloaded = size
        d.state = "pending"
        reg._mark_dirty(d)
    reg._received = max(reg._received, reg._downloaded)
    if reg.settled:
        return
    if row["needs_credentials"]:
        reg._state = "needs-credentials"
        for d in reg._records:
            if not d.settled:
                d.state = "paused"
    elif row["state"] == "paused" or not mgr._auto_resume:
        reg._state = "paused"
        for d in reg._records:
            if not d.settled:
                d.state = "paused"
    else:
        reg._state = "active"
    reg._persist_registration()
    reg._start()


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
