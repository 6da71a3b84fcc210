"""The state database (ipybgfetch/_engine/store.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ipybgfetch import BackgroundFetchManager
from ipybgfetch.testing import DataServer


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_the_database_and_its_wal_files_are_owner_only(tmp_path: Path) -> None:
    """Request URLs (redacted) and file names live there: other users on a shared machine
    must not read them, through the -wal/-shm files either."""
    old = os.umask(0o022)
    try:
        with DataServer() as server, BackgroundFetchManager(home=tmp_path) as mgr:
            mgr.fetch("m", server.url("a.bin", 100)).wait(10)
            files = sorted(tmp_path.glob("*.sqlite3*"))
            names = {f.name.rsplit(".sqlite3", 1)[1] for f in files}
            assert {"", "-wal", "-shm"} <= names, files
            for f in files:
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
    finally:
        os.umask(old)
