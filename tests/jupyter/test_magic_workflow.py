"""The ``%bgfetch`` magic in notebook workflows (issue 16): ``;`` binds, errors speak magic,
unquoted sizes, "did you mean", verbs print one line, delete says which, retry, and every
example of ``%bgfetch?`` runs. Against the real engine and a loopback DataServer."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import ipybgfetch
from ipybgfetch._jupyter import magic as _magic
from ipybgfetch._jupyter.magic import load_ipython_extension, parse_line, unload_ipython_extension
from ipybgfetch.testing import DataServer

URL = "https://example.org/a.csv"


def usage(fn: Any, *args: Any) -> str:
    with pytest.raises(UsageError) as info:
        fn(*args)
    return str(info.value)


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    load_ipython_extension(ip)
    try:
        yield ip
    finally:
        unload_ipython_extension(ip)
        ip.extension_manager.loaded.discard("ipybgfetch")  # a later %load_ext loads it again
        for name in ("reg", "r", "p"):
            ip.user_ns.pop(name, None)


@pytest.fixture
def home_mgr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    manager = ipybgfetch.BackgroundFetchManager(home=tmp_path / "home")
    monkeypatch.setattr(_magic, "_manager", lambda: manager)
    try:
        yield manager
    finally:
        for reg in manager.registrations():
            reg.abort()
        manager.close()


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        f"x {URL} --download-total 60 MB",
        f"x --download-total 60 MB {URL}",
        f"x {URL} --download-total=60 MB",
        f"x {URL} --download-total '60 MB'",
    ],
)
def test_download_total_with_a_space_needs_no_quotes(line: str) -> None:
    cmd = parse_line(line)
    assert cmd.download_total == 60_000_000 and cmd.urls == (URL,) and cmd.id == "x"


@pytest.mark.parametrize(
    ("line", "segments", "min_size"),
    [
        (f"x {URL} --segments 16", 16, None),
        (f"x {URL} --segments=1 --min-segment-size 16 MiB", 1, 16 * 2**20),
        (f"x --min-segment-size=8MiB {URL}", None, 8 * 2**20),
    ],
)
def test_segment_options_reach_fetch(line: str, segments: int | None, min_size: int | None) -> None:
    kwargs = parse_line(line).fetch_kwargs()
    assert kwargs.get("segments") == segments and kwargs.get("min_segment_size") == min_size


@pytest.mark.parametrize("line", [f"x {URL} --segments 0", f"x {URL} --segments many"])
def test_bad_segments_say_what_to_give(line: str) -> None:
    with pytest.raises(UsageError, match="--segments takes a number of connections"):
        parse_line(line)


def test_segments_from_the_magic_split_a_capped_file(
    shell: InteractiveShell, home_mgr: Any
) -> None:
    """--segments 4 on a server capping each connection: the file comes over 4 at once."""
    import time

    with DataServer(rate_limit=4 * 2**20) as server:  # 4 MiB/s per connection: ~4 s alone
        url = server.url("seg.bin", 16 * 2**20)
        shell.run_cell(f"reg = %bgfetch seg {url} --segments 4 --min-segment-size 1MiB")
        reg = shell.user_ns["reg"]
        most = 0  # connections the registration had open for the file at once
        deadline = time.monotonic() + 60
        while not reg.settled and time.monotonic() < deadline:
            most = max([most] + [r["connections"] for r in reg.snapshot()["records"]])
            time.sleep(0.02)
        assert reg.wait(1).result == "success"
    assert most == 4
    assert reg.match(url)["sha256"] == DataServer.sha256("seg.bin", 16 * 2**20)


@pytest.mark.parametrize(
    ("line", "verb"),
    [("lst", "list"), ("abrot my-data", "abort"), ("paus my-data", "pause"), ("retyr x", "retry")],
)
def test_misspelt_verbs_get_did_you_mean(line: str, verb: str) -> None:
    message = usage(parse_line, line)
    assert f"did you mean {verb!r}" in message


def test_an_id_close_to_a_verb_still_fetches() -> None:
    assert parse_line(f"lst {URL}").id == "lst"


def test_new_verbs_and_options_parse() -> None:
    assert parse_line("retry my-data").verb == "retry"
    assert parse_line("delete my-data --all").all
    assert parse_line("wait --all").all
    cmd = parse_line("resume my-data -H 'Authorization: Bearer t'")
    assert cmd.headers == (("Authorization", "Bearer t"),)
    assert parse_line(f"x {URL} --force").fetch_kwargs() == {"force": True}
    assert parse_line(f"x {URL} --checksum").fetch_kwargs() == {"checksum": True}


# --- against the engine ----------------------------------------------------------------


def test_trailing_semicolon_binds_and_shows_nothing(
    shell: InteractiveShell, home_mgr: Any, server: DataServer
) -> None:
    url = server.url("semi.bin", 1000, tag=uuid.uuid4().hex)
    for store_history in (False, True):
        result = shell.run_cell(f"reg = %bgfetch semi {url};", store_history=store_history)
        assert result.success, result.error_in_exec
        assert isinstance(shell.user_ns["reg"], ipybgfetch.BackgroundFetchRegistration)
        assert result.result is None
        shell.user_ns["reg"].wait(10)
        result = shell.run_cell(f"%bgfetch semi {url};", store_history=store_history)
        assert result.success and result.result is None
        shell.user_ns["reg"].wait(10)
    result = shell.run_cell("await reg")
    assert result.success, result.error_in_exec


def test_errors_speak_magic(shell: InteractiveShell, home_mgr: Any, server: DataServer) -> None:
    slow = server.url("slow.bin", 2_000_000, throttle=200_000, tag=uuid.uuid4().hex)
    shell.run_line_magic("bgfetch", f"busy {slow}")
    message = usage(shell.run_line_magic, "bgfetch", f"busy {slow}")
    assert "%bgfetch abort busy" in message and "mgr." not in message
    message = usage(shell.run_line_magic, "bgfetch", "delete busy")
    assert "%bgfetch abort busy" in message and "abort()" not in message
    message = usage(shell.run_line_magic, "bgfetch", f"d {slow} --dest /proc/nope/x")
    assert "--dest" in message and "dest=" not in message
    message = usage(shell.run_line_magic, "bgfetch", "retry busy")
    assert "%bgfetch wait busy" in message and "wait()" not in message
    shell.run_line_magic("bgfetch", "abort busy")


def test_verbs_print_one_line_not_a_panel(
    shell: InteractiveShell, home_mgr: Any, server: DataServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url("v.bin", 1_000_000, throttle=500_000, tag=uuid.uuid4().hex)
    shell.run_line_magic("bgfetch", f"v {url}")
    capsys.readouterr()
    for verb in ("pause", "resume", "abort"):
        result = shell.run_cell(f"%bgfetch {verb} v", store_history=True)
        assert result.success, result.error_in_exec
        assert result.result is None  # no panel
        out = capsys.readouterr().out
        assert len(out.strip().splitlines()) == 1, out
        assert "'v'" in out
    result = shell.run_cell("r = %bgfetch pause v", store_history=True)
    assert shell.user_ns["r"] is home_mgr.registrations()[-1]
    result = shell.run_cell("%bgfetch get v", store_history=True)
    assert result.result is home_mgr.registrations()[-1]  # get is for the value


def test_delete_removes_one_and_says_which(
    shell: InteractiveShell, home_mgr: Any, server: DataServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex
    shell.run_line_magic("bgfetch", f"my-data {server.url('big.bin', 50_000, tag=tag)}").wait(10)
    shell.run_line_magic("bgfetch", f"my-data {server.url('small.bin', 10, tag=tag)}").wait(10)
    assert len(home_mgr.registrations()) == 2
    listing = shell.run_line_magic("bgfetch", "list")
    assert len(listing) == 1  # the newer one replaced the older in the listing
    capsys.readouterr()
    shell.run_line_magic("bgfetch", "delete my-data")
    out = capsys.readouterr().out
    assert "Deleted the registration 'my-data' (success" in out and "10 B" in out
    assert "1 older registration with this id remains" in out
    assert "%bgfetch delete my-data --all" in out
    (left,) = home_mgr.registrations()
    assert left.downloaded == 50_000
    shell.run_line_magic("bgfetch", "delete my-data --all")
    assert home_mgr.registrations() == []


def test_force_reruns_leave_one_registration_and_delete_says_the_truth(
    shell: InteractiveShell, home_mgr: Any, server: DataServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex
    a, c = server.url("a.csv", 100, tag=tag), server.url("c.csv", 100, tag=tag)
    shell.run_line_magic("bgfetch", f"f1 {a}").wait(10)
    for _ in range(2):
        shell.run_line_magic("bgfetch", f"f1 {a} --force").wait(10)
    assert [r.id for r in home_mgr.registrations()] == ["f1"]  # replaced, not listed twice
    path = home_mgr.registrations()[0].match(a).response.path
    capsys.readouterr()
    shell.run_line_magic("bgfetch", "delete f1")
    out = capsys.readouterr().out
    assert "Deleted the registration 'f1'" in out and "with its records and files" in out
    assert "older" not in out and not path.exists()
    # an older registration that keeps a file of its own keeps the shared one too: said so
    shell.run_line_magic("bgfetch", f"f2 {a} {c}").wait(10)
    shell.run_line_magic("bgfetch", f"f2 {a}").wait(10)
    capsys.readouterr()
    shell.run_line_magic("bgfetch", "delete f2")
    out = capsys.readouterr().out
    assert "1 of its 1 files stay, as an older registration with this id lists them too" in out
    assert "1 older registration with this id remains" in out


def test_retry_verb_refetches_only_the_failed(
    shell: InteractiveShell, home_mgr: Any, server: DataServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex
    good = server.url("g.csv", 100, tag=tag)
    bad = server.url("b.csv", 100, status=404, status_times=1, tag=tag)
    reg = shell.run_line_magic("bgfetch", f"rt {good} {bad}")
    reg.wait(10)
    assert reg.failure_reason == "bad-status"
    capsys.readouterr()
    shell.run_line_magic("bgfetch", "retry rt")
    assert "Retrying 1 failed record of 'rt'" in capsys.readouterr().out
    shell.run_line_magic("bgfetch", "wait rt --timeout 10")
    assert reg.result == "success"
    assert len(server.requests_for(good)) == 1 and len(server.requests_for(bad)) == 2


def _help_examples() -> list[str]:
    """The runnable lines and cells of ``%bgfetch?``, in order."""
    lines = _magic._HELP.splitlines()
    examples: list[str] = []
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if not lines[i].startswith("    "):  # prose, not an example
            i += 1
            continue
        if text.startswith("%%bgfetch"):
            cell = [text]
            i += 1
            while i < len(lines) and lines[i].strip():
                cell.append(lines[i].strip())
                i += 1
            examples.append("\n".join(cell))
            continue
        if text.startswith(("%bgfetch", "reg = %bgfetch")):
            examples.append(re.split(r"\s{2,}", text)[0])  # drop the aligned comment
        i += 1
    return examples


def test_every_help_example_runs(
    shell: InteractiveShell, home_mgr: Any, server: DataServer, tmp_path: Path
) -> None:
    examples = _help_examples()
    assert len(examples) >= 12
    tag = uuid.uuid4().hex
    urls = {  # a.csv is empty: the help's digest is the SHA-256 of nothing
        "https://example.org/a.csv": server.url("a.csv", 0, tag=tag),
        "https://example.org/b.parquet": server.url("b.parquet", 2000, tag=tag),
    }
    ran = []
    for example in examples:
        code = example
        for public, local in urls.items():
            code = code.replace(public, local)
        code = code.replace(" ID", " my-data").replace(" URL", f" {urls[URL]}")
        code = code.replace("[--timeout SECONDS]", "--timeout 30")
        code = code.replace(" ... and %bgfetch resume my-data", "")
        code = code.replace("Bearer <token>", "Bearer t")
        if "delete" in code:  # last: it removes what the others made
            continue
        result = shell.run_cell(code, store_history=True)
        assert result.success, f"{example!r} -> {code!r}: {result.error_in_exec}"
        ran.append(code)
        for reg in home_mgr.registrations():
            if not reg.settled:
                reg.wait(30)
    for code in ("%bgfetch delete my-data", "%bgfetch delete my-data --all"):
        result = shell.run_cell(code, store_history=True)
        assert result.success, result.error_in_exec
    assert [r.id for r in home_mgr.registrations()] == ["list"]  # the fetch-verb example
    assert len(ran) >= 11
