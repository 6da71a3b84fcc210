"""Object storage as a destination (``ipybgfetch._engine.cloud``): ``dest="s3://bucket/prefix/"``
against moto's real S3 server on loopback, plus ``memory://`` and ``file://``."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cloud_support import S3, files_under, s3_server

from ipybgfetch import BackgroundFetchManager, FetchError
from ipybgfetch.testing import DataServer

ROOT = Path(__file__).resolve().parent.parent
s3 = pytest.fixture(scope="module")(s3_server)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_s3_objects_are_the_servers_bytes(s3: S3, server: DataServer, home: Path) -> None:
    bucket = s3.bucket()
    sizes = [0, 1, 1000, 300_000, 3 * 2**20]
    urls = [server.url(f"f{i}.bin", n) for i, n in enumerate(sizes)]
    csv = server.add_file("table.csv", b"a,b\n1,2\n3,4\n")
    js = server.add_file("doc.json", b'{"k": [1, 2]}')
    with BackgroundFetchManager(home=home) as mgr:
        reg = mgr.fetch(
            "s3", [*urls, csv, js], dest=f"s3://{bucket}/x/", storage_options=s3.options()
        )
        reg.wait(60)
        assert reg.result == "success", [r.error for r in reg.match_all()]
        assert reg.dest == f"s3://{bucket}/x/"
        keys = sorted(s3.keys(bucket))
        assert keys == sorted(
            [f"x/f{i}.bin" for i in range(len(sizes))] + ["x/table.csv", "x/doc.json"]
        )
        for i, n in enumerate(sizes):
            assert s3.sha256(bucket, f"x/f{i}.bin") == DataServer.sha256(f"f{i}.bin", n)
            rec = reg.match(urls[i])
            assert rec.response.path == f"s3://{bucket}/x/f{i}.bin"
            assert str(rec.response.path) == f"s3://{bucket}/x/f{i}.bin"
            assert rec["sha256"] == DataServer.sha256(f"f{i}.bin", n)
        assert reg.match(urls[2]).response.read() == DataServer.content("f2.bin", 1000)
        with reg.match(urls[2]).response.open() as f:
            assert f.read(10) == DataServer.content("f2.bin", 1000)[:10]
        assert reg.match(js).response.json() == {"k": [1, 2]}
        assert reg.match(csv).response.text() == "a,b\n1,2\n3,4\n"
        assert reg.match(csv).to_pandas().to_dict("list") == {"a": [1, 3], "b": [2, 4]}
        df = reg.match_all().to_pandas()
        assert list(df["state"]) == ["success"] * 7
        assert df["path"].iloc[0] == f"s3://{bucket}/x/f0.bin"
        assert list(df["bytes"][:5]) == sizes
        # the staging folder is empty: every body was uploaded, then removed locally
        staging = home / "staging" / reg._job.key
        assert not [p for p in staging.rglob("*") if p.is_file()]


def test_storage_options_never_reach_the_disk(s3: S3, server: DataServer, home: Path) -> None:
    secret = "NeverOnDisk-" + os.urandom(8).hex()
    bucket = s3.bucket()
    urls = [server.url(f"s{i}.bin", 200_000 + i) for i in range(5)]
    urls.append(server.url("missing.bin", 10, status=404))
    with BackgroundFetchManager(home=home) as mgr:
        reg = mgr.fetch("sec", urls, dest=f"s3://{bucket}/p/", storage_options=s3.options(secret))
        reg.wait(60)
        reg.match_all().to_pandas()
    found = [p for p in files_under(home) if secret.encode() in p.read_bytes()]
    assert not found, f"the storage_options secret was written to {found}"
    assert list(files_under(home)), "the test looked at an empty home"


def test_an_object_already_there_is_not_fetched_again(
    s3: S3, server: DataServer, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    urls = [server.url(f"again{i}.bin", 50_000 + i, tag="again") for i in range(4)]
    with BackgroundFetchManager(home=tmp_path / "a") as mgr:
        assert (
            mgr.fetch("a", urls, dest=f"s3://{bucket}/d/", storage_options=s3.options())
            .wait(60)
            .result
            == "success"
        )
    gets = sum(len(server.requests_for(u)) for u in urls)
    assert gets == 4
    # Another manager (another machine, a lost worker): the objects are complete and were
    # uploaded for these URLs, so nothing is requested; the records look the same.
    with BackgroundFetchManager(home=tmp_path / "b") as mgr:
        reg = mgr.fetch("b", urls, dest=f"s3://{bucket}/d/", storage_options=s3.options())
        assert reg.wait(60).result == "success"
        assert sum(len(server.requests_for(u)) for u in urls) == gets
        for i, u in enumerate(urls):
            rec = reg.match(u)
            assert rec["sha256"] == DataServer.sha256(f"again{i}.bin", 50_000 + i)
            assert rec["bytes"] == 50_000 + i
            assert rec.response.status == 200
    assert sorted(s3.keys(bucket)) == [f"d/again{i}.bin" for i in range(4)]


def test_a_foreign_object_at_the_name_is_never_overwritten(
    s3: S3, server: DataServer, home: Path
) -> None:
    """As on disk, an object ipybgfetch did not write is never overwritten: the record
    fails saying so, the object keeps its bytes, and delete() leaves it alone. force=True
    is the user asking to replace it."""
    bucket = s3.bucket()
    s3.client.put_object(Bucket=bucket, Key="z/f.bin", Body=b"someone else's bytes")
    precious = hashlib.sha256(b"someone else's bytes").hexdigest()
    url = server.url("f.bin", 5000, tag="foreign")
    with BackgroundFetchManager(home=home) as mgr:
        reg = mgr.fetch("f", url, dest=f"s3://{bucket}/z", storage_options=s3.options())
        assert reg.wait(60).result == "failure"
        df = reg.match_all().to_pandas()
        error = str(df["error"].iloc[0])
        assert "already exists" in error and "force=True" in error, error
        assert s3.sha256(bucket, "z/f.bin") == precious
        mgr.delete("f")
        assert s3.sha256(bucket, "z/f.bin") == precious
        again = mgr.fetch(
            "f", url, dest=f"s3://{bucket}/z", storage_options=s3.options(), force=True
        )
        assert again.wait(60).result == "success"
    assert s3.sha256(bucket, "z/f.bin") == DataServer.sha256("f.bin", 5000)


def test_an_identical_object_at_the_name_is_not_a_conflict(server: DataServer, home: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/same-bytes/q/s.bin", DataServer.content("s.bin", 3000))
    fs.pipe("/same-bytes/q/t.bin", b"PRECIOUS")
    with BackgroundFetchManager(home=home) as mgr:
        reg = mgr.fetch(
            "m",
            [server.url("s.bin", 3000), server.url("t.bin", 3000)],
            dest="memory://same-bytes/q/",
        )
        reg.wait(60)
        states = reg.match_all().to_pandas()["ok"].tolist()
    assert states == [True, False]
    assert fs.cat_file("/same-bytes/q/t.bin") == b"PRECIOUS"


def test_integrity_mismatch_leaves_no_object(s3: S3, server: DataServer, home: Path) -> None:
    import ipybgfetch

    bucket = s3.bucket()
    url = server.url("bad.bin", 4000)
    wrong = DataServer.sri("other.bin", 4000)
    with BackgroundFetchManager(home=home) as mgr:
        reg = mgr.fetch(
            "i",
            ipybgfetch.Request(url, integrity=wrong),
            dest=f"s3://{bucket}/i/",
            storage_options=s3.options(),
        )
        assert reg.wait(60).result == "failure"
        assert reg.failure_reason == "fetch-error"
    assert s3.keys(bucket) == []


def test_memory_and_file_destinations(server: DataServer, tmp_path: Path) -> None:
    import fsspec

    urls = [server.url(f"m{i}.csv", 3000 + i) for i in range(3)]
    target = tmp_path / "out" / "sub"
    with BackgroundFetchManager(home=tmp_path / "h") as mgr:
        reg = mgr.fetch("mem", urls, dest="memory://ipybgfetch-test/m/")
        reg2 = mgr.fetch("file", urls, dest=f"file://{target}")
        assert reg.wait(30).result == "success" and reg2.wait(30).result == "success"
        mem = fsspec.filesystem("memory")
        for i in range(3):
            want = DataServer.content(f"m{i}.csv", 3000 + i)
            assert mem.cat_file(f"/ipybgfetch-test/m/m{i}.csv") == want
            assert (target / f"m{i}.csv").read_bytes() == want
            assert reg2.match(urls[i]).response.read() == want
        assert sorted(p.name for p in target.iterdir()) == ["m0.csv", "m1.csv", "m2.csv"]


def test_magic_dest_url(server: DataServer, tmp_path: Path) -> None:
    import fsspec
    from IPython.core.interactiveshell import InteractiveShell

    import ipybgfetch
    from ipybgfetch import _manager

    shell = InteractiveShell.instance()
    old = _manager._default
    _manager._default = BackgroundFetchManager(home=tmp_path / "magic")
    try:
        # Not %load_ext: another test module may have left "ipybgfetch" in the extension
        # manager's loaded set after unloading the magics, which makes %load_ext a no-op.
        ipybgfetch.load_ipython_extension(shell)
        url = server.url("magic.bin", 777)
        reg = shell.run_line_magic("bgfetch", f"mg {url} --dest memory://ipybgfetch-magic/q/")
        assert reg.wait(30).result == "success"
        assert reg.dest == "memory://ipybgfetch-magic/q/"
        assert fsspec.filesystem("memory").cat_file("/ipybgfetch-magic/q/magic.bin") == (
            DataServer.content("magic.bin", 777)
        )
        assert ipybgfetch.manager().get_ids() == []
    finally:
        ipybgfetch.unload_ipython_extension(shell)
        _manager._default.close()
        _manager._default = old


def test_bad_destinations_are_clear_errors(s3: S3, home: Path) -> None:
    with BackgroundFetchManager(home=home) as mgr:
        url = "http://127.0.0.1:1/a.bin"
        # a protocol whose package is not installed names what to install
        if importlib_missing("gcsfs"):
            with pytest.raises(FetchError, match=r"pip install gcsfs"):
                mgr.fetch("g", url, dest="gs://bucket/x/")
        with pytest.raises(FetchError, match=r"fsspec knows no protocol 'nosuch'"):
            mgr.fetch("n", url, dest="nosuch://bucket/x/")
        with pytest.raises(FetchError, match=r"bucket 'no-such-bucket' .* does not exist"):
            mgr.fetch("b", url, dest="s3://no-such-bucket/x/", storage_options=s3.options())
        with pytest.raises(FetchError, match=r"storage_options applies to an object-storage"):
            mgr.fetch("l", url, dest=str(home / "files"), storage_options={"key": "k"})
        with pytest.raises(FetchError, match=r"storage_options must be a dict"):
            mgr.fetch("s", url, dest="memory://x/", storage_options="key=k")  # type: ignore[arg-type]
        with pytest.raises(FetchError, match=r"names no bucket"):
            mgr.fetch("e", url, dest="s3://", storage_options=s3.options())
        assert mgr.get_ids() == []


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_missing_fsspec_names_the_extra(tmp_path: Path) -> None:
    """In a process where fsspec cannot be imported: the error says which extra to install."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["fsspec"] = None  # as if not installed
        from ipybgfetch import BackgroundFetchManager, FetchError
        with BackgroundFetchManager(home={str(tmp_path / "h")!r}) as mgr:
            try:
                mgr.fetch("x", "http://127.0.0.1:1/a", dest="s3://bucket/x/")
            except FetchError as exc:
                print("ERR", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    want = 'ERR an object-storage dest needs fsspec: pip install "ipybgfetch[cloud]"'
    assert want in out.stdout, out.stdout + out.stderr


KILL_CHILD = """
import sys, time, logging
from ipybgfetch import BackgroundFetchManager
home, url, dest, endpoint, mode = sys.argv[1:6]
options = {"key": "AKIAIPYBGFETCHTEST01", "secret": "moto-secret",
           "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
mgr = BackgroundFetchManager(home=home)
if mode == "start":
    reg = mgr.fetch("big", url, dest=dest, storage_options=options)
    print("started", flush=True)
    time.sleep(600)
else:
    reg = mgr.get("big")
    deadline = time.monotonic() + 30
    while reg.read_only and time.monotonic() < deadline:  # the killed owner's lease expires
        time.sleep(0.05)
    print("state", reg.state, flush=True)
    reg.resume(storage_options=options)
    reg.wait(120)
    rec = reg.match_all()[0]
    print("result", reg.result, rec["sha256"], rec["path"], flush=True)
    mgr.close()
"""


def test_kill_9_mid_upload_then_resume_in_a_new_process(
    s3: S3, server: DataServer, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    size = 40 * 2**20  # several 8 MiB parts: a multipart upload
    url = server.url("big.bin", size, tag="kill9")
    home = tmp_path / "home"
    dest = f"s3://{bucket}/k/"
    script = tmp_path / "child.py"
    script.write_text(KILL_CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IPYBGFETCH_LEASE_TIMEOUT": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(home), url, dest, s3.endpoint, "start"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill it once its upload has begun
            uploads = s3.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads:
                break
            assert child.poll() is None, "the child process ended early"
            time.sleep(0.005)
        else:
            pytest.fail("the upload never started")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert s3.keys(bucket) == [], "an object appeared before its upload completed"
    gets = len(server.requests_for(url))
    out = subprocess.run(
        [sys.executable, str(script), str(home), url, dest, s3.endpoint, "resume"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert "state needs-credentials" in out.stdout, out.stdout + out.stderr
    sha = DataServer.sha256("big.bin", size)
    assert f"result success {sha} s3://{bucket}/k/big.bin" in out.stdout, out.stdout + out.stderr
    assert s3.keys(bucket) == ["k/big.bin"]
    assert s3.sha256(bucket, "k/big.bin") == sha
    # every byte was on disk already: the body was not fetched again
    assert len(server.requests_for(url)) == gets


def test_a_rerun_returns_the_settled_registration(s3: S3, server: DataServer, home: Path) -> None:
    """Notebooks are re-run: the same fetch() into the same bucket prefix returns the
    settled registration, with no request to the server; checksum=True re-hashes the
    objects; a deleted object means a new registration."""
    bucket = s3.bucket()
    urls = [server.url(f"re{i}.bin", 20_000 + i, tag="rerun") for i in range(3)]
    dest = f"s3://{bucket}/r/"
    with BackgroundFetchManager(home=home) as mgr:
        first = mgr.fetch("re", urls, dest=dest, storage_options=s3.options()).wait(60)
        assert first.result == "success"
        gets = sum(len(server.requests_for(u)) for u in urls)
        again = mgr.fetch("re", urls, dest=dest, storage_options=s3.options(), checksum=True)
        assert again is first
        assert sum(len(server.requests_for(u)) for u in urls) == gets
        s3.client.delete_object(Bucket=bucket, Key="r/re1.bin")
        third = mgr.fetch("re", urls, dest=dest, storage_options=s3.options()).wait(60)
        assert third is not first and third.result == "success"
        assert sum(len(server.requests_for(u)) for u in urls) == gets + 1  # re1.bin only
        assert sorted(s3.keys(bucket)) == [f"r/re{i}.bin" for i in range(3)]
