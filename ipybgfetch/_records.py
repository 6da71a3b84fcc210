"""Records: one request and its response, and the list-like :class:`RecordList`.

The engine owns a :class:`~ipybgfetch._engine.record.RecordData` per request and is the
only writer of it; the user-facing :class:`BackgroundFetchRecord` objects are fresh,
read-only views over that data (``match_all()`` returns new views each call, as the spec
says).

A record is also a read-only mapping of its table row, so ``pandas.DataFrame(records)``
gives one row per record, the same as ``records.to_pandas()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeVar, overload

import httpx

from ._data.archive import DEFAULT_MAX_RATIO, DEFAULT_MAX_SIZE
from ._engine.record import RecordData
from ._exceptions import InvalidStateError
from ._models import Request, Response

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = ["ROW_COLUMNS", "BackgroundFetchRecord", "RecordList", "ResponseReady"]

ROW_COLUMNS = (
    "id",
    "index",
    "url",
    "method",
    "state",
    "status",
    "ok",
    "bytes",
    "content_type",
    "path",
    "sha256",
    "started",
    "finished",
    "elapsed_s",
    "attempts",
    "error",
)
T = TypeVar("T")
# pandas' nullable integer: a record without a status (no response) is <NA>, and the
# column stays integer whatever the data (float64 200.0 / NaN otherwise).
_PANDAS_STATUS_DTYPE = "Int64"


def await_shared(shared: concurrent.futures.Future[T]) -> Generator[Any, None, T]:
    """Await a Future that other waiters and the engine share, from any event loop.

    Each await gets its own asyncio future, fed by the shared one. ``asyncio.wrap_future``
    would instead cancel the shared Future when the awaiting task is cancelled
    (``asyncio.wait_for`` timing out): every later await would raise CancelledError,
    and the engine could no longer give its result.
    """
    loop = asyncio.get_running_loop()
    mine: asyncio.Future[T] = loop.create_future()

    def copy() -> None:
        if mine.done():  # this await was cancelled meanwhile
            return
        if shared.cancelled():
            mine.cancel()
        elif (error := shared.exception()) is not None:
            mine.set_exception(error)
        else:
            mine.set_result(shared.result())

    def on_done(_: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the awaiting loop has closed
            loop.call_soon_threadsafe(copy)

    shared.add_done_callback(on_done)
    return (yield from mine.__await__())


class ResponseReady:
    """``record.response_ready``: await it in async code, or call ``.result(timeout)``."""

    def __init__(self, future: concurrent.futures.Future[Response]) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, Response]:
        return await_shared(self._future)

    def result(self, timeout: float | None = None) -> Response:
        """Block until the record settled; the response, or AbortError/FetchError."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def __repr__(self) -> str:
        return f"<ResponseReady {'done' if self.done() else 'pending'}>"


