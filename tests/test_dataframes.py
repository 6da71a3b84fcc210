"""From "done" to a DataFrame in one line, over real HTTP: every format and compression
round-trips through the engine, records are rows, registries pin files."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import socket
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

import ipybgfetch
from ipybgfetch import InvalidStateError, Registry
from ipybgfetch._records import ROW_COLUMNS
from ipybgfetch.testing import DataServer

FRAME = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp": [3.5, 19.0, 31.25], "n": [1, 2, 3]})
COMPRESS = {
    None: lambda b: b,
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda b: __import__("zstandard").ZstdCompressor().compress(b),
}


def _encode(fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "csv":
        FRAME.to_csv(buf, index=False)
    elif fmt == "tsv":
        FRAME.to_csv(buf, index=False, sep="\t")
    elif fmt == "json":
        FRAME.to_json(buf, orient="records")
    elif fmt == "jsonl":
        FRAME.to_json(buf, orient="records", lines=True)
    elif fmt == "parquet":
        FRAME.to_parquet(buf, index=False)
    elif fmt == "feather":
        FRAME.to_feather(buf)
    elif fmt == "xlsx":
        FRAME.to_excel(buf, index=False)
    return buf.getvalue()


CASES = [
    (fmt, comp)
    for fmt in ("csv", "tsv", "json", "jsonl", "parquet", "feather", "xlsx")
    for comp in COMPRESS
    if not (fmt == "xlsx" and comp)  # xlsx is a zip already
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every format x compression served by DataServer and fetched in ONE registration."""
    home = tmp_path_factory.mktemp("home")
    with DataServer() as srv, ipybgfetch.BackgroundFetchManager(home=home) as mgr:
        urls = {}
        for fmt, comp in CASES:
            name = f"/data/frame.{fmt}" + (f".{comp}" if comp else "")
            urls[(fmt, comp)] = srv.add_file(name, COMPRESS[comp](_encode(fmt)))
        reg = mgr.fetch("frames", list(urls.values())).wait(60)
        assert reg.result == "success", [r.error for r in reg.match_all() if r.error]
        yield reg, urls


@pytest.mark.parametrize(("fmt", "comp"), CASES, ids=[f"{f}-{c}" for f, c in CASES])
def test_round_trip_pandas_and_polars(served, fmt, comp):
    reg, urls = served
    record = reg.match(urls[(fmt, comp)])
    got = record.to_pandas()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), FRAME, check_dtype=False)
    got_pl = record.to_polars()
    assert got_pl.columns == list(FRAME.columns)
    assert got_pl["city"].to_list() == FRAME["city"].tolist()


def test_records_are_rows(served):
    reg, _ = served
    records = reg.match_all()
    table = records.to_pandas()
    assert len(table) == len(CASES)
    for column in (
        "url",
        "method",
        "status",
        "ok",
        "bytes",
        "content_type",
        "path",
        "sha256",
        "started",
        "finished",
        "elapsed_s",
        "attempts",
        "error",
    ):
        assert column in table.columns
    assert table["ok"].all() and (table["status"] == 200).all()
    assert table["status"].dtype == "Int64"  # nullable: the same with or without a status
    assert all(Path(p).exists() for p in table["path"])
    same = pd.DataFrame(records)  # a record is a mapping of its row
    assert list(same["url"]) == list(table["url"])
    assert isinstance(records.to_polars(), pl.DataFrame)
    html = records._repr_html_()
    assert html.startswith("<table") and "frame.csv" in html
    assert "RecordList of" in repr(records)


def test_concat_many_same_shaped_files(tmp_path):
    with DataServer() as srv, ipybgfetch.BackgroundFetchManager(home=tmp_path) as mgr:
        urls = [
            srv.add_file(f"/part-{i}.csv", FRAME.assign(part=i).to_csv(index=False).encode())
            for i in range(5)
        ]
        records = mgr.fetch("parts", urls).wait(20).match_all()
        both = records.to_pandas(concat=True)
        assert len(both) == 15 and both.columns[0] == "source_url"
        assert sorted(set(both["source_url"])) == sorted(urls)
        assert records.to_polars(concat=True).height == 15


def test_registry_pins_a_dataset(tmp_path):
    with DataServer() as srv, ipybgfetch.BackgroundFetchManager(home=tmp_path / "h") as mgr:
        good = srv.url("pinned.csv", 4000)
        bad = srv.url("changed.csv", 4000)
        text = (
            f"# a team's pinned data\n{good}  sha256:{DataServer.sha256('pinned.csv', 4000)}\n"
            f"{bad}  {DataServer.sri('something-else.csv', 4000)}\n"
        )
        path = tmp_path / "registry.txt"
        path.write_text(text)
        reg = mgr.fetch("pinned", Registry.from_file(path)).wait(20)
        ok, failed = reg.match_all()
        assert ok.state == "success"
        assert failed.state == "failure" and "integrity" in failed.error
        assert reg.failure_reason == "fetch-error"


