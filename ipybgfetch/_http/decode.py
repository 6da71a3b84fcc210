"""Content-Encoding decoders that insist on a complete stream.

httpx's decoders return whatever came out of a stream cut short: a gzip body missing its
second half, or its CRC/ISIZE trailer, or followed by garbage, would be stored as a
success. These decoders check the end: :meth:`ContentDecoder.finish` raises
:class:`IncompleteEncoding` when the stream did not end where the body ended.
"""

from __future__ import annotations

import zlib
from typing import Any

__all__ = ["ContentDecoder", "CorruptEncoding", "IncompleteEncoding", "decoder_for"]


class IncompleteEncoding(Exception):
    """The compressed body is cut short, or has bytes after its end."""


class CorruptEncoding(Exception):
    """The compressed body is not valid data of its coding."""


class _Zlib:
    """gzip (members one after another, as RFC 1952 allows) or deflate (zlib-wrapped, or
    raw as some servers send it)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS
        self._obj: Any = zlib.decompressobj(self._wbits)
        self._first = True
        self._started = False  # a member has begun (bytes fed since the last end)

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except zlib.error as exc:
                if not self._gzip and self._first:  # raw deflate, without the zlib header
                    self._first = False
                    self._wbits = -zlib.MAX_WBITS
                    self._obj = zlib.decompressobj(self._wbits)
                    continue
                raise CorruptEncoding(str(exc)) from None
            self._first = False
            self._started = True
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            self._started = False
            if not data:
                break
            if not self._gzip or data[:2] != b"\x1f\x8b":
                raise IncompleteEncoding("bytes after the end of the compressed stream")
            self._obj = zlib.decompressobj(self._wbits)  # the next gzip member
        return b"".join(out)

    def finish(self) -> bytes:
        if self._started:
            raise IncompleteEncoding(
                "the compressed stream ended early (no end of stream or checksum trailer)"
            )
        return b""


class _Brotli:
    def __init__(self, module: Any) -> None:
        self._obj = module.Decompressor()

    def feed(self, data: bytes) -> bytes:
        if self._obj.is_finished() and data:
            raise IncompleteEncoding("bytes after the end of the compressed stream")
        try:
            return bytes(self._obj.process(data))
        except Exception as exc:
            raise CorruptEncoding(str(exc)) from None

    def finish(self) -> bytes:
        if not self._obj.is_finished():
            raise IncompleteEncoding("the compressed stream ended early")
        return b""


class _Zstd:
    def __init__(self, module: Any) -> None:
        self._obj = module.ZstdDecompressor().decompressobj()
        self._eof = False

    def feed(self, data: bytes) -> bytes:
        if self._eof and data:
            raise IncompleteEncoding("bytes after the end of the compressed stream")
        try:
            out: bytes = self._obj.decompress(data)
        except Exception as exc:
            raise CorruptEncoding(str(exc)) from None
        if getattr(self._obj, "eof", False):
            self._eof = True
            if getattr(self._obj, "unused_data", b""):
                raise IncompleteEncoding("bytes after the end of the compressed stream")
        return out

    def finish(self) -> bytes:
        if not self._eof:
            raise IncompleteEncoding("the compressed stream ended early")
        return b""


class ContentDecoder:
    """Decodes a body with ``Content-Encoding: a, b`` (applied in that order)."""

    def __init__(self, stages: list[Any]) -> None:
        self._stages = list(reversed(stages))  # the last coding applied is undone first

    def feed(self, data: bytes) -> bytes:
        for stage in self._stages:
            if not data:
                return b""
            data = stage.feed(data)
        return data

    def finish(self) -> bytes:
        out = b""
        for stage in self._stages:
            out = (stage.feed(out) if out else b"") + stage.finish()
        return out


def decoder_for(content_encoding: str) -> ContentDecoder | None:
    """A checking decoder for this Content-Encoding, or None when one of its codings is
    not known here (httpx's decoders then take the body)."""
    stages: list[Any] = []
    for coding in (c.strip().lower() for c in content_encoding.split(",")):
        if coding in ("", "identity"):
            continue
        if coding in ("gzip", "x-gzip"):
            stages.append(_Zlib(gzip=True))
        elif coding == "deflate":
            stages.append(_Zlib(gzip=False))
        elif coding == "br":
            try:
                import brotli  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError:
                try:
                    import brotlicffi as brotli  # type: ignore[import-not-found,import-untyped,unused-ignore]
                except ImportError:
                    return None  # httpx cannot decode it either
            stages.append(_Brotli(brotli))
        elif coding == "zstd":
            try:
                import zstandard  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError:
                return None
            stages.append(_Zstd(zstandard))
        else:
            return None
    return ContentDecoder(stages)
