"""A real S3 endpoint on loopback for the object-storage and cluster tests: moto's
standalone server (``moto[server]``), started by the tests, one bucket per test."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Imported here, before any test starts a thread (CPython 3.11.7's gh-106905: two threads
# building ASTs at once, which imports do, can raise SystemError).
boto3 = pytest.importorskip("boto3", reason="the S3 tests need boto3 (pip install 'moto[server]')")
moto_server = pytest.importorskip(
    "moto.server", reason="the S3 tests need moto's server: pip install 'moto[server]'"
)
pytest.importorskip("flask", reason="moto's server needs flask: pip install 'moto[server]'")
fsspec = pytest.importorskip("fsspec", reason="needs pip install 'ipybgfetch[cloud]'")
s3fs = pytest.importorskip("s3fs", reason="S3 needs s3fs: pip install 'ipybgfetch[cloud]'")

KEY_ID = "AKIAIPYBGFETCHTEST01"


@dataclass
class S3:
    endpoint: str
    client: Any

    def bucket(self, prefix: str = "bkt") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def options(self, secret: str = "moto-secret") -> dict[str, Any]:
        return {
            "key": KEY_ID,
            "secret": secret,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def sha256(self, bucket: str, key: str) -> str:
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return hashlib.sha256(body).hexdigest()


def start_s3() -> tuple[Any, S3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key="moto-secret",
        region_name="us-east-1",
    )
    return server, S3(endpoint, client)


def s3_server() -> Iterator[S3]:
    """A fixture (``s3 = pytest.fixture(scope="module")(s3_server)`` in a test module)."""
    server, endpoint = start_s3()
    try:
        yield endpoint
    finally:
        server.stop()


def files_under(root: Any) -> Iterator[Any]:
    """Every regular file under ``root`` (a pathlib.Path)."""
    for path in root.rglob("*"):
        if path.is_file():
            yield path