# --- text bodies, failed records and the records table -----------------------------------

RECORDS = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
JSON_LINES = b"".join(json.dumps(row).encode() + b"\n" for row in RECORDS)


def _unused_port_url() -> str:
    """A loopback URL nothing listens on: the fetch fails without a response."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.csv"


@pytest.fixture
def server_and_manager(tmp_path):
    with DataServer() as srv, ipybgfetch.BackgroundFetchManager(home=tmp_path, retries=0) as mgr:
        yield srv, mgr


def _fetch_one(mgr, url: str):
    return mgr.fetch(f"one-{abs(hash(url))}", [url]).wait(30).match(url)


def test_json_lines_served_as_application_json(server_and_manager):
    srv, mgr = server_and_manager
    for name in ("/x/events.jsonl", "/x/export"):  # by the name, by the bytes
        record = _fetch_one(mgr, srv.add_file(name, JSON_LINES, content_type="application/json"))
        assert record.to_pandas().to_dict("records") == RECORDS, name
        assert record.to_polars().to_dicts() == RECORDS, name


def test_content_type_charset_and_byte_order_mark(server_and_manager):
    srv, mgr = server_and_manager
    latin1 = "name,city\nJosé,Zürich\n".encode("latin-1")
    record = _fetch_one(
        mgr, srv.add_file("/lat.csv", latin1, content_type="text/csv; charset=iso-8859-1")
    )
    assert record.to_pandas().to_dict("records") == [{"name": "José", "city": "Zürich"}]
    assert record.to_polars().to_dicts() == [{"name": "José", "city": "Zürich"}]
    bom = codecs.BOM_UTF8
    for name, data in (("/bom.json", json.dumps(RECORDS).encode()), ("/bom.jsonl", JSON_LINES)):
        record = _fetch_one(mgr, srv.add_file(name, bom + data))
        assert record.to_pandas().to_dict("records") == RECORDS, name
        assert record.to_polars().to_dicts() == RECORDS, name


def test_response_text_drops_a_bom_and_falls_back_to_utf8(server_and_manager):
    srv, mgr = server_and_manager
    bom = _fetch_one(mgr, srv.add_file("/bom.txt", codecs.BOM_UTF8 + "héllo".encode()))
    assert bom.response.text() == "héllo"
    assert bom.response.text(encoding="utf-8") == "héllo"
    odd = srv.add_file("/odd.txt", "héllo".encode(), content_type="text/plain; charset=x-bogus")
    assert _fetch_one(mgr, odd).response.text() == "héllo"
    latin1 = "text/plain; charset=latin1"
    lat = srv.add_file("/lat.txt", "héllo".encode("latin-1"), content_type=latin1)
    assert _fetch_one(mgr, lat).response.text() == "héllo"


@pytest.fixture
def mixed(server_and_manager):
    """A registration with a success, a 404 and a connection failure (no response)."""
    srv, mgr = server_and_manager
    urls = [srv.add_file("/ok.csv", b"a,b\n1,x\n"), srv.add_file("/gone.csv", b"", status=404)]
    urls.append(_unused_port_url())
    return mgr.fetch("mixed", urls).wait(30).match_all()


def test_failed_record_without_response_says_it_failed(mixed):
    dead = mixed[2]
    assert dead.state == "failure" and dead.response is None
    for read in (dead.to_pandas, dead.to_polars, lambda: mixed[::2].to_pandas(concat=True)):
        with pytest.raises(InvalidStateError) as info:
            read()
        message = str(info.value)
        assert "failed" in message and "successful()" in message, message
        assert dead.error in message and "wait for the registration" not in message, message


def test_records_table_types_do_not_depend_on_the_data(mixed):
    table = mixed.to_pandas()
    assert table["status"].dtype == "Int64"
    assert table["status"].tolist()[:2] == [200, 404] and table["status"].isna().tolist()[2]
    assert mixed[:1].to_pandas()["status"].dtype == "Int64"
    empty = mixed.failed()[:0]
    assert list(empty.to_pandas().columns) == list(ROW_COLUMNS)
    assert empty.to_pandas()["status"].dtype == "Int64"
    schema = mixed.to_polars().schema
    assert list(schema) == list(ROW_COLUMNS) and schema["status"] == pl.Int64
    assert empty.to_polars().schema == schema
    assert mixed[:1].to_polars().schema == schema  # error/sha256 all null: still String
