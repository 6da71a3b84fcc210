"""File names proposed by URLs and servers never escape the destination folder."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipybgfetch._names import (
    MAX_NAME_BYTES,
    NameReservations,
    filename_from_disposition,
    filename_from_url,
    safe_filename,
)


@settings(max_examples=500)
@given(st.text(max_size=600))
def test_any_proposed_name_is_one_harmless_component(proposed):
    name = safe_filename(proposed)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not any(ord(c) < 32 for c in name)
    assert not name.startswith(".")
    assert not name.casefold().endswith(".part")
    assert not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert Path("/dest", name).resolve().parent == Path("/dest")


HARMFUL_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
INVISIBLE = "\u202e\u202d\u2066\u2067\u2068\u2069\u200b\u200e\ufeff\u2028\u2029\x85\ue000"
DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"
}


def names_a_windows_device(name: str) -> bool:
    """Windows' view: trailing spaces/dots go, then the part before the first dot, trimmed."""
    base = name.rstrip(" .").split(".", 1)[0].rstrip(" ")
    return base.upper() in DEVICES


def any_case(word: str):
    return st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in word)).map("".join)


hostile_parts = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=INVISIBLE + " ._", max_size=5),
    st.sampled_from(sorted(DEVICES)).flatmap(any_case),
    any_case(".part"),
)


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=()), max_size=300),
        st.lists(hostile_parts, max_size=8).map("".join),
    )
)
def test_no_invisible_device_or_part_names(proposed):
    name = safe_filename(proposed)
    assert not {unicodedata.category(c) for c in name} & HARMFUL_CATEGORIES
    assert not names_a_windows_device(name)
    assert not name.casefold().endswith(".part")
    assert not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


@settings(max_examples=200)
@given(st.sampled_from(sorted(DEVICES)).flatmap(any_case), st.text(alphabet=" .", max_size=4))
def test_device_names_get_a_prefix(device, padding):
    for proposed in (device + padding, device + padding + ".txt", device + padding + ".tar.gz"):
        assert safe_filename(proposed) == "_" + proposed.rstrip(" .")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=100))
def test_disposition_names_are_safe(raw):
    value = 'attachment; filename="' + raw.replace('"', "").replace("\\", "") + '"'
    name = filename_from_disposition(value)
    assert name is None or Path("/dest", name).resolve().parent == Path("/dest")


def test_examples():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Windows\\system32\\x.dll") == "x.dll"
    assert safe_filename("nul.txt") == "_nul.txt"
    assert safe_filename("   ") == "download"
    assert filename_from_url("https://h/a/b%20c.csv?q=1#f") == "b c.csv"
    assert filename_from_url("https://h/") == "download"
    assert filename_from_url("https://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd") == "passwd"
    assert filename_from_disposition("attachment; filename*=UTF-8''%E2%82%AC.txt") == "€.txt"
    assert filename_from_disposition("inline") is None


@pytest.mark.parametrize("char", list("\u202e\u2066\u2067\u2068\u2069\u200b\ufeff\u2028\u2029"))
def test_invisible_and_reordering_characters_are_replaced(char):
    assert safe_filename(f"invoice{char}fdp.exe") == "invoice_fdp.exe"


def test_other_harmful_code_points_are_replaced():
    assert safe_filename("a\x85b\x9bc.txt") == "a_b_c.txt"  # C1 controls
    assert safe_filename("a\udc80b.txt") == "a_b.txt"  # lone surrogate, not encodable
    assert safe_filename("a\uf03ab.txt") == "a_b.txt"  # private use (Cygwin's ":")
    assert safe_filename("a\u0378b.txt") == "a_b.txt"  # unassigned
    assert safe_filename("\u202e\u2066") == "download"


def test_right_to_left_override_from_disposition():
    value = "attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe"
    assert filename_from_disposition(value) == "invoice_fdp.exe"
    assert filename_from_url("https://h/invoice%E2%80%AEfdp.exe") == "invoice_fdp.exe"


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        ("CON .txt", "_CON .txt"),
        ("nul .csv", "_nul .csv"),
        ("AUX..txt", "_AUX..txt"),
        ("CON . .", "_CON"),
        ("CONIN$", "_CONIN$"),
        ("conout$.log", "_conout$.log"),
        ("COM\u00b9", "_COM\u00b9"),
        ("com\u00b2 .txt", "_com\u00b2 .txt"),
        ("LPT\u00b3.doc", "_LPT\u00b3.doc"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("com10.txt", "com10.txt"),
        ("nullify", "nullify"),
    ],
)
def test_windows_device_names(proposed, expected):
    assert safe_filename(proposed) == expected


