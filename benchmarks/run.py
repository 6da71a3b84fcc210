"""Side-by-side download benchmark: ipybgfetch against curl, aria2c and pooch, on loopback.

    python benchmarks/run.py                     # full run: cases 1-6 and k, 3 reps
    python benchmarks/run.py --quick             # smaller sizes, 1 rep (< 2 minutes)
    python benchmarks/run.py --cases 1,k --reps 5
    python benchmarks/run.py --variant 'aiohttp={"transport": "aiohttp"}'   # + an experiment
    python benchmarks/run.py --cases 1,2,3 --baseline /tmp/old-checkout     # before/after

Cases (issue 7):
  1   one 1 GiB file                    ipybgfetch vs curl -o, aria2c, pooch.retrieve
  1d  the same file from our DataServer (its ceiling; ipybgfetch and curl only)
  2   500 x 200 KiB, 16 connections     vs curl -Z --parallel-max 16, aria2c -j16, pooch
  3   10,000 x 4 KiB, one registration  + fetch() return time and files/s
  4   one 4 GiB file                    peak RSS growth
  k   kernel responsiveness: p50/p99 execute round-trip, idle vs during the case-1 download

Cases (issue 17: servers that cap each connection, servers far away):
  5   one 256 MiB file, each connection capped at 16 MiB/s (nginx limit_rate 16m under
      /capped/, else DataServer --rate-limit)  vs curl, aria2c -x16 -s16 -k1M, parfive
      (max_splits=16); ipybgfetch with max_connections_per_host=16 and with defaults
  6   500 x 200 KiB, 50 ms added time to first byte per response (DataServer --latency),
      16 connections                    vs aria2c -j16, curl -Z

Case (issue 18: past one machine):
  7   2,000 x 1 MiB, each connection capped at 2 MB/s (DataServer --rate-limit): one engine
      with 16 connections vs mgr.fetch(..., cluster=client) on a LocalCluster of 4 worker
      processes x 16 connections, into a shared folder (file://). On one machine the gain
      comes from connections, not CPU; on a real cluster each worker brings its own network.

Everything runs here, over loopback, into ``/dev/shm`` (tmpfs): a fast static server (nginx
when installed, see ``_servers.py``) serves files generated once into ``/dev/shm``; our
``DataServer`` runs as a second server. ipybgfetch goes through the full product path,
``mgr = BackgroundFetchManager(home=...)``, ``reg = mgr.fetch(...)``, ``reg.wait()``, in a
fresh process per run (``_worker.py``). Peers run in alternating order (rotated each
repetition); the table shows medians. A peer that is not installed is skipped, and the
output says so. Results also go to ``benchmarks/results/latest.json`` (``--quick``:
``latest-quick.json``).

Metrics: wall seconds; x curl (wall / curl's wall in the same case); CPU seconds per GiB of
the client process (user + system; the server's CPU is not counted); peak RSS of the client
(VmHWM, or ru_maxrss for tools); RSS growth (peak minus the RSS just before the download, for
Python clients); progress events (ipybgfetch's ``progress`` listener calls: the proxy for the
widget's state messages, which are throttled to the same rate) and their rate per second.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _servers import DataServerProcess, StaticServer  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
RUN_TIMEOUT = 900.0  # seconds: a stuck run is killed and reported as failed
DEFAULT_WORK = Path("/dev/shm/ipybgfetch-bench")


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    one: int  # case 1 (and 1d)
    many_n: int  # case 2
    many_size: int
    tiny_n: int  # case 3
    tiny_size: int
    huge: int  # case 4
    kernel: int  # case k
    capped: int = 256 * MiB  # case 5
    ttfb_n: int = 500  # case 6
    ttfb_size: int = 200 * KiB
    cluster_n: int = 2000  # case 7
    cluster_size: int = 1 * MiB
    conns: int = 16


FULL = Sizes(
    one=1 * GiB, many_n=500, many_size=200 * KiB, tiny_n=10_000, tiny_size=4 * KiB, huge=4 * GiB,
    kernel=1 * GiB,
)  # fmt: skip
QUICK = Sizes(
    one=64 * MiB, many_n=100, many_size=200 * KiB, tiny_n=1_000, tiny_size=4 * KiB,
    huge=256 * MiB, kernel=256 * MiB, capped=64 * MiB, ttfb_n=100, cluster_n=300,
)  # fmt: skip
CAPPED_RATE = 16 * MiB  # case 5: bytes/s per connection
TTFB = 0.05  # case 6: seconds added before each response
CLUSTER_RATE = 2_000_000  # case 7: bytes/s per connection
CLUSTER_WORKERS = 4  # case 7: LocalCluster worker processes (16 connections each)


# --------------------------------------------------------------------------------------
# Test data: generated once into /dev/shm, deterministic (DataServer's content function)
# --------------------------------------------------------------------------------------


def _write_generated(path: Path, name: str, size: int) -> str:
    from ipybgfetch.testing import DataServer

    h = hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in DataServer.iter_content(name, size):
            f.write(chunk)
            h.update(chunk)
    tmp.replace(path)
    return h.hexdigest()


class Data:
    """The static server's document root, with a manifest of what it holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest_path = root / "manifest.json"
        self.manifest: dict[str, Any] = {}
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())

    def _save(self) -> None:
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1))

    def big(self, size: int) -> tuple[str, str]:
        """Relative path and sha256 of a single generated file of ``size`` bytes."""
        rel = f"big/one-{size}.bin"
        key = f"big:{size}"
        path = self.root / rel
        if key not in self.manifest or not path.exists() or path.stat().st_size != size:
            path.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            sha = _write_generated(path, f"one-{size}.bin", size)
            log(f"  generated {rel} ({size / MiB:.0f} MiB) in {time.perf_counter() - t:.1f} s")
            self.manifest[key] = sha
            self._save()
        return rel, self.manifest[key]

    def many(self, n: int, size: int) -> list[str]:
        """Relative paths of ``n`` files of ``size`` bytes each."""
        from ipybgfetch.testing import DataServer

        folder = f"many/{n}x{size}"
        key = f"many:{n}:{size}"
        rels = [f"{folder}/f{i:05d}.bin" for i in range(n)]
        if key not in self.manifest or not (self.root / rels[-1]).exists():
            d = self.root / folder
            d.mkdir(parents=True, exist_ok=True)
            for i, rel in enumerate(rels):
                (self.root / rel).write_bytes(DataServer.content(f"f{i}", size))
            self.manifest[key] = True
            self._save()
            log(f"  generated {n} files of {size} bytes in {folder}")
        return rels


