"""File names proposed by URLs and servers never escape the destination folder."""

from __future__ import annotations

from pathlib import Path

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
    assert not name.endswith(".part")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert Path("/dest", name).resolve().parent == Path("/dest")


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
    names.release(p)
    assert names.reserve(tmp_path, "c.bin") == p
