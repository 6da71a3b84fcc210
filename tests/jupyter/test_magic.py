"""Tests for ipybgfetch._jupyter.magic: the %bgfetch / %%bgfetch magics.

Three layers:
1. the pure parsers (parse_line / parse_cell / parse_cell_body), no IPython shell;
2. the magics inside a real ``InteractiveShell`` (no kernel) against a fake manager, to pin
   IPython-level behaviour (assignment, ``;``, no ``$var`` expansion, UsageError display);
3. the magics against the real engine and the loopback ``DataServer``.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import ipybgfetch
from ipybgfetch._jupyter import magic as _magic
from ipybgfetch._jupyter.magic import (
    VERBS,
    BgFetchMagics,
    Command,
    RegistrationList,
    RequestSpec,
    load_ipython_extension,
    parse_cell,
    parse_cell_body,
    parse_line,
    unload_ipython_extension,
)

URL = "https://example.org/a.csv"
URL2 = "https://example.org/b.parquet"


def usage(fn: Any, *args: Any) -> str:
    """Call fn, expect a UsageError, return its message."""
    with pytest.raises(UsageError) as info:
        fn(*args)
    return str(info.value)


def assert_has_example(message: str) -> None:
    assert "Example:" in message
    assert "%bgfetch" in message


# === 1. parsing ==========================================================================


def test_bare_line_is_the_manager() -> None:
    assert parse_line("") == Command(verb="manager")
    assert parse_line("   ").verb == "manager"


def test_fetch_with_every_option() -> None:
    cmd = parse_line(
        f'my-data {URL} {URL2} --title "My data set" --icon https://e.org/i.png '
        '--icon https://e.org/j.png --download-total "60 MB" --dest /tmp/dl '
        '-H "X-Token: abc" --header "Accept: text/csv"'
    )
    assert cmd.verb == "fetch"
    assert cmd.id == "my-data"
    assert cmd.urls == (URL, URL2)
    assert cmd.title == "My data set"
    assert cmd.icons == ("https://e.org/i.png", "https://e.org/j.png")
    assert cmd.download_total == 60_000_000
    assert cmd.dest == "/tmp/dl"
    assert cmd.headers == (("X-Token", "abc"), ("Accept", "text/csv"))
    assert cmd.fetch_kwargs() == {
        "title": "My data set",
        "icons": [{"src": "https://e.org/i.png"}, {"src": "https://e.org/j.png"}],
        "download_total": 60_000_000,
        "dest": "/tmp/dl",
        "headers": {"X-Token": "abc", "Accept": "text/csv"},
    }


def test_fetch_kwargs_only_has_given_options() -> None:
    assert parse_line(f"x {URL}").fetch_kwargs() == {}
    assert parse_line(f"x {URL} --download-total 0").fetch_kwargs() == {"download_total": 0}


def test_options_and_urls_intermix() -> None:
    cmd = parse_line(f"x {URL} --title T {URL2} -H 'A: 1' https://e.org/c")
    assert cmd.urls == (URL, URL2, "https://e.org/c")
    assert cmd.title == "T"


def test_option_equals_form_and_titles_with_quotes() -> None:
    cmd = parse_line(f"""x {URL} --title="It's data" --download-total=1.5GiB""")
    assert cmd.title == "It's data"
    assert cmd.download_total == 1_610_612_736
    assert parse_line(f"x {URL} --title 'say \"hi\"'").title == 'say "hi"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [("123", 123), ("60MB", 60_000_000), ("1.5GiB", 1_610_612_736), ("2gb", 2 * 10**9)],
)
def test_download_total_sizes(text: str, expected: int) -> None:
    assert parse_line(f"x {URL} --download-total {text}").download_total == expected


@pytest.mark.parametrize("bad", ["12XB", "-1", "nan", "1.5", "lots", "''"])
def test_bad_sizes_are_usage_errors(bad: str) -> None:
    message = usage(parse_line, f"x {URL} --download-total {bad}")
    assert "--download-total" in message
    assert "invalid size" in message
    assert "--download-total 60MB" in message  # a correct example


def test_dest_expands_user() -> None:
    assert parse_line(f"x {URL} --dest ~/data").dest == os.path.expanduser("~/data")


def test_backslashes_are_kept() -> None:
    cmd = parse_line(rf"x {URL}?a=\d --dest C:\data\dl")
    assert cmd.urls == (rf"{URL}?a=\d",)
    assert cmd.dest == r"C:\data\dl"


def test_repeated_header_and_value_with_colons() -> None:
    cmd = parse_line(f"x {URL} -H 'X-Time: 12:30:00' -H 'X-Empty:' -H X-B:2")
    assert cmd.headers == (("X-Time", "12:30:00"), ("X-Empty", ""), ("X-B", "2"))


@pytest.mark.parametrize("bad", ["no-colon", ": value", "Two Words: v"])
def test_bad_headers(bad: str) -> None:
    message = usage(parse_line, f"x {URL} -H '{bad}'")
    assert "Name: value" in message
    assert '-H "Authorization: Bearer <token>"' in message


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/q?x=$x&y={y}",
        "https://example.org/$HOME/{a,b}/${c}",
        "https://example.org/a%20b.csv?sig=a%2Fb%3D#frag",
        "https://example.org/{{double}}?$$",
    ],
)
def test_urls_are_literal(url: str) -> None:
    assert parse_line(f"x {url}").urls == (url,)
    assert parse_cell("x", url).urls == (url,)


url_chars = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~:/?#[]@!$&()*+,=%{}^|`<>",
    max_size=60,
)


@given(url_chars)
def test_any_url_text_survives_parsing(tail: str) -> None:
    url = "https://example.org/" + tail
    assert parse_line(f"x {url}").urls == (url,)
    assert parse_cell("x", f"{url}\n").urls == (url,)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                *VERBS,
                "x",
                URL,
                "--title",
                "T",
                "-H",
                "A: b",
                "--dest",
                "--download-total",
                "5MB",
                "bad size",
                "--nope",
                "-h",
                "--timeout",
                "3",
                "'",
                '"',
                ";",
                "fetch",
                "$x",
                "{y}",
            ]
        ),
        max_size=8,
    )
)
def test_parse_line_only_ever_raises_usage_error(tokens: list[str]) -> None:
    line = " ".join(tokens)
    try:
        result = parse_line(line)
    except UsageError as exc:
        assert "Example:" in str(exc)
    else:
        assert isinstance(result, Command)


@pytest.mark.parametrize("verb", ["get", "abort", "pause", "resume", "wait", "delete"])
def test_id_verbs(verb: str) -> None:
    assert parse_line(f"{verb} my-data") == Command(verb=verb, id="my-data")
    message = usage(parse_line, verb)
    assert "needs the id" in message
    assert f"%bgfetch {verb} my-data" in message
    message = usage(parse_line, f"{verb} a b")
    assert "exactly one" in message
    message = usage(parse_line, f"{verb} a --title x")
    assert "no option" in message


def test_verb_followed_by_url_suggests_fetch_verb() -> None:
    message = usage(parse_line, f"get {URL}")
    assert "not a URL" in message
    message = usage(parse_line, f"wait data {URL}")
    assert "fetch" in message


def test_list() -> None:
    assert parse_line("list") == Command(verb="list")
    message = usage(parse_line, f"list {URL}")
    assert "%bgfetch fetch list https://example.org/a.csv" in message


@pytest.mark.parametrize("verb", VERBS)
def test_fetch_verb_allows_an_id_that_equals_a_verb(verb: str) -> None:
    cmd = parse_line(f"fetch {verb} {URL} --title T")
    assert (cmd.verb, cmd.id, cmd.urls, cmd.title) == ("fetch", verb, (URL,), "T")


def test_wait_timeout() -> None:
    assert parse_line("wait x --timeout 2.5").timeout == 2.5
    assert parse_line("wait --timeout 0 x").timeout == 0.0
    for bad in ("abc", "-1", "inf", "nan"):
        message = usage(parse_line, f"wait x --timeout {bad}")
        assert "--timeout" in message
        assert "%bgfetch wait my-data --timeout 60" in message


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        (f"x {URL} --titel T", "did you mean --title"),
        (f"x {URL} --download 5MB", "did you mean --download-total"),
        (f"x {URL} --frobnicate", "unknown option --frobnicate"),
        (f"x {URL} -Z", "unknown option -Z"),
        (f"x {URL} --title", "expected one argument"),
        (f"x {URL} -H", "expected one argument"),
    ],
)
def test_unknown_and_incomplete_options(line: str, hint: str) -> None:
    message = usage(parse_line, line)
    assert hint in message
    assert_has_example(message)
    assert '%bgfetch my-data https://example.org/a.csv --title "My data"' in message


def test_missing_urls_and_ids() -> None:
    message = usage(parse_line, "x")
    assert "at least one URL" in message
    assert "%%bgfetch my-data" in message  # points to the cell magic too
    message = usage(parse_line, URL)
    assert "registration id, not a URL" in message
    assert_has_example(message)
    assert "give an id" in usage(parse_line, "fetch")


def test_unclosed_quote() -> None:
    message = usage(parse_line, f'x {URL} --title "oops')
    assert "close every quote" in message


def test_help() -> None:
    assert parse_line("--help").verb == "help"
    assert parse_line("-h").verb == "help"
    assert parse_line(f"x {URL} --help").verb == "help"
    assert parse_line("wait x -h").verb == "help"


def test_trailing_semicolon_silences() -> None:
    cmd = parse_line(f"x {URL};")
    assert cmd.silent and cmd.urls == (URL,)
    assert parse_line(f"x {URL} ;  ").silent
    assert not parse_line(f"x {URL}").silent
    assert parse_line("list;") == Command(verb="list", silent=True)
    # a ';' inside a URL is kept
    assert parse_line(f"x {URL};a=1").urls == (f"{URL};a=1",)


# --- the cell magic -----------------------------------------------------------------------

CELL = f"""
# the data set
{URL}  sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=

   {URL2}   # parquet part
