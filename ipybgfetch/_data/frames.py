"""Read downloaded bodies as pandas / polars DataFrames.

Pure functions over files on disk; the engine's ``Record.to_pandas()`` /
``RecordList`` helpers call them with the body's path and the response's Content-Type.

Supported formats: csv, tsv, json (an array of records), jsonl (one JSON object a line),
parquet, feather (Arrow IPC file or stream), excel; each may be compressed with gzip,
bz2, xz or zstd.

How a body's type is found (:func:`detect_format`):

1. **Format**: the Content-Type, unless it is generic (``application/octet-stream``,
   ``text/plain``, ``application/gzip``, ...); then the file extension (``.csv.gz``,
   ``.parquet``, ...; also the name in ``url=`` when the file on disk has no useful
   name); then the bytes themselves (``PAR1``, ``ARROW1``, an xlsx zip, JSON text, CSV
   text with a consistent delimiter), looking inside the compression if there is one.
   A plain JSON verdict (``application/json`` or ``.json``) yields to JSON Lines when the
   name says ``.jsonl``/``.ndjson`` or the first bytes hold several JSON values on
   separate lines: servers often label JSON Lines as ``application/json``.
2. **Compression**: the magic bytes of the file when it can be read (they cannot lie:
   httpx already undoes ``Content-Encoding: gzip``, so a ``data.csv.gz`` served that way
   lands on disk as plain CSV); otherwise the Content-Type or the extension.

Text formats are read in the Content-Type's charset (UTF-8 when it names none, or one
Python does not know); a UTF-8 byte order mark wins over the charset and is dropped.

pandas and polars are imported lazily, never when this module is imported.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import importlib
import json
import lzma
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "concat_pandas",
    "concat_polars",
    "detect_format",
    "open_decompressed",
    "read_pandas",
    "read_polars",
    "require_pandas",
    "require_polars",
]

#: The formats the readers understand.
FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "jsonl", "parquet", "feather", "excel")
#: The compressions the readers undo (``None`` = not compressed).
COMPRESSIONS: tuple[str, ...] = ("gzip", "bz2", "xz", "zstd")

_NO_COMPRESSION = "none"
_TEXT_FORMATS = frozenset({"csv", "tsv", "json", "jsonl"})
_JSON_FORMATS = frozenset({"json", "jsonl"})
_UTF8_BOM = codecs.BOM_UTF8
# Charsets read as UTF-8: US-ASCII is a subset of it.
_UTF8_CODECS = frozenset({"utf-8", "utf-8-sig", "ascii"})
_SNIFF_BYTES = 64 * 1024
_COPY_CHUNK = 1024 * 1024

# --- Content-Type tables -----------------------------------------------------------------

_CONTENT_TYPE_FORMATS: dict[str, str] = {
    "text/csv": "csv",
    "text/x-csv": "csv",
    "application/csv": "csv",
    "application/x-csv": "csv",
    "text/comma-separated-values": "csv",
    "text/x-comma-separated-values": "csv",
    "text/tab-separated-values": "tsv",
    "text/tsv": "tsv",
    "text/x-tsv": "tsv",
    "application/json": "json",
    "text/json": "json",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines+json": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.arrow.file": "feather",
    "application/vnd.apache.arrow.stream": "feather",
    "application/x-feather": "feather",
    "application/feather": "feather",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "excel",
    "application/vnd.ms-excel.sheet.macroenabled.12": "excel",
}

_CONTENT_TYPE_COMPRESSIONS: dict[str, str] = {
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/x-bzip2": "bz2",
    "application/x-bzip": "bz2",
    "application/x-xz": "xz",
    "application/zstd": "zstd",
    "application/x-zstd": "zstd",
}

# Types that say nothing about the format: fall through to the extension.
# application/vnd.ms-excel is what many servers send for .csv files, so it only means
# "excel" when neither the extension nor the bytes say otherwise.
_GENERIC_CONTENT_TYPES = frozenset(
    {
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "application/download",
        "application/x-download",
        "application/force-download",
        "application/zip",
        "application/x-zip-compressed",
        "text/plain",
        "application/vnd.ms-excel",
        "",
    }
)

_HTML_CONTENT_TYPES = frozenset({"text/html", "application/xhtml+xml"})

# --- Extension tables --------------------------------------------------------------------

_EXTENSION_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".json": "json",
    ".geojson": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".parq": "parquet",
    ".feather": "feather",
    ".arrow": "feather",
    ".arrows": "feather",
    ".ipc": "feather",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
}

_EXTENSION_COMPRESSIONS: dict[str, str] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".bz": "bz2",
    ".xz": "xz",
    ".lzma": "xz",
    ".zst": "zstd",
    ".zstd": "zstd",
}

# --- Magic bytes -------------------------------------------------------------------------

_MAGIC_COMPRESSIONS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls


# --- Optional dependencies ---------------------------------------------------------------


def _require(module: str, purpose: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs {module}, which is not installed. Install it with: {install}"
        ) from exc


def require_pandas() -> ModuleType:
    """Import and return pandas, or raise an ImportError that says how to install it."""
    return _require(
        "pandas", "Reading downloads as pandas DataFrames", "pip install 'ipybgfetch[pandas]'"
    )


def require_polars() -> ModuleType:
    """Import and return polars, or raise an ImportError that says how to install it."""
    return _require(
        "polars", "Reading downloads as polars DataFrames", "pip install 'ipybgfetch[polars]'"
    )


def _require_pyarrow(fmt: str) -> ModuleType:
    return _require(
        "pyarrow", f"Reading {fmt} files with pandas", "pip install 'ipybgfetch[pandas]'"
    )


def _require_zstandard() -> ModuleType:
    return _require("zstandard", "Reading zstd-compressed files", "pip install zstandard")


def _has_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# --- Detection ---------------------------------------------------------------------------


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _format_from_content_type(media_type: str) -> str | None:
    if media_type in _CONTENT_TYPE_FORMATS:
        return _CONTENT_TYPE_FORMATS[media_type]
    if media_type.endswith(("+json", "/x-json")):
        return "json"
    return None


def _names(path: Path, url: str | None) -> list[str]:
    names = [path.name]
    if url:
        try:
            url_path = unquote(urlsplit(url).path)
        except ValueError:
            url_path = ""
        if url_path:
            names.append(PurePosixPath(url_path).name)
    return [name.lower() for name in names if name]


def _split_extension(name: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name such as ``data.csv.gz``."""
    compression = None
    stem = name
    for suffix, comp in _EXTENSION_COMPRESSIONS.items():
        if stem.endswith(suffix):
            compression = comp
            stem = stem[: -len(suffix)]
            break
    if stem.endswith((".tgz", ".tar")):
        return None, compression
    suffix = PurePosixPath(stem).suffix
    return _EXTENSION_FORMATS.get(suffix), compression


