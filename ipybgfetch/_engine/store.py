"""Durable state: registrations, records and resume checkpoints in SQLite (WAL).

Only the engine thread uses a :class:`Store`. Credentials never reach it: request headers
pass through :func:`public_headers` first (an allowlist, :mod:`._secrets`), URLs through
``redact_url``, and ``auth=`` objects are never stored.
Several processes may share one home; a registration is owned by one of them at a time
through a lease (``owner`` + ``heartbeat``), taken over when the holder stops beating.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._secrets import STORED_HEADERS, stored_headers

__all__ = [
    "LEASE_TIMEOUT",
    "STORED_HEADERS",
    "Store",
    "heartbeat_interval",
    "lease_timeout",
    "public_headers",
]

LEASE_TIMEOUT = 10.0  # seconds without a heartbeat before another process may take over
LEASE_TIMEOUT_ENV = "IPYBGFETCH_LEASE_TIMEOUT"
MAX_HEARTBEAT_INTERVAL = 2.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    key TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    icons TEXT NOT NULL DEFAULT '[]',
    dest TEXT NOT NULL,
    download_total INTEGER NOT NULL DEFAULT 0,
    upload_total INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '',
    failure_reason TEXT NOT NULL DEFAULT '',
    needs_credentials INTEGER NOT NULL DEFAULT 0,
    headers TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    finished REAL,
    owner TEXT,
    heartbeat REAL
);
CREATE TABLE IF NOT EXISTS records (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    integrity TEXT,
    has_body INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    failure TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    response_headers TEXT NOT NULL DEFAULT '[]',
    response_url TEXT NOT NULL DEFAULT '',
    downloaded INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    uploaded INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    started REAL,
    finished REAL,
    final_path TEXT,
    part_path TEXT,
    etag TEXT NOT NULL DEFAULT '',
    last_modified TEXT NOT NULL DEFAULT '',
    segments TEXT,
    PRIMARY KEY (key, idx)
);
CREATE INDEX IF NOT EXISTS registrations_id ON registrations (id);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    notebook TEXT NOT NULL DEFAULT '',
    started REAL NOT NULL
);
"""
#: Columns added after the first release: (name, declaration), added by _migrate.
ADDED_COLUMNS = (
    ("headers", "TEXT NOT NULL DEFAULT '{}'"),
    # an intent from a process that does not own the registration: pause | resume |
    # abort | handover, picked up by the owner; its outcome is "<intent_id>:<answer>"
    ("intent", "TEXT NOT NULL DEFAULT ''"),
    ("intent_id", "TEXT NOT NULL DEFAULT ''"),
    ("intent_by", "TEXT NOT NULL DEFAULT ''"),
    ("intent_result", "TEXT NOT NULL DEFAULT ''"),
    # the NAMES (never the values) of the headers kept in memory only, so that a new
    # process can say which ones to give again
    ("withheld_headers", "TEXT NOT NULL DEFAULT '[]'"),
)
RECORD_FIELDS = (
    "state failure status response_headers response_url downloaded total uploaded attempts "
    "error sha256 started finished final_path part_path etag last_modified segments"
).split()


def public_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers safe to write to disk: only those of the allowlist (every other header
    may be a credential)."""
    return stored_headers(headers)


def lease_timeout() -> float:
    """Seconds without a heartbeat before another process may take a registration over.

    ``$IPYBGFETCH_LEASE_TIMEOUT`` overrides the default (10 s), read at each use so a test
    or a tool can shorten it; an invalid value falls back to the default.
    """
    value = os.environ.get(LEASE_TIMEOUT_ENV, "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            return LEASE_TIMEOUT
        if seconds > 0:
            return seconds
    return LEASE_TIMEOUT


def heartbeat_interval() -> float:
    """How often a lease holder beats: well inside :func:`lease_timeout`."""
    return min(MAX_HEARTBEAT_INTERVAL, lease_timeout() / 4)


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already: after "database or disk is
    full" it rolls back by itself, and a second ROLLBACK ("no transaction is active")
    would replace the error the user needs to see."""
    if db.in_transaction:
        db.execute("ROLLBACK")