https://example.org/c.csv#part-2 sha384-abc sha512-def
"""


def test_parse_cell_body() -> None:
    assert parse_cell_body(CELL) == (
        RequestSpec(URL, "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
        RequestSpec(URL2, None),
        RequestSpec("https://example.org/c.csv#part-2", "sha384-abc sha512-def"),
    )


def test_parse_cell() -> None:
    cmd = parse_cell('my-data --title "Data" --download-total 2GB', CELL)
    assert cmd.verb == "fetch"
    assert cmd.id == "my-data"
    assert cmd.title == "Data"
    assert cmd.download_total == 2 * 10**9
    assert len(cmd.requests) == 3


def test_cell_urls_on_the_first_line_come_first() -> None:
    cmd = parse_cell(f"x {URL}", URL2)
    assert cmd.urls == (URL, URL2)


def test_cell_errors() -> None:
    message = usage(parse_cell, "", URL)
    assert "needs the id" in message
    assert "%%bgfetch my-data" in message
    message = usage(parse_cell, "x", "\n# nothing here\n")
    assert "no URL" in message
    message = usage(parse_cell, "x", f"{URL}\nnot-a-url sha256-x\n")
    assert "line 2" in message and "'not-a-url'" in message
    message = usage(parse_cell, "list", URL)
    assert "%%bgfetch fetch list" in message
    message = usage(parse_cell, "x --nope", URL)
    assert "unknown option --nope" in message
    assert "%%bgfetch my-data" in message


def test_cell_fetch_verb_and_silence() -> None:
    cmd = parse_cell("fetch wait --title T;", URL)
    assert (cmd.id, cmd.urls, cmd.silent) == ("wait", (URL,), True)


# === 2. the magics in a real InteractiveShell, fake manager =================================


class FakeRegistration:
    def __init__(self, id: str, requests: list[Any], **kwargs: Any) -> None:
        self.id = id
        self.requests = requests
        self.kwargs = kwargs
        self.state = "active"
        self.result = ""
        self.failure_reason = ""
        self.downloaded = 512
        self.download_total = 2048
        self.title = kwargs.get("title", "")
        self.calls: list[tuple[str, Any]] = []

    def abort(self) -> bool:
        self.calls.append(("abort", None))
        return True

    def pause(self) -> bool:
        self.calls.append(("pause", None))
        return True

    def resume(self) -> bool:
        self.calls.append(("resume", None))
        return True

    def wait(self, timeout: float | None = None) -> FakeRegistration:
        self.calls.append(("wait", timeout))
        return self

    def __repr__(self) -> str:
        return f"<FakeRegistration {self.id}>"


class FakeManager:
    def __init__(self) -> None:
        self.regs: list[FakeRegistration] = []
        self.deleted: list[str] = []
        self.fail_with: BaseException | None = None

    def fetch(self, id: str, requests: list[Any], **kwargs: Any) -> FakeRegistration:
        if self.fail_with is not None:
            raise self.fail_with
        reg = FakeRegistration(id, requests, **kwargs)
        self.regs.append(reg)
        return reg

    def get(self, id: str) -> FakeRegistration | None:
        for reg in reversed(self.regs):
            if reg.id == id and reg.state == "active":
                return reg
        return None

    def registrations(self) -> list[FakeRegistration]:
        return list(self.regs)

    def delete(self, id: str) -> int:
        self.deleted.append(id)
        self.regs = [r for r in self.regs if r.id != id]
        return 1

    def __repr__(self) -> str:
        return "<FakeManager>"


class FakeRequest:
    def __init__(self, url: str, *, integrity: str | None = None) -> None:
        self.url = url
        self.integrity = integrity


@pytest.fixture
def shell() -> Iterator[InteractiveShell]:
    ip = InteractiveShell.instance()
    load_ipython_extension(ip)
    try:
        yield ip
    finally:
        unload_ipython_extension(ip)
        ip.extension_manager.loaded.discard("ipybgfetch")  # a later %load_ext loads it again
        for name in ("reg", "x", "y", "r"):
            ip.user_ns.pop(name, None)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeManager:
    mgr = FakeManager()
    monkeypatch.setattr(_magic, "_manager", lambda: mgr)
    monkeypatch.setattr(_magic, "_request_class", lambda: FakeRequest)
    return mgr


def test_extension_registers_line_and_cell_magic(shell: InteractiveShell) -> None:
    assert shell.find_line_magic("bgfetch") is not None
    assert shell.find_cell_magic("bgfetch") is not None
    unload_ipython_extension(shell)
    assert shell.find_line_magic("bgfetch") is None
    assert shell.find_cell_magic("bgfetch") is None
    load_ipython_extension(shell)  # and back (the fixture unloads again)
    assert shell.find_line_magic("bgfetch") is not None


def test_load_ext_by_package_name(shell: InteractiveShell) -> None:
    unload_ipython_extension(shell)
    shell.extension_manager.loaded.discard("ipybgfetch")
    shell.run_line_magic("load_ext", "ipybgfetch")
    assert shell.find_line_magic("bgfetch") is not None


def test_help_is_the_docstring(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    doc = shell.find_line_magic("bgfetch").__doc__
    assert doc is not None
    for piece in (
        "%%bgfetch my-data",
        "--download-total",
        "-H, --header",
        "fetch list URL",
        "wait ID",
        "delete ID",
        "taken literally",
    ):
        assert piece in doc
    # what %bgfetch? shows
    info = shell.object_inspect("%bgfetch")
    assert info["found"]
    assert "--download-total SIZE" in (info.get("docstring") or "")
    shell.run_line_magic("bgfetch", "--help")
    assert "--download-total SIZE" in capsys.readouterr().out


def test_assignment_display_and_silence(shell: InteractiveShell, fake: FakeManager) -> None:
    result = shell.run_cell(f"reg = %bgfetch a {URL}")
    assert result.success and result.result is None  # an assignment displays nothing
    assert shell.user_ns["reg"] is fake.regs[-1]
    assert fake.regs[-1].requests == [URL]

    result = shell.run_cell(f"%bgfetch b {URL} --title T")
    assert result.success
    assert result.result is fake.regs[-1]  # the last line displays the registration
    assert fake.regs[-1].kwargs == {"title": "T"}

    result = shell.run_cell(f"%bgfetch c {URL};")
    assert result.success and result.result is None
    assert fake.regs[-1].id == "c"  # started, just not shown


def test_no_variable_expansion(shell: InteractiveShell, fake: FakeManager) -> None:
    shell.user_ns["x"] = "EXPANDED"
    shell.user_ns["y"] = "EXPANDED"
    line_url = "https://example.org/q?a=$x&b={y}"
    shell.run_cell(f"%bgfetch lit {line_url} --title '$x {{y}}'", store_history=False)
    assert fake.regs[-1].requests == [line_url]
    assert fake.regs[-1].kwargs["title"] == "$x {y}"
    result = shell.run_cell(f"%%bgfetch lit2 --title {{y}}\n{line_url}\n")
    assert result.success
    assert fake.regs[-1].requests == [line_url]
    assert fake.regs[-1].kwargs["title"] == "{y}"


def test_cell_magic_builds_requests(shell: InteractiveShell, fake: FakeManager) -> None:
    result = shell.run_cell(
        f"%%bgfetch cell-1 --download-total 1KiB -H 'X-A: 1'\n{URL} sha256-abc\n\n# c\n{URL2}\n"
    )
    assert result.success, result.error_in_exec
    reg = fake.regs[-1]
    first, second = reg.requests
    assert isinstance(first, FakeRequest)
    assert (first.url, first.integrity) == (URL, "sha256-abc")
    assert second == URL2
    assert reg.kwargs == {"download_total": 1024, "headers": {"X-A": "1"}}


def test_usage_errors_show_no_traceback(
    shell: InteractiveShell, fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    result = shell.run_cell(f"%bgfetch x {URL} --download-total 12XB")
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "UsageError: %bgfetch: --download-total: invalid size '12XB'" in err
    assert "Traceback" not in err
    assert not fake.regs


@pytest.mark.parametrize(
    "error",
    [
        ipybgfetch.FetchError("a registration with id 'x' is already active; pick another id"),
        ipybgfetch.QuotaExceededError("download_total is 2 GB but only 1 GB is free"),
        ipybgfetch.InvalidStateError("registration 'x' is still active; abort() it first"),
        ValueError("invalid size"),
    ],
)
def test_api_errors_become_usage_errors(
    shell: InteractiveShell,
    fake: FakeManager,
    error: BaseException,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.fail_with = error
    with pytest.raises(UsageError, match=re.escape(str(error))):
        shell.run_line_magic("bgfetch", f"x {URL}")
    result = shell.run_cell(f"%bgfetch x {URL}")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in capsys.readouterr().err


def test_other_errors_are_not_hidden(shell: InteractiveShell, fake: FakeManager) -> None:
    fake.fail_with = RuntimeError("a bug")
    with pytest.raises(RuntimeError):
        shell.run_line_magic("bgfetch", f"x {URL}")


def test_verbs_call_the_registration(
    shell: InteractiveShell, fake: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = shell.run_line_magic("bgfetch", f"v {URL}")
    assert shell.run_line_magic("bgfetch", "get v") is reg
    assert shell.run_line_magic("bgfetch", "pause v") is reg
    assert shell.run_line_magic("bgfetch", "resume v") is reg
    assert shell.run_line_magic("bgfetch", "wait v --timeout 3") is reg
    assert shell.run_line_magic("bgfetch", "wait v") is reg
    assert shell.run_line_magic("bgfetch", "abort v") is reg
    assert reg.calls == [
        ("pause", None),
        ("resume", None),
        ("wait", 3.0),
        ("wait", None),
        ("abort", None),
    ]
    reg.state = "success"
    # a settled registration is still found by get (mgr.get() only knows active ones)
    assert shell.run_line_magic("bgfetch", "get v") is reg
    assert shell.run_line_magic("bgfetch", "delete v") is None
    assert fake.deleted == ["v"]
    assert "Deleted the registration 'v'" in capsys.readouterr().out
    message = usage(shell.run_line_magic, "bgfetch", "get v")
    assert "no registration with the id 'v'" in message


def test_get_prefers_the_active_registration(shell: InteractiveShell, fake: FakeManager) -> None:
    old = shell.run_line_magic("bgfetch", f"same {URL}")
    old.state = "success"
    new = shell.run_line_magic("bgfetch", f"same {URL}")
    assert shell.run_line_magic("bgfetch", "get same") is new
    new.state = "failure"
    assert shell.run_line_magic("bgfetch", "get same") is new  # the newest settled one


def test_bare_and_list(shell: InteractiveShell, fake: FakeManager) -> None:
    assert shell.run_line_magic("bgfetch", "") is fake
    empty = shell.run_line_magic("bgfetch", "list")
    assert isinstance(empty, RegistrationList) and empty == []
    assert "No background fetch" in repr(empty)
    shell.run_line_magic("bgfetch", f"one {URL} --title First")
    listing = shell.run_line_magic("bgfetch", "list")
    assert listing == fake.regs
    text = repr(listing)
    assert text.splitlines()[0].split() == ["id", "status", "downloaded", "title"]
    assert "one" in text and "512 B / 2.0 KiB (25%)" in text and "First" in text
    assert "<td>one</td>" in listing._repr_html_()


def test_magic_class_is_reusable() -> None:
    # register_magics accepts the class; IPython instantiates it with the shell.
    assert issubclass(BgFetchMagics, _magic.Magics)


# === 3. against the real engine ============================================================

testing = pytest.importorskip("ipybgfetch.testing")
DataServer = testing.DataServer


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    srv = DataServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mgr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    manager = ipybgfetch.BackgroundFetchManager(home=tmp_path / "home")
    monkeypatch.setattr(_magic, "_manager", lambda: manager)
    try:
        yield manager
    finally:
        for reg in manager.registrations():
            reg.abort()
        manager.close()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_engine_line_magic_downloads(shell: InteractiveShell, mgr: Any, server: Any) -> None:
    url = server.url("magic.bin", 300_000)
    result = shell.run_cell(f"reg = %bgfetch m1 {url} --title 'Magic one'\nreg.wait(30)")
    assert result.success, result.error_in_exec
    reg = shell.user_ns["reg"]
    assert reg is mgr.registrations()[-1]
    assert (reg.result, reg.downloaded, reg.title) == ("success", 300_000, "Magic one")
    record = reg.match(url)
    assert sha256_of(record.response.path) == DataServer.sha256("magic.bin", 300_000)
    # the one-line text status outside widgets
    text = repr(reg)
    assert "\n" not in text and "'m1'" in text and "success" in text and "100%" in text


def test_progress_is_against_the_announced_sizes_not_the_limit(
    shell: InteractiveShell, mgr: Any, server: Any
) -> None:
    # --download-total is a ceiling, not the size: a finished 8-byte download is 100 %.
    url = server.url("tiny.bin", 8)
    reg = shell.run_line_magic("bgfetch", f"tiny {url} --download-total 2GB")
    reg.wait(30)
    assert reg.download_total == 2 * 10**9
    assert "8 B / 8 B (100%)" in repr(reg)
    listing = shell.run_line_magic("bgfetch", "list")
    assert "8 B / 8 B (100%)" in repr(listing) and "1.9 GiB" not in repr(listing)


def test_engine_cell_magic_with_integrity(shell: InteractiveShell, mgr: Any, server: Any) -> None:
    good = server.url("good.csv", 10_000)
    bad = server.url("bad.csv", 10_000)
    cell = (
        f"{good}  {DataServer.sri('good.csv', 10_000)}\n"
        "# the next one carries the wrong digest\n"
        f"{bad}  {DataServer.sri('other.csv', 10_000)}\n"
    )
    reg = shell.run_cell_magic("bgfetch", "m2 --download-total 1MB", cell)
    reg.wait(30)
    assert reg.result == "failure"
    records = reg.match_all()
    assert [r.request.url for r in records] == [good, bad]
    assert records[0].response.ok


def test_engine_errors_are_usage_errors(shell: InteractiveShell, mgr: Any, server: Any) -> None:
    slow = server.url("slow.bin", 2_000_000, throttle=200_000)
    reg = shell.run_line_magic("bgfetch", f"busy {slow}")
    message = usage(shell.run_line_magic, "bgfetch", f"busy {slow}")
    assert "already active" in message
    message = usage(shell.run_line_magic, "bgfetch", "delete busy")
    assert "abort" in message
    message = usage(shell.run_line_magic, "bgfetch", "m3 ftp://example.org/x")
    assert "ftp" in message
    message = usage(shell.run_line_magic, "bgfetch", "m4 https://user:pw@example.org/x")
    assert message.startswith("%bgfetch:") and "credentials" in message
    assert shell.run_line_magic("bgfetch", "get busy") is mgr.get("busy") is reg
    assert shell.run_line_magic("bgfetch", "abort busy") is reg
    assert reg.failure_reason == "aborted"
    assert shell.run_line_magic("bgfetch", "delete busy") is None
    assert all(r.id != "busy" for r in mgr.registrations())


def test_engine_download_total_exceeded(shell: InteractiveShell, mgr: Any, server: Any) -> None:
    url = server.url("big.bin", 100_000)
    reg = shell.run_line_magic("bgfetch", f"m5 {url} --download-total 10KB")
    shell.run_line_magic("bgfetch", "wait m5 --timeout 30")
    assert (reg.result, reg.failure_reason) == ("failure", "download-total-exceeded")


def test_engine_pause_resume_list(shell: InteractiveShell, mgr: Any, server: Any) -> None:
    url = server.url("pause.bin", 1_000_000, throttle=1_000_000)
    reg = shell.run_line_magic("bgfetch", f"m6 {url}")
    shell.run_line_magic("bgfetch", "pause m6")
    assert reg.state == "paused"
    listing = shell.run_line_magic("bgfetch", "list")
    assert "paused" in repr(listing)
    shell.run_line_magic("bgfetch", "resume m6")
    shell.run_line_magic("bgfetch", "wait m6 --timeout 30")
    assert reg.result == "success"
    assert sha256_of(reg.match(url).response.path) == DataServer.sha256("pause.bin", 1_000_000)


def test_plain_python_repr_and_no_kernel_routing(tmp_path: Path) -> None:
    """Outside any IPython: same API, a one-line text repr, output helpers are no-ops."""
    import subprocess
    import sys

    code = (
        "import ipybgfetch\n"
        "from ipybgfetch.testing import DataServer\n"
        "from ipybgfetch._output import output_target, output_to\n"
        "assert output_target() is None\n"
        "with output_to(None):\n"
        "    pass\n"
        "with DataServer() as srv:\n"
        "    mgr = ipybgfetch.BackgroundFetchManager(home={!r})\n"
        "    reg = mgr.fetch('plain', srv.url('p.bin', 50_000), download_total=100_000)\n"
        "    reg.wait(30)\n"
        "    print(repr(reg))\n"
        "    mgr.close()\n"
    ).format(str(tmp_path / "home"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    # against the size the server announced, not download_total (a limit)
    assert "'plain'" in line and "success" in line and "100%" in line