def _read_head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def compression_from_magic(head: bytes) -> str | None:
    for magic, name in _MAGIC_COMPRESSIONS:
        if head.startswith(magic):
            return name
    if len(head) >= 4 and head.startswith(b"BZh") and head[3:4] in b"123456789":
        return "bz2"
    return None


def _is_xlsx(path: Path, compression: str | None) -> bool:
    try:
        with open_decompressed(path, compression) as fh:
            if compression is None:
                return _zip_is_xlsx(fh)
            with tempfile.TemporaryFile() as tmp:
                shutil.copyfileobj(fh, tmp, _COPY_CHUNK)
                tmp.seek(0)
                return _zip_is_xlsx(tmp)
    except (OSError, zipfile.BadZipFile, ImportError, EOFError, lzma.LZMAError):
        return False


def _zip_is_xlsx(fh: IO[bytes]) -> bool:
    with zipfile.ZipFile(fh) as zf:
        names = set(zf.namelist())
    return "xl/workbook.xml" in names or "[Content_Types].xml" in names


def _sniff_text(head: bytes, whole: bool) -> str | None:
    """Guess json / jsonl / csv / tsv from the first bytes of a text body, or None.

    ``whole`` says ``head`` is the entire body (so its last line is complete).
    """
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if whole or exc.start < len(head) - 4:  # not just a character cut at the end
            return None
        text = head[: exc.start].decode("utf-8")
    text = text.lstrip("\ufeff \t\r\n")
    if not text:
        return None
    lines = text.splitlines()
    complete = lines if whole or len(lines) == 1 else lines[:-1]
    if text[0] == "[":
        return "json"
    if text[0] == "{":
        try:
            json.loads(complete[0])
        except ValueError:
            return "json"  # a multi-line JSON document
        # The first line is a complete value: another one starting after it makes JSON
        # Lines, even if the sample cuts that one short (records of more than half of it).
        rest = [line for line in lines[1:] if line.strip()]
        return "jsonl" if rest and rest[0].lstrip().startswith("{") else "json"
    sample = [line for line in complete[:20] if line.strip()]
    if len(sample) < 2:
        return None
    for delimiter, fmt in (("\t", "tsv"), (",", "csv")):
        if delimiter not in sample[0]:
            continue
        try:
            widths = {len(row) for row in csv.reader(sample, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(widths) == 1 and widths.pop() >= 2:
            return fmt
    return None


def _format_from_bytes(path: Path, compression: str | None) -> str | None:
    try:
        with open_decompressed(path, compression) as fh:
            head = fh.read(_SNIFF_BYTES)
    except (OSError, ImportError, EOFError, lzma.LZMAError):
        return None
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC) or head.startswith(_ARROW_STREAM_MAGIC):
        return "feather"
    if head.startswith(_OLE2_MAGIC):
        return "excel"
    if head.startswith(_ZIP_MAGIC):
        return "excel" if _is_xlsx(path, compression) else None
    return _sniff_text(head, whole=len(head) < _SNIFF_BYTES)


def _is_json_lines(
    path: Path, ext_format: str | None, compression: str | None, readable: bool
) -> bool:
    """Whether a body labelled plain JSON is JSON Lines: by its name or its first bytes.

    Servers often send ``.jsonl``/``.ndjson`` files as ``application/json``; read as one
    JSON document, JSON Lines fails ("Trailing data").
    """
    if ext_format == "jsonl":
        return True
    return readable and _format_from_bytes(path, compression) == "jsonl"


def _is_archive(path: Path, head: bytes, compression: str | None) -> bool:
    if head.startswith(_ZIP_MAGIC):
        return True
    try:
        with open_decompressed(path, compression) as fh:
            block = fh.read(512)
    except (OSError, ImportError, EOFError, lzma.LZMAError):
        return False
    return block[257:262] == b"ustar"


def _unsupported_message(path: Path, content_type: str | None, detail: str) -> str:
    shown = f" (Content-Type {content_type!r})" if content_type else ""
    return (
        f"Cannot tell the format of {path.name!r}{shown}: {detail}. Supported formats: "
        f"{', '.join(FORMATS)}, optionally compressed with {', '.join(COMPRESSIONS)}. "
        "Pass it explicitly, e.g. read_pandas(path, format='csv', compression='gzip') "
        "(record.to_pandas(format='csv') on a record)."
    )


def detect_format(
    path: str | os.PathLike[str],
    content_type: str | None = None,
    *,
    url: str | None = None,
) -> tuple[str, str | None]:
    """Return ``(format, compression)`` of the body stored at ``path``.

    ``format`` is one of :data:`FORMATS`; ``compression`` is one of :data:`COMPRESSIONS`
    or None. ``content_type`` is the response's Content-Type header; ``url`` (optional)
    supplies a file name when ``path`` itself has no useful extension.

    Raises ``ValueError`` when the format cannot be told, naming the supported formats
    and how to pass ``format=``; also for an HTML page (usually an error or login page
    served instead of the data) and for a zip archive that is not a workbook.
    """
    path = Path(path)
    media_type = _media_type(content_type)
    if media_type in _HTML_CONTENT_TYPES:
        raise ValueError(
            f"{path.name!r} is an HTML page (Content-Type {content_type!r}), not a data "
            "file: the URL probably points to a web page, an error page or a login page. "
            "Check the URL in a browser; if the body really is data, pass format= "
            "explicitly, e.g. read_pandas(path, format='csv')."
        )

    # Compression: magic bytes first (authoritative), then Content-Type, then extension.
    head = _read_head(path)
    magic_compression = compression_from_magic(head)
    readable = bool(head)
    ext_format: str | None = None
    ext_compression: str | None = None
    for name in _names(path, url):
        ext_format, ext_compression = _split_extension(name)
        if ext_format or ext_compression:
            break
    if readable:
        compression = magic_compression
    else:
        compression = _CONTENT_TYPE_COMPRESSIONS.get(media_type) or ext_compression

    # Format: a specific Content-Type, then the extension, then the bytes.
    fmt = _format_from_content_type(media_type)
    if fmt is None:
        fmt = ext_format
    if fmt == "json" and _is_json_lines(path, ext_format, compression, readable):
        fmt = "jsonl"
    if fmt is None and readable:
        fmt = _format_from_bytes(path, compression)
        if fmt is None and _is_archive(path, head, compression):
            raise ValueError(
                _unsupported_message(
                    path,
                    content_type,
                    "it is an archive (zip or tar), not a single table; unpack it with "
                    "ipybgfetch's extract(archive, to) and read the files inside",
                )
            )
    if fmt is None and media_type == "application/vnd.ms-excel":
        fmt = "excel"
    if fmt is None:
        if not path.exists():
            detail = "the file does not exist and neither the Content-Type nor the name says"
        elif not readable:
            detail = "the file is empty or unreadable and neither the Content-Type nor the "
            detail += "name says"
        else:
            detail = "neither the Content-Type, the name nor the first bytes match a format"
        raise ValueError(_unsupported_message(path, content_type, detail))
    return fmt, compression


def _resolve(
    path: Path,
    content_type: str | None,
    fmt: str | None,
    compression: str | None,
    url: str | None,
) -> tuple[str, str | None]:
    if fmt is not None:
        fmt = fmt.lower()
        if fmt == "ndjson":
            fmt = "jsonl"
        if fmt in ("arrow", "ipc"):
            fmt = "feather"
        if fmt == "xlsx":
            fmt = "excel"
        if fmt not in FORMATS:
            raise ValueError(f"Unsupported format={fmt!r}; use one of {', '.join(FORMATS)}.")
    if compression is not None:
        compression = compression.lower()
        aliases = {"gz": "gzip", "bzip2": "bz2", "lzma": "xz", "zst": "zstd"}
        compression = aliases.get(compression, compression)
        if compression not in (*COMPRESSIONS, _NO_COMPRESSION):
            raise ValueError(
                f"Unsupported compression={compression!r}; use one of "
                f"{', '.join(COMPRESSIONS)}, or 'none' for an uncompressed file."
            )
    if fmt is None or compression is None:
        if fmt is None:
            detected_fmt, detected_comp = detect_format(path, content_type, url=url)
            fmt = detected_fmt
        else:
            head = _read_head(path)
            detected_comp = compression_from_magic(head)
            if not head:
                detected_comp = _CONTENT_TYPE_COMPRESSIONS.get(_media_type(content_type))
        if compression is None:
            compression = detected_comp
    if compression == _NO_COMPRESSION:
        compression = None
    return fmt, compression


# --- Text encodings ----------------------------------------------------------------------


def _charset_encoding(content_type: str | None) -> str | None:
    """The Python codec of the Content-Type's charset; None means UTF-8.

    None too for no charset, US-ASCII (a subset of UTF-8) and a charset Python does not
    know as a text encoding (a browser falls back to UTF-8 as well).
    """
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        label = value.strip().strip("'\"")
        if key.strip().lower() != "charset" or not label:
            continue
        try:
            name = codecs.lookup(label).name
            "".encode(name)  # refuses codecs that are not text encodings (base64, ...)
        except LookupError:
            return None
        return None if name in _UTF8_CODECS else name
    return None


def _has_utf8_bom(path: Path, compression: str | None) -> bool:
    try:
        with open_decompressed(path, compression) as fh:
            return fh.read(len(_UTF8_BOM)) == _UTF8_BOM
    except (OSError, ImportError, EOFError, lzma.LZMAError):
        return False


def _text_encoding(path: Path, compression: str | None, content_type: str | None) -> str | None:
    """The encoding of a text body, None for UTF-8: a UTF-8 byte order mark wins (as in a
    browser), then the Content-Type's charset."""
    if _has_utf8_bom(path, compression):
        return None
    return _charset_encoding(content_type)


def _copy_as_utf8(src: IO[bytes], dst: IO[bytes], encoding: str | None, strip_bom: bool) -> None:
    """Copy ``src`` to ``dst``, transcoded from ``encoding`` to UTF-8 (None: copied as it
    is); ``strip_bom`` leaves out a leading UTF-8 byte order mark."""
    if encoding is not None:
        decoder = codecs.getincrementaldecoder(encoding)()
        while chunk := src.read(_COPY_CHUNK):
            dst.write(decoder.decode(chunk).encode("utf-8"))
        dst.write(decoder.decode(b"", final=True).encode("utf-8"))
        return
    if strip_bom:
        head = src.read(len(_UTF8_BOM))
        if head != _UTF8_BOM:
            dst.write(head)
    shutil.copyfileobj(src, dst, _COPY_CHUNK)


# --- Decompression -----------------------------------------------------------------------


@contextlib.contextmanager
def open_decompressed(path: str | os.PathLike[str], compression: str | None) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary reading, undoing ``compression`` on the fly (a stream)."""
    path = Path(path)
    if compression is None:
        with open(path, "rb") as fh:
            yield fh
    elif compression == "gzip":
        with gzip.open(path, "rb") as fh:
            yield cast(IO[bytes], fh)
    elif compression == "bz2":
        with bz2.open(path, "rb") as fh:
            yield cast(IO[bytes], fh)
    elif compression == "xz":
        with lzma.open(path, "rb") as fh:
            yield cast(IO[bytes], fh)
    elif compression == "zstd":
        zstandard = _require_zstandard()
        with open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with reader:
                yield cast(IO[bytes], reader)
    else:
        raise ValueError(f"Unsupported compression {compression!r}.")


@contextlib.contextmanager
def _decompressed_copy(
    path: Path, compression: str | None, encoding: str | None = None, strip_bom: bool = False
) -> Iterator[Path]:
    """A path to the uncompressed bytes: ``path`` itself, or a temporary copy.

    The copy is also transcoded from ``encoding`` to UTF-8 (None: left as it is) and,
    with ``strip_bom``, has no leading UTF-8 byte order mark.
    """
    bom = strip_bom and _has_utf8_bom(path, compression)
    if compression is None and encoding is None and not bom:
        yield path
        return
    tmpdir: str | None = None
    for parent in (path.parent, None):
        try:
            tmpdir = tempfile.mkdtemp(prefix=".ipybgfetch-", dir=parent)
            break
        except OSError:
            continue
    if tmpdir is None:
        tmpdir = tempfile.mkdtemp(prefix="ipybgfetch-")
    try:
        name = path.name
        for suffix in _EXTENSION_COMPRESSIONS:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        target = Path(tmpdir) / (name or "body")
        with open_decompressed(path, compression) as src, open(target, "wb") as dst:
            _copy_as_utf8(src, dst, encoding, bom)
        yield target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _check_compression_available(compression: str | None) -> None:
    if compression == "zstd":
        _require_zstandard()


def _is_arrow_stream(path: Path) -> bool:
    return _read_head(path, 6) != _ARROW_FILE_MAGIC


def _require_excel_reader(path: Path) -> None:
    if _read_head(path, 8) == _OLE2_MAGIC:
        _require("xlrd", "Reading legacy .xls workbooks", "pip install xlrd")
    else:
        _require("openpyxl", "Reading Excel workbooks", "pip install openpyxl")


# --- pandas ------------------------------------------------------------------------------


def read_pandas(
    path: str | os.PathLike[str],
    content_type: str | None = None,
    *,
    format: str | None = None,
    compression: str | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> pandas.DataFrame:
    """Read the body at ``path`` as a pandas DataFrame.

    ``format`` / ``compression`` override detection (see :func:`detect_format`);
    ``compression="none"`` forces an uncompressed read. Other keyword arguments go to
    the pandas reader (``pandas.read_csv``, ``read_json``, ``read_parquet``,
    ``read_feather``, ``read_excel``), e.g. ``usecols=``, ``columns=``, ``sheet_name=``.
    Text formats are read in the Content-Type's charset unless ``encoding=`` is given.
    """
    pd = require_pandas()
    path = Path(path)
    fmt, comp = _resolve(path, content_type, format, compression, url)
    _check_compression_available(comp)

    if fmt in _TEXT_FORMATS and "encoding" not in kwargs:
        encoding = _text_encoding(path, comp, content_type)
        if encoding is None and fmt in _JSON_FORMATS:
            encoding = "utf-8-sig"  # read_csv skips a UTF-8 BOM, read_json does not
        if encoding is not None:
            kwargs["encoding"] = encoding
    if fmt in ("csv", "tsv"):
        if fmt == "tsv":
            kwargs.setdefault("sep", "\t")
        return pd.read_csv(path, compression=comp, **kwargs)
    if fmt in _JSON_FORMATS:
        if fmt == "jsonl":
            kwargs.setdefault("lines", True)
        return pd.read_json(path, compression=comp, **kwargs)

    with _decompressed_copy(path, comp) as plain:
        if fmt == "parquet":
            _require_pyarrow("parquet")
            return pd.read_parquet(plain, **kwargs)
        if fmt == "feather":
            pa = _require_pyarrow("feather / Arrow IPC")
            if _is_arrow_stream(plain):
                return _read_arrow_stream(pa, plain, kwargs).to_pandas()
            return pd.read_feather(plain, **kwargs)
        _require_excel_reader(plain)
        # A file object, not a path: openpyxl refuses paths without an .xlsx extension.
        with open(plain, "rb") as fh:
            return pd.read_excel(fh, **kwargs)


def _read_arrow_stream(pa: ModuleType, path: Path, kwargs: dict[str, Any]) -> Any:
    columns = kwargs.pop("columns", None)
    if kwargs:
        raise TypeError(f"Arrow IPC *stream* files only take columns=, got {', '.join(kwargs)}.")
    import pyarrow.ipc

    with pa.memory_map(str(path), "r") as source:
        table = pyarrow.ipc.open_stream(source).read_all()
    if columns is not None:
        table = table.select(list(columns))
    return table


def concat_pandas(
    items: Iterable[tuple[str, str | os.PathLike[str], str | None]],
    source_column: str | None = "source_url",
    *,
    format: str | None = None,
    compression: str | None = None,
    **kwargs: Any,
) -> pandas.DataFrame:
    """Read many ``(url, path, content_type)`` bodies and stack them into one DataFrame.

    Each file is read with :func:`read_pandas` (``format``, ``compression`` and
    ``kwargs`` apply to every file); a ``source_column`` column holding the file's URL
    is put first (``source_column=None`` leaves it out). Columns missing from some files
    are filled with NaN. No items gives an empty DataFrame.
    """
    pd = require_pandas()
    frames: list[pandas.DataFrame] = []
    for url, path, content_type in items:
        frame = read_pandas(
            path, content_type, format=format, compression=compression, url=url, **kwargs
        )
        if source_column is not None:
            _check_source_column(source_column, list(frame.columns), url)
            frame.insert(0, source_column, url)
        frames.append(frame)
    if not frames:
        columns = [source_column] if source_column is not None else []
        return pd.DataFrame({name: pd.Series([], dtype="object") for name in columns})
    return pd.concat(frames, ignore_index=True)


def _check_source_column(source_column: str, columns: list[Any], url: str) -> None:
    if source_column in columns:
        raise ValueError(
            f"The data from {url} already has a column {source_column!r}; pass another "
            "name with source_column='...' (or source_column=None to add none)."
        )


# --- polars ------------------------------------------------------------------------------


def read_polars(
    path: str | os.PathLike[str],
    content_type: str | None = None,
    *,
    format: str | None = None,
    compression: str | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> polars.DataFrame:
    """Read the body at ``path`` as a polars DataFrame.

    Same detection rules as :func:`read_pandas`. Other keyword arguments go to the polars
    reader (``polars.read_csv``, ``read_json``, ``read_ndjson``, ``read_parquet``,
    ``read_ipc``/``read_ipc_stream``, ``read_excel``). Compressed bodies are
    decompressed to a temporary file next to ``path`` first; so are text bodies in another
    charset than UTF-8 (transcoded) and JSON bodies with a byte order mark (dropped).
    """
    pl = require_polars()
    path = Path(path)
    fmt, comp = _resolve(path, content_type, format, compression, url)
    _check_compression_available(comp)

    # polars reads UTF-8 only. A body in another charset is transcoded into the temporary
    # copy (as compressed bodies are decompressed): the frame is right at the cost of one
    # pass over the file, where an error would only send the user to pandas or iconv.
    # An encoding= of the user's (polars' "utf8-lossy") wins and reads the bytes as they are.
    encoding = None
    if fmt in _TEXT_FORMATS and "encoding" not in kwargs:
        encoding = _text_encoding(path, comp, content_type)
    strip_bom = fmt in _JSON_FORMATS  # read_csv skips a BOM; read_json/read_ndjson do not
    with _decompressed_copy(path, comp, encoding, strip_bom) as plain:
        reader: Callable[..., polars.DataFrame]
        if fmt in ("csv", "tsv"):
            if fmt == "tsv":
                kwargs.setdefault("separator", "\t")
            reader = pl.read_csv
        elif fmt == "json":
            reader = pl.read_json
        elif fmt == "jsonl":
            reader = pl.read_ndjson
        elif fmt == "parquet":
            reader = pl.read_parquet
        elif fmt == "feather":
            reader = pl.read_ipc_stream if _is_arrow_stream(plain) else pl.read_ipc
        else:
            if "engine" not in kwargs:
                if _has_module("fastexcel"):
                    pass  # polars' default engine (calamine) is available
                elif _has_module("openpyxl"):
                    kwargs["engine"] = "openpyxl"
                else:
                    raise ImportError(
                        "Reading Excel workbooks with polars needs fastexcel or openpyxl, "
                        "neither is installed. Install one with: pip install fastexcel "
                        "(or: pip install openpyxl)"
                    )
            reader = pl.read_excel
        if fmt == "excel" or (fmt == "feather" and comp is not None):
            # openpyxl refuses paths without an .xlsx extension, and read_ipc may
            # memory-map a path (the frame must not point into a temporary file).
            with open(plain, "rb") as fh:
                return reader(fh, **kwargs)
        return reader(plain, **kwargs)


def concat_polars(
    items: Iterable[tuple[str, str | os.PathLike[str], str | None]],
    source_column: str | None = "source_url",
    *,
    format: str | None = None,
    compression: str | None = None,
    **kwargs: Any,
) -> polars.DataFrame:
    """Polars twin of :func:`concat_pandas`.

    Frames are stacked with ``how="diagonal_relaxed"``: missing columns become null
    and columns whose types differ between files are cast to a common supertype.
    """
    pl = require_polars()
    frames: list[polars.DataFrame] = []
    for url, path, content_type in items:
        frame = read_polars(
            path, content_type, format=format, compression=compression, url=url, **kwargs
        )
        if source_column is not None:
            _check_source_column(source_column, frame.columns, url)
            frame = frame.select(pl.lit(url, dtype=pl.String).alias(source_column), pl.all())
        frames.append(frame)
    if not frames:
        schema = {source_column: pl.String} if source_column is not None else {}
        empty: polars.DataFrame = pl.DataFrame(schema=schema)
        return empty
    stacked: polars.DataFrame = pl.concat(frames, how="diagonal_relaxed")
    return stacked
