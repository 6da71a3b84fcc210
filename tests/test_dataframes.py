"""From "done" to a DataFrame in one line, over real HTTP: every format and compression
round-trips through the engine, records are rows, registries pin files."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

import ipybgfetch
from ipybgfetch import Registry
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