# --------------------------------------------------------------------------------------
# Running one client once
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    ok: bool
    wall: float
    cpu: float | None = None
    peak_rss_kib: int | None = None
    rss_growth_kib: int | None = None
    progress_events: int | None = None
    progress_max_per_s: int | None = None
    progress_max_per_s_throttled: int | None = None
    fetch_return: float | None = None
    foreign_cores: float | None = None  # CPU other processes used during the run, in cores
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _wait4_with_timeout(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, Any]:
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, rusage


def _proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class HwmPoller:
    """Peak RSS of a child that exec'd a tool: VmHWM polled from /proc every 5 ms.

    (``ru_maxrss`` from wait4 is useless here: Linux carries the *parent's* peak RSS over
    fork and exec into the child's, so every tool would show this script's size.)
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            v = _proc_status_kib(self.pid, "VmHWM")
            if v is not None:
                self.peak = max(self.peak, v)
            self._stop.wait(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class Load:
    """CPU used on the machine by processes other than this benchmark during one run.

    Machine-wide busy time (from /proc/stat) minus the client's CPU, the servers' and this
    script's own. Other work on a 2-core box skews timings: each run records it, and the
    report warns when a case's median run saw more than 0.1 core of it.
    """

    server_pids: ClassVar[list[int]] = []

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0 = _machine_busy()
        self.srv0 = _pids_cpu(_with_children(self.server_pids))
        self.self0 = time.process_time()

    def foreign_cores(self, client_cpu: float) -> float:
        wall = time.perf_counter() - self.t0
        busy = _machine_busy() - self.busy0
        srv = _pids_cpu(_with_children(self.server_pids)) - self.srv0
        mine = time.process_time() - self.self0
        return max(0.0, busy - client_cpu - srv - mine) / wall if wall > 0 else 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _TICK


def _with_children(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        out.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _pids_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_tool(cmd: list[str], timeout: float = RUN_TIMEOUT) -> Run:
    """An external program: wall from spawn to exit, CPU and peak RSS from wait4()."""
    with tempfile.TemporaryFile() as err:
        load = Load()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        poller = HwmPoller(proc.pid)
        code, ru = _wait4_with_timeout(proc, timeout)
        wall = time.perf_counter() - t0
        peak = poller.stop()
        cpu = ru.ru_utime + ru.ru_stime
        foreign = load.foreign_cores(cpu)
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()[-500:]
    return Run(
        ok=code == 0,
        wall=wall,
        cpu=cpu,
        peak_rss_kib=peak or None,
        error="" if code == 0 else f"exit {code}: {msg}",
        foreign_cores=foreign,
    )


def run_worker(spec: dict[str, Any], timeout: float = RUN_TIMEOUT, tree: str | None = None) -> Run:
    """A Python client in a fresh process (``_worker.py``); it measures itself.

    ``tree``: import ipybgfetch from that checkout instead (``--baseline``: before/after
    comparisons of two versions, interleaved in one run)."""
    cmd = [sys.executable, str(HERE / "_worker.py"), json.dumps(spec)]
    env = None
    if tree:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = Load()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        code, ru = _wait4_with_timeout(proc, timeout)
        foreign = load.foreign_cores(ru.ru_utime + ru.ru_stime)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace").strip()
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    if code != 0 or line is None:
        return Run(ok=False, wall=float("nan"), error=f"exit {code}: {stderr[-800:]}")
    r = json.loads(line[len("RESULT ") :])
    ok = r.get("result") == "success"
    return Run(
        ok=ok,
        wall=r["wall"],
        cpu=r["cpu"],
        peak_rss_kib=r["hwm_kib"],
        rss_growth_kib=r["hwm_kib"] - r["rss_start_kib"] if r.get("hwm_reset") else None,
        progress_events=r.get("progress_events"),
        progress_max_per_s=r.get("progress_max_per_s"),
        progress_max_per_s_throttled=r.get("progress_max_per_s_throttled"),
        fetch_return=r.get("fetch_return"),
        foreign_cores=foreign,
        error="" if ok else f"{r.get('failure_reason')}: {r.get('errors')}",
        extra={
            k: r[k]
            for k in ("sha256", "downloaded", "progress_min_gap_ms", "cpu_workers")
            if k in r
        },
    )


# --------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------

ARIA2_COMMON = [
    "--file-allocation=none",
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--console-log-level=error",
    "--summary-interval=0",
    "--download-result=hide",
    "--check-certificate=false",
    "--no-conf=true",
    "-q",
]


@dataclass
class Job:
    """One case's input: URLs and the names they must end up as."""

    urls: list[str]
    names: list[str]
    size_each: int
    sha256: str | None = None  # for single-file cases
    conns: int = 1

    @property
    def total_bytes(self) -> int:
        return self.size_each * len(self.urls)


