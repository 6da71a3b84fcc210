"""``BackgroundFetchManager``: validates fetch() calls, owns the engine, the HTTP client,
the database and the registrations; and ``manager()``, the process-wide default one."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import re
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from ._disk import free_space, nearest_existing
from ._display import mimebundle
from ._engine.job import Host, Job
from ._engine.loop import Engine
from ._engine.record import FAILED_FOLDER, RecordData
from ._engine.restore import restore_into
from ._engine.retry import RetryPolicy
from ._engine.rows import new_record_row, record_row, registration_row
from ._engine.segments import DEFAULT_MIN_SEGMENT
from ._engine.store import (
    IdInUse,
    Store,
    heartbeat_interval,
    lease_timeout,
    public_headers,
)
from ._events import (
    MANAGER_EVENTS,
    BackgroundFetchEvent,
    BackgroundFetchUpdateUIEvent,
    CallbackThread,
    ListenerSet,
)
from ._exceptions import FetchError, InvalidStateError, QuotaExceededError
from ._http.transport import Client, make_client
from ._models import Request, checked_headers
from ._names import NameReservations, safe_filename
from ._output import output_to
from ._registration import BackgroundFetchRegistration, RegistrationHost, check_icons
from ._sizes import format_size, parse_size

__all__ = ["BackgroundFetchManager", "default_home", "manager"]

_ORIGIN = re.compile(r"[^:/?#]+://[^/?#]*")  # scheme://authority of a URL

DEFAULT_CONNECTIONS_PER_HOST = 6  # what browsers use
INTENT_POLL = 0.25  # seconds between an owner's looks for other processes' intents
CONTROL_TIMEOUT = 10.0  # seconds an asker waits for the owner's answer

log = logging.getLogger("ipybgfetch")


def default_home() -> Path:
    """``$IPYBGFETCH_HOME``, else the per-user data folder (e.g. ~/.local/share/ipybgfetch)."""
    env = os.environ.get("IPYBGFETCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("ipybgfetch", appauthor=False))


class BackgroundFetchManager:
    """Starts and tracks background fetches. Most code uses :func:`ipybgfetch.manager`.

    >>> mgr = BackgroundFetchManager(home="/tmp/bgf")                     # doctest: +SKIP
    >>> reg = mgr.fetch("data", ["https://example.org/a.csv"])             # doctest: +SKIP

    ``home`` holds the database and, by default, the downloaded files
    (``home/files/<id>/``). The keyword options set defaults for every fetch:
    ``max_connections_per_host`` (6), ``retries`` (an int or a :class:`RetryPolicy`),
    ``auto_resume`` (resume unfinished registrations of earlier kernels, default True),
    and ``client_options`` passed to :class:`httpx.AsyncClient` (``verify``, ``proxy``,
    ``http2``, ``cert``, ``trust_env``...).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        max_connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
        retries: RetryPolicy | int | None = None,
        auto_resume: bool = True,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(max_connections_per_host, int) or max_connections_per_host < 1:
            raise ValueError(
                f"max_connections_per_host must be an int >= 1, got {max_connections_per_host!r}"
            )
        self.home = Path(home).expanduser() if home is not None else default_home()
        self._per_host = max_connections_per_host
        self._policy = RetryPolicy.coerce(retries, RetryPolicy())
        self._auto_resume = auto_resume
        self._client_options = dict(client_options or {})
        if self._client_options.get("http2") and importlib.util.find_spec("h2") is None:
            raise ImportError(
                "client_options={'http2': True} needs the h2 package: pip install 'httpx[http2]'"
            )
        self._engine = Engine()
        self._callbacks = CallbackThread()
        self._engine.on_error = self._callbacks.report
        self._listeners = ListenerSet(MANAGER_EVENTS)
        self._change_listeners: list[Callable[[BackgroundFetchRegistration], Any]] = []
        self._names = NameReservations()
        self._lock = threading.RLock()
        self._registrations: dict[str, BackgroundFetchRegistration] = {}  # by key, in order
        # each registration's job (the engine state it shows); the manager made both
        self._job_of_reg: weakref.WeakKeyDictionary[BackgroundFetchRegistration, Job] = (
            weakref.WeakKeyDictionary()
        )
        self._store: Store | None = None
        self._http: Client | None = None
        self._http_building: asyncio.Future[Client] | None = None
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._started = False
        self._starting: concurrent.futures.Future[None] | None = None  # see _begin_start
        self._closed = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._intents_task: asyncio.Task[None] | None = None
        self._seen_version = -1  # the database's data_version when last looked at
        self._last_scan = 0.0
        # Late-bound (lambdas): what the job calls is the manager's method at call time.
        self._host = Host(
            engine=self._engine,
            names=self._names,
            home=self.home,
            per_host=max_connections_per_host,
            client_options=self._client_options,
            manager_class=type(self),
            post=lambda fn, *args: self._callbacks.post(fn, *args),
            report=lambda exc, where: self._callbacks.report(exc, where),
            client=lambda: self._client(),
            host_slot=lambda url: self._host_semaphore(url),
            store=lambda: self._store,
            store_records=lambda job, records: self._store_records(job, records),
            store_registration=lambda job: self._store_registration(job),
            release=lambda key: self._store_release(key),
            reopen=lambda job: self._reopen(job),
            closed=lambda: self._closed,
        )
        # what each registration may ask of this manager (late-bound, as above)
        self._registration_host = RegistrationHost(
            engine=self._engine,
            callbacks=self._callbacks,
            is_closed=lambda: self._closed,
            notify_change=lambda reg: self._notify_change(reg),
            has_change_listeners=lambda: self._has_change_listeners(),
            dispatch_settled=lambda reg, type: self._dispatch_settled(reg, type),
            dispatch_click=lambda reg: self._dispatch_click(reg),
            control_elsewhere=lambda reg, intent: self._control_elsewhere(reg, intent),
            take_over=lambda reg: self._take_over(reg),
        )

    # -- life cycle ------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (a closed manager starts nothing new)."""
        return self._closed

    def _ensure_started(self) -> None:
        if self._closed:
            raise _closed_error()
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            if self._closed:  # closed while this call waited for the lock
                raise _closed_error()
            starting, self._starting = self._starting, None
            if starting is None:
                starting = self._engine.submit(self._startup())
                atexit.register(_close_at_exit, weakref.ref(self))
            starting.result()  # a startup error is raised here, by the call that needs it
            self._started = True

    def _begin_start(self) -> None:
        """Start the engine (database, restored registrations) without waiting for it:
        fetch() checks its requests meanwhile, and _ensure_started() waits."""
        if self._started or self._closed or self._starting is not None:
            return
        with self._lock:  # close() takes it too: no engine is started after close()
            if not self._closed and not self._started and self._starting is None:
                self._starting = self._engine.submit(self._startup())
                atexit.register(_close_at_exit, weakref.ref(self))

    async def _startup(self) -> None:
        self._store = Store(self.home / "state.sqlite3")
        self._store.describe_self(_notebook_path())
        self._restore()
        self._heartbeat_task = self._engine.spawn(self._heartbeat(), name="bgfetch:heartbeat")
        self._intents_task = self._engine.spawn(self._intents(), name="bgfetch:intents")

    def close(self) -> None:
        """Stop every transfer (unfinished ones stay resumable) and release resources."""
        if self._closed:
            return
        with self._lock:  # after this, _begin_start/_ensure_started start nothing
            self._closed = True
            starting, self._starting = self._starting, None
        try:
            if starting is not None:  # begun by a fetch() that then refused its arguments
                try:
                    starting.result()
                    self._started = True  # the database is open: shut down as usual
                except Exception as exc:
                    self._callbacks.report(exc, self.close)
            if self._started:
                self._engine.run(self._shutdown(), timeout=10)
        except Exception as exc:  # say so, and still stop the threads
            self._callbacks.report(exc, self.close)
        finally:
            self._engine.close()
            self._callbacks.stop()

    async def _shutdown(self) -> None:
        """Stop every registration, then close the client and the database. A step that
        fails (a full disk under the home) does not stop the others; the first error is
        raised at the end, for close() to report."""
        errors: list[BaseException] = []
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._intents_task is not None:
            self._intents_task.cancel()
        for job in self._jobs():
            try:
                await job.shutdown()
            except Exception as exc:
                errors.append(exc)
        building = self._http_building
        if (
            self._http is None
            and building is not None
            and building.done()
            and not building.cancelled()
            and building.exception() is None
        ):
            self._http = building.result()  # built for a transfer that never ran: closed below
        try:
            if self._http is not None:
                await self._http.aclose()
        finally:
            if self._store is not None:
                self._store.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> BackgroundFetchManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API ---------------------------------------------------------------------------
    def fetch(
        self,
        id: str,
        requests: str | Request | Sequence[str | Request] | Iterable[Any],
        *,
        title: str = "",
        icons: Sequence[dict[str, str] | str] = (),
        download_total: int | str = 0,
        dest: str | os.PathLike[str] | None = None,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        retries: RetryPolicy | int | None = None,
        storage_options: dict[str, Any] | None = None,
        cluster: Any = None,
        force: bool = False,
        checksum: bool = False,
        segments: int | None = None,
        min_segment_size: int | str | None = None,
    ) -> BackgroundFetchRegistration:
        """Start a background fetch and return its registration at once.

        ``requests`` is one URL or :class:`Request`, or a list of them (or a
        :class:`Registry`). ``download_total`` (bytes, or a size such as ``"2GB"``) caps
        the total download; 0 means no cap. ``headers`` and ``auth`` (any httpx auth)
        apply to every request; credentials are kept in memory only.

        ``dest`` may be an fsspec URL (``"s3://bucket/prefix/"``, ``gs://``, ``memory://``,
        ``file://``) with ``storage_options`` (kept in memory only): each body is staged and
        verified under the home, then uploaded (``pip install "ipybgfetch[cloud]"``).
        ``cluster`` (a ``dask.distributed.Client``) runs the records on its workers
        (``pip install "ipybgfetch[cluster]"``).

        A re-run is free: when the latest registration with this ``id`` succeeded with
        the same requests and destination, and its files are still there with the same
        sizes, that settled registration is returned as it is (nothing is downloaded).
        ``checksum=True`` also re-hashes those files against the SHA-256 recorded when
        they arrived. ``force=True`` downloads again, replacing the old files in place.

        Segmented downloads: a file of at least twice ``min_segment_size`` (bytes or a
        size such as ``"16MiB"``; default 4 MiB) from a server that serves byte ranges
        with a strong validator is fetched over up to ``segments`` connections at once
        (default: as many as the host's ``max_connections_per_host`` budget has free;
        ``segments=1`` turns it off). It helps where servers cap each connection.
        """
        if not isinstance(id, str):
            raise FetchError(f"id must be a str, got {type(id).__name__}: {id!r}")
        if not id.strip():
            raise FetchError("id must be a non-empty string, e.g. fetch('my-data', urls)")
        self._begin_start()  # the database opens while the requests are checked
        items = _request_list(requests)
        reqs = [Request.coerce(item) for item in items]
        if not isinstance(title, str):
            raise FetchError(f"title must be a str, got {type(title).__name__}")
        icon_list = check_icons(icons)
        total = _download_total(download_total)
        merged_headers = checked_headers(headers)
        _refuse_range(merged_headers, reqs)
        policy = RetryPolicy.coerce(retries, self._policy)
        split = _segment_options(segments, min_segment_size)
        remote = None
        key = uuid.uuid4().hex
        if cluster is not None:
            from ._cluster import check_cluster

            dest = check_cluster(cluster, dest)  # a shared folder becomes file://...
        if dest is not None and _is_remote(dest):
            from ._engine.cloud import remote_dest

            remote = remote_dest(dest, storage_options)  # type: ignore[arg-type]
            dest = self.home / "staging" / key
        elif storage_options is not None:
            raise FetchError(
                "storage_options applies to an object-storage dest (dest='s3://bucket/prefix/'"
                ", 'gs://...', 'memory://...'); a local folder needs none"
            )
        self._ensure_started()
        folder = self._destination(id, dest, create=False)
        with self._lock:
            previous = self._latest(id)
            if (
                previous is not None
                and previous.settled
                and not force
                and self._engine.run(
                    self._reusable(
                        previous, reqs, merged_headers, remote.url if remote else folder, checksum
                    )
                )
            ):
                before = self._job_of(previous)
                before.reused_at = time.time()
                if remote is not None and before.remote is not None:
                    before.remote.set_options(remote.storage_options)  # the caller's, fresh
                return previous
            if id in self.get_ids():
                active = self.get(id)
                if active is not None and active.read_only:
                    raise self._active_elsewhere(id)
                raise FetchError(
                    f"a registration with id {id!r} is already active; wait for it, "
                    f"abort it (mgr.get({id!r}).abort()) or pick another id"
                )
            free = free_space(folder)
            if total and free is not None and total > free:
                raise QuotaExceededError(
                    f"download_total is {format_size(total)} but only {format_size(free)} "
                    f"is free at {folder}; free some space or pick another dest"
                )
            self._destination(id, dest, create=True)
            reg = self._new_registration(
                key=key,
                id=id,
                requests=reqs,
                title=title,
                icons=icon_list,
                download_total=total,
                dest=folder,
                headers=merged_headers,
                auth=auth,
                policy=policy,
                created=time.time(),
            )
            if remote is not None:
                from ._engine.cloud import assign_paths

                self._job_of(reg).remote = remote
                assign_paths(self._job_of(reg), remote)
            if cluster is not None:
                from ._cluster import ClusterRun

                self._job_of(reg).runner = ClusterRun(cluster)
            replaced = None
            if previous is not None and previous.settled and self._job_of(previous).dest == folder:
                if _replace_files_of(self._job_of(reg), self._job_of(previous)):
                    replaced = previous
                self._job_of(reg).replace_objects = True
            if force:
                self._job_of(reg).replace_objects = True
            self._job_of(reg).segments, self._job_of(reg).min_segment_size = split
            self._engine.run(self._register(reg))
            if replaced is not None:  # the new one has all its files: one registration
                self._engine.run(self._forget(replaced))
        return reg

    async def _forget(self, reg: BackgroundFetchRegistration) -> None:
        """Drop a registration's rows, leaving its files (a newer one took them over)."""
        assert self._store is not None
        self._store.delete_registration(self._job_of(reg).key)
        self._job_of(reg).records_available = False
        self._registrations.pop(self._job_of(reg).key, None)
        self._callbacks.post(self._notify_change, reg)

    def _latest(self, id: str) -> BackgroundFetchRegistration | None:
        """The newest registration with this id, active or settled."""
        found = None
        for reg in list(self._registrations.values()):
            if reg.id == id and (found is None or reg.created >= found.created):
                found = reg
        return found

    async def _reusable(
        self,
        old: BackgroundFetchRegistration,
        reqs: list[Request],
        headers: httpx.Headers,
        folder: Path | str,
        checksum: bool,
    ) -> bool:
        """Can a re-run return ``old`` as it is? Same requests and destination (a folder,
        or an object-storage URL), succeeded, every file (object) still there with its
        size (and, with ``checksum``, its SHA-256)."""
        job = self._job_of(old)
        if job.result != "success" or old.dest != folder or len(job.records) != len(reqs):
            return False
        if public_headers(self._job_of(old).headers.items()) != public_headers(headers.items()):
            return False
        for d, req in zip(self._job_of(old).records, reqs, strict=True):
            if (
                req.body is not None
                or d.request.method != req.method
                or d.request.url != req.url
                or (d.request.integrity or None) != (req.integrity or None)
                or public_headers(d.request.headers.items()) != public_headers(req.headers.items())
            ):
                return False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, _files_intact, self._job_of(old), checksum)

    def _active_elsewhere(self, id: str) -> FetchError:
        active = self.get(id) if self._started else None
        who = f", {self._owner_label(active)}" if active is not None else ""
        return FetchError(
            f"a registration with id {id!r} is already active in another process using the "
            f"same home ({self.home}{who}); wait for it, abort it (mgr.get({id!r}).abort() "
            "works from here too), or pick another id"
        )

    async def _register(self, reg: BackgroundFetchRegistration) -> None:
        assert self._store is not None
        if self._http is None and self._http_building is None:
            # The first transfer needs the HTTP client: build it (in a worker thread) while
            # the records are stored. Not earlier: proxies from the environment are read
            # then, and a user may set HTTPS_PROXY after loading the extension.
            loop = asyncio.get_running_loop()
            self._http_building = loop.run_in_executor(None, self._build_client)
            self._http_building.add_done_callback(_seen)  # the 1st transfer raises an error
        try:
            self._store.add_registration(
                registration_row(self._job_of(reg)),
                [new_record_row(d) for d in self._job_of(reg).records],
            )
        except IdInUse:
            raise self._active_elsewhere(reg.id) from None
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            raise QuotaExceededError(
                f"the disk holding ipybgfetch's state ({self.home}) is full ({exc}); "
                "free some space there, or use another home (IPYBGFETCH_HOME or "
                "BackgroundFetchManager(home=...))"
            ) from None
        self._registrations[self._job_of(reg).key] = reg
        self._callbacks.post(self._notify_change, reg)
        self._job_of(reg).start()

    def get(self, id: str) -> BackgroundFetchRegistration | None:
        """The active registration with this id (the same object each time), else None."""
        self._ensure_started()
        for reg in reversed(list(self._registrations.values())):
            if reg.id == id and not reg.settled:
                return reg
        return None

    def get_ids(self) -> list[str]:
        """Ids of the active registrations (settled ones are not listed, per the spec)."""
        self._ensure_started()
        return [r.id for r in list(self._registrations.values()) if not r.settled]

    def registrations(self, *, replaced: bool = True) -> list[BackgroundFetchRegistration]:
        """Every known registration, oldest first: active, settled, and earlier kernels'.

        ``replaced=False`` leaves out those that a newer registration with the same id
        replaced (they keep their files until deleted): what ``%bgfetch list`` shows.
        """
        self._ensure_started()
        regs = list(self._registrations.values())
        if replaced:
            return regs
        newest: dict[str, BackgroundFetchRegistration] = {}
        for reg in regs:
            current = newest.get(reg.id)
            if current is None or reg.created >= current.created:
                newest[reg.id] = reg
        keep = {id(r) for r in newest.values()}
        return [r for r in regs if id(r) in keep]

    def delete(self, id: str | BackgroundFetchRegistration, *, all: bool = False) -> int:
        """Forget the latest registration with this id: its records, files and rows.

        Older registrations with the same id stay (``all=True`` deletes every one).
        Returns how many were deleted. An active one must be aborted first. Files that
        a newer registration re-downloaded in place are left to that one.
        """
        self._ensure_started()
        if isinstance(id, BackgroundFetchRegistration):
            targets = [id]
        else:
            same = [r for r in self._registrations.values() if r.id == id]
            if not same:
                raise KeyError(f"no registration with id {id!r}; see mgr.registrations()")
            if all:
                targets = same
            else:
                latest = self._latest(id)
                assert latest is not None
                targets = [latest]
        for reg in targets:
            if not reg.settled:
                where = ""
                if reg.read_only:
                    where = (
                        f" (from here or in the process downloading it: {self._owner_label(reg)})"
                    )
                raise InvalidStateError(
                    f"registration {reg.id!r} is still {reg.state}; abort() it{where} "
                    "before deleting"
                )
        for reg in targets:
            self._engine.run(self._delete(reg))
        return len(targets)

    async def _delete(self, reg: BackgroundFetchRegistration) -> None:
        assert self._store is not None
        shared = {
            p
            for other in self._registrations.values()
            if other is not reg
            for od in self._job_of(other).records
            for p in (od.final_path, od.part_path)
            if p is not None
        }
        remote = self._job_of(reg).remote is not None
        for d in self._job_of(reg).records:
            for path in (d.final_path, d.part_path):
                if (
                    remote
                    and path is d.final_path
                    and not isinstance(path, Path)
                    and d.state != "success"
                ):
                    continue  # an object this record did not upload (never ours to delete)
                if path is not None and path not in shared:
                    with contextlib.suppress(OSError):
                        path.unlink()
                    self._names.release(path)
        failed = self._job_of(reg).dest / FAILED_FOLDER
        for folder in (failed / self._job_of(reg).key, failed, self._job_of(reg).dest):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        self._store.delete_registration(self._job_of(reg).key)
        self._job_of(reg).records_available = False
        self._registrations.pop(self._job_of(reg).key, None)
        self._callbacks.post(self._notify_change, reg)

    def add_event_listener(self, type: str, handler: Callable[[BackgroundFetchEvent], Any]) -> None:
        """``backgroundfetchsuccess``, ``...fail``, ``...abort`` or ``...click``.

        Handlers run on ipybgfetch's callback thread, one at a time, in order.
        """
        self._listeners.add(type, handler)

    def remove_event_listener(
        self, type: str, handler: Callable[[BackgroundFetchEvent], Any]
    ) -> None:
        self._listeners.remove(type, handler)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return mimebundle("manager", self, include, exclude)

    def __repr__(self) -> str:
        if self._closed:
            return f"<BackgroundFetchManager home={str(self.home)!r} (closed)>"
        if not self._started:
            return f"<BackgroundFetchManager home={str(self.home)!r}>"
        regs = self.registrations()
        active = sum(1 for r in regs if not r.settled)
        lines = [
            f"<BackgroundFetchManager home={str(self.home)!r}: {len(regs)} registrations, "
            f"{active} active>"
        ]
        lines += [f"  {r!r}" for r in reversed(regs[-20:])]
        return "\n".join(lines)

    # -- events ----------------------------------------------------------------------------
    def _dispatch_settled(self, reg: BackgroundFetchRegistration, type: str) -> None:
        if type in ("backgroundfetchsuccess", "backgroundfetchfail"):
            event: BackgroundFetchEvent = BackgroundFetchUpdateUIEvent(type, reg)
        else:
            event = BackgroundFetchEvent(type, reg)
        self._run_handlers(event)

    def _dispatch_click(self, reg: BackgroundFetchRegistration) -> None:
        self._callbacks.post(self._run_handlers, BackgroundFetchEvent("backgroundfetchclick", reg))

    def _run_handlers(self, event: BackgroundFetchEvent) -> None:
        if isinstance(event, BackgroundFetchUpdateUIEvent):
            event._dispatching = True
        try:
            with output_to(event.registration._output_target):
                self._call_handlers(event)
        finally:
            if isinstance(event, BackgroundFetchUpdateUIEvent):
                event._dispatching = False

    def _call_handlers(self, event: BackgroundFetchEvent) -> None:
        for handler in self._listeners.get(event.type):
            try:
                handler(event)
            except BaseException as exc:  # a user's handler: even SystemExit
                self._callbacks.report(exc, handler)

    def _add_change_listener(self, cb: Callable[[BackgroundFetchRegistration], Any]) -> None:
        with self._lock:
            if cb not in self._change_listeners:
                self._change_listeners.append(cb)

    def _remove_change_listener(self, cb: Callable[[BackgroundFetchRegistration], Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._change_listeners.remove(cb)

    def _has_change_listeners(self) -> bool:
        return bool(self._change_listeners)

    def _notify_change(self, reg: BackgroundFetchRegistration) -> None:
        for cb in list(self._change_listeners):
            try:
                cb(reg)
            except BaseException as exc:  # a user's handler: even SystemExit
                self._callbacks.report(exc, cb)

    # -- HTTP ------------------------------------------------------------------------------
    async def _client(self) -> Client:
        """The shared HTTP client. Built once, in a worker thread: importing the transport
        and loading the CA certificates takes ~0.3 s, which must not stall the loop (nor
        make the first fetch() slow to return)."""
        if self._http is None:
            if self._http_building is None:
                loop = asyncio.get_running_loop()
                self._http_building = loop.run_in_executor(None, self._build_client)
            # shielded: a transfer cancelled while waiting must not cancel the build
            client = await asyncio.shield(self._http_building)
            if self._http is None:
                self._http = client
        return self._http

    def _build_client(self) -> Client:
        options: dict[str, Any] = {
            "follow_redirects": True,
            "limits": httpx.Limits(max_connections=None, max_keepalive_connections=256),
            "timeout": self._policy.timeout(),
        }
        options.update(self._client_options)
        return make_client(options)

    def _host_semaphore(self, url: str) -> asyncio.Semaphore:
        """The connection limit of the URL's origin (scheme://host:port, as written)."""
        m = _ORIGIN.match(url)
        key = m.group(0).lower() if m else url
        sem = self._semaphores.get(key)
        if sem is None:
            sem = self._semaphores[key] = asyncio.Semaphore(self._per_host)
        return sem

    def _destination(self, id: str, dest: str | os.PathLike[str] | None, *, create: bool) -> Path:
        if dest is None:
            folder = self.home / "files" / safe_filename(id, default="fetch")
        else:
            if not isinstance(dest, (str, os.PathLike)):
                raise FetchError(f"dest must be a folder path, got {type(dest).__name__}")
            folder = Path(dest).expanduser().absolute()
        probe = nearest_existing(folder)
        if not create:
            if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
                raise FetchError(
                    f"cannot create the destination folder {folder}: {probe} is not a "
                    "writable folder; pass dest= a folder you can write to"
                )
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FetchError(
                f"cannot create the destination folder {folder}: {exc.strerror or exc}; "
                "pass dest= a folder you can write to"
            ) from None
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise FetchError(
                f"the destination {folder} is not a writable folder; pass dest= a folder "
                "you can write to"
            )
        return folder

    # -- the database (engine thread) ------------------------------------------------------
    def _store_records(self, job: Job, records: list[RecordData]) -> None:
        if self._store is None or job.read_only:
            return
        self._store.update_records(job.key, [record_row(d) for d in records])

    def _store_registration(self, job: Job) -> None:
        if self._store is None or job.read_only:
            return
        row = registration_row(job)
        row.pop("key")
        self._store.update_registration(job.key, **row)

    def _reopen(self, job: Job) -> None:
        """A settled registration becomes active again (retry): this process holds it
        (the job then stops mirroring)."""
        if self._store is None:
            raise _closed_error()
        try:
            self._store.reopen(job.key)
        except IdInUse:
            raise self._active_elsewhere(job.id) from None

    def _store_release(self, key: str) -> None:
        if self._store is not None:
            self._store.release(key)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_interval())
            try:
                self._beat()
            except Exception as exc:  # the database may be locked briefly; say so, go on
                self._callbacks.report(exc, self._heartbeat)

    def _beat(self) -> None:
        assert self._store is not None
        mine = [job.key for job in self._jobs() if not job.settled and not job.read_only]
        if mine:
            for key in self._store.heartbeat(mine):  # taken over while we were stalled
                reg = self._registrations.get(key)
                if reg is not None:
                    self._job_of(reg).lose_lease()
        mirrors = any(r.read_only for r in self._registrations.values())
        if mirrors or time.time() - self._last_scan > lease_timeout():
            self._restore()

    # -- control from other processes (intents through the store) -----------------------
    async def _intents(self) -> None:
        """Pick up what other processes did: intents for the registrations this process
        owns, and registrations another process deleted (dropped here too)."""
        while True:
            await asyncio.sleep(INTENT_POLL)
            try:
                assert self._store is not None
                version = self._store.data_version()
                if version == self._seen_version:
                    continue  # nobody else wrote to the database meanwhile
                self._seen_version = version
                if any(not job.settled and not job.read_only for job in self._jobs()):
                    for row in self._store.pending_intents():
                        await self._apply_intent(row)
                self._drop_deleted()
            except Exception as exc:  # the database may be locked briefly; say so, go on
                self._callbacks.report(exc, self._intents)

    def _drop_deleted(self) -> None:
        """Settled registrations whose rows another process deleted leave this one too."""
        assert self._store is not None
        keys = self._store.keys()
        for key, reg in list(self._registrations.items()):
            if key not in keys and reg.settled:
                self._job_of(reg).records_available = False
                self._registrations.pop(key, None)
                self._callbacks.post(self._notify_change, reg)

    async def _apply_intent(self, row: Any) -> None:
        assert self._store is not None
        key, intent, intent_id, by = row["key"], row["intent"], row["intent_id"], row["intent_by"]
        reg = self._registrations.get(key)
        answer = "0"
        new_owner = ""
        try:
            if reg is None or reg.settled:
                answer = "0"
            elif intent == "pause":
                answer = str(int(await self._job_of(reg).pause()))
            elif intent == "resume":
                answer = str(int(await self._job_of(reg).resume(None, None)))
            elif intent == "abort":
                answer = str(int(await self._job_of(reg).abort()))
            elif intent == "handover":
                await self._job_of(reg).hand_over()
                answer, new_owner = "1", by
            else:
                answer = f"unknown intent {intent!r}"
        except Exception as exc:  # e.g. resume() of needs-credentials: the asker says it
            answer = str(exc) or type(exc).__name__
        log.info(
            "%s: %s asked by another process: %s",
            reg.id if reg else key,
            intent,
            answer,
        )
        self._store.answer_intent(key, intent_id, answer, new_owner)

    def _control_elsewhere(
        self,
        reg: BackgroundFetchRegistration,
        intent: str,
        *,
        timeout: float = CONTROL_TIMEOUT,
    ) -> bool | None:
        """The asker's side: ``reg`` is downloaded by another process sharing the home.
        Write the intent to the store and wait (briefly) for that process's answer: True
        if it did it, False if there was nothing to do. A dead owner is taken over
        instead: None, and the caller acts here."""
        assert self._store is not None
        store = self._store
        intent_id = self._engine.run(_call(store.send_intent, self._job_of(reg).key, intent))
        deadline = time.monotonic() + timeout
        while True:
            row = self._engine.run(_call(store.intent_state, self._job_of(reg).key))
            if row is None:
                raise InvalidStateError(f"registration {reg.id!r} was deleted meanwhile")
            result = row["intent_result"] or ""
            if result.startswith(intent_id + ":"):
                answer = result[len(intent_id) + 1 :]
                self._engine.run(_call(self._restore))  # mirror the owner's new state now
                if answer in ("0", "1"):
                    return answer == "1"
                raise InvalidStateError(
                    f"{intent} of {reg.id!r} failed in {self._owner_label(reg)}: {answer}"
                )
            stale = row["heartbeat"] is None or row["heartbeat"] < time.time() - lease_timeout()
            if row["owner"] is None or stale:
                self._engine.run(_call(self._restore))  # nobody alive holds it: take it over
                if not self._job_of(
                    reg
                ).read_only:  # ours now: withdraw the intent, the caller acts
                    self._engine.run(_call(store.send_intent, self._job_of(reg).key, ""))
                    return None
            if time.monotonic() > deadline:
                raise InvalidStateError(
                    f"{self._owner_label(reg)} downloads {reg.id!r} and did not answer "
                    f"the {intent} request within {timeout:.0f} s; try again, or stop that "
                    "process and this one takes the registration over"
                )
            time.sleep(INTENT_POLL / 2)

    def _take_over(self, reg: BackgroundFetchRegistration) -> None:
        """Make this process the owner of ``reg`` (the owner hands it over, or it is
        dead): afterwards this process downloads it, with whatever credentials it has."""
        if not reg.read_only:
            return
        answered = self._control_elsewhere(reg, "handover")
        if reg.read_only:
            raise InvalidStateError(
                f"could not take {reg.id!r} over from {self._owner_label(reg)}"
                + ("" if answered else " (it refused)")
            )

    def _owner_label(self, reg: BackgroundFetchRegistration) -> str:
        """``process 1234 on host (notebook analysis.ipynb)``, for messages."""
        if self._store is None:
            return "another process"
        try:
            info = self._engine.run(_call(self._store.owner_of, self._job_of(reg).key))
        except Exception:
            info = None
        if not info:
            return "another process"
        text = f"process {info.get('pid') or '?'} on {info.get('host') or '?'}"
        if info.get("notebook"):
            text += f" (notebook {info['notebook']})"
        return text

    def _restore(self) -> None:
        """Load registrations from the database: earlier kernels' and other processes'."""
        self._last_scan = time.time()
        assert self._store is not None
        restore_into(
            self._store,
            {key: self._job_of(reg) for key, reg in self._registrations.items()},
            self._restored,
            self._added,
            home=self.home,
            auto_resume=self._auto_resume,
        )

    def _new_registration(
        self, *, restored: bool = False, **fields: Any
    ) -> BackgroundFetchRegistration:
        """A job (the engine's state) and the registration that shows it."""
        job = Job(self._host, **fields)
        reg = BackgroundFetchRegistration(self, job, self._registration_host, restored=restored)
        self._job_of_reg[reg] = job
        return reg

    def _job_of(self, reg: BackgroundFetchRegistration) -> Job:
        return self._job_of_reg[reg]

    def _restored(self, **fields: Any) -> Job:
        """A registration of an earlier kernel (or another process), for restore."""
        reg = self._new_registration(restored=True, policy=self._policy, **fields)
        self._registrations[fields["key"]] = reg
        return self._job_of(reg)

    def _added(self, job: Job) -> None:
        self._callbacks.post(self._notify_change, self._registrations[job.key])

    def _jobs(self) -> list[Job]:
        return [self._job_of(reg) for reg in list(self._registrations.values())]


def _is_remote(dest: Any) -> bool:
    """An fsspec URL (``s3://...``) rather than a folder (without importing fsspec)."""
    if isinstance(dest, str):
        scheme, sep, _ = dest.partition("://")
        return bool(sep) and scheme.isidentifier()
    return type(dest).__name__ == "RemoteDest"


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a store call on the engine thread (``engine.run(_call(store.x, ...))``)."""
    return fn(*args)


def _notebook_path() -> str:
    """The notebook this kernel runs, when the front end tells (JupyterLab/Notebook set
    ``JPY_SESSION_NAME``; VS Code sets ``__vsc_ipynb_file__``), else ""."""
    path = os.environ.get("JPY_SESSION_NAME", "")
    if path:
        return path
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    ns = getattr(shell, "user_ns", None) or {}
    value = ns.get("__vsc_ipynb_file__") or ns.get("__session__") or ""
    return str(value) if value else ""


def _files_intact(job: Job, checksum: bool) -> bool:
    """Every record's file is there with the size it had (and, with ``checksum``, the
    SHA-256 recorded when it arrived). Runs in a worker thread."""
    import hashlib

    for d in job.records:
        if d.final_path is None:
            return False
        try:
            size = d.final_path.stat().st_size
        except OSError:
            return False
        if size != d.downloaded:
            return False
        if checksum and d.sha256:
            h = hashlib.sha256()
            try:
                with d.final_path.open("rb") as f:  # a Path, or an object (fsspec)
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError:
                return False
            if h.hexdigest() != d.sha256:
                return False
    return True


def _replace_files_of(job: Job, old: Job) -> bool:
    """A new registration under a settled id, in the same folder: each of its requests
    that the old one fetched is written to the old file's name (through a ``.part`` and
    an atomic rename), never to a ``-2`` copy beside it.

    Returns True when the new one took over every file of the old one (a ``force`` re-run,
    or a re-run whose files had gone): the old registration then has nothing of its own
    left, and is forgotten rather than listed beside the new one."""
    paths: dict[tuple[str, str], list[Path]] = {}
    for d in old.records:
        if d.final_path is not None and d.state == "success":
            paths.setdefault((d.request.method, d.request.url), []).append(d.final_path)
    for d in job.records:
        free = paths.get((d.request.method, d.request.url))
        if free:
            d.final_path = free.pop(0)
            d.part_path = d.final_path.parent / (d.final_path.name + ".part")
    return all(d.state == "success" for d in old.records) and not any(paths.values())


def _refuse_range(headers: httpx.Headers, requests: list[Request]) -> None:
    """A Range header of the user's is refused: ipybgfetch sends Range itself to resume a
    dropped transfer, so a partial answer to the user's range could not be told apart
    from one to a resume (a file of the wrong bytes, or a resume past the range)."""
    value, where = headers.get("range"), "headers="
    if value is None:  # only requests with headers of their own are looked at (most have none)
        hit = next((r for r in requests if r.headers and "range" in r.headers), None)
        if hit is not None:
            value, where = hit.headers["range"], f"the request for {hit.url}"
    if value is not None:
        raise FetchError(
            f"a Range header ({value!r} in {where}) is not supported: ipybgfetch "
            "sends Range itself to resume dropped downloads. Fetch the whole file and "
            "slice it, or use httpx directly for a part of a file"
        )


def _request_list(requests: Any) -> list[Any]:
    if isinstance(requests, (str, Request, httpx.URL)):
        return [requests]
    if requests is None:
        raise FetchError("requests is None; pass a URL or a list of URLs/Requests")
    try:
        items = [r if not isinstance(r, tuple) else _from_pair(r) for r in requests]
    except TypeError:
        raise FetchError(
            "requests must be a URL, an ipybgfetch.Request, or a list of them; "
            f"got {type(requests).__name__}"
        ) from None
    if not items:
        raise FetchError("the list of requests is empty; pass at least one URL")
    return items


def _from_pair(pair: tuple[Any, ...]) -> Request:
    """A (url, integrity) pair, as a Registry yields."""
    if len(pair) == 2 and isinstance(pair[0], str):
        return Request(pair[0], integrity=pair[1] or None)
    raise FetchError(f"a request tuple must be (url, integrity), got {pair!r}")


def _download_total(value: Any) -> int:
    if isinstance(value, bool):
        raise FetchError("download_total must be a number of bytes or a size like '2GB'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise FetchError(f"download_total must be >= 0 bytes (0 = no limit), got {value}")
        return value
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ValueError as exc:
            raise FetchError(f"download_total: {exc}") from None
    raise FetchError(f"download_total must be an int (bytes) or a size like '2GB', got {value!r}")


def _segment_options(segments: Any, min_segment_size: Any) -> tuple[int | None, int]:
    if segments is not None and (
        isinstance(segments, bool) or not isinstance(segments, int) or segments < 1
    ):
        raise FetchError(
            f"segments must be an int >= 1 (connections per file; 1 = never split) or "
            f"None for the default, got {segments!r}"
        )
    if min_segment_size is None:
        return segments, DEFAULT_MIN_SEGMENT
    try:
        if isinstance(min_segment_size, bool):
            raise ValueError("not a size")
        size = parse_size(min_segment_size)
    except (ValueError, TypeError) as exc:
        raise FetchError(
            f"min_segment_size must be a number of bytes or a size like '16MiB': {exc}"
        ) from None
    if size < 1:
        raise FetchError(f"min_segment_size must be at least 1 byte, got {min_segment_size!r}")
    return segments, size


def _close_at_exit(ref: weakref.ref[BackgroundFetchManager]) -> None:
    """At interpreter exit: checkpoint and release leases, so the next kernel resumes at once."""
    mgr = ref()
    if mgr is not None:
        mgr.close()


_default: BackgroundFetchManager | None = None
_default_lock = threading.Lock()


def manager() -> BackgroundFetchManager:
    """The process-wide default manager.

    Its home is ``$IPYBGFETCH_HOME`` or the per-user data folder. It resumes unfinished
    registrations of earlier kernels when it starts, unless ``IPYBGFETCH_AUTO_RESUME=0``.
    """
    global _default
    with _default_lock:
        if _default is None or _default.is_closed:
            auto = os.environ.get("IPYBGFETCH_AUTO_RESUME", "1").strip().lower()
            _default = BackgroundFetchManager(auto_resume=auto not in ("0", "false", "no", "off"))
        return _default


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a background step's error as retrieved (whoever awaits it gets it raised)."""
    if not future.cancelled():
        future.exception()


def _closed_error() -> InvalidStateError:
    return InvalidStateError(
        "this manager was closed; its unfinished registrations stay resumable: "
        "create a new BackgroundFetchManager (or call ipybgfetch.manager()) on the "
        "same home to continue them"
    )
