"""Tests for ipybgfetch._integrity: SRI parsing, normalisation and checking."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipybgfetch._integrity import (
    ALGORITHMS,
    IntegrityHasher,
    digest_to_sri,
    parse_integrity,
    sri_to_hashes,
    strongest_hashes,
)

EMPTY_SHA256_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA256_SRI = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def sri(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


@pytest.mark.parametrize(
    "token",
    [
        EMPTY_SHA256_SRI,
        f"sha256:{EMPTY_SHA256_HEX}",
        f"SHA256:{EMPTY_SHA256_HEX.upper()}",
        EMPTY_SHA256_HEX,
        EMPTY_SHA256_SRI.rstrip("="),  # padding left out
        "sha256-47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",  # base64url
        EMPTY_SHA256_SRI + "?some-option",  # SRI options are dropped
        f"  {EMPTY_SHA256_SRI}\n",
    ],
)
def test_every_accepted_form_normalises_to_the_same_sri(token: str) -> None:
    assert parse_integrity(token) == EMPTY_SHA256_SRI


def test_several_tokens_are_kept_in_order_without_duplicates() -> None:
    s384, s512 = sri("sha384", b"x"), sri("sha512", b"x")
    value = f"{s512} {EMPTY_SHA256_HEX}   {s384} {EMPTY_SHA256_SRI}"
    assert parse_integrity(value) == f"{s512} {EMPTY_SHA256_SRI} {s384}"
    assert [a for a, _ in sri_to_hashes(value)] == ["sha512", "sha256", "sha384"]


def test_bare_hex_length_selects_the_algorithm() -> None:
    for algorithm in ALGORITHMS:
        digest = hashlib.new(algorithm, b"data").digest()
        assert sri_to_hashes(digest.hex()) == [(algorithm, digest)]


@pytest.mark.parametrize(
    ("token", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("md5:" + "0" * 32, "too weak"),
        ("sha1-" + base64.b64encode(bytes(20)).decode(), "unsupported algorithm 'sha1'"),
        ("sha256-" + base64.b64encode(bytes(31)).decode(), "32 bytes"),
        ("sha256-not base64!", "32 bytes"),
        ("sha256-@@@@", "not base64"),
        ("sha256:" + "0" * 63, "64 hex digits"),
        ("sha256:" + "g" * 64, "64 hex digits"),
        ("0" * 40, "64 (sha256)"),
        ("whatever", "not recognised"),
    ],
)
def test_bad_tokens_raise_a_clear_value_error(token: str, needle: str) -> None:
    with pytest.raises(ValueError, match="(?i)" + needle.replace("(", r"\(").replace(")", r"\)")):
        parse_integrity(token)


def test_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_integrity(b"sha256-xx")  # type: ignore[arg-type]


def test_strongest_hashes_keeps_only_the_strongest_algorithm() -> None:
    pairs = sri_to_hashes(f"{sri('sha256', b'a')} {sri('sha384', b'a')} {sri('sha384', b'b')}")
    assert [a for a, _ in strongest_hashes(pairs)] == ["sha384", "sha384"]
    assert strongest_hashes([]) == []


def test_integrity_hasher_matches_any_digest_of_the_strongest_algorithm() -> None:
    hasher = IntegrityHasher(
        f"{sri('sha256', b'nope')} {sri('sha512', b'other')} {sri('sha512', b'hello world')}"
    )
    assert hasher.algorithm == "sha512"
    hasher.update(b"hello ")
    hasher.update(memoryview(b"world"))
    assert hasher.matches()
    assert hasher.actual() == sri("sha512", b"hello world")
    hasher.reset()
    hasher.update(b"hello")
    assert not hasher.matches()


def test_digest_to_sri_checks_algorithm_and_length() -> None:
    assert digest_to_sri("SHA256", hashlib.sha256(b"").digest()) == EMPTY_SHA256_SRI
    with pytest.raises(ValueError, match="32 bytes"):
        digest_to_sri("sha256", b"short")
    with pytest.raises(ValueError, match="Unsupported"):
        digest_to_sri("md5", bytes(16))


algorithms = st.sampled_from(sorted(ALGORITHMS))


@given(algorithms, st.data())
def test_any_hex_digest_converts_to_the_sri_with_the_same_bytes(
    algorithm: str, data: st.DataObject
) -> None:
    digest = data.draw(st.binary(min_size=ALGORITHMS[algorithm], max_size=ALGORITHMS[algorithm]))
    hex_digest = data.draw(st.sampled_from([digest.hex(), digest.hex().upper()]))
    expected = f"{algorithm}-{base64.b64encode(digest).decode()}"
    assert parse_integrity(f"{algorithm}:{hex_digest}") == expected
    assert parse_integrity(hex_digest) == expected
    assert sri_to_hashes(expected) == [(algorithm, digest)]


@given(st.lists(st.tuples(algorithms, st.binary(min_size=64, max_size=64)), min_size=1))
def test_normalised_value_is_a_fixed_point(pairs: list[tuple[str, bytes]]) -> None:
    value = " ".join(digest_to_sri(a, d[: ALGORITHMS[a]]) for a, d in pairs)
    normalised = parse_integrity(value)
    assert parse_integrity(normalised) == normalised
    assert [digest_to_sri(a, d) for a, d in sri_to_hashes(normalised)] == normalised.split()