@dataclass
class Peer:
    name: str
    kind: str  # "tool" | "worker"
    available: bool
    why_missing: str = ""
    run: Callable[[Job, Path, Path], Run] | None = None


def _write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def curl_single(job: Job, dest: Path, scratch: Path) -> Run:
    return run_tool(["curl", "-sS", "--fail", "-o", str(dest / job.names[0]), job.urls[0]])


def curl_parallel(job: Job, dest: Path, scratch: Path) -> Run:
    cfg = _write_list(
        scratch / "curl.cfg",
        [f'url = "{u}"\noutput = "{dest / n}"' for u, n in zip(job.urls, job.names, strict=True)],
    )
    cmd = ["curl", "-sS", "--fail", "-Z", "--parallel-max", str(job.conns), "-K", str(cfg)]
    return run_tool(cmd)


def aria2_single(splits: int) -> Callable[[Job, Path, Path], Run]:
    def run(job: Job, dest: Path, scratch: Path) -> Run:
        cmd = ["aria2c", *ARIA2_COMMON, "-d", str(dest), "-o", job.names[0]]
        cmd += [f"--max-connection-per-server={splits}", f"--split={splits}"]
        if splits > 1:
            cmd += ["--min-split-size=1M"]
        return run_tool([*cmd, job.urls[0]])

    return run


def aria2_parallel(job: Job, dest: Path, scratch: Path) -> Run:
    lst = _write_list(
        scratch / "aria2.txt",
        [f"{u}\n  out={n}" for u, n in zip(job.urls, job.names, strict=True)],
    )
    cmd = ["aria2c", *ARIA2_COMMON, "-d", str(dest), "-i", str(lst)]
    cmd += [f"--max-concurrent-downloads={job.conns}", "--max-connection-per-server=1"]
    cmd += ["--split=1"]
    return run_tool(cmd)


_JOB_CONNS = object()


def worker_peer(
    peer: str,
    variant: dict[str, Any] | None = None,
    tree: str | None = None,
    conns: Any = _JOB_CONNS,
    cluster_workers: int = 0,
) -> Callable[..., Run]:
    """``conns``: the job's connections (default), a number, or None (the peer's default).
    ``cluster_workers``: run the fetch on a LocalCluster of that many worker processes."""

    def run(job: Job, dest: Path, scratch: Path) -> Run:
        urls = _write_list(scratch / "urls.txt", job.urls)
        spec = {
            "peer": peer,
            "urls_file": str(urls),
            "dest": str(dest),
            "home": str(scratch / "home"),
            "conns": job.conns if conns is _JOB_CONNS else conns,
            "variant": variant or {},
            "cluster_workers": cluster_workers,
        }
        return run_worker(spec, tree=tree)

    return run


CLUSTER_PEER = f"ipybgfetch cluster {CLUSTER_WORKERS}x16"


def discover_peers(
    variants: dict[str, dict[str, Any]], baseline: str | None = None
) -> dict[str, Peer]:
    peers: dict[str, Peer] = {}
    have_curl = shutil.which("curl") is not None
    have_aria = shutil.which("aria2c") is not None
    have_pooch = importlib.util.find_spec("pooch") is not None
    have_parfive = importlib.util.find_spec("parfive") is not None
    have_ipy = importlib.util.find_spec("ipybgfetch") is not None
    have_dask = importlib.util.find_spec("distributed") is not None

    def add(name: str, available: bool, why: str, fn: Callable[..., Run], kind: str) -> None:
        peers[name] = Peer(name, kind, available, "" if available else why, fn)

    no_curl = "curl not on PATH (apt-get install curl)"
    no_aria = "aria2c not on PATH (apt-get install aria2)"
    no_pooch = "pooch not importable (pip install pooch)"
    no_ipy = "ipybgfetch not importable"
    add("curl", have_curl, no_curl, curl_single, "tool")
    add("curl -Z", have_curl, no_curl, curl_parallel, "tool")
    add("aria2c", have_aria, no_aria, aria2_single(1), "tool")
    add("aria2c -x8", have_aria, no_aria, aria2_single(8), "tool")
    add("aria2c -j16", have_aria, no_aria, aria2_parallel, "tool")
    add("aria2c -x16", have_aria, no_aria, aria2_single(16), "tool")  # -s16 -k1M too
    no_parfive = "parfive not importable (pip install parfive)"
    add("parfive", have_parfive, no_parfive, worker_peer("parfive", conns=16), "worker")
    add("pooch", have_pooch, no_pooch, worker_peer("pooch"), "worker")
    # this checkout, whatever the installed copy is
    add("ipybgfetch", have_ipy, no_ipy, worker_peer("ipybgfetch", tree=str(REPO)), "worker")
    # case 5: the manager's default budget (segments and all): no max_connections_per_host
    defaults = worker_peer("ipybgfetch", tree=str(REPO), conns=None)
    add("ipybgfetch (defaults)", have_ipy, no_ipy, defaults, "worker")
    # case 7: the records on a LocalCluster (mgr.fetch(..., cluster=client))
    add(
        CLUSTER_PEER,
        have_ipy and have_dask,
        'dask.distributed not importable (pip install "ipybgfetch[cluster]")',
        worker_peer("ipybgfetch", tree=str(REPO), cluster_workers=CLUSTER_WORKERS),
        "worker",
    )
    for label, variant in variants.items():
        add(f"ipybgfetch[{label}]", have_ipy, no_ipy, worker_peer("ipybgfetch", variant), "worker")
    if baseline:
        ok = (Path(baseline) / "ipybgfetch" / "__init__.py").is_file()
        why = f"--baseline {baseline}: no ipybgfetch package there"
        add("ipybgfetch@base", ok, why, worker_peer("ipybgfetch", tree=baseline), "worker")
    return peers


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    key: str
    title: str
    reference: str  # the peer the "x curl" column divides by
    peers: list[str]
    job: Job
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> why (by design)