class BackgroundFetchRecord(Mapping[str, Any]):
    """One request of a registration and (once headers arrived) its response."""

    __slots__ = ("_data", "_sent_headers")

    def __init__(self, data: RecordData, sent_headers: httpx.Headers | None = None) -> None:
        self._data = data
        # fetch(headers=...): sent with every request, so part of each record's request
        self._sent_headers = sent_headers

    @property
    def request(self) -> Request:
        """The request as sent: its own headers over those given to fetch(headers=...)."""
        request = self._data.request
        if not self._sent_headers:
            return request
        headers = httpx.Headers(self._sent_headers)
        for name in request.headers:  # the request's own win
            headers[name] = request.headers[name]
        return request.with_headers(headers)

    @property
    def response(self) -> Response | None:
        return self._data.response

    @property
    def response_ready(self) -> ResponseReady:
        return ResponseReady(self._data.ready.future())

    @property
    def state(self) -> str:
        return self._data.state

    @property
    def error(self) -> str:
        return self._data.error

    @property
    def attempts(self) -> int:
        return self._data.attempts

    @property
    def path(self) -> Path | None:
        """The body's final path once the record succeeded or failed with a body."""
        return self._data.final_path if self._data.settled else None

    # -- the mapping view: the record's table row ------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data.row()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(ROW_COLUMNS)

    def __len__(self) -> int:
        return len(ROW_COLUMNS)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BackgroundFetchRecord):
            return self._data is other._data
        return NotImplemented

    def __hash__(self) -> int:
        return id(self._data)

    # -- data workflows -------------------------------------------------------------------
    def _body_path(self) -> Path:
        """The body of a record that succeeded; a clear error for any other record."""
        response = self.response
        if response is None and self._data.settled:
            what = "was aborted" if self._data.state == "aborted" else "failed"
            raise InvalidStateError(
                f"{self.request.url} {what} without a response "
                f"({self._data.error or self._data.failure or self._data.state}): it has no "
                "body to read. Skip failed records with records.successful()"
            )
        if response is None:
            raise InvalidStateError(
                f"{self.request.url} has no response yet ({self._data.error or self.state}); "
                "wait for the registration first"
            )
        path = response._complete_path()
        if self._data.state != "success":
            raise InvalidStateError(
                f"{self.request.url} did not succeed (HTTP {response.status}, "
                f"{self._data.error or self.state}): its body is not your data. Read it with "
                "record.response.text(), or skip failed records with records.successful()"
            )
        if not isinstance(path, Path):  # an object: readers get a local copy of it
            return path.local_copy()
        return path

    def to_pandas(self, **kwargs: Any) -> pandas.DataFrame:
        """Read the body as a DataFrame (by Content-Type, then extension; compressed too)."""
        from ._data.frames import read_pandas

        response = self.response
        return read_pandas(
            self._body_path(),
            response.content_type if response else None,
            url=response.url if response else self.request.url,
            **kwargs,
        )

    def to_polars(self, **kwargs: Any) -> polars.DataFrame:
        from ._data.frames import read_polars

        response = self.response
        return read_polars(
            self._body_path(),
            response.content_type if response else None,
            url=response.url if response else self.request.url,
            **kwargs,
        )

    def extract(
        self,
        to: str | Path | None = None,
        *,
        max_size: int | None = DEFAULT_MAX_SIZE,
        max_ratio: float | None = DEFAULT_MAX_RATIO,
    ) -> list[Path]:
        """Safely extract a zip/tar body into ``to`` (default: a folder next to the file).

        ``max_size`` / ``max_ratio`` limit the expansion (zip bombs): see
        :func:`ipybgfetch._data.archive.extract`.
        """
        from ._data.archive import extract

        path = self._body_path()
        target = Path(to) if to is not None else path.with_name(path.name + ".d")
        return extract(path, target, max_size=max_size, max_ratio=max_ratio)

    def __repr__(self) -> str:
        d = self._data
        status = f" [{d.status}]" if d.status else ""
        return f"<BackgroundFetchRecord {d.request.method} {d.request.url}{status} {d.state}>"