@pytest.mark.parametrize(
    ("proposed", "expected"),
    [
        ("data.part", "data.part_"),
        ("data.PART", "data.PART_"),
        ("data.Part.", "data.Part_"),
        ("data.part_", "data.part_"),
        ("data.parts", "data.parts"),
    ],
)
def test_part_suffix_in_any_case_is_renamed(proposed, expected):
    assert safe_filename(proposed) == expected


def test_truncation_never_exposes_part_or_trailing_dots():
    cut_at_part = safe_filename("a" * 195 + ".part" + "b" * 100)
    assert not cut_at_part.casefold().endswith(".part")
    assert len(cut_at_part.encode("utf-8")) <= MAX_NAME_BYTES
    assert safe_filename("a" * 199 + "." + "b" * 30) == "a" * 199
    long_part = safe_filename("a" * 300 + ".PART")
    assert long_part.endswith(".PART_") and len(long_part.encode("utf-8")) == MAX_NAME_BYTES
    long_device = safe_filename("CON." + "x" * 300)
    assert long_device.startswith("_CON.") and len(long_device.encode("utf-8")) == MAX_NAME_BYTES


def test_reservations_deduplicate_and_respect_existing_files(tmp_path):
    (tmp_path / "a.csv").write_text("mine")
    (tmp_path / "b.txt.part").write_text("in flight elsewhere")
    names = NameReservations()
    assert names.reserve(tmp_path, "a.csv").name == "a-2.csv"
    assert names.reserve(tmp_path, "a.csv").name == "a-3.csv"
    assert names.reserve(tmp_path, "b.txt").name == "b-2.txt"
    assert names.reserve(tmp_path, "noext").name == "noext"
    assert names.reserve(tmp_path, "noext").name == "noext-2"
    p = names.reserve(tmp_path, "c.bin")
    assert (tmp_path / "c.bin.part").read_bytes() == b""  # the claim is on disk
    (tmp_path / "c.bin.part").unlink()  # as deleting a registration does, then
    names.release(p)
    assert names.reserve(tmp_path, "c.bin") == p


def test_two_processes_never_get_the_same_name(tmp_path):
    # Each process has its own NameReservations; only the disk is shared. Both saw no
    # data.csv, and both got data.csv, and one rename replaced the other's file.
    first, second = NameReservations(), NameReservations()
    assert first.reserve(tmp_path, "data.csv").name == "data.csv"
    assert second.reserve(tmp_path, "data.csv").name == "data-2.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-2.csv.part", "data.csv.part"]


_URLISH = st.text(alphabet="hHtps:/?#[]@%.aZ09-_~ \t\\x7f\u00e9", max_size=30)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        _URLISH,
        st.builds(
            lambda s, rest: f"{s}://{rest}", st.sampled_from(["http", "https", "HTTP"]), _URLISH
        ),
    )
)
def test_the_url_path_shortcut_finds_what_urlsplit_finds(url):
    from urllib.parse import urlsplit

    from ipybgfetch._names import _URL_PATH

    plain = _URL_PATH.fullmatch(url)
    if plain is None:
        return  # filename_from_url uses urlsplit itself
    assert plain.group(1) == urlsplit(url).path


def test_the_url_path_shortcut_is_taken_for_plain_urls():
    from ipybgfetch._names import _URL_PATH

    for url in ("http://127.0.0.1:8000/a/b.csv", "https://h.io/x%20y.bin?dl=1#top"):
        assert _URL_PATH.fullmatch(url) is not None


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="aZ09._- \t/\\:CONULPRTcomlptart", max_size=24))
def test_plain_names_come_back_as_they_were_only_when_the_full_rules_agree(proposed):
    from ipybgfetch import _names

    fast = _names.safe_filename(proposed)
    original = _names._plain_name
    try:
        _names._plain_name = lambda name: False  # the full rules, every step
        assert fast == _names.safe_filename(proposed)
    finally:
        _names._plain_name = original
