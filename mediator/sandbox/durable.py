"""Durable state of the sandbox (optional): a SQLite file that survives a SIGKILL.

Only what changes at run time and matters for correctness is kept here: the stored
claims (whole claim as JSON, plus code/facility columns under a UNIQUE constraint, so the
duplicate check is made by the database itself) and the per-claim-code submission
counters. The seed is static and rebuilt at every start; faults, rate-limit windows,
login counters and locks stay in memory.

The database runs in WAL mode with ``synchronous=FULL``: every commit is fsynced before
it returns, and the callers commit before the HTTP answer is produced, like a real
openIMIS database commit. One connection is shared by all threads; callers hold the
store lock around every call (``check_same_thread=False`` only lifts sqlite3's guard).
One process per state file: the in-memory mirror is loaded once, at start.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path

from .store import ClaimLine, StoredClaim

SCHEMA_VERSION = 1
_DATE_FIELDS = ("date_claimed", "date_from", "date_to", "created")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    facility_code TEXT NOT NULL,
    status INTEGER NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (code, facility_code)
);
CREATE TABLE IF NOT EXISTS submissions (
    code TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
"""


class DuplicateClaim(Exception):
    """The UNIQUE (code, facility) constraint refused the claim."""


def dump_claim(claim: StoredClaim) -> str:
    data = asdict(claim)
    for name in _DATE_FIELDS:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    data["updated"] = claim.updated.isoformat()
    return json.dumps(data, separators=(",", ":"))


def load_claim(text: str) -> StoredClaim:
    data = json.loads(text)
    for name in _DATE_FIELDS:
        if data[name] is not None:
            data[name] = date.fromisoformat(data[name])
    data["updated"] = datetime.fromisoformat(data["updated"])
    data["lines"] = [ClaimLine(**line) for line in data["lines"]]
    return StoredClaim(**data)


class StateDB:
    """The SQLite state file. Every method commits (fsync) before it returns."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions, we BEGIN/COMMIT ourselves.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"sandbox state {path}: schema version {version}, expected {SCHEMA_VERSION}")
        self.conn.executescript(_SCHEMA)
        self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def load(self) -> tuple[list[StoredClaim], Counter[str]]:
        """Claims in insertion order and the submission counters."""
        claims = [load_claim(row[0]) for row in self.conn.execute("SELECT data FROM claims ORDER BY seq")]
        attempts: Counter[str] = Counter(dict(self.conn.execute("SELECT code, n FROM submissions")))
        return claims, attempts

    def _add_attempts(self, attempts: Counter[str]) -> None:
        self.conn.executemany(
            "INSERT INTO submissions (code, n) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET n = n + excluded.n",
            list(attempts.items()),
        )

    def add_attempts(self, attempts: Counter[str]) -> None:
        with self.conn:  # BEGIN ... COMMIT, ROLLBACK on error
            self.conn.execute("BEGIN IMMEDIATE")
            self._add_attempts(attempts)

    def insert_claim(self, claim: StoredClaim, attempts: Counter[str]) -> None:
        """Store a new claim (and pending submission counts) in one transaction.

        Raises DuplicateClaim, with nothing written, if the facility already has the code.
        """
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                if attempts:
                    self._add_attempts(attempts)
                self.conn.execute(
                    "INSERT INTO claims (uuid, code, facility_code, status, data) VALUES (?, ?, ?, ?, ?)",
                    (claim.uuid.lower(), claim.code, claim.facility_code, claim.status, dump_claim(claim)),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateClaim(claim.code) from exc

    def update_claim(self, claim: StoredClaim) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE claims SET status = ?, data = ? WHERE uuid = ?",
                (claim.status, dump_claim(claim), claim.uuid.lower()),
            )

    def clear(self) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM claims")
            self.conn.execute("DELETE FROM submissions")
