"""Run one Python downloader once, in its own process, and print one JSON line of results.

``python benchmarks/_worker.py '<json spec>'``. The spec names the ``peer`` (``ipybgfetch``
or ``pooch``, plus experiment variants, see ``VARIANTS``), a file of URLs (one a line),
``dest`` (the download folder), ``home`` (ipybgfetch's home) and ``conns`` (ipybgfetch's
``max_connections_per_host``).

Measured inside the process, after every import (IPython's too, as in a kernel) and after
the manager is built, so neither interpreter start-up nor import time counts (a notebook
user has paid them already):

- ``wall``: from just before ``mgr.fetch(...)`` to ``reg.wait()`` returning;
- ``fetch_return``: how long ``mgr.fetch(...)`` took to return;
- ``cpu``: ``time.process_time()`` delta, every thread of the process (user + system);
- ``rss_start_kib`` / ``hwm_kib``: VmRSS just before the fetch (after resetting the
  high-water mark through ``/proc/self/clear_refs``), and VmHWM at the end; their difference
  is the peak RSS growth the download caused;
- ``progress_events``: ``reg.add_event_listener("progress", cb)`` calls, the proxy for the
  widget's state messages (the panel is throttled to the same rate).
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _names(urls: list[str]) -> list[str]:
    return [u.rsplit("/", 1)[-1] for u in urls]


# -- variants: experiments that need no change to the package ------------------------------


def _variant_client_options(variant: dict[str, Any]) -> dict[str, Any]:
    """httpx client options for an experiment (passed through ``client_options=``)."""
    opts: dict[str, Any] = {}
    transport = variant.get("transport")
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport  # type: ignore[import-not-found]
        from httpx_aiohttp import transport as _t  # type: ignore[import-not-found]

        chunk = int(variant.get("chunk", 0))
        if chunk:
            _t.AiohttpResponseStream.CHUNK_SIZE = chunk
        if variant.get("iter_any"):
            # yield whatever aiohttp has buffered, instead of iter_chunked(16 KiB)
            async def iter_any(self: Any) -> Any:
                with _t.map_aiohttp_exceptions():
                    async for data in self._aiohttp_response.content.iter_any():
                        yield data

            _t.AiohttpResponseStream.__aiter__ = iter_any
        opts["transport"] = AiohttpTransport()
    if variant.get("http2"):
        opts["http2"] = True
    return opts


def _apply_patches(variant: dict[str, Any]) -> None:
    """Monkeypatches for experiments (never done to the package on disk)."""
    read_size = int(variant.get("read_size", 0))
    if read_size:
        import httpcore._async.http11 as h11mod

        h11mod.AsyncHTTP11Connection.READ_NUM_BYTES = read_size
    if variant.get("uvloop"):
        import asyncio

        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if variant.get("no_hash"):
        from ipybgfetch._integrity import IntegrityHasher

        IntegrityHasher.update = lambda self, chunk: None  # type: ignore[method-assign]
    if variant.get("offload"):
        sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))
        import offload_patch  # type: ignore[import-not-found]

        offload_patch.install()
    if variant.get("no_mkdir"):
        # _reserve_name() runs dest.mkdir(parents=True, exist_ok=True) for every record
        from ipybgfetch._registration import BackgroundFetchRegistration as R

        R._reserve_name = lambda self, name: self._manager._names.reserve(self._dest, name)  # type: ignore[method-assign]
    if variant.get("no_lease_check"):
        # _check_lease() runs a SELECT before each request and before each rename
        from ipybgfetch._engine import transfer as _transfer

        _transfer._check_lease = lambda reg: None
    if variant.get("lazy_checkpoint"):
        # _record_changed(checkpoint=True) commits one SQLite transaction per response
        from ipybgfetch._registration import BackgroundFetchRegistration as R

        original = R._record_changed

        def _record_changed(self: Any, data: Any, checkpoint: bool = False) -> None:
            original(self, data, False)
            self._checkpoint()

        R._record_changed = _record_changed  # type: ignore[method-assign]
    if variant.get("cheap_expiry"):
        # httpcore polls every pooled connection's socket (getpeername + poll) per request
        import time as _time

        from httpcore._async.http11 import AsyncHTTP11Connection as C

        def has_expired(self: Any) -> bool:
            return self._expire_at is not None and _time.monotonic() > self._expire_at

        C.has_expired = has_expired  # type: ignore[method-assign]


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that runs the call at once on the calling thread (for fsync on tmpfs:
    measures what the thread hop of run_in_executor costs)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, **_: Any) -> None:
        super().shutdown(wait)


def _apply_manager_patches(mgr: Any, variant: dict[str, Any]) -> None:
    if variant.get("inline_executor"):
        mgr._engine.loop.set_default_executor(_InlineExecutor())


def run_ipybgfetch(spec: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    import ipybgfetch

    try:  # a notebook kernel has IPython loaded already; fetch() looks it up
        import IPython  # noqa: F401
    except ImportError:
        pass

    variant = spec.get("variant") or {}
    _apply_patches(variant)
    options: dict[str, Any] = {}
    if spec.get("conns") is not None:  # None: the manager's default
        options["max_connections_per_host"] = int(spec["conns"])
    mgr = ipybgfetch.BackgroundFetchManager(
        home=spec["home"],
        client_options=_variant_client_options(variant),
        auto_resume=False,
        **options,
    )
    _apply_manager_patches(mgr, variant)
    events: list[float] = []
    dest: str = spec["dest"]
    fetch_options: dict[str, Any] = {}
    cluster = client = None
    if spec.get("cluster_workers"):  # case 7: set up before the clock starts, like imports
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=int(spec["cluster_workers"]),
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
            silence_logs=40,
        )
        client = Client(cluster)
        dest = "file://" + os.path.abspath(dest)  # a folder every worker shares
        fetch_options["cluster"] = client
        workers_cpu0 = sum(client.run(time.process_time).values())

    def on_progress(_event: object) -> None:
        events.append(time.perf_counter())

    gc.collect()
    hwm_reset = _reset_hwm()
    rss0 = _status_kib("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    reg = mgr.fetch("bench", urls if len(urls) > 1 else urls[0], dest=dest, **fetch_options)
    t_ret = time.perf_counter()
    reg.add_event_listener("progress", on_progress)
    reg.wait()
    t1 = time.perf_counter()
    c1 = time.process_time()
    hwm = _status_kib("VmHWM")
    out = {
        "wall": t1 - t0,
        "fetch_return": t_ret - t0,
        "cpu": c1 - c0,
        "rss_start_kib": rss0,
        "hwm_kib": hwm,
        "hwm_reset": hwm_reset,
        "progress_events": len(events),
        "progress_max_per_s": _max_in_window(events, 1.0),
        # without the final event (the result change), which the spec sends unthrottled
        "progress_max_per_s_throttled": _max_in_window(events[:-1], 1.0),
        "progress_min_gap_ms": min(
            (1000 * (b - a) for a, b in itertools.pairwise(events[:-1])),
            default=None,
        ),
        "result": reg.result,
        "failure_reason": reg.failure_reason,
        "downloaded": reg.downloaded,
    }
    if len(urls) == 1:
        out["sha256"] = reg.match_all()[0]["sha256"]
    if reg.result != "success":
        out["errors"] = [r.error for r in reg.match_all() if r.error][:3]
    if client is not None and cluster is not None:
        # the workers' CPU is not this process's: reported apart
        out["cpu_workers"] = sum(client.run(time.process_time).values()) - workers_cpu0
        client.close()
        cluster.close()
    mgr.close()
    return out


def _max_in_window(times: list[float], width: float) -> int:
    """The most events in any window of ``width`` seconds."""
    best = 0
    j = 0
    if not times:
        return 0
    for i, t in enumerate(times):
        while times[j] < t - width + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def run_pooch(spec: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    import logging

    import pooch

    pooch.get_logger().setLevel(logging.ERROR)
    dest = spec["dest"]
    names = _names(urls)
    gc.collect()
    hwm_reset = _reset_hwm()
    rss0 = _status_kib("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    for url, name in zip(urls, names, strict=True):
        pooch.retrieve(url, known_hash=None, fname=name, path=dest, progressbar=False)
    t1 = time.perf_counter()
    c1 = time.process_time()
    return {
        "wall": t1 - t0,
        "cpu": c1 - c0,
        "rss_start_kib": rss0,
        "hwm_kib": _status_kib("VmHWM"),
        "hwm_reset": hwm_reset,
        "result": "success",
    }


def run_parfive(spec: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    """parfive (SunPy's downloader): ``max_conn`` files at once, ``max_splits`` ranges per
    file (``conns`` for both)."""
    import parfive

    conns = int(spec.get("conns") or 16)
    dl = parfive.Downloader(
        max_conn=conns, max_splits=conns, progress=False, config=parfive.SessionConfig()
    )
    for url in urls:
        dl.enqueue_file(url, path=spec["dest"], filename=url.rsplit("/", 1)[-1])
    gc.collect()
    hwm_reset = _reset_hwm()
    rss0 = _status_kib("VmRSS")
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = dl.download()
    t1 = time.perf_counter()
    c1 = time.process_time()
    out = {
        "wall": t1 - t0,
        "cpu": c1 - c0,
        "rss_start_kib": rss0,
        "hwm_kib": _status_kib("VmHWM"),
        "hwm_reset": hwm_reset,
        "result": "failure" if res.errors else "success",
    }
    if res.errors:
        out["errors"] = [str(e.exception) for e in res.errors][:3]
    return out


RUNNERS = {"ipybgfetch": run_ipybgfetch, "pooch": run_pooch, "parfive": run_parfive}


def main() -> None:
    spec = json.loads(sys.argv[1])
    urls = Path(spec["urls_file"]).read_text().split()
    os.makedirs(spec["dest"], exist_ok=True)
    out = RUNNERS[spec["peer"]](spec, urls)
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