class IdInUse(Exception):
    """Another unsettled registration of this home (maybe another process's) has the id."""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._confirmed: dict[str, float] = {}  # key -> monotonic time we last knew we held it
        self._lost: set[str] = set()
        self.owner = new_owner()
        # Owner-only from its first byte: SQLite gives the -wal and -shm files the mode of
        # the database file when it creates them, so set it before connecting.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after the first release, for databases made before them."""
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(registrations)")}
        for name, declaration in ADDED_COLUMNS:
            if name not in have:
                with _ignore_duplicate_column():
                    self._db.execute(f"ALTER TABLE registrations ADD COLUMN {name} {declaration}")
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(records)")}
        if "segments" not in have:  # the finished ranges of a segmented download
            with _ignore_duplicate_column():
                self._db.execute("ALTER TABLE records ADD COLUMN segments TEXT")

    def describe_self(self, notebook: str = "") -> None:
        """Say who this process is (pid, host, notebook), for other processes' messages."""
        self._db.execute(
            "INSERT OR REPLACE INTO owners (owner, pid, host, notebook, started) "
            "VALUES (?, ?, ?, ?, ?)",
            (self.owner, os.getpid(), socket.gethostname(), notebook, time.time()),
        )

    def owner_of(self, key: str) -> dict[str, Any] | None:
        """The process holding ``key``'s lease: owner, pid, host, notebook, heartbeat."""
        row = self._db.execute(
            "SELECT r.owner, r.heartbeat, o.pid, o.host, o.notebook FROM registrations r "
            "LEFT JOIN owners o ON o.owner = r.owner WHERE r.key = ?",
            (key,),
        ).fetchone()
        if row is None or row["owner"] is None:
            return None
        info = dict(row)
        if info["pid"] is None:  # an older process that did not describe itself
            host, _, rest = str(row["owner"]).rpartition(":")[0].partition(":")
            info.update(host=host, pid=int(rest) if rest.isdigit() else None, notebook="")
        return info

    def data_version(self) -> int:
        """Changes when another connection (another process) committed a write."""
        row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM registrations")}

    # -- intents (control from a process that does not own the registration) ----------
    def send_intent(self, key: str, intent: str) -> str:
        """Ask the owner of ``key`` to ``intent``; returns the intent's id."""
        intent_id = uuid.uuid4().hex[:12]
        self._db.execute(
            "UPDATE registrations SET intent = ?, intent_id = ?, intent_by = ?, "
            "intent_result = '' WHERE key = ?",
            (intent, intent_id, self.owner, key),
        )
        return intent_id

    def intent_state(self, key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT intent, intent_id, intent_result, owner, heartbeat, state, result "
            "FROM registrations WHERE key = ?",
            (key,),
        ).fetchone()
        return row

    def pending_intents(self) -> list[sqlite3.Row]:
        """Intents for registrations this process holds."""
        return self._db.execute(
            "SELECT key, intent, intent_id, intent_by FROM registrations "
            "WHERE owner = ? AND intent != ''",
            (self.owner,),
        ).fetchall()

    def answer_intent(self, key: str, intent_id: str, answer: str, new_owner: str = "") -> None:
        """Mark an intent done (``answer``: "1", "0" or an error message); ``new_owner``
        hands the lease straight to the process that asked (no third process can
        slip in between)."""
        if new_owner:
            self._db.execute(
                "UPDATE registrations SET intent = '', intent_result = ?, owner = ?, "
                "heartbeat = ? WHERE key = ? AND intent_id = ? AND owner = ?",
                (f"{intent_id}:{answer}", new_owner, time.time(), key, intent_id, self.owner),
            )
            self._lost.add(key)
        else:
            self._db.execute(
                "UPDATE registrations SET intent = '', intent_result = ? "
                "WHERE key = ? AND intent_id = ?",
                (f"{intent_id}:{answer}", key, intent_id),
            )

    def close(self) -> None:
        self._db.close()

    # -- writes ------------------------------------------------------------------------
    def add_registration(
        self, row: Mapping[str, Any], records: Iterable[Mapping[str, Any]]
    ) -> None:
        row = _scrubbed(row)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Ids are unique among the home's unsettled registrations, whichever process
            # holds them: checked inside the write lock, so two processes cannot both win.
            if db.execute(
                "SELECT 1 FROM registrations WHERE id = ? AND result = '' LIMIT 1", (row["id"],)
            ).fetchone():
                raise IdInUse(row["id"])
            cols = ", ".join(row)
            db.execute(
                f"INSERT INTO registrations ({cols}, owner, heartbeat) "
                f"VALUES ({', '.join('?' * len(row))}, ?, ?)",
                (*row.values(), self.owner, time.time()),
            )
            rows = list(records)
            if rows:
                rcols = list(rows[0])
                db.executemany(
                    f"INSERT INTO records (key, {', '.join(rcols)}) "
                    f"VALUES (?, {', '.join('?' * len(rcols))})",
                    [(row["key"], *r.values()) for r in rows],
                )
            db.execute("COMMIT")
            self._confirmed[row["key"]] = time.monotonic()
        except BaseException:
            _rollback(db)
            raise

    def reopen(self, key: str) -> None:
        """A settled registration is active again (its failed records are retried): take
        its lease, unless another unsettled registration has its id (:class:`IdInUse`)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT id FROM registrations WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            if db.execute(
                "SELECT 1 FROM registrations WHERE id = ? AND result = '' AND key != ? LIMIT 1",
                (row["id"], key),
            ).fetchone():
                raise IdInUse(row["id"])
            db.execute(
                "UPDATE registrations SET result = '', failure_reason = '', state = 'active', "
                "finished = NULL, owner = ?, heartbeat = ? WHERE key = ?",
                (self.owner, time.time(), key),
            )
            db.execute("COMMIT")
            self._confirmed[key] = time.monotonic()
            self._lost.discard(key)
        except BaseException:
            _rollback(db)
            raise

    def update_registration(self, key: str, **fields: Any) -> None:
        fields = _scrubbed(fields)
        # Once a registration needed credentials it always does: a process that restored
        # it without them (they are never stored) must not clear the flag.
        sets = ", ".join(
            "needs_credentials = MAX(needs_credentials, ?)"
            if k == "needs_credentials"
            else f"{k} = ?"
            for k in fields
        )
        self._db.execute(f"UPDATE registrations SET {sets} WHERE key = ?", (*fields.values(), key))

    def update_records(self, key: str, records: Iterable[Mapping[str, Any]]) -> None:
        rows = [(*(r[f] for f in RECORD_FIELDS), key, r["idx"]) for r in records]
        if not rows:
            return
        sets = ", ".join(f"{f} = ?" for f in RECORD_FIELDS)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(f"UPDATE records SET {sets} WHERE key = ? AND idx = ?", rows)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def delete_registration(self, key: str) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM records WHERE key = ?", (key,))
            db.execute("DELETE FROM registrations WHERE key = ?", (key,))
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    # -- leases ------------------------------------------------------------------------
    def heartbeat(self, keys: Iterable[str]) -> list[str]:
        """Renew the leases of ``keys``; return the keys this process no longer holds
        (another process took them over while this one was stopped or stalled)."""
        keys = list(keys)
        now = time.time()
        lost = []
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key in keys:
                cur = db.execute(
                    "UPDATE registrations SET heartbeat = ? WHERE key = ? AND owner = ?",
                    (now, key, self.owner),
                )
                if cur.rowcount != 1:
                    lost.append(key)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        now_mono = time.monotonic()
        for key in keys:
            if key not in lost:
                self._confirmed[key] = now_mono
        self._lost.update(lost)
        return lost

    def holds(self, key: str) -> bool:
        """Does this process hold the lease of ``key`` (checked before irreversible steps)?

        A heartbeat that renewed our leases less than a quarter lease ago answers without a
        query (monotonic time also advances while the process is stopped, so a process that
        was frozen past its lease always asks the database).
        """
        confirmed = self._confirmed.get(key, float("-inf"))
        if key not in self._lost and time.monotonic() - confirmed < lease_timeout() / 4:
            return True
        row = self._db.execute("SELECT owner FROM registrations WHERE key = ?", (key,)).fetchone()
        return row is not None and row["owner"] == self.owner

    def try_take(self, key: str) -> bool:
        """Take the lease of ``key`` if nobody live holds it. Atomic across processes."""
        now = time.time()
        cur = self._db.execute(
            "UPDATE registrations SET owner = ?, heartbeat = ? WHERE key = ? AND "
            "(owner IS NULL OR owner = ? OR heartbeat IS NULL OR heartbeat < ?)",
            (self.owner, now, key, self.owner, now - lease_timeout()),
        )
        if cur.rowcount == 1:
            self._confirmed[key] = time.monotonic()
            self._lost.discard(key)
            return True
        return False

    def release(self, key: str) -> None:
        self._db.execute(
            "UPDATE registrations SET owner = NULL, heartbeat = NULL WHERE key = ? AND owner = ?",
            (key, self.owner),
        )

    # -- reads -------------------------------------------------------------------------
    def registrations(self) -> list[sqlite3.Row]:
        return self._db.execute("SELECT * FROM registrations ORDER BY created").fetchall()

    def records(self, key: str) -> list[sqlite3.Row]:
        return self._db.execute(
            "SELECT * FROM records WHERE key = ? ORDER BY idx", (key,)
        ).fetchall()


def _scrubbed(row: Mapping[str, Any]) -> dict[str, Any]:
    """A registration row with any credential header removed (a second line of defence)."""
    out = dict(row)
    if isinstance(out.get("headers"), str):
        try:
            headers = json.loads(out["headers"])
        except ValueError:
            headers = {}
        if isinstance(headers, dict):
            out["headers"] = dumps(public_headers(headers.items()))
        else:
            out["headers"] = "{}"
    return out


class _ignore_duplicate_column:
    """Two processes may migrate at once: the loser's ALTER TABLE fails harmlessly."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "duplicate column" in str(exc)


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options
# builds an encoder per call (3.6 us of the 8.7 us a record row took)


def dumps(value: Any) -> str:
    """Compact JSON, as ``json.dumps(value, separators=(",", ":"))``."""
    return _ENCODER.encode(value)
