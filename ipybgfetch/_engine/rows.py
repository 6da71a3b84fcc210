"""The database row mapping, both directions, in one place: a registration and its
records to the rows :mod:`.store` writes, and rows back to records and registrations
(:mod:`.restore`). The schema itself is :mod:`.store`'s.

Credentials never reach a row: request headers are kept only from the allowlist
(``public_headers``, :mod:`.._secrets`), secret query parameters are redacted (in URLs,
errors and response headers), a final URL carrying one is not kept, ``Set-Cookie``
answers are dropped, ``auth`` is never stored.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .._models import Request, Response
from .._secrets import has_secret_params, redact_text, redact_url, secret_headers
from .ranges import RangeSet
from .record import RecordData
from .store import dumps, public_headers

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "json_headers",
    "load_record",
    "load_registration",
    "new_record_row",
    "record_row",
    "registration_row",
    "request_from_row",
]


# -- objects to rows ------------------------------------------------------------------------
def _written_names(headers: Any) -> list[str]:
    """Header names as the user wrote them (httpx.Headers.keys() lowercases them)."""
    raw = getattr(headers, "raw", None)
    if raw is not None:
        return [k.decode("latin-1") if isinstance(k, bytes) else str(k) for k, _ in raw]
    return list(headers.keys())


def withheld_header_names(job: Job) -> list[str]:
    """The names of the headers (the registration's and its requests') that are kept in
    memory only, as the user wrote them; a restored job keeps the names it was told."""
    names: dict[str, str] = {n.lower(): n for n in job.withheld_headers}
    sources = [
        _written_names(job.headers),
        *(_written_names(d.request.headers) for d in job.records),
    ]
    for keys in sources:
        for name in keys:
            if secret_headers([name]):
                names.setdefault(name.lower(), name)
    return sorted(names.values(), key=str.lower)


# -- objects to rows ------------------------------------------------------------------------
def registration_row(job: Job) -> dict[str, Any]:
    if job.requests_carry_credentials is None:  # once: the requests never change
        job.requests_carry_credentials = any(
            secret_headers(d.request.headers.keys()) or has_secret_params(d.request.url)
            for d in job.records
        )
    needs_credentials = (
        job.auth is not None
        or (job.remote is not None and job.remote.needs_credentials)
        or secret_headers(job.headers.keys())
        or job.requests_carry_credentials
    )
    return {
        "key": job.key,
        "id": job.id,
        "title": job.title,
        "icons": dumps(job.icons),
        "dest": job.remote.url if job.remote is not None else str(job.dest),
        "download_total": job.download_total,
        "upload_total": job.upload_total,
        "state": job.state,
        "result": job.result,
        "failure_reason": job.failure_reason,
        "needs_credentials": int(needs_credentials),
        "withheld_headers": dumps(withheld_header_names(job)),
        "headers": dumps(public_headers(job.headers.items())),
        "created": job.created,
        "finished": job.finished,
    }


def _request_columns(d: RecordData) -> dict[str, Any]:
    request = d.request
    return {
        "idx": d.index,
        "url": redact_url(request.url),
        "method": request.method,
        "headers": dumps(public_headers(request.headers.items())) if request.headers else "{}",
        "integrity": request.integrity,
        "has_body": int(request.body is not None),
    }


def new_record_row(d: RecordData) -> dict[str, Any]:
    """The row of a record not started yet: the request; every other column has the
    schema's default, which is what a new record holds (tested)."""
    row = _request_columns(d)
    row["state"] = d.state
    return row


def record_row(d: RecordData, full: bool = False) -> dict[str, Any]:
    """A record's progress columns (a checkpoint); with ``full``, its request too."""
    row: dict[str, Any] = _request_columns(d) if full else {"idx": d.index}
    row.update(
        state=d.state,
        failure=d.failure,
        status=d.status,
        response_headers=dumps(
            [
                (k, redact_text(v))
                for k, v in d.response_headers.items()
                if k.lower() != "set-cookie"
            ]
        )
        if d.response_headers
        else "[]",
        # a URL with a secret (a signed redirect target) is not stored at all: a restored
        # record asks the original URL again
        response_url="" if has_secret_params(d.response_url) else d.response_url,
        downloaded=d.downloaded,
        total=d.total,
        uploaded=d.uploaded,
        attempts=d.attempts,
        error=redact_text(d.error),
        sha256=d.sha256,
        started=d.started,
        finished=d.finished,
        final_path=str(d.final_path) if d.final_path else None,
        part_path=str(d.part_path) if d.part_path else None,
        etag=d.etag,
        last_modified=d.last_modified,
        segments=None if d.segment_map is None else d.segment_map.dumps(),
    )
    return row


# -- rows to objects ------------------------------------------------------------------------
def request_from_row(r: sqlite3.Row) -> Request:
    return Request(
        r["url"], method=r["method"], headers=json.loads(r["headers"]), integrity=r["integrity"]
    )


def json_headers(row: sqlite3.Row) -> dict[str, str]:
    """A registration row's stored (allowlisted) headers."""
    try:
        value = json.loads(row["headers"] or "{}")
    except (IndexError, KeyError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load_record(d: RecordData, r: sqlite3.Row) -> None:
    d.state = r["state"]
    d.failure = r["failure"]
    d.status = r["status"]
    d.response_headers = httpx.Headers(json.loads(r["response_headers"]))
    d.response_url = r["response_url"]
    d.downloaded = r["downloaded"]
    d.total = r["total"]
    d.uploaded = r["uploaded"]
    d.attempts = r["attempts"]
    d.error = r["error"]
    d.sha256 = r["sha256"]
    d.started = r["started"]
    d.finished = r["finished"]
    d.final_path = Path(r["final_path"]) if r["final_path"] else None
    d.part_path = Path(r["part_path"]) if r["part_path"] else None
    d.etag = r["etag"]
    d.last_modified = r["last_modified"]
    segments = r["segments"]
    d.segment_map = None if segments is None else RangeSet.loads(segments)
    if d.status and d.response is None:
        d.response = Response(d)
    d.resolve_ready()  # a settled record's response_ready is settled too


def load_registration(job: Job, row: sqlite3.Row, records: list[sqlite3.Row]) -> None:
    """The registration's and its records' columns from their rows."""
    job.title = row["title"]
    job.icons = json.loads(row["icons"])
    job.state = row["state"]
    job.finished = row["finished"]
    done = failed = 0
    for d, r in zip(job.records, records, strict=True):
        load_record(d, r)
        if d.settled:
            done += 1
            failed += d.state != "success"
    job.done_count, job.failed_count = done, failed
    job.downloaded = sum(d.downloaded for d in job.records)
    job.received = max(job.received, job.downloaded)
    job.uploaded = sum(d.uploaded for d in job.records)