def _verify(job: Job, dest: Path, run: Run, peer: str, check_hash: bool) -> str:
    """Empty when every file is there with the right size (and hash, when asked)."""
    missing = 0
    wrong = 0
    for n in job.names:
        p = dest / n
        try:
            if p.stat().st_size != job.size_each:
                wrong += 1
        except FileNotFoundError:
            missing += 1
    if missing or wrong:
        return f"{missing} files missing, {wrong} of the wrong size"
    if check_hash and job.sha256:
        h = hashlib.sha256()
        with open(dest / job.names[0], "rb") as f:
            while chunk := f.read(8 * MiB):
                h.update(chunk)
        if h.hexdigest() != job.sha256:
            return "sha256 mismatch"
        reported = run.extra.get("sha256")
        if reported and reported != job.sha256:
            return f"{peer} reported sha256 {reported}, expected {job.sha256}"
    return ""


def run_case(
    case: Case, peers: dict[str, Peer], reps: int, work: Path, results: dict[str, Any]
) -> None:
    active = []
    for name in case.peers:
        p = peers[name]
        if not p.available:
            case.skipped[name] = p.why_missing
            log(f"  skip {name}: {p.why_missing}")
        else:
            active.append(p)
    runs: dict[str, list[Run]] = {p.name: [] for p in active}
    for rep in range(reps):
        k = rep % max(1, len(active))
        order = active[k:] + active[:k]  # alternate: rotate the order each repetition
        for p in order:
            scratch = work / "runs" / f"{case.key}-{_slug(p.name)}-{rep}"
            shutil.rmtree(scratch, ignore_errors=True)
            dest = scratch / "dest"
            dest.mkdir(parents=True)
            assert p.run is not None
            r = p.run(case.job, dest, scratch)
            if r.ok:
                problem = _verify(case.job, dest, r, p.name, check_hash=rep == 0)
                if problem:
                    r.ok, r.error = False, problem
            shutil.rmtree(scratch, ignore_errors=True)
            runs[p.name].append(r)
            extra = f"  fetch() {r.fetch_return * 1000:.0f} ms" if r.fetch_return else ""
            status = "" if r.ok else f"  FAILED: {r.error}"
            log(f"  rep {rep + 1}/{reps} {p.name:<22} {r.wall:8.3f} s{extra}{status}")
    results["cases"][case.key] = summarize_case(case, runs)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _median(values: list[float | int | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize_case(case: Case, runs: dict[str, list[Run]]) -> dict[str, Any]:
    job = case.job
    gib = job.total_bytes / GiB
    out: dict[str, Any] = {
        "title": case.title,
        "files": len(job.urls),
        "bytes": job.total_bytes,
        "connections": job.conns,
        "reference": case.reference,
        "skipped": case.skipped,
        "peers": {},
    }
    for name, rs in runs.items():
        good = [r for r in rs if r.ok]
        med: dict[str, Any] = {"runs_ok": len(good), "runs": len(rs)}
        if good:
            wall = _median([r.wall for r in good])
            cpu = _median([r.cpu for r in good])
            events = _median([r.progress_events for r in good])
            med.update(
                wall_s=wall,
                wall_min_s=min(r.wall for r in good),
                wall_max_s=max(r.wall for r in good),
                cpu_s=cpu,
                cpu_s_per_gib=cpu / gib if cpu is not None else None,
                peak_rss_mib=_mib(_median([r.peak_rss_kib for r in good])),
                rss_growth_mib=_mib(_median([r.rss_growth_kib for r in good])),
                progress_events=events,
                progress_max_per_s=_median([r.progress_max_per_s for r in good]),
                foreign_cores=_median([r.foreign_cores for r in good]),
                fetch_return_s=_median([r.fetch_return for r in good]),
                files_per_s=len(job.urls) / wall if wall else None,
                mb_per_s=job.total_bytes / 1e6 / wall if wall else None,
            )
        med["errors"] = [r.error for r in rs if not r.ok][:3]
        med["raw"] = [r.__dict__ for r in rs]
        out["peers"][name] = med
    ref = out["peers"].get(case.reference, {}).get("wall_s")
    for med in out["peers"].values():
        med["x_ref"] = med["wall_s"] / ref if ref and med.get("wall_s") else None
    return out


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str, dash: str = "–") -> str:
    return dash if v is None else format(v, spec)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (``tmpfs``, ``ext4``...), from /proc/mounts."""
    best, fs = "", "?"
    target = str(path.resolve())
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, fs = point, fields[2]
    except OSError:
        pass
    return fs


def markdown(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"ipybgfetch benchmark — {results['date']} — {m['cpu']} ({m['cores']} cores), "
        f"{m['mem_gib']:.0f} GiB RAM, Python {m['python']}, {m['kernel']}; "
        f"ipybgfetch at {m.get('ipybgfetch_commit', '?')}"
    )
    lines.append(
        f"server: {results['server']}; downloads into {results['work']} "
        f"({results.get('work_fs', '?')}); "
        f"{results['reps']} rep(s), medians{'; QUICK sizes' if results['quick'] else ''}"
    )
    lines.append("")
    lines.append(
        "| case | peer | wall s | × curl | CPU s/GiB | peak RSS MiB | RSS growth MiB "
        "| files/s | fetch() ms | progress events (max/s) | other load |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, c in results["cases"].items():
        label = f"{key}: {c['title']}"
        for name, p in c["peers"].items():
            if not p.get("runs_ok"):
                why = "; ".join(p["errors"])[:120]
                lines.append(f"| {label} | {name} | FAILED: {why} |||||||||")
                continue
            ev = p.get("progress_events")
            evs = "–" if ev is None else f"{ev:.0f} ({p['progress_max_per_s']:.0f})"
            fr = p.get("fetch_return_s")
            lines.append(
                f"| {label} | {name} | {p['wall_s']:.3f} | {_fmt(p['x_ref'], '.2f')}× "
                f"| {_fmt(p['cpu_s_per_gib'], '.2f')} | {_fmt(p['peak_rss_mib'], '.0f')} "
                f"| {_fmt(p['rss_growth_mib'], '.1f')} "
                f"| {_fmt(p['files_per_s'], ',.0f') if c['files'] > 1 else '–'} "
                f"| {_fmt(fr * 1000 if fr is not None else None, '.0f')} | {evs} "
                f"| {_fmt(p.get('foreign_cores'), '.2f')} |"
            )
        for name, why in c["skipped"].items():
            lines.append(f"| {label} | {name} | skipped: {why} |||||||||")
    k = results.get("kernel")
    if k:
        lines.append("")
        lines.append(
            f"Kernel responsiveness (case k: {k['size'] / MiB:.0f} MiB download inside a "
            f"python3 ipykernel, {k['reps']} rep(s), a ping every {k['gap_s'] * 1000:.0f} ms; "
            f"in-kernel download {k['download_wall_s']:.2f} s median)"
        )
        lines.append("")
        lines.append("| execute round-trip | n | p50 ms | p99 ms | max ms |")
        lines.append("|---|---:|---:|---:|---:|")
        rows = [("idle", k["idle"]), ("during download", k["during_download"])]
        for label, kv in results.get("kernel_variants", {}).items():
            rows.append((f"idle [{label}]", kv["idle"]))
            rows.append(
                (
                    f"during download [{label}] ({kv['download_wall_s']:.2f} s)",
                    kv["during_download"],
                )
            )
        for label, s in rows:
            lines.append(
                f"| {label} | {s['n']} | {_fmt(s.get('p50_ms'), '.1f')} "
                f"| {_fmt(s.get('p99_ms'), '.1f')} | {_fmt(s.get('max_ms'), '.1f')} |"
            )
    if results.get("targets"):
        lines.append("")
        lines.append("| target (issue 7) | measured | met |")
        lines.append("|---|---|---|")
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    notes = results.get("notes", []) + results.get("noise", [])
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines)


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``--merge``: the cases (and kernel results) of this run replace those in ``old``."""
    out = dict(old)
    out["cases"] = {**old.get("cases", {}), **new["cases"]}
    out["case_dates"] = {**old.get("case_dates", {}), **new.get("case_dates", {})}
    for key in ("kernel", "kernel_variants"):
        if key in new:
            out[key] = new[key]
    for key in ("date", "machine", "server", "reps", "quick", "variants", "notes"):
        out[key] = new[key]
    out["date"] = f"{new['date']} (merged; see case_dates)"
    return out


def noise_notes(results: dict[str, Any]) -> list[str]:
    """Cases whose median run saw other processes use more than 0.1 core."""
    notes = []
    for key, c in results["cases"].items():
        busy = [(n, p["foreign_cores"]) for n, p in c["peers"].items() if p.get("foreign_cores")]
        noisy = [f"{n} {v:.2f}" for n, v in busy if v > 0.1]
        if noisy:
            notes.append(
                f"case {key}: other processes used CPU during the runs (cores, median): "
                + ", ".join(noisy)
                + " — timings on this 2-core machine are skewed; rerun when idle."
            )
    kernels = [("", results.get("kernel"))] + [
        (f" [{label}]", kv) for label, kv in results.get("kernel_variants", {}).items()
    ]
    for label, kv in kernels:
        if kv and (kv.get("other_load_during") or 0) > 0.1:
            notes.append(
                f"case k{label}: other processes used {kv['other_load_during']:.2f} cores "
                "during the download — round-trips are skewed; rerun when idle."
            )
    return notes


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cases = results["cases"]
    out = []

    def peer(case: str, name: str) -> dict[str, Any]:
        return cases.get(case, {}).get("peers", {}).get(name, {})

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    ipy1, curl1 = peer("1", "ipybgfetch"), peer("1", "curl")
    if ipy1.get("wall_s") and curl1.get("wall_s"):
        x = ipy1["wall_s"] / curl1["wall_s"]
        add("case 1: ≤ 1.2× curl wall", f"{x:.2f}×", x <= 1.2)
    ipy2, aria2 = peer("2", "ipybgfetch"), peer("2", "aria2c -j16")
    if ipy2.get("wall_s") and aria2.get("wall_s"):
        add(
            "case 2: ≤ aria2c wall",
            f"{ipy2['wall_s']:.3f} s vs {aria2['wall_s']:.3f} s",
            ipy2["wall_s"] <= aria2["wall_s"],
        )
    curl5, aria5 = peer("5", "curl"), peer("5", "aria2c -x16")
    ipy5, ipy5d = peer("5", "ipybgfetch"), peer("5", "ipybgfetch (defaults)")
    if ipy5.get("wall_s") and aria5.get("wall_s"):
        add(
            "case 5, 16 connections: ≤ aria2c -x16 wall",
            f"{ipy5['wall_s']:.2f} s vs {aria5['wall_s']:.2f} s",
            ipy5["wall_s"] <= aria5["wall_s"],
        )
    if ipy5d.get("wall_s") and curl5.get("wall_s"):
        x = curl5["wall_s"] / ipy5d["wall_s"]
        add("case 5, defaults: ≥ 5× faster than one connection (curl)", f"{x:.1f}×", x >= 5)
    ipy6, aria6 = peer("6", "ipybgfetch"), peer("6", "aria2c -j16")
    if ipy6.get("wall_s") and aria6.get("wall_s"):
        add(
            "case 6: ≤ aria2c -j16 wall",
            f"{ipy6['wall_s']:.2f} s vs {aria6['wall_s']:.2f} s",
            ipy6["wall_s"] <= aria6["wall_s"],
        )
    one7, cluster7 = peer("7", "ipybgfetch"), peer("7", CLUSTER_PEER)
    if one7.get("wall_s") and cluster7.get("wall_s"):
        x = one7["wall_s"] / cluster7["wall_s"]
        add(
            f"case 7: cluster {CLUSTER_WORKERS}×16 ≥ 3× faster than one engine", f"{x:.1f}×", x >= 3
        )
    ipy3 = peer("3", "ipybgfetch")
    if ipy3.get("wall_s"):
        fr, fps = ipy3["fetch_return_s"], ipy3["files_per_s"]
        add("case 3: fetch() returns in < 1 s", f"{fr * 1000:.0f} ms", fr < 1.0)
        add("case 3: ≥ 1,500 files/s", f"{fps:,.0f} files/s", fps >= 1500)
    ipy4 = peer("4", "ipybgfetch")
    if ipy4.get("rss_growth_mib") is not None:
        g = ipy4["rss_growth_mib"]
        add("case 4: peak RSS growth ≤ 64 MiB", f"{g:.1f} MiB", g <= 64)
    k = results.get("kernel")
    if k and k["during_download"].get("n"):
        p99 = k["during_download"]["p99_ms"]
        add("kernel: p99 execute round-trip ≤ 50 ms during case 1", f"{p99:.1f} ms", p99 <= 50)
    rates = [
        (r.get("progress_max_per_s_throttled") or 0, r["progress_max_per_s"], key)
        for key, c in cases.items()
        for name, p in c["peers"].items()
        if name == "ipybgfetch"
        for r in p["raw"]
        if r.get("progress_max_per_s") is not None
    ]
    gaps = [
        r["extra"]["progress_min_gap_ms"]
        for c in cases.values()
        for name, p in c["peers"].items()
        if name == "ipybgfetch"
        for r in p["raw"]
        if r.get("extra", {}).get("progress_min_gap_ms") is not None
    ]
    if rates:
        throttled, worst, key = max(rates)
        gap = f"; closest two events {min(gaps):.1f} ms apart" if gaps else ""
        add(
            "widget: ≤ 10 state messages/s per registration",
            f"≤ {throttled} throttled progress events in any 1 s window "
            f"({worst} with the final result event; worst: case {key}{gap})",
            throttled <= 10,
        )
    return out


# --------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


def _engine_commit() -> str:
    """The repository's HEAD, plus "+dirty" when ipybgfetch/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "ipybgfetch"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    versions = {"curl": _tool_version(["curl", "--version"])}
    versions["aria2c"] = _tool_version(["aria2c", "--version"])
    for mod in ("httpx", "httpcore", "pooch", "ipykernel", "jupyter_client", "ipybgfetch"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "not installed"
    return {
        "ipybgfetch_commit": _engine_commit(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem,
        "python": platform.python_version(),
        "kernel": f"Linux {platform.release()}",
        "versions": versions,
    }


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_variants(items: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant needs LABEL=JSON, got {item!r}")
        out[label] = json.loads(spec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 rep (smoke test)")
    ap.add_argument("--cases", default="1,1d,2,3,4,5,6,k", help="comma list of 1,1d,2,3,4,5,6,7,k")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help="folder for data and downloads (tmpfs)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated data afterwards")
    ap.add_argument("--json", type=Path, default=None, help="where to write the JSON results")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only the cases run now in the existing JSON (rerun a noisy case)",
    )
    ap.add_argument("--peers", default="", help="only these peers (comma list of names)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                    help="add ipybgfetch with an experiment variant (see _worker.py)")  # fmt: skip
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="TREE",
        help="also run ipybgfetch imported from another checkout (peer 'ipybgfetch@base'), "
        "interleaved with this one: before/after comparisons",
    )
    ap.add_argument(
        "--builtin-server",
        action="store_true",
        help="use the Python sendfile server even if nginx is installed",
    )
    args = ap.parse_args(argv)
    # A SIGTERM (a CI timeout, kill) still runs the finally: below, which stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    sizes = QUICK if args.quick else FULL
    reps = args.reps or (1 if args.quick else 3)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - {"1", "1d", "2", "3", "4", "5", "6", "7", "k"}
    if unknown:
        ap.error(f"unknown cases: {sorted(unknown)}")
    variants = parse_variants(args.variant)
    peers = discover_peers(variants, args.baseline)
    only = {p.strip() for p in args.peers.split(",") if p.strip()}
    default_json = "latest-quick.json" if args.quick else "latest.json"
    json_path = args.json or HERE / "results" / default_json

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = Data(work / "www")
    data.root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    static = StaticServer(data.root, work / "server", force_builtin=args.builtin_server)
    dataserver = DataServerProcess() if "1d" in wanted else None
    # case 6 always, case 5 without nginx: DataServer processes with the faults set
    slow_server = DataServerProcess("--latency", str(TTFB)) if "6" in wanted else None
    capped_server: DataServerProcess | None = None
    cluster_server = DataServerProcess("--rate-limit", str(CLUSTER_RATE)) if "7" in wanted else None
    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "quick": args.quick,
        "reps": reps,
        "work": str(work),
        "work_fs": filesystem_type(work),
        "sizes": sizes.__dict__,
        "variants": variants,
        "server": static.describe(),
        "cases": {},
        "notes": [],
    }
    try:
        log(f"preparing data in {data.root} ...")
        if "1" in wanted or "1d" in wanted or "k" in wanted:
            big_rel, big_sha = data.big(sizes.one)
        if "k" in wanted and sizes.kernel != sizes.one:
            k_rel, _ = data.big(sizes.kernel)
        elif "k" in wanted:
            k_rel = big_rel
        if "4" in wanted:
            huge_rel, huge_sha = data.big(sizes.huge)
        if "5" in wanted:
            capped_rel, capped_sha = data.big(sizes.capped)
        if "2" in wanted:
            many = data.many(sizes.many_n, sizes.many_size)
        if "3" in wanted:
            tiny = data.many(sizes.tiny_n, sizes.tiny_size)
        static.start()
        assert static.proc is not None
        Load.server_pids = [static.proc.pid]
        log(f"static server: {results['server']} at {static.base_url}")
        if static.kind != "nginx":
            results["notes"].append(
                "nginx is not installed: the static server is the built-in Python sendfile "
                "server (apt-get install nginx-light for the reference setup)."
            )
        base = static.base_url
        cases: list[Case] = []
        conns = sizes.conns
        if "1" in wanted:
            cases.append(Case(
                "1", f"one {sizes.one / MiB:,.0f} MiB file", "curl",
                ["curl", "aria2c", "aria2c -x8", "pooch", "ipybgfetch"],
                Job([f"{base}/{big_rel}"], [Path(big_rel).name], sizes.one, big_sha),
            ))  # fmt: skip
        if "1d" in wanted and dataserver is not None:
            dataserver.start()
            assert dataserver.proc is not None
            Load.server_pids.append(dataserver.proc.pid)
            name = f"one-{sizes.one}.bin"
            cases.append(Case(
                "1d", f"one {sizes.one / MiB:,.0f} MiB file from DataServer", "curl",
                ["curl", "ipybgfetch"],
                Job([dataserver.url(name, sizes.one)], [name], sizes.one, big_sha),
            ))  # fmt: skip
        if "2" in wanted:
            cases.append(Case(
                "2", f"{sizes.many_n} × {sizes.many_size // KiB} KiB, {conns} connections",
                "curl -Z", ["curl -Z", "aria2c -j16", "pooch", "ipybgfetch"],
                Job([f"{base}/{r}" for r in many], [Path(r).name for r in many],
                    sizes.many_size, conns=conns),
            ))  # fmt: skip
        if "3" in wanted:
            cases.append(Case(
                "3", f"{sizes.tiny_n:,} × {sizes.tiny_size // KiB} KiB, one registration, "
                f"{conns} connections", "curl -Z",
                ["curl -Z", "aria2c -j16", "pooch", "ipybgfetch"],
                Job([f"{base}/{r}" for r in tiny], [Path(r).name for r in tiny],
                    sizes.tiny_size, conns=conns),
            ))  # fmt: skip
        if "4" in wanted:
            case4 = Case(
                "4", f"one {sizes.huge / GiB:g} GiB file (memory)", "curl",
                ["curl", "aria2c", "ipybgfetch"],
                Job([f"{base}/{huge_rel}"], [Path(huge_rel).name], sizes.huge, huge_sha),
            )  # fmt: skip
            case4.skipped["pooch"] = "not run for 4 GiB (1 KiB reads: minutes per run; see case 1)"
            cases.append(case4)
        if "5" in wanted:
            if static.kind == "nginx":
                capped_url = f"{base}/capped/{capped_rel}"
                how = "nginx limit_rate 16m"
            else:
                capped_server = DataServerProcess("--rate-limit", str(CAPPED_RATE)).start()
                assert capped_server.proc is not None
                Load.server_pids.append(capped_server.proc.pid)
                capped_url = capped_server.url(Path(capped_rel).name, sizes.capped)
                how = "DataServer --rate-limit"
            case5 = Case(
                "5", f"one {sizes.capped / MiB:,.0f} MiB file, each connection capped at "
                f"{CAPPED_RATE / MiB:g} MiB/s ({how})", "curl",
                ["curl", "aria2c -x16", "parfive", "ipybgfetch", "ipybgfetch (defaults)"],
                Job([capped_url], [Path(capped_rel).name], sizes.capped, capped_sha, conns=16),
            )  # fmt: skip
            cases.append(case5)
        if "6" in wanted and slow_server is not None:
            slow_server.start()
            assert slow_server.proc is not None
            Load.server_pids.append(slow_server.proc.pid)
            names6 = [f"t{i:04d}.bin" for i in range(sizes.ttfb_n)]
            cases.append(Case(
                "6", f"{sizes.ttfb_n} × {sizes.ttfb_size // KiB} KiB, {TTFB * 1000:.0f} ms "
                f"added time to first byte, {conns} connections (DataServer --latency)",
                "aria2c -j16", ["aria2c -j16", "curl -Z", "ipybgfetch"],
                Job([slow_server.url(n, sizes.ttfb_size) for n in names6], names6,
                    sizes.ttfb_size, conns=conns),
            ))  # fmt: skip
        if "7" in wanted and cluster_server is not None:
            cluster_server.start()
            assert cluster_server.proc is not None
            Load.server_pids.append(cluster_server.proc.pid)
            names7 = [f"c{i:04d}.bin" for i in range(sizes.cluster_n)]
            cases.append(Case(
                "7", f"{sizes.cluster_n:,} × {sizes.cluster_size // MiB} MiB, each connection "
                f"capped at {CLUSTER_RATE / 1e6:g} MB/s (DataServer --rate-limit): one engine "
                f"({conns} connections) vs a LocalCluster of {CLUSTER_WORKERS} workers × "
                f"{conns} connections", "ipybgfetch", ["ipybgfetch", CLUSTER_PEER],
                Job([cluster_server.url(n, sizes.cluster_size) for n in names7], names7,
                    sizes.cluster_size, conns=conns),
            ))  # fmt: skip
        for case in cases:
            for label in variants:
                case.peers.append(f"ipybgfetch[{label}]")
            if args.baseline and "ipybgfetch" in case.peers:
                case.peers.append("ipybgfetch@base")
            if only:
                case.peers = [
                    p
                    for p in case.peers
                    if p in only
                    or p == case.reference
                    or p.startswith("ipybgfetch[")
                    or p == "ipybgfetch@base"
                ]
            log(f"case {case.key}: {case.title}")
            run_case(case, peers, reps, work, results)
        if "k" in wanted:
            log(f"case k: kernel responsiveness ({sizes.kernel / MiB:.0f} MiB in a kernel)")
            if importlib.util.find_spec("ipykernel") and importlib.util.find_spec("jupyter_client"):
                from _kernel import measure

                kdir = work / "runs" / "kernel"
                shutil.rmtree(kdir, ignore_errors=True)
                kdir.mkdir(parents=True)
                results["kernel"] = measure(
                    f"{base}/{k_rel}", sizes.kernel, str(kdir / "home"), str(kdir), reps,
                    log=log, load_factory=Load,
                )  # fmt: skip
                for label, variant in variants.items():
                    log(f"  kernel with variant {label}")
                    shutil.rmtree(kdir, ignore_errors=True)
                    kdir.mkdir(parents=True)
                    results.setdefault("kernel_variants", {})[label] = measure(
                        f"{base}/{k_rel}", sizes.kernel, str(kdir / "home"), str(kdir),
                        reps, log=log, variant=variant, load_factory=Load,
                    )  # fmt: skip
                shutil.rmtree(kdir, ignore_errors=True)
            else:
                results["notes"].append("case k skipped: ipykernel/jupyter_client not installed")
    finally:
        static.stop()
        for server in (dataserver, slow_server, capped_server, cluster_server):
            if server is not None:
                server.stop()
        shutil.rmtree(work / "runs", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - t_start
    for key in results["cases"]:
        results.setdefault("case_dates", {})[key] = results["date"]
    if "kernel" in results:
        results.setdefault("case_dates", {})["k"] = results["date"]
    if args.merge and json_path.exists():
        results = merge(json.loads(json_path.read_text()), results)
    results["targets"] = evaluate_targets(results)
    results["noise"] = noise_notes(results)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(markdown(results))
    log(f"\n{time.perf_counter() - t_start:.0f} s; JSON: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