class RecordList(list[BackgroundFetchRecord]):
    """The records of a registration: a list, plus DataFrame conversion and rich display."""

    @overload
    def __getitem__(self, i: SupportsIndex) -> BackgroundFetchRecord: ...
    @overload
    def __getitem__(self, i: slice) -> RecordList: ...
    def __getitem__(self, i: Any) -> Any:
        result = super().__getitem__(i)
        return RecordList(result) if isinstance(i, slice) else result

    def successful(self) -> RecordList:
        """Only the records that succeeded (2xx, complete, verified)."""
        return RecordList(r for r in self if r.state == "success")

    def failed(self) -> RecordList:
        """Only the records that failed or were aborted."""
        return RecordList(r for r in self if r.state in ("failure", "aborted"))

    def rows(self) -> list[dict[str, Any]]:
        return [r._data.row() for r in self]

    def to_pandas(self, concat: bool = False, **kwargs: Any) -> pandas.DataFrame:
        """One row per record; with ``concat=True``, the bodies read and concatenated."""
        if concat:
            return self.read_pandas(**kwargs)
        from ._data.frames import require_pandas

        pd = require_pandas()
        table = pd.DataFrame(self.rows(), columns=list(ROW_COLUMNS))
        table["status"] = table["status"].astype(_PANDAS_STATUS_DTYPE)
        return table

    def to_polars(self, concat: bool = False, **kwargs: Any) -> polars.DataFrame:
        if concat:
            return self.read_polars(**kwargs)
        from ._data.frames import require_polars

        pl = require_polars()
        frame: polars.DataFrame = pl.DataFrame(self.rows(), schema=_polars_schema(pl))
        return frame

    def _bodies(self) -> Iterable[tuple[str, Path, str | None]]:
        for r in self:
            path = r._body_path()
            yield r.request.url, path, r.response.content_type if r.response else None

    def read_pandas(self, source_column: str = "source_url", **kwargs: Any) -> pandas.DataFrame:
        """Read every body and concatenate them, adding the source URL as a column."""
        from ._data.frames import concat_pandas

        return concat_pandas(list(self._bodies()), source_column=source_column, **kwargs)

    def read_polars(self, source_column: str = "source_url", **kwargs: Any) -> polars.DataFrame:
        from ._data.frames import concat_polars

        return concat_polars(list(self._bodies()), source_column=source_column, **kwargs)

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{escape(c)}</th>" for c in ROW_COLUMNS)
        body = []
        for row in self.rows()[:1000]:
            cells = "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row.values())
            body.append(f"<tr>{cells}</tr>")
        more = (
            f"<p>… {len(self) - 1000} more records; use .to_pandas()</p>"
            if len(self) > 1000
            else ""
        )
        return (
            f"<table class='ipybgfetch-records'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{more}"
        )

    def __repr__(self) -> str:
        if not self:
            return "RecordList([])"
        lines = [f"RecordList of {len(self)} records:"]
        for r in list(self)[:20]:
            d = r._data
            lines.append(
                f"  {d.index:>4} {d.state:<8} {d.status or '-':>3} {d.downloaded:>12} B  "
                f"{d.request.url}"
            )
        if len(self) > 20:
            lines.append(f"  … {len(self) - 20} more")
        return "\n".join(lines)


def _polars_schema(pl: Any) -> dict[str, Any]:
    """The records table's polars types: the same for every list, the empty one too (and
    a column that is all null, such as ``error`` when nothing failed, keeps its type)."""
    timestamp = pl.Datetime("us", "UTC")
    types = {
        "index": pl.Int64,
        "status": pl.Int64,
        "ok": pl.Boolean,
        "bytes": pl.Int64,
        "started": timestamp,
        "finished": timestamp,
        "elapsed_s": pl.Float64,
        "attempts": pl.Int64,
    }
    return {column: types.get(column, pl.String) for column in ROW_COLUMNS}


def _strip(url: str, ignore_search: bool) -> str:
    u = httpx.URL(url).copy_with(fragment=None)
    if ignore_search:
        u = u.copy_with(query=None)
    return str(u)


def query_request(query: Request | str) -> Request:
    if isinstance(query, Request):
        return query
    if isinstance(query, (str, httpx.URL)):
        return Request(str(query))
    raise TypeError(
        f"match() takes a URL string or an ipybgfetch.Request, got {type(query).__name__}"
    )


def request_matches(
    query: Request,
    data: RecordData,
    *,
    ignore_search: bool = False,
    ignore_method: bool = False,
    ignore_vary: bool = False,
    sent_headers: httpx.Headers | None = None,
) -> bool:
    """The service-worker "request matches cached item" rule.

    ``sent_headers`` are the registration-wide headers that went out with the stored
    request (its own headers take precedence), for comparing ``Vary``.
    """
    stored = data.request
    if not ignore_method and (stored.method != "GET" or query.method != "GET"):
        return False
    if _strip(query.url, ignore_search) != _strip(stored.url, ignore_search):
        return False
    if data.response is None or ignore_vary:
        return True
    vary = data.response_headers.get("vary")
    if not vary:
        return True
    for name in (v.strip() for v in vary.split(",")):
        if not name:
            continue
        if name == "*":
            return False
        sent = stored.headers.get(name)
        if sent is None and sent_headers is not None:
            sent = sent_headers.get(name)
        if query.headers.get(name) != sent:
            return False
    return True
