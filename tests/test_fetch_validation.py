"""fetch() validation (docs/architecture.md §3, in order) and clear errors for every misuse."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ipybgfetch
from ipybgfetch import FetchError, QuotaExceededError, Request


def test_single_url_is_wrapped_in_a_list(mgr, server):
    reg = mgr.fetch("one", server.url("a.bin", 10))
    assert len(reg.match_all()) == 1
    reg.wait(10)
    assert reg.result == "success"


@pytest.mark.parametrize("requests", [[], (), iter([])])
def test_empty_list_is_a_type_error(mgr, requests):
    with pytest.raises(TypeError, match="empty"):
        mgr.fetch("x", requests)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/a",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "/relative/path",
        "example.org/a.csv",
        "",
        "http://",
        "data:text/plain,hi",
    ],
)
def test_bad_urls_are_type_errors_with_advice(mgr, url):
    with pytest.raises(FetchError) as info:
        mgr.fetch("x", [url])
    assert isinstance(info.value, TypeError)
    assert "http" in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["http://exa mple.org/a", "https://ex|ample.org/", "http://a<b.org/", "http://ex%41.org/"],
)
def test_a_host_with_a_forbidden_character_is_a_type_error(mgr, url):
    # A browser's URL parser refuses these hosts; a space in the path is encoded instead.
    with pytest.raises(FetchError, match="host") as info:
        mgr.fetch("badhost", [url])
    assert isinstance(info.value, TypeError)
    assert mgr.get("badhost") is None


def test_a_space_in_the_path_is_percent_encoded(mgr, server):
    reg = mgr.fetch("space", [server.url("a b.csv", 10)])
    assert reg.match_all()[0].request.url.endswith("/a%20b.csv")
    reg.abort()


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X-A": "a\r\nX-Injected: 1"}, "line break"),
        ({"X-A": "a\nb"}, "line break"),
        ({"X-A": "a\x00b"}, "NUL"),
        ({"Bad Name": "x"}, "invalid header name 'Bad Name'"),
        ({"": "y"}, "invalid header name ''"),
        ({"X-Tab\t": "z"}, "invalid header name"),
        ({"X:Colon": "z"}, "invalid header name"),
    ],
)
@pytest.mark.parametrize("where", ["fetch", "Request"])
def test_bad_header_names_and_values_are_type_errors_at_fetch(mgr, server, headers, says, where):
    url = server.url("h.bin", 10)
    with pytest.raises(FetchError, match=re.escape(says)) as info:
        if where == "fetch":
            mgr.fetch("badheader", url, headers=headers)
        else:
            mgr.fetch("badheader", Request(url, headers=headers))
    assert isinstance(info.value, TypeError)
    assert mgr.get("badheader") is None
    assert server.requests_for(url) == []


def test_credentials_in_url_are_refused_and_point_to_auth(mgr):
    with pytest.raises(TypeError, match="auth="):
        mgr.fetch("x", ["https://user:secret@example.org/a.csv"])


def test_wrong_types_get_clear_errors(mgr, server):
    with pytest.raises(FetchError, match="id must be a str"):
        mgr.fetch(42, [server.url("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(FetchError, match="non-empty"):
        mgr.fetch("  ", [server.url("a", 1)])
    with pytest.raises(FetchError, match=r"URL string or an ipybgfetch\.Request"):
        mgr.fetch("x", [123])
    with pytest.raises(FetchError, match="title must be a str"):
        mgr.fetch("x", [server.url("a", 1)], title=5)  # type: ignore[arg-type]
    with pytest.raises(FetchError, match="icon"):
        mgr.fetch("x", [server.url("a", 1)], icons=[{"sizes": "1x1"}])
    with pytest.raises(TypeError, match="unexpected keyword"):
        mgr.fetch("x", [server.url("a", 1)], titel="typo")  # type: ignore[call-arg]
    assert mgr.get_ids() == []


@pytest.mark.parametrize("bad", [-1, "-5MB", "lots", 1.5, True])
def test_bad_download_total(mgr, server, bad):
    with pytest.raises(FetchError, match="download_total"):
        mgr.fetch("x", [server.url("a", 1)], download_total=bad)


def test_download_total_accepts_sizes(mgr, server):
    reg = mgr.fetch("x", [server.url("a", 1)], download_total="1.5 KiB")
    assert reg.download_total == 1536
    reg.wait(10)


def test_quota_exceeded_up_front(mgr, server, tmp_path):
    with pytest.raises(QuotaExceededError, match="free"):
        mgr.fetch("x", [server.url("a", 1)], download_total=2**62)
    assert mgr.get_ids() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; checked below instead")
def test_unwritable_dest_non_root(mgr, server, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(FetchError, match="writable"):
        mgr.fetch("x", [server.url("a", 1)], dest=ro)


def test_dest_that_is_a_file(mgr, server, tmp_path: Path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FetchError, match="destination"):
        mgr.fetch("x", [server.url("a", 1)], dest=f / "sub")


def test_duplicate_active_id_then_reuse_after_settle(mgr, server):
    slow = server.url("slow.bin", 200_000, throttle=200_000)
    reg = mgr.fetch("dup", [slow])
    with pytest.raises(TypeError, match="already active"):
        mgr.fetch("dup", [server.url("b", 1)])
    assert mgr.get("dup") is reg
    assert reg.abort() is True
    reg.wait(10)
    assert mgr.get("dup") is None
    again = mgr.fetch("dup", [server.url("b", 1)])
    assert again is not reg
    again.wait(10)
    assert again.result == "success"
    ids = [r.id for r in mgr.registrations()]
    assert ids.count("dup") == 2


def test_duplicate_requests_make_two_records(mgr, server):
    url = server.url("same.csv", 100)
    reg = mgr.fetch("twice", [url, url]).wait(10)
    records = reg.match_all()
    assert len(records) == 2
    paths = {r.response.path for r in records}
    assert len(paths) == 2  # both survive: collision de-duplicated
    assert all(p.read_bytes() == server.content("same.csv", 100) for p in paths)


def test_upload_total_known_when_fetch_returns(mgr, server):
    reqs = [
        Request(server.echo_url(), method="POST", body=b"x" * 1000),
        Request(server.echo_url(), method="PUT", body="héllo"),
        server.url("a", 1),
    ]
    reg = mgr.fetch("up", reqs)
    assert reg.upload_total == 1000 + len("héllo".encode())
    reg.wait(10)


def test_request_validation():
    with pytest.raises(FetchError, match="body"):
        Request("http://example.org/", body=b"x")  # GET with a body
    with pytest.raises(FetchError, match="method"):
        Request("http://example.org/", method="GE T")
    with pytest.raises(FetchError, match="does not exist"):
        Request("http://example.org/", method="POST", body=Path("/nonexistent/file"))
    with pytest.raises(FetchError, match=r"(?i)integrity"):
        Request("http://example.org/", integrity="md5-abc")
    r = Request("http://example.org/a", headers={"X-A": "1"}, integrity="sha256:" + "00" * 32)
    assert r.integrity.startswith("sha256-")
    assert r.headers["x-a"] == "1"


def test_default_manager_is_a_singleton(monkeypatch, tmp_path):
    monkeypatch.setenv("IPYBGFETCH_HOME", str(tmp_path / "h"))
    import ipybgfetch._manager as m

    monkeypatch.setattr(m, "_default", None)
    a = ipybgfetch.manager()
    try:
        assert a is ipybgfetch.manager()
        assert a.home == tmp_path / "h"
    finally:
        a.close()


def test_quota_error_creates_no_folder(mgr, server, tmp_path):
    dest = tmp_path / "never" / "made"
    with pytest.raises(QuotaExceededError):
        mgr.fetch("q", [server.url("a", 1)], download_total=2**62, dest=dest)
    assert not (tmp_path / "never").exists()


# validate_url decides plain URLs with one regex and everything else with urlsplit; both
# paths must give the same answer (the URL, or a FetchError) for any input.
_URL_PIECES = st.sampled_from(
    [
        "http",
        "https",
        "HTTP",
        "ftp",
        "",
        "://",
        ":",
        "/",
        "//",
        "?",
        "#",
        "@",
        "user:pw@",
        "[::1]",
        "example.org",
        "a.b-c",
        "-x",
        "127.0.0.1",
        ":80",
        ":65535",
        ":65536",
        ":0",
        ":x",
        " ",
        "%20",
        "\t",
        "\n",
        "é",
        "~",
        "\\",
        "path",
        "q=1&r=2",
        "\x7f",
    ]
)


@given(st.lists(_URL_PIECES, min_size=1, max_size=8).map("".join))
@settings(max_examples=400, deadline=None)
def test_the_fast_url_check_agrees_with_the_full_one(url):
    from ipybgfetch._models import _validate_slowly, validate_url

    def outcome(check):
        try:
            return ("ok", check(url))
        except FetchError:
            return ("error", None)

    assert outcome(validate_url) == outcome(lambda u: _validate_slowly(u.strip()))


@given(
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.one_of(st.none(), st.integers(0, 99999)),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_plain_urls_take_the_fast_path_with_the_same_answer(scheme, host, port, path):
    from ipybgfetch._models import _PLAIN_URL, _validate_slowly, validate_url

    url = f"{scheme}://{host}" + (f":{port}" if port is not None else "") + "/" + path
    assert _PLAIN_URL.match(url)  # this test is about the fast path
    try:
        expected = ("ok", _validate_slowly(url))
    except FetchError:
        expected = ("error", None)
    try:
        got = ("ok", validate_url(url))
    except FetchError:
        got = ("error", None)
    assert got == expected
