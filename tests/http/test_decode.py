"""Content-Encoding decoders that insist on a complete stream (ipybgfetch._http.decode)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipybgfetch._http.decode import CorruptEncoding, IncompleteEncoding, decoder_for

DATA = bytes(range(256)) * 400
GZ = gzip.compress(DATA)


def decode(coding: str, body: bytes, piece: int = 1000) -> bytes:
    decoder = decoder_for(coding)
    assert decoder is not None
    out = b"".join(decoder.feed(body[i : i + piece]) for i in range(0, len(body), piece))
    return out + decoder.finish()


@given(st.integers(1, 5000))
def test_any_split_decodes_the_same(piece):
    assert decode("gzip", GZ, piece) == DATA
    assert decode("deflate", zlib.compress(DATA), piece) == DATA


def test_gzip_members_one_after_another_and_raw_deflate():
    assert decode("gzip", GZ + gzip.compress(b"tail")) == DATA + b"tail"
    raw = zlib.compressobj(wbits=-15)
    assert decode("deflate", raw.compress(DATA) + raw.flush()) == DATA
    assert decode("gzip, identity", GZ) == DATA


@pytest.mark.parametrize(
    "coding,body,error",
    [
        ("gzip", GZ[: len(GZ) // 2], IncompleteEncoding),
        ("gzip", GZ[:-8], IncompleteEncoding),
        ("gzip", GZ + b"junk", IncompleteEncoding),
        ("deflate", zlib.compress(DATA)[:-4], IncompleteEncoding),
        ("gzip", b"not gzip at all", CorruptEncoding),
    ],
)
def test_a_stream_cut_short_or_followed_by_bytes_is_refused(coding, body, error):
    with pytest.raises(error):
        decode(coding, body)


def test_unknown_codings_are_left_to_httpx():
    assert decoder_for("compress") is None


def test_zstd_end_of_frame_is_checked():
    zstandard = pytest.importorskip("zstandard", reason="zstd decoding needs zstandard")
    frame = zstandard.ZstdCompressor().compress(DATA)
    assert decode("zstd", frame) == DATA
    with pytest.raises(IncompleteEncoding):
        decode("zstd", frame[:-10])
    with pytest.raises(IncompleteEncoding):
        decode("zstd", frame + b"junk")


def test_brotli_end_of_stream_is_checked():
    try:
        import brotli
    except ImportError:
        brotli = pytest.importorskip("brotlicffi", reason="br decoding needs brotli or brotlicffi")
    stream = brotli.compress(DATA)
    assert decode("br", stream) == DATA
    with pytest.raises(IncompleteEncoding):
        decode("br", stream[: len(stream) // 2])
