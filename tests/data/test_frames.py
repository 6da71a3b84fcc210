"""Tests for ipybgfetch._data.frames: format detection and DataFrame readers, on local files."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from ipybgfetch._data import frames as _frames
from ipybgfetch._data.frames import (
    COMPRESSIONS,
    FORMATS,
    concat_pandas,
    concat_polars,
    detect_format,
    read_pandas,
    read_polars,
    require_pandas,
    require_polars,
)

zstandard = pytest.importorskip("zstandard")
pytest.importorskip("openpyxl")

EXTENSIONS = {
    "csv": ".csv",
    "tsv": ".tsv",
    "json": ".json",
    "jsonl": ".jsonl",
    "parquet": ".parquet",
    "feather": ".feather",
    "excel": ".xlsx",
}
COMPRESSION_EXTENSIONS = {None: "", "gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst"}
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "feather": "application/vnd.apache.arrow.file",
    "excel": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def sample() -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [1, 2, 3], "name": ["alpha", "b,c", "δ"], "value": [0.5, 1.5, -2.25]}
    )


def _to_bytes(write: Callable[[io.BytesIO], object]) -> bytes:
    buf = io.BytesIO()
    write(buf)
    return buf.getvalue()


def encode(fmt: str, df: pd.DataFrame) -> bytes:
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    if fmt == "tsv":
        return df.to_csv(index=False, sep="\t").encode()
    if fmt == "json":
        return df.to_json(orient="records", force_ascii=False).encode()
    if fmt == "jsonl":
        return df.to_json(orient="records", lines=True, force_ascii=False).encode()
    if fmt == "parquet":
        return _to_bytes(lambda b: df.to_parquet(b, index=False))
    if fmt == "feather":
        return _to_bytes(df.to_feather)
    if fmt == "excel":
        return _to_bytes(lambda b: df.to_excel(b, index=False))
    raise AssertionError(fmt)


def compress(data: bytes, compression: str | None) -> bytes:
    if compression is None:
        return data
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise AssertionError(compression)


_ENCODED: dict[str, bytes] = {}


def body(fmt: str, compression: str | None, df: pd.DataFrame | None = None) -> bytes:
    if df is not None:
        return compress(encode(fmt, df), compression)
    if fmt not in _ENCODED:
        _ENCODED[fmt] = encode(fmt, sample())
    return compress(_ENCODED[fmt], compression)


def assert_pandas_equal(result: pd.DataFrame, expected: pd.DataFrame | None = None) -> None:
    expected = sample() if expected is None else expected
    pd.testing.assert_frame_equal(
        result.reset_index(drop=True), expected, check_dtype=False, check_column_type=False
    )


def assert_polars_equal(result: pl.DataFrame, expected: pd.DataFrame | None = None) -> None:
    expected = sample() if expected is None else expected
    assert result.columns == list(expected.columns)
    assert result.to_dicts() == expected.to_dict("records")


ALL_COMPRESSIONS: list[str | None] = [None, *COMPRESSIONS]


# --- round trips: every format x every compression, three ways of telling the type -------


@pytest.mark.parametrize("compression", ALL_COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_by_extension(tmp_path: Path, fmt: str, compression: str | None) -> None:
    path = tmp_path / f"data{EXTENSIONS[fmt]}{COMPRESSION_EXTENSIONS[compression]}"
    path.write_bytes(body(fmt, compression))
    assert detect_format(path) == (fmt, compression)
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))


@pytest.mark.parametrize("compression", ALL_COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_by_content_type(tmp_path: Path, fmt: str, compression: str | None) -> None:
    path = tmp_path / "body"  # the engine may store bodies under names without extensions
    path.write_bytes(body(fmt, compression))
    content_type = CONTENT_TYPES[fmt]
    assert detect_format(path, content_type) == (fmt, compression)
    assert_pandas_equal(read_pandas(path, content_type))
    assert_polars_equal(read_polars(path, content_type))


@pytest.mark.parametrize("compression", ALL_COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_by_magic_bytes(tmp_path: Path, fmt: str, compression: str | None) -> None:
    path = tmp_path / "body"
    path.write_bytes(body(fmt, compression))
    assert detect_format(path, "application/octet-stream") == (fmt, compression)
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))


# --- detection rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        # A specific Content-Type wins over the name.
        ("data.json", "text/csv", ("csv", None)),
        ("x", "text/tab-separated-values; charset=utf-8", ("tsv", None)),
        ("x", "APPLICATION/JSONL", ("jsonl", None)),
        ("x", "application/x-parquet", ("parquet", None)),
        ("x", "application/vnd.apache.arrow.stream", ("feather", None)),
        ("x", "application/geo+json", ("json", None)),
        # Generic types fall through to the extension.
        ("data.tsv", "application/octet-stream", ("tsv", None)),
        ("data.jsonl", "text/plain", ("jsonl", None)),
        ("data.ndjson", None, ("jsonl", None)),
        ("data.arrow", "binary/octet-stream", ("feather", None)),
        ("data.ipc", None, ("feather", None)),
        ("data.pq", None, ("parquet", None)),
        ("data.csv", "application/vnd.ms-excel", ("csv", None)),  # a common mislabel
        ("data.csv.gz", "application/gzip", ("csv", "gzip")),
        ("data.tsv.bz2", None, ("tsv", "bz2")),
        ("data.json.xz", None, ("json", "xz")),
        ("data.csv.zst", None, ("csv", "zstd")),
        ("DATA.CSV.GZ", None, ("csv", "gzip")),
    ],
)
def test_detection_without_a_file(
    tmp_path: Path, name: str, content_type: str | None, expected: tuple[str, str | None]
) -> None:
    # The file does not exist, so only the Content-Type and the name can decide.
    assert detect_format(tmp_path / name, content_type) == expected


def test_compression_comes_from_the_bytes_when_the_file_exists(tmp_path: Path) -> None:
    # httpx undoes Content-Encoding: gzip, so a data.csv.gz can land on disk as plain CSV.
    path = tmp_path / "data.csv.gz"
    path.write_bytes(body("csv", None))
    assert detect_format(path, "application/gzip") == ("csv", None)
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))
    # ... and a gzip body without a hint in its name is still recognised.
    other = tmp_path / "data.csv"
    other.write_bytes(body("csv", "gzip"))
    assert detect_format(other, "text/csv") == ("csv", "gzip")
    assert_pandas_equal(read_pandas(other, "text/csv"))


def test_url_gives_the_name_when_the_path_has_none(tmp_path: Path) -> None:
    path = tmp_path / "0001.body"
    path.write_bytes(body("tsv", "bz2"))
    url = "https://example.org/files/table.tsv.bz2?download=1#frag"
    assert detect_format(path, "application/octet-stream", url=url) == ("tsv", "bz2")
    assert_pandas_equal(read_pandas(path, url=url))


def test_explicit_format_and_compression_override_detection(tmp_path: Path) -> None:
    path = tmp_path / "weird.dat"
    path.write_bytes(body("csv", "xz"))
    assert_pandas_equal(read_pandas(path, format="csv"))  # compression still sniffed
    assert_pandas_equal(read_pandas(path, "application/json", format="CSV", compression="xz"))
    assert_polars_equal(read_polars(path, format="csv", compression="lzma"))
    plain = tmp_path / "data.csv.gz"
    plain.write_bytes(b"a,b\n1,2\n")
    assert read_pandas(plain, compression="none").to_dict("records") == [{"a": 1, "b": 2}]
    with pytest.raises(ValueError, match="Unsupported format='xml'"):
        read_pandas(path, format="xml")
    with pytest.raises(ValueError, match="Unsupported compression='lz4'"):
        read_polars(path, format="csv", compression="lz4")


def test_unknown_format_is_a_clear_value_error(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError) as info:
        detect_format(path, "application/octet-stream")
    message = str(info.value)
    assert "blob.bin" in message and "application/octet-stream" in message
    for fmt in FORMATS:
        assert fmt in message
    assert "format=" in message
    with pytest.raises(ValueError, match="does not exist"):
        read_pandas(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_polars(empty)


def test_html_pages_are_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("<!doctype html><html><body>Please log in</body></html>")
    with pytest.raises(ValueError, match="HTML page"):
        read_pandas(path, "text/html; charset=utf-8")
    # An explicit format is the escape hatch.
    assert read_pandas(path, "text/html", format="csv", header=None).shape == (1, 1)


def test_a_zip_archive_points_to_extract(tmp_path: Path) -> None:
    path = tmp_path / "bundle"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.csv", "x\n1\n")
    with pytest.raises(ValueError, match="extract"):
        detect_format(path, "application/zip")


def test_text_sniffing_is_conservative(tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_text("just one line, with a comma\n")
    with pytest.raises(ValueError, match="format="):
        detect_format(path)
    path.write_text("a;b\n1;2\n")  # ';' is not sniffed
    with pytest.raises(ValueError):
        detect_format(path)
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert detect_format(path) == ("jsonl", None)
    path.write_text('{\n  "a": [1, 2]\n}\n')
    assert detect_format(path) == ("json", None)


def test_arrow_ipc_stream_and_multi_frame_zstd(tmp_path: Path) -> None:
    import pyarrow as pa

    table = pa.Table.from_pandas(sample(), preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    path = tmp_path / "data.arrows"
    path.write_bytes(data)
    assert detect_format(path) == ("feather", None)
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))
    assert list(read_pandas(path, columns=["name"]).columns) == ["name"]
    # Two zstd frames back to back (what `zstd` does with concatenated inputs).
    csv = encode("csv", sample())
    header, rest = csv.split(b"\n", 1)
    cctx = zstandard.ZstdCompressor()
    path = tmp_path / "two-frames.csv.zst"
    path.write_bytes(cctx.compress(header + b"\n") + cctx.compress(rest))
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))


def test_kwargs_reach_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "data.csv.gz"
    path.write_bytes(body("csv", "gzip"))
    assert list(read_pandas(path, usecols=["id"]).columns) == ["id"]
    assert read_polars(path, columns=["value"]).columns == ["value"]
    xlsx = tmp_path / "data.xlsx"
    xlsx.write_bytes(body("excel", None))
    assert read_pandas(xlsx, sheet_name=0).shape == (3, 3)


# --- JSON Lines, charsets and byte order marks --------------------------------------------

MEDIA_TYPES = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}
ACCENTED = pd.DataFrame({"name": ["José", "Zoë"], "city": ["Zürich", "Malmö"]})


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_json_lines_labelled_application_json(tmp_path: Path, compression: str | None) -> None:
    """Servers often send JSON Lines as application/json: the name or the bytes win."""
    suffix = COMPRESSION_EXTENSIONS[compression]
    named = tmp_path / f"events.ndjson{suffix}"
    unnamed = tmp_path / "export"
    for path in (named, unnamed):
        path.write_bytes(body("jsonl", compression))
        assert detect_format(path, "application/json") == ("jsonl", compression)
        assert_pandas_equal(read_pandas(path, "application/json"))
        assert_polars_equal(read_polars(path, "application/json"))
    assert detect_format(unnamed, "application/json", url="https://x.org/a.jsonl")[0] == "jsonl"
    array = tmp_path / "array"
    array.write_bytes(body("json", compression))  # a real JSON document stays JSON
    assert detect_format(array, "application/json") == ("json", compression)


@pytest.mark.parametrize("width", [40_000, 60_000])
def test_wide_json_lines_are_sniffed(tmp_path: Path, width: int) -> None:
    """Records over half the 64 KB sniff sample: one complete line, the next one cut short."""
    path = tmp_path / "export"
    lines = [pd.DataFrame({"id": [i], "text": ["x" * width]}) for i in range(4)]
    path.write_bytes(b"".join(encode("jsonl", frame) for frame in lines))
    assert detect_format(path, "application/octet-stream") == ("jsonl", None)
    assert read_pandas(path).shape == (4, 2)
    assert read_polars(path).shape == (4, 2)


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("fmt", sorted(MEDIA_TYPES))
def test_text_is_read_in_the_content_type_charset(
    tmp_path: Path, fmt: str, compression: str | None
) -> None:
    path = tmp_path / "body"
    latin1 = encode(fmt, ACCENTED).decode("utf-8").encode("latin-1")
    path.write_bytes(compress(latin1, compression))
    content_type = f"{MEDIA_TYPES[fmt]}; charset=ISO-8859-1"
    assert_pandas_equal(read_pandas(path, content_type), ACCENTED)
    assert_polars_equal(read_polars(path, content_type), ACCENTED)


def test_user_encoding_wins_and_unknown_charsets_mean_utf8(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(encode("csv", ACCENTED))  # UTF-8
    mislabelled = "text/csv; charset=iso-8859-1"
    assert_pandas_equal(read_pandas(path, mislabelled, encoding="utf-8"), ACCENTED)
    assert_polars_equal(read_polars(path, mislabelled, encoding="utf8"), ACCENTED)
    for unknown in ("text/csv; charset=x-no-such-charset", "text/csv; charset=base64"):
        assert_pandas_equal(read_pandas(path, unknown), ACCENTED)
        assert_polars_equal(read_polars(path, unknown), ACCENTED)


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_utf8_byte_order_mark_is_ignored(tmp_path: Path, fmt: str, compression: str | None) -> None:
    path = tmp_path / f"data{EXTENSIONS[fmt]}{COMPRESSION_EXTENSIONS[compression]}"
    path.write_bytes(compress(codecs.BOM_UTF8 + encode(fmt, sample()), compression))
    assert_pandas_equal(read_pandas(path))
    assert_polars_equal(read_polars(path))
    # As in a browser, the byte order mark wins over the charset of the Content-Type.
    content_type = f"{MEDIA_TYPES[fmt]}; charset=iso-8859-1"
    assert_pandas_equal(read_pandas(path, content_type))
    assert_polars_equal(read_polars(path, content_type))


# --- optional dependencies ---------------------------------------------------------------


def test_module_import_does_not_import_pandas_or_polars() -> None:
    code = (
        "import importlib.util, sys\n"
        f"path = {str(Path(_frames.__file__))!r}\n"
        "spec = importlib.util.spec_from_file_location('frames', path)\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "bad = {'pandas', 'polars', 'pyarrow'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_require_raises_install_hints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert require_pandas() is pd
    assert require_polars() is pl
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ImportError, match=r"pip install 'ipybgfetch\[pandas\]'"):
        require_pandas()
    with pytest.raises(ImportError, match=r"pip install 'ipybgfetch\[polars\]'"):
        read_polars(tmp_path / "x.csv")


def test_missing_zstandard_and_openpyxl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    zst = tmp_path / "data.csv.zst"
    zst.write_bytes(body("csv", "zstd"))
    xlsx = tmp_path / "data.xlsx"
    xlsx.write_bytes(body("excel", None))
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    monkeypatch.setitem(sys.modules, "fastexcel", None)
    with pytest.raises(ImportError, match="pip install zstandard"):
        read_pandas(zst)
    with pytest.raises(ImportError, match="pip install zstandard"):
        read_polars(zst)
    with pytest.raises(ImportError, match="pip install openpyxl"):
        read_pandas(xlsx)
    with pytest.raises(ImportError, match="pip install fastexcel"):
        read_polars(xlsx)


# --- concatenation -----------------------------------------------------------------------


def _three_files(tmp_path: Path) -> list[tuple[str, Path, str | None]]:
    frames = [sample().iloc[[i]].reset_index(drop=True) for i in range(3)]
    items: list[tuple[str, Path, str | None]] = []
    specs = [("csv", "gzip", "text/csv"), ("parquet", None, None), ("jsonl", "zstd", None)]
    for i, (fmt, compression, content_type) in enumerate(specs):
        path = tmp_path / f"part{i}"
        path.write_bytes(body(fmt, compression, frames[i]))
        name = f"part{i}{EXTENSIONS[fmt]}{COMPRESSION_EXTENSIONS[compression]}"
        items.append((f"https://example.org/{name}", path, content_type))
    return items


def test_concat_pandas_adds_the_source_url(tmp_path: Path) -> None:
    items = _three_files(tmp_path)
    df = concat_pandas(items)
    assert list(df.columns) == ["source_url", "id", "name", "value"]
    assert list(df["source_url"]) == [url for url, _, _ in items]
    assert_pandas_equal(df.drop(columns="source_url"))
    assert list(concat_pandas(items, source_column=None).columns) == ["id", "name", "value"]
    assert concat_pandas(items, "src").columns[0] == "src"
    empty = concat_pandas([])
    assert list(empty.columns) == ["source_url"] and len(empty) == 0
    with pytest.raises(ValueError, match="already has a column 'id'"):
        concat_pandas(items, source_column="id")


def test_concat_polars_adds_the_source_url(tmp_path: Path) -> None:
    items = _three_files(tmp_path)
    df = concat_polars(items)
    assert df.columns == ["source_url", "id", "name", "value"]
    assert df["source_url"].to_list() == [url for url, _, _ in items]
    assert_polars_equal(df.drop("source_url"))
    assert concat_polars(items, source_column=None).columns == ["id", "name", "value"]
    empty = concat_polars([])
    assert empty.columns == ["source_url"] and empty.height == 0
    with pytest.raises(ValueError, match="already has a column 'name'"):
        concat_polars(items, source_column="name")


def test_concat_unions_columns(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x,y\n1,2\n")
    b.write_text("x,z\n3,4.5\n")
    items: list[tuple[str, Path, str | None]] = [("u://a", a, None), ("u://b", b, None)]
    pdf = concat_pandas(items)
    assert list(pdf.columns) == ["source_url", "x", "y", "z"]
    pldf = concat_polars(items)
    assert pldf.columns == ["source_url", "x", "y", "z"]
    assert pldf["z"].to_list() == [None, 4.5]
