"""Tests for ipybgfetch._registry: the pinned ``URL [integrity]`` list."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipybgfetch._integrity import ALGORITHMS, digest_to_sri
from ipybgfetch._registry import Registry, RegistryEntry, RegistryError

HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SRI = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
SRI512 = "sha512-" + base64.b64encode(hashlib.sha512(b"").digest()).decode()

TEXT = f"""\
# Inputs of the analysis
https://example.org/a.csv   {SRI}

  https://example.org/b.parquet sha256:{HEX}   # pinned the pooch way
https://example.org/c.json {HEX}
https://example.org/d.txt
https://example.org/page#section {SRI} {SRI512}
    # an indented comment
https://example.org/d.txt
"""


def test_from_text_parses_urls_integrity_comments_and_blank_lines() -> None:
    reg = Registry.from_text(TEXT)
    assert len(reg) == 6
    assert list(reg) == [
        ("https://example.org/a.csv", SRI),
        ("https://example.org/b.parquet", SRI),
        ("https://example.org/c.json", SRI),
        ("https://example.org/d.txt", None),
        ("https://example.org/page#section", f"{SRI} {SRI512}"),
        ("https://example.org/d.txt", None),  # duplicates are kept
    ]
    assert reg.urls[0] == "https://example.org/a.csv"
    assert reg[1] == RegistryEntry("https://example.org/b.parquet", SRI)
    assert reg[1].url == "https://example.org/b.parquet"
    assert isinstance(reg[1:3], Registry) and len(reg[1:3]) == 2
    assert "https://example.org/d.txt" in reg
    assert reg.integrity_for("https://example.org/c.json") == SRI
    with pytest.raises(KeyError):
        reg.integrity_for("https://example.org/missing")
    for url, integrity in reg:  # the (url, integrity) unpacking the engine relies on
        assert url.startswith("https://") and (integrity is None or integrity.startswith("sha"))


def test_to_text_round_trips_and_normalises() -> None:
    reg = Registry.from_text(TEXT)
    text = reg.to_text()
    assert text.splitlines()[1] == f"https://example.org/b.parquet {SRI}"
    assert Registry.from_text(text) == reg
    assert "#" not in text.replace("#section", "")


def test_from_file_and_to_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode())  # BOM + CRLF
    reg = Registry.from_file(path)
    assert len(reg) == 6
    out = tmp_path / "out.txt"
    reg.to_file(out)
    assert Registry.from_file(out) == reg


def test_constructor_accepts_pairs_and_bare_urls() -> None:
    reg = Registry(
        ["https://example.org/a", ("https://example.org/b", HEX), ("http://x.org/c", None)]
    )
    assert list(reg) == [
        ("https://example.org/a", None),
        ("https://example.org/b", SRI),
        ("http://x.org/c", None),
    ]
    assert Registry() == Registry([]) and len(Registry()) == 0
    assert repr(reg).startswith("Registry([('https://example.org/a', None)")
    assert "6 entries" in repr(Registry.from_text(TEXT))
    assert hash(reg) == hash(Registry(list(reg)))


@pytest.mark.parametrize(
    ("text", "lineno", "needle"),
    [
        ("https://ok.org/a\nftp://example.org/file\n", 2, "http"),
        ("\n\nexample.org/a.csv\n", 3, "absolute http"),
        ("https://ok.org/a sha256-short\n", 1, "32 bytes|base64"),
        ("# c\nhttps://ok.org/a md5:00000000000000000000000000000000\n", 2, "md5"),
        ("https://ok.org/a sha256:1234\n", 1, "64 hex"),
        ("https://ok.org/a garbage\n", 1, "not recognised"),
        ("https:///no-host\n", 1, "absolute http"),
    ],
)
def test_bad_lines_name_the_line_number_and_the_text(text: str, lineno: int, needle: str) -> None:
    with pytest.raises(RegistryError) as info:
        Registry.from_text(text)
    message = str(info.value)
    assert f"line {lineno}" in message
    bad = text.splitlines()[lineno - 1].strip()
    assert repr(bad) in message
    assert re.search(needle, message)
    assert info.value.lineno == lineno
    assert isinstance(info.value, ValueError)


def test_from_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reg.txt"
    path.write_text("https://ok.org/a\nnot-a-url\n")
    with pytest.raises(ValueError, match=r"reg\.txt, line 2: .*'not-a-url'"):
        Registry.from_file(path)


def test_bad_constructor_entries() -> None:
    with pytest.raises(TypeError, match="from_text"):
        Registry("https://example.org/a")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="entry 1"):
        Registry(["https://example.org/a", ("https://example.org/b", "bogus")])
    with pytest.raises(RegistryError, match="entry 0"):
        Registry([("https://example.org/a", None, "extra")])  # type: ignore[list-item]
    with pytest.raises(RegistryError, match="entry 0"):
        Registry([("has space.org", None)])


# --- property tests ----------------------------------------------------------------------

_url_chars = st.text(
    alphabet=st.characters(
        categories=("L", "N"), include_characters="-._~/?=&%#", max_codepoint=0x2FF
    ),
    max_size=30,
)
urls = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}.org/{rest}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
    _url_chars,
)
digests = st.sampled_from(sorted(ALGORITHMS)).flatmap(
    lambda a: st.binary(min_size=ALGORITHMS[a], max_size=ALGORITHMS[a]).map(lambda d: (a, d))
)
integrities = st.one_of(
    st.none(),
    st.lists(digests, min_size=1, max_size=3, unique=True).map(
        lambda pairs: " ".join(digest_to_sri(a, d) for a, d in pairs)
    ),
)


@given(st.lists(st.tuples(urls, integrities), max_size=8))
def test_property_round_trip(entries: list[tuple[str, str | None]]) -> None:
    reg = Registry(entries)
    assert list(reg) == entries
    assert Registry.from_text(reg.to_text()) == reg


@given(
    st.lists(st.tuples(urls, st.binary(min_size=32, max_size=32)), min_size=1, max_size=5),
    st.sampled_from(["{hex}", "sha256:{hex}", "SHA256:{HEX}"]),
    st.sampled_from(["", "   # comment", "\t"]),
)
def test_property_hex_lines_become_sri_with_same_bytes(
    entries: list[tuple[str, bytes]], style: str, trailer: str
) -> None:
    lines = [
        f"{url} {style.format(hex=d.hex(), HEX=d.hex().upper())}{trailer}" for url, d in entries
    ]
    reg = Registry.from_text("\n".join(lines))
    for (url, digest), entry in zip(entries, reg, strict=True):
        assert entry.url == url
        assert entry.integrity == "sha256-" + base64.b64encode(digest).decode()
