"""``mgr.fetch(id, urls, dest="s3://bucket/prefix/", cluster=client)``: the records run on
a ``dask.distributed`` cluster; the registration in this process follows them.

Imported only when ``cluster=`` is given (``pip install "ipybgfetch[cluster]"``).

How it works (Dask's scheduler does the scheduling; nothing here is a scheduler):

- The unsettled records are cut into *shards* by count and by bytes (sizes known from an
  earlier run count; unknown ones count as zero), at least two per worker so that Dask can
  balance them. Each shard is one Dask task, :func:`run_shard`.
- On a worker, a shard runs on an ordinary ipybgfetch engine (one manager per worker
  process, its home in the worker's local directory) and writes to the shared destination:
  object storage, or a shared folder (taken as ``file://``). Object names are fixed by
  this process at fetch() time and travel with the shard, so every worker agrees.
- Live progress: every ~0.25 s a shard logs an event (``worker.log_event``) under the
  registration's topic with the records that changed; this process subscribes to the topic
  and applies them to the local registration on its engine thread. So the registration's
  progress events, ``%bgfetch list`` and the panel show bytes, files and rate as for a local
  run, and its snapshot has a per-worker breakdown under ``"cluster"``.
- Control: a ``distributed.Variable`` per registration holds ``active``/``paused``/
  ``aborted``/``stopped``; shards read it every ~0.25 s (so pause, resume and abort reach
  every worker within about half a second).
- Results: each shard returns every record's outcome (state, failure, status, bytes,
  sha256, headers, error), applied to the local records, which the local store keeps.
- Worker loss: Dask reschedules the lost shard on another worker; there, records whose
  objects already exist complete (uploaded for the same URL, same size and sha256) settle
  without a request. A shard that keeps failing (Dask gives up: ``KilledWorker``, or an
  error) fails its unsettled records with that reason.
- ``download_total`` is enforced per shard on the workers and for the sum here (a total
  over the limit fails the registration with ``download-total-exceeded`` and aborts the
  shards); the check for the sum happens when progress arrives, so a few chunks past the
  limit may be fetched before the shards stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ._exceptions import FetchError

if TYPE_CHECKING:
    from ._engine.cloud import RemoteDest
    from ._engine.job import Job
    from ._engine.record import RecordData
    from ._vocab import ClusterSnapshot, ClusterWorkerSnapshot, FailureReason

__all__ = ["ClusterRun", "check_cluster", "run_shard"]

CLUSTER_EXTRA = 'pip install "ipybgfetch[cluster]"'
SHARD_RECORDS = 100  # records per shard, at most
SHARD_BYTES = 2 * 2**30  # bytes per shard, at most (of the sizes known in advance)
SHARDS_PER_WORKER = 2  # at least this many shards per worker, when there are records enough
REPORT_INTERVAL = 0.25  # seconds between a shard's progress events and control reads
SHARD_RETRIES = 1  # Dask re-runs a shard that raised once; lost workers: Dask's own limit
_RECORD_FIELDS = (
    "state",
    "failure",
    "status",
    "downloaded",
    "total",
    "sha256",
    "error",
    "attempts",
    "started",
    "finished",
    "response_url",
    "etag",
    "last_modified",
)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise FetchError(
            f"cluster= needs dask.distributed: {CLUSTER_EXTRA}, then pass a distributed.Client"
        ) from None
    return distributed


def check_cluster(cluster: Any, dest: Any) -> Any:
    """fetch() time: ``cluster`` is a running, synchronous Client and ``dest`` something
    every worker can write to. Returns the dest to use (a shared folder as ``file://``)."""
    distributed = _distributed()
    if not isinstance(cluster, distributed.Client):
        raise FetchError(
            "cluster= must be a dask.distributed.Client, e.g. "
            "Client(LocalCluster()) or Client('tcp://scheduler:8786'); got "
            f"{type(cluster).__name__}"
        )
    if cluster.status not in ("running", "connecting", "newly-created"):
        raise FetchError(f"the dask Client given as cluster= is {cluster.status}; pass an open one")
    if getattr(cluster, "asynchronous", False):
        raise FetchError(
            "cluster= needs a synchronous dask Client (Client(...), not "
            "Client(..., asynchronous=True))"
        )
    if dest is None:
        raise FetchError(
            "cluster= needs a dest every worker can write to: object storage "
            "(dest='s3://bucket/prefix/') or a shared folder (dest='/shared/data')"
        )
    if isinstance(dest, str) and "://" in dest:
        return dest
    if type(dest).__name__ == "RemoteDest":
        return dest
    return "file://" + os.path.abspath(os.path.expanduser(os.fspath(dest)))


def shards(records: list[RecordData], n_workers: int) -> list[list[RecordData]]:
    """Cut the records into shards of at most SHARD_RECORDS records and SHARD_BYTES known
    bytes, and into at least SHARDS_PER_WORKER per worker when there are enough records."""
    if not records:
        return []
    wanted = max(1, n_workers) * SHARDS_PER_WORKER
    per_shard = max(1, min(SHARD_RECORDS, math.ceil(len(records) / wanted)))
    out: list[list[RecordData]] = [[]]
    size = 0
    for d in records:
        known = d.total or 0
        if out[-1] and (len(out[-1]) >= per_shard or size + known > SHARD_BYTES):
            out.append([])
            size = 0
        out[-1].append(d)
        size += known
    return out


class ClusterRun:
    """The local side of a registration whose records run on a Dask cluster.

    :meth:`start` (from the registration's ``_start``) runs :meth:`follow`, the
    registration's only task while it is active, or wakes it: it submits shards for the
    unsettled records that no live shard owns (the first start, a retry), then sleeps
    until the registration settles. Each record is *owned* by the shard that runs it;
    progress and results of any other shard (one that was still finishing when the
    registration settled and was retried) are ignored. Everything here runs on the engine
    thread except the Dask calls, made in executor threads, and the thread per batch of
    shards that waits for their futures.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._futures: dict[int, Any] = {}  # shard number -> dask Future
        self._members: dict[int, list[int]] = {}  # shard number -> record indexes
        self._owner: dict[int, int] = {}  # record index -> the shard number running it
        self._shard_info: dict[int, dict[str, Any]] = {}  # latest progress per shard
        self._done_shards: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._topic = ""
        self._control = ""
        self._subscribed = False
        self._stop = threading.Event()

    # -- the registration's task (engine thread) ---------------------------------------------
    def start(self, job: Job) -> None:
        """Follow the registration (again), or wake the follower (a retry while it runs)."""
        if self._task is not None and not self._task.done():
            if self._wake is not None:
                self._wake.set()
            return
        self._task = job.host.engine.spawn(self.follow(job), name=f"bgfetch:{job.id}")
        job.tasks.add(self._task)

    async def follow(self, job: Job) -> None:
        """Submit shards for the records nobody runs, until the registration settles."""
        loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        try:
            await loop.run_in_executor(None, self._open, job)
            while not job.settled:
                wake.clear()
                todo = [d for d in job.records if not d.settled and d.index not in self._owner]
                if todo:
                    await loop.run_in_executor(None, self._submit, job, todo)
                    continue
                await wake.wait()
        except asyncio.CancelledError:
            # abort() or download_total (the registration is stopping), pause(), or the
            # manager closing: tell every shard, without waiting for the answer here.
            if job.stopping:
                self._signal("aborted")
                self._owner.clear()
            elif job.state == "paused":
                self._signal("paused")
            else:  # the manager is closing: the shards stop, and their news is not applied
                self._signal("stopped")
                self._close()
            raise
        finally:
            job.tasks.discard(asyncio.current_task())
            if job.settled or job.stopping:
                self._close()

    def _open(self, job: Job) -> None:
        """In an executor thread: the control variable set active, the topic subscribed."""
        distributed = _distributed()
        self._topic = f"ipybgfetch-{job.key}"
        self._control = f"ipybgfetch-control-{job.key}"
        distributed.Variable(self._control, client=self.client).set("active")
        if not self._subscribed:
            self._stop = threading.Event()
            engine = job.host.engine
            self.client.subscribe_topic(
                self._topic, lambda event: engine.call_soon(self._progress, job, event[1])
            )
            self._subscribed = True

    def _submit(self, job: Job, todo: list[RecordData]) -> None:
        """In an executor thread: one task per shard of ``todo`` and a thread watching them."""
        client = self.client
        try:
            n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        except TypeError:  # older distributed: no n_workers argument
            n_workers = len(client.scheduler_info().get("workers", {}))
        remote: RemoteDest = job.remote
        names = remote.names  # every record's object name, fixed at fetch()
        assert names is not None
        headers = _Hidden([(k, v) for k, v in job.headers.multi_items()])
        batch: dict[int, Any] = {}
        for members in shards(todo, n_workers):
            number = len(self._members)
            spec: dict[str, Any] = {
                "key": job.key,
                "id": job.id,
                "shard": number,
                "indexes": [d.index for d in members],
                # request headers and storage_options may hold credentials: in memory and
                # on the wire only, and never in a log line (their repr hides them)
                "requests": _Hidden([_request_tuple(d) for d in members]),
                "names": [names[d.index] for d in members],
                "remote": remote,
                "headers": headers,
                "download_total": job.download_total,
                "per_host": job.host.per_host,
                # the class workers build their manager with (pickled by reference): this
                # module never imports the manager, which imports it
                "manager_class": job.host.manager_class,
                "topic": self._topic,
                "control": self._control,
            }
            self._members[number] = spec["indexes"]
            for index in spec["indexes"]:
                self._owner[index] = number
            self._futures[number] = batch[number] = client.submit(
                run_shard,
                spec,
                key=f"ipybgfetch-shard-{job.key}-{number}",
                pure=False,
                retries=SHARD_RETRIES,
            )
        threading.Thread(
            target=self._wait_shards,
            args=(job, batch, self._stop),
            name="ipybgfetch-cluster",
            daemon=True,
        ).start()

    def _wait_shards(self, job: Job, batch: dict[int, Any], stop: threading.Event) -> None:
        """A thread: hand each finished shard of ``batch`` to the engine thread."""
        distributed = _distributed()
        engine = job.host.engine
        by_key = {f.key: n for n, f in batch.items()}
        left = dict(batch)
        try:
            for future in distributed.as_completed(list(batch.values())):
                if stop.is_set():
                    return
                number = by_key[future.key]
                left.pop(number, None)
                self._hand_over(job, number, future, engine)
        except Exception as exc:  # the client itself went away: no shard will report
            for number in left:
                with contextlib.suppress(RuntimeError):
                    engine.call_soon(
                        self._shard_done, job, number, (False, f"{type(exc).__name__}: {exc}")
                    )

    def _hand_over(self, job: Job, number: int, future: Any, engine: Any) -> None:
        try:
            if future.cancelled():
                outcome: tuple[bool, Any] = (False, "cancelled")
            else:
                outcome = (True, future.result())
        except BaseException as exc:  # the shard failed for good (KilledWorker, an error)
            outcome = (False, f"{type(exc).__name__}: {exc}")
        # Dask forgets it: a finished shard is not recomputed when its worker goes
        future.release()
        with contextlib.suppress(RuntimeError):  # the engine stopped (manager closed)
            engine.call_soon(self._shard_done, job, number, outcome)

    # -- applied on the engine thread -------------------------------------------------------
    def _progress(self, job: Job, msg: dict[str, Any]) -> None:
        shard = int(msg.get("shard", -1))
        if shard in self._done_shards or shard not in self._members:
            return
        self._shard_info[shard] = {
            "worker": msg.get("worker", ""),
            "downloaded": msg.get("downloaded", 0),
            "files": msg.get("files", 0),
            "records": msg.get("records_total", 0),
            "rate": msg.get("rate", 0.0),
        }
        if not (job.settled or job.stopping):
            self._apply(job, shard, msg.get("records", []))

    def _shard_done(self, job: Job, number: int, outcome: tuple[bool, Any]) -> None:
        if number in self._done_shards:
            return
        self._done_shards.add(number)
        self._shard_info.setdefault(number, {"worker": "", "downloaded": 0, "files": 0})
        self._shard_info[number]["rate"] = 0.0
        ok, value = outcome
        if not ok and value == "cancelled":  # not by abort() (that stops the registration)
            value = "it was cancelled: was the dask Client closed?"
        if not (job.settled or job.stopping):
            if ok:
                self._apply(job, number, value, final=True)
            left = [
                i
                for i in self._members.get(number, [])
                if self._owner.get(i) == number and not job.records[i].settled
            ]
            if left and not job.settled:
                reason = (
                    "its shard ended without it"
                    if ok
                    else f"its shard failed on the cluster ({value})"
                )
                # Its worker may have finished some before dying, unreported: their objects
                # decide. The records stay owned (not re-run) until that is known.
                task = job.host.engine.spawn(
                    self._settle_left(job, number, left, reason), name=f"bgfetch:{job.id}"
                )
                job.tasks.add(task)
                task.add_done_callback(job.tasks.discard)
                return
        self._release(job, number)

    def _release(self, job: Job, number: int) -> None:
        for index in self._members.get(number, []):
            if self._owner.get(index) == number:
                del self._owner[index]
        self._settled_check(job, wake=True)

    async def _settle_left(self, job: Job, number: int, left: list[int], reason: str) -> None:
        """A shard ended without settling these records: a record whose object is there,
        complete (uploaded for its URL, or matching its integrity), succeeded; the others
        fail with the shard's reason."""
        import httpx

        from ._models import Response

        loop = asyncio.get_running_loop()
        remote = job.remote
        try:
            there = await loop.run_in_executor(None, remote.listing)
        except Exception:
            there = set()
        try:
            for index in left:
                d = job.records[index]
                found = None
                name = remote.names[index] if remote.names else ""
                if name in there and hasattr(d.final_path, "path"):
                    with contextlib.suppress(Exception):
                        found = await loop.run_in_executor(
                            None, remote.existing, d.final_path, d.request.url, d.request.integrity
                        )
                if d.settled or job.settled or self._owner.get(index) != number:
                    continue
                if found:
                    d.status, d.total, d.sha256 = 200, found["size"], found["sha256"]
                    d.response_url = d.response_url or d.request.url
                    headers = {"content-length": str(found["size"])}
                    if found["content_type"]:
                        headers["content-type"] = found["content_type"]
                    d.response_headers = httpx.Headers(headers)
                    if d.response is None:
                        d.response = Response(d)
                    job.add_downloaded(d, found["size"] - d.downloaded)
                    d.error = ""
                    job.settle_record(d, "success", "")
                else:
                    d.error = f"{reason}; the other records were not affected"
                    d.final_path = None
                    job.settle_record(d, "failure", "fetch-error")
        finally:
            self._release(job, number)

    def _settled_check(self, job: Job, wake: bool = False) -> None:
        """Once the registration settles, no shard owns a record any more (a retry runs
        its records in new shards; late news of the old ones is ignored), and the
        follower ends."""
        if job.settled:
            self._owner.clear()
        if (wake or job.settled) and self._wake is not None:
            self._wake.set()

    def _apply(
        self,
        job: Job,
        shard: int,
        updates: list[dict[str, Any]],
        final: bool = False,
    ) -> None:
        import httpx

        from ._models import Response

        for u in updates:
            index = u["index"]
            d = job.records[index]
            if d.settled or job.settled or self._owner.get(index) != shard:
                continue
            state = u["state"]
            for name in _RECORD_FIELDS:
                if name in ("state", "downloaded"):
                    continue
                value = u.get(name)
                if value is not None:
                    setattr(d, name, value)
            if u.get("headers") is not None:
                d.response_headers = httpx.Headers(u["headers"])
            if d.status and d.response is None:
                d.response = Response(d)
            delta = int(u.get("downloaded") or 0) - d.downloaded
            if delta:
                job.add_downloaded(d, delta)
            if state in ("success", "failure", "aborted"):
                failure: FailureReason = u.get("failure") or ""
                if state != "success":
                    d.final_path = None  # a failed record's body stayed on its worker
                if state == "aborted":  # aborted on its worker, not here
                    state, failure = "failure", failure or "fetch-error"
                    d.error = d.error or "aborted on its worker"
                job.settle_record(d, state, failure)
                if job.settled:
                    self._settled_check(job)
                    return
                if failure == "download-total-exceeded":
                    job.fail_now(d, "download-total-exceeded", d.error)
                    return
            elif not final:
                d.state = state
                job.mark_dirty(d)
        limit = job.download_total
        if limit and job.downloaded > limit and not job.settled:
            culprit = next((d for d in job.records if not d.settled), None)
            if culprit is not None:
                job.fail_now(
                    culprit,
                    "download-total-exceeded",
                    f"download_total of {limit} bytes exceeded by the cluster's records",
                )

    def snapshot(self) -> ClusterSnapshot:
        """The per-worker breakdown for the registration's snapshot (key ``"cluster"``)."""
        workers: dict[str, ClusterWorkerSnapshot] = {}
        for number, info in list(self._shard_info.items()):
            name = info.get("worker") or "?"
            w = workers.setdefault(
                name, {"worker": name, "downloaded": 0, "files": 0, "rate": 0.0, "shards": 0}
            )
            w["downloaded"] += info.get("downloaded", 0)
            w["files"] += info.get("files", 0)
            w["rate"] += info.get("rate", 0.0)
            w["shards"] += number not in self._done_shards
        return {
            "scheduler": getattr(getattr(self.client, "scheduler", None), "address", ""),
            "shards_total": len(self._futures),
            "shards_done": len(self._done_shards),
            "workers": sorted(workers.values(), key=lambda w: w["worker"]),
        }

    # -- control ----------------------------------------------------------------------------
    def _set_control(self, state: str) -> None:
        if self._control:
            _distributed().Variable(self._control, client=self.client).set(state)

    def _signal(self, state: str) -> None:
        """Set the control state from the engine thread without blocking it."""
        thread = threading.Thread(
            target=self._signal_now, args=(state,), name="ipybgfetch-cluster-control", daemon=True
        )
        thread.start()

    def _signal_now(self, state: str) -> None:
        with contextlib.suppress(Exception):  # a closed client: the shards end with it
            self._set_control(state)
            if state == "aborted":
                self.client.cancel(list(self._futures.values()))

    def _close(self) -> None:
        self._stop.set()
        self._done_shards.update(self._futures)  # whatever still runs is no one's now
        self._owner.clear()
        if self._subscribed:
            self._subscribed = False
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(self._topic)


def _request_tuple(d: RecordData) -> tuple[str, str, dict[str, str], str | None]:
    r = d.request
    return (r.url, r.method, dict(r.headers), r.integrity)


class _Hidden:
    """A value that travels with a shard but never shows in a repr (Dask logs a failed
    task's arguments): request headers may carry credentials."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


# ======================================================================================
# The worker side: one Dask task per shard.
# ======================================================================================
_MANAGERS: dict[str, Any] = {}
_MANAGERS_LOCK = threading.Lock()


def _worker_manager(home: str, per_host: int, manager_class: Any) -> Any:
    """One ipybgfetch manager per worker process (its home in the worker's local folder)."""
    with _MANAGERS_LOCK:
        mgr = _MANAGERS.get(home)
        if mgr is None or mgr.is_closed:
            mgr = _MANAGERS[home] = manager_class(
                home=home, max_connections_per_host=per_host, auto_resume=False
            )
        return mgr


def _record_update(d: RecordData, index: int) -> dict[str, Any]:
    u: dict[str, Any] = {"index": index}
    for name in _RECORD_FIELDS:
        u[name] = getattr(d, name)
    u["headers"] = [(k, v) for k, v in d.response_headers.multi_items() if k != "set-cookie"]
    return u


def run_shard(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A Dask task: fetch one shard's records on this worker; returns their outcomes."""
    import distributed

    from ._models import Request

    tasks: Any = distributed  # secede/rejoin carry no annotations
    worker = distributed.get_worker()
    control = distributed.Variable(spec["control"])  # type: ignore[no-untyped-call]
    wanted = _read_control(control)
    seceded = False
    while wanted == "paused":  # queued while the registration was paused: wait here,
        if not seceded:  # without holding one of the worker's threads
            tasks.secede()
            seceded = True
        time.sleep(REPORT_INTERVAL)
        wanted = _read_control(control)
    if seceded:
        tasks.rejoin()  # waits for a free thread: the shards run as many at a time
        seceded = False
    if wanted in ("aborted", "stopped"):
        return []
    home = os.path.join(worker.local_directory, "ipybgfetch")
    mgr = _worker_manager(home, spec["per_host"], spec["manager_class"])
    remote = spec["remote"]
    remote.names = spec["names"]
    shard_id = f"{spec['id']}#{spec['shard']}@{spec['key'][:8]}"
    reg = mgr.get(shard_id)
    if reg is None:
        reg = mgr.fetch(
            shard_id,
            [
                Request(url, method=method, headers=headers or None, integrity=integrity)
                for url, method, headers, integrity in spec["requests"].value
            ],
            dest=remote,
            headers=dict(spec["headers"].value) if spec["headers"].value else None,
            download_total=spec["download_total"],
        )
    job = reg._job  # this worker's own registration: its engine state, read here
    indexes = spec["indexes"]
    sent: dict[int, tuple[Any, ...]] = {}
    last_bytes, last_time, rate = 0, time.monotonic(), 0.0
    state = "active"
    while True:
        settled = job.done.wait(REPORT_INTERVAL)
        now = time.monotonic()
        changed = []
        for d, index in zip(job.records, indexes, strict=True):
            key = (d.state, d.downloaded, d.status, d.total, d.error)
            if sent.get(index) != key:
                sent[index] = key
                changed.append(_record_update(d, index))
        downloaded = job.downloaded
        if now > last_time:
            rate = 0.5 * rate + 0.5 * max(0.0, (downloaded - last_bytes) / (now - last_time))
        last_bytes, last_time = downloaded, now
        if changed or not settled:
            worker.log_event(
                spec["topic"],
                {
                    "shard": spec["shard"],
                    "worker": worker.address,
                    "downloaded": downloaded,
                    "files": job.done_count,
                    "records_total": len(indexes),
                    "rate": 0.0 if settled else rate,
                    "records": changed,
                },
            )
        if settled:
            break
        wanted = _read_control(control)
        if wanted != state:
            state = wanted
            if wanted == "aborted":
                reg.abort()
            elif wanted in ("paused", "stopped"):
                reg.pause()
                if wanted == "stopped":
                    break
                if not seceded:  # a paused shard waits without holding a worker thread
                    tasks.secede()
                    seceded = True
            elif wanted == "active":
                if seceded:
                    tasks.rejoin()
                    seceded = False
                reg.resume()
    if seceded:
        tasks.rejoin()
    return [_record_update(d, index) for d, index in zip(job.records, indexes, strict=True)]


def _read_control(control: Any) -> str:
    try:
        return str(control.get(timeout=5))
    except Exception:  # the client went away: stop here, resumable
        return "stopped"
