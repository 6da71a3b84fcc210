"""Records running on a Dask cluster (``ipybgfetch._cluster``): a real
``distributed.LocalCluster(n_workers=2, processes=True)`` writing into moto's real S3
server on loopback, both started here. The whole module stays within ~90 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Everything that builds ASTs is imported before any thread starts (CPython 3.11.7's
# gh-106905 would otherwise make imports racing in threads flaky).
from cloud_support import S3, files_under, s3_server

distributed = pytest.importorskip(
    "distributed", reason="the cluster tests need pip install 'ipybgfetch[cluster]'"
)
pandas = pytest.importorskip("pandas", reason="the records DataFrame needs pandas")
from resilience_support import wait_until  # noqa: E402

import ipybgfetch._cluster  # noqa: E402
import ipybgfetch._engine.cloud  # noqa: E402
from ipybgfetch import BackgroundFetchManager, FetchError  # noqa: E402
from ipybgfetch.testing import DataServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
s3 = pytest.fixture(scope="module")(s3_server)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=":0",
        silence_logs=50,
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def srv() -> Iterator[DataServer]:
    with DataServer() as s:  # a server of its own: its request log is this test's alone
        yield s


def worker_dirs(client: Any) -> list[Path]:
    return [Path(d) for d in client.run(lambda dask_worker: dask_worker.local_directory).values()]


def test_300_files_into_s3(s3: S3, srv: DataServer, client: Any, tmp_path: Path) -> None:
    secret = "ClusterSecret-" + os.urandom(8).hex()
    bucket = s3.bucket()
    sizes = [1000 + 37 * i for i in range(300)]
    urls = [srv.url(f"f{i:03}.bin", n) for i, n in enumerate(sizes)]
    events: list[int] = []
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "many",
            urls,
            dest=f"s3://{bucket}/x/",
            storage_options=s3.options(secret),
            cluster=client,
            title="300 files",
        )
        reg.add_event_listener("progress", lambda e: events.append(e.registration.downloaded))
        seen = []
        while not reg.settled:
            seen.append(reg._snapshot())
            time.sleep(0.05)
        reg.wait(60)
        assert reg.result == "success", reg.failure_reason
        assert reg.downloaded == sum(sizes)
        # the objects: one per URL, the server's bytes
        keys = s3.keys(bucket, "x/")
        assert sorted(keys) == [f"x/f{i:03}.bin" for i in range(300)]
        for i in range(0, 300, 7):  # a sample of the bytes themselves...
            assert s3.sha256(bucket, f"x/f{i:03}.bin") == DataServer.sha256(
                f"f{i:03}.bin", sizes[i]
            )
        # ...and every record's sha256, as the workers computed them
        df = reg.match_all().to_pandas()
        assert len(df) == 300 and set(df["state"]) == {"success"}
        assert list(df["sha256"]) == [
            DataServer.sha256(f"f{i:03}.bin", n) for i, n in enumerate(sizes)
        ]
        assert list(df["bytes"]) == sizes
        assert list(df["path"]) == [f"s3://{bucket}/x/f{i:03}.bin" for i in range(300)]
        assert set(df["status"]) == {200}
        # the same columns and dtypes as a local run
        local = mgr.fetch("local", urls[:3]).wait(30).match_all().to_pandas()
        assert list(df.columns) == list(local.columns)
        assert list(df.dtypes) == list(local.dtypes)
        # live progress came back through Dask: events, and a per-worker breakdown
        assert events and events[-1] == sum(sizes)
        workers = reg._snapshot()["cluster"]["workers"]
        assert len(workers) == 2 and all(w["files"] > 0 for w in workers)
        assert sum(w["downloaded"] for w in workers) == sum(sizes)
        assert sum(w["files"] for w in workers) == 300
        assert any(0 < s["records_done"] < 300 for s in seen), "no live progress was seen"
        assert reg.match(urls[5]).response.read() == DataServer.content("f005.bin", sizes[5])
        # the shards ran on the workers: the local process sent no request itself
        assert len(srv.requests) == 300 + 3
    homes = [tmp_path / "home", *worker_dirs(client)]
    found = [p for h in homes for p in files_under(h) if secret.encode() in p.read_bytes()]
    assert not found, f"the storage_options secret was written to {found}"
    assert any(list(files_under(d)) for d in worker_dirs(client)), "the workers kept no state?"


def test_a_worker_killed_midway(s3: S3, srv: DataServer, client: Any, tmp_path: Path) -> None:
    bucket = s3.bucket()
    n, size = 64, 60_000
    # paced at 100 kB/s per connection: ~0.6 s per file, ~2 s per shard, ~4 s per worker
    urls = [srv.url(f"k{i:02}.bin", size, throttle=100_000) for i in range(n)]
    pids = client.run(os.getpid)
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "kill", urls, dest=f"s3://{bucket}/k/", storage_options=s3.options(), cluster=client
        )

        def victim() -> str | None:  # a worker with finished files and a shard still running
            for w in reg._snapshot()["cluster"]["workers"]:
                if w["files"] >= 3 and w["shards"] and w["worker"] in pids:
                    return w["worker"]
            return None

        wait_until(lambda: victim() is not None or reg.settled, 30, "a worker with files done")
        address = victim()
        assert address is not None and not reg.settled, "finished before a worker could be killed"
        done_before = [d.request.url for d in reg._job.records if d.state == "success"]
        os.kill(pids[address], signal.SIGKILL)
        assert reg.wait(60).result == "success", [r.error for r in reg.match_all()]
        assert reg.downloaded == n * size
    keys = s3.keys(bucket, "k/")
    assert sorted(keys) == [f"k/k{i:02}.bin" for i in range(n)]  # each exactly once
    for i in range(0, n, 5):
        assert s3.sha256(bucket, f"k/k{i:02}.bin") == DataServer.sha256(f"k{i:02}.bin", size)
    assert done_before
    refetched = [u for u in done_before if len(srv.requests_for(u)) != 1]
    assert not refetched, f"finished files were fetched again: {refetched}"
    wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, 30, "the nanny's restart")


def test_abort_reaches_every_worker(s3: S3, srv: DataServer, client: Any, tmp_path: Path) -> None:
    bucket = s3.bucket()
    urls = [srv.url(f"a{i:03}.bin", 400_000, throttle=100_000) for i in range(200)]
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "abort", urls, dest=f"s3://{bucket}/a/", storage_options=s3.options(), cluster=client
        )
        wait_until(lambda: reg.downloaded > 200_000, 30, "bytes from the workers")
        workers = {w["worker"] for w in reg._snapshot()["cluster"]["workers"]}
        t_abort = time.time()
        assert reg.abort() is True
        assert reg.result == "failure" and reg.failure_reason == "aborted"
        time.sleep(3.5)
        late = [r for r in srv.requests if r.time > t_abort + 2.0]
        assert not late, f"{len(late)} requests more than 2 s after abort()"
        sent = srv.bytes_sent_total
        time.sleep(0.5)
        assert srv.bytes_sent_total == sent, "bodies still streaming after the abort"
        assert len(workers) == 2
        df = reg.match_all().to_pandas()
        assert set(df["state"]) <= {"aborted", "success"} and "aborted" in set(df["state"])


def test_pause_and_resume_reach_the_workers(
    s3: S3, srv: DataServer, client: Any, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    urls = [srv.url(f"p{i:02}.bin", 120_000, throttle=200_000) for i in range(24)]
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "pause", urls, dest=f"s3://{bucket}/p/", storage_options=s3.options(), cluster=client
        )
        wait_until(lambda: reg.downloaded > 100_000, 30, "bytes from the workers")
        assert reg.pause() is True
        time.sleep(2.0)
        sent = srv.bytes_sent_total
        time.sleep(1.0)
        assert srv.bytes_sent_total == sent, "the workers kept downloading while paused"
        assert reg.state == "paused" and not reg.settled
        # paused shards wait without holding the workers' threads (one each here): another
        # registration runs meanwhile
        other = [srv.url(f"o{i}.bin", 5000) for i in range(4)]
        second = mgr.fetch(
            "meanwhile",
            other,
            dest=f"s3://{bucket}/o/",
            storage_options=s3.options(),
            cluster=client,
        )
        assert second.wait(30).result == "success"
        assert reg.state == "paused"
        assert reg.resume() is True
        assert reg.wait(60).result == "success"
    assert sorted(s3.keys(bucket, "p/")) == [f"p/p{i:02}.bin" for i in range(24)]
    assert len(s3.keys(bucket, "o/")) == 4


def test_a_shared_folder_as_dest(srv: DataServer, client: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "data"
    urls = [srv.url(f"s{i:02}.csv", 2000 + i) for i in range(20)]
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch("shared", urls, dest=shared, cluster=client)
        assert reg.wait(60).result == "success"
        assert reg.dest == f"file://{shared}/"
        for i, u in enumerate(urls):
            want = DataServer.content(f"s{i:02}.csv", 2000 + i)
            assert (shared / f"s{i:02}.csv").read_bytes() == want
            assert reg.match(u).response.read() == want
    assert sorted(p.name for p in shared.iterdir()) == [f"s{i:02}.csv" for i in range(20)]


def test_a_shard_dask_gives_up_on_fails_its_records(
    s3: S3, srv: DataServer, tmp_path: Path
) -> None:
    """With allowed-failures=0 the first lost worker is fatal for its shard (KilledWorker):
    that shard's unfinished records fail with the reason; the finished ones keep theirs."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
            silence_logs=50,
        )
    c = distributed.Client(cluster)
    try:
        bucket = s3.bucket()
        # two quick files finish first; the others take ~3 s each, so the kill below always
        # lands while they are in flight (all-equal files finished together under load)
        urls = [srv.url(f"g{i:02}.bin", 1_000) for i in range(2)]
        urls += [srv.url(f"g{i:02}.bin", 60_000, throttle=20_000) for i in range(2, 24)]
        with BackgroundFetchManager(home=tmp_path / "home") as mgr:
            reg = mgr.fetch(
                "gives-up", urls, dest=f"s3://{bucket}/g/", storage_options=s3.options(), cluster=c
            )
            wait_until(lambda: reg._job.done_count >= 2 or reg.settled, 30, "records done")
            assert not reg.settled
            done_before = {d.index for d in reg._job.records if d.state == "success"}
            pid = next(iter(c.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            reg.wait(60)
            assert reg.result == "failure" and reg.failure_reason == "fetch-error"
            failed = [r for r in reg.match_all() if r.state == "failure"]
            assert failed and all("KilledWorker" in r.error for r in failed), failed[0].error
            assert all(reg._job.records[i].state == "success" for i in done_before)
            ok = {r["path"] for r in reg.match_all() if r.state == "success"}
        assert {f"s3://{bucket}/{k}" for k in s3.keys(bucket)} == ok
    finally:
        c.close()
        cluster.close()


def _semantics_run(
    mgr: BackgroundFetchManager, srv: DataServer, s3: S3, tag: str, cluster: Any
) -> tuple[Any, list[Any]]:
    import ipybgfetch

    bucket = s3.bucket()
    requests = [
        srv.url("ok1.bin", 3000, tag=tag),
        ipybgfetch.Request(
            srv.url("pinned.bin", 2000, tag=tag), integrity=DataServer.sri("other.bin", 2000)
        ),
        srv.url("flaky.bin", 1500, status=404, status_times=1, tag=tag),
        srv.url("ok2.bin", 4000, tag=tag),
    ]
    events: list[Any] = []
    mgr.add_event_listener(
        "backgroundfetchfail", lambda e: events.append((e.registration.result, e.registration.id))
    )
    reg = mgr.fetch(
        f"sem-{tag}",
        requests,
        dest=f"s3://{bucket}/s/",
        storage_options=s3.options(),
        cluster=cluster,
    )
    reg.wait(60)
    first = reg.match_all().to_pandas()
    first_result = (reg.result, reg.failure_reason)
    assert reg.retry() == 2
    reg.wait(60)
    second = reg.match_all().to_pandas()
    keys = sorted(k.split("/")[-1] for k in s3.keys(bucket))
    return (first_result, (reg.result, reg.failure_reason), keys, events), [first, second]


def test_same_semantics_as_a_local_run(
    s3: S3, srv: DataServer, client: Any, tmp_path: Path
) -> None:
    """Results, failure reasons, integrity, error statuses, events and retry(): a cluster
    run ends exactly as a local run of the same requests."""
    columns = ["url", "state", "status", "ok", "bytes", "sha256", "attempts"]
    with BackgroundFetchManager(home=tmp_path / "c") as mgr:
        on_cluster, cluster_frames = _semantics_run(mgr, srv, s3, "cluster", client)
    with BackgroundFetchManager(home=tmp_path / "l") as mgr:
        local, local_frames = _semantics_run(mgr, srv, s3, "local", None)
    assert on_cluster[0] == local[0] == ("failure", "fetch-error")  # the 1st failure: integrity
    assert on_cluster[1] == local[1] == ("failure", "fetch-error")
    assert on_cluster[2] == local[2] == ["flaky.bin", "ok1.bin", "ok2.bin"]  # none pinned.bin
    assert (
        on_cluster[3] == [("failure", "sem-cluster")] * 2
        and local[3] == [("failure", "sem-local")] * 2
    )
    for c, loc in zip(cluster_frames, local_frames, strict=True):
        c = c[columns].assign(url=c["url"].str.replace("tag=cluster", "tag=x"))
        loc = loc[columns].assign(url=loc["url"].str.replace("tag=local", "tag=x"))
        pandas.testing.assert_frame_equal(c, loc)
    assert list(cluster_frames[0]["status"]) == [200, 200, 404, 200]
    assert list(cluster_frames[1]["state"]) == ["success", "failure", "success", "success"]
    pinned = cluster_frames[1].iloc[1]
    assert "integrity" in pinned["error"]


def test_download_total_on_the_cluster(
    s3: S3, srv: DataServer, client: Any, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    urls = [srv.url(f"t{i:02}.bin", 100_000, throttle=200_000) for i in range(20)]
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "total",
            urls,
            dest=f"s3://{bucket}/t/",
            storage_options=s3.options(),
            cluster=client,
            download_total=450_000,
        )
        reg.wait(60)
        t_settled = time.time()
        assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded")
        time.sleep(2.5)
        late = [r for r in srv.requests if r.time > t_settled + 2.0]
        assert not late, "the workers went on after the registration failed"
    assert len(s3.keys(bucket)) < 20


def test_the_client_closed_mid_run(s3: S3, srv: DataServer, client: Any, tmp_path: Path) -> None:
    """The records do not wait forever: the shards' futures are cancelled with the client,
    and the unfinished records fail saying so."""
    other = distributed.Client(client.scheduler.address)
    bucket = s3.bucket()
    urls = [srv.url(f"x{i:02}.bin", 200_000, throttle=100_000) for i in range(16)]
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        reg = mgr.fetch(
            "closed", urls, dest=f"s3://{bucket}/c/", storage_options=s3.options(), cluster=other
        )
        wait_until(lambda: reg.downloaded > 0, 30, "bytes from the workers")
        other.close()
        reg.wait(30)
        assert (reg.result, reg.failure_reason) == ("failure", "fetch-error")
        errors = {r.error for r in reg.match_all() if r.state == "failure"}
        assert errors and all("was the dask Client closed?" in e for e in errors), errors
    # the shards stop on their own: their control variable went with the client (a read
    # times out after 5 s), and nothing is requested or sent after that
    t_settled = time.time()
    time.sleep(6.5)
    sent = srv.bytes_sent_total
    time.sleep(0.5)
    assert srv.bytes_sent_total == sent, "the shards kept downloading"
    assert not [r for r in srv.requests if r.time > t_settled + 6]


def test_manager_closed_mid_run_then_resumed_here(
    s3: S3, srv: DataServer, client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the manager stops the shards quietly (no late news applied to a closed
    database); a new manager on the home resumes the registration in this process."""
    bucket = s3.bucket()
    urls = [srv.url(f"m{i}.bin", 100_000, throttle=100_000) for i in range(8)]
    home = tmp_path / "home"
    mgr = BackgroundFetchManager(home=home)
    reg = mgr.fetch(
        "closing", urls, dest=f"s3://{bucket}/m/", storage_options=s3.options(), cluster=client
    )
    wait_until(lambda: reg.downloaded > 0, 30, "bytes from the workers")
    with caplog.at_level("ERROR", logger="ipybgfetch"):
        mgr.close()
        time.sleep(1.5)  # the shards' answers to "stopped" arrive meanwhile
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    with BackgroundFetchManager(home=home) as again:
        restored = again.get("closing")
        assert restored is not None and restored.state == "needs-credentials"
        restored.resume(storage_options=s3.options())
        assert restored.wait(60).result == "success"
    assert sorted(s3.keys(bucket)) == [f"m/m{i}.bin" for i in range(8)]


def test_bad_cluster_arguments(client: Any, s3: S3, tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/a.bin"
    with BackgroundFetchManager(home=tmp_path / "home") as mgr:
        with pytest.raises(FetchError, match=r"cluster= must be a dask.distributed.Client"):
            mgr.fetch("x", url, dest="memory://b/x/", cluster=object())
        with pytest.raises(FetchError, match=r"cluster= must be a dask.distributed.Client"):
            mgr.fetch("x", url, dest="memory://b/x/", cluster=client.cluster)
        with pytest.raises(FetchError, match=r"needs a dest every worker can write to"):
            mgr.fetch("x", url, cluster=client)
        with pytest.raises(FetchError, match=r"bucket 'nope' .* does not exist"):
            mgr.fetch("x", url, dest="s3://nope/x/", storage_options=s3.options(), cluster=client)
        closed = distributed.Client(client.scheduler.address)
        closed.close()
        with pytest.raises(FetchError, match=r"pass an open one"):
            mgr.fetch("x", url, dest="memory://b/x/", cluster=closed)
        assert mgr.get_ids() == []


def test_missing_dask_names_the_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["distributed"] = None  # as if not installed
        from ipybgfetch import BackgroundFetchManager, FetchError
        with BackgroundFetchManager(home={str(tmp_path / "h")!r}) as mgr:
            try:
                mgr.fetch("x", "http://127.0.0.1:1/a", dest="memory://b/", cluster=object())
            except FetchError as exc:
                print("ERR", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    want = 'ERR cluster= needs dask.distributed: pip install "ipybgfetch[cluster]"'
    assert want in out.stdout, out.stdout + out.stderr


def test_shards_by_count_and_bytes() -> None:
    from ipybgfetch._engine.record import RecordData
    from ipybgfetch._models import Request

    records = [RecordData("r", i, Request(f"http://h/{i}")) for i in range(10)]
    assert [len(s) for s in ipybgfetch._cluster.shards(records, 2)] == [3, 3, 3, 1]
    for d in records[:4]:
        d.total = ipybgfetch._cluster.SHARD_BYTES // 2 + 1  # known sizes: two don't fit
    cut = ipybgfetch._cluster.shards(records, 1)
    assert [len(s) for s in cut] == [1, 1, 1, 5, 2]
    assert ipybgfetch._cluster.shards([], 2) == []
