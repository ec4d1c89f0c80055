"""The embedded claim store: one SQLite file shared by the workers and the agent of an instance.

A worker's writes are batched by group commit (one writer per process at a time); between the
processes of an instance, SQLite's own write lock decides. A lone write runs in SQLite's
autocommit, so that lock is held only inside one SQLite call, never while a thread waits for the
GIL: collisions are rare and short. (A file lock taken around every batch, as before, cost each
write two system calls and each worker waits on the other's batches: 0.55 -> 0.60 of the bare
hop without it, at 2 workers x 8 threads.) A batch that finds SQLite's lock taken waits for it
in short pauses of its own (`group_commit`), other writers in SQLite's busy handler; both up to
30 s. Opening the store is the exception: the processes of an instance start together, and
SQLite refuses at once ("database is locked", no busy handler) a second process that asks for
the switch of a new file to WAL while the first makes it; so a file lock lets one process at a
time open the store (once per process, never per write).

WAL journal, synchronous=NORMAL: every commit survives any crash of the mediator (the crash test
kills it mid-claim), and a power cut may lose only the last commits. Where only the mediator can
keep a promise, the commit is synchronous=FULL (fsynced) before the promise is made: a claim held
for later delivery (answered 202, state QUEUED) and the OpenHIM transaction waiting for its
result. Every other claim is in openIMIS's custody by the time the facility is answered; if a
power cut loses its record, a resend is recognised by openIMIS ("already exists") and read back,
so nothing is sent twice.
Each thread has its own connection; every state change is a single statement or one
transaction, so there is no lost update.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from mediator.store.group_commit import GroupCommit
from mediator.store.notifications import NEW_ID, OUTBOX_INSERT, NotificationTables, outbox_params
from mediator.store.notifications import SCHEMA as NOTIFICATION_SCHEMA
from mediator.store.records import (
    COLUMNS,
    FINISHED_STATES,
    OPEN_STATES,
    ClaimRecord,
    ClaimState,
    QueueStats,
    record_row,
    result_update,
    row_record,
)

#: The conditions of the partial indexes, in the words their queries must repeat.
_IS_OPEN = f"state IN ({', '.join(repr(str(s)) for s in OPEN_STATES)})"
_IS_FINISHED = f"state IN ({', '.join(repr(str(s)) for s in FINISHED_STATES)})"

#: A claim whose answer an OpenHIM transaction waiting for it gets: final, or positive and still
#: followed (accepted, not valuated yet: for OpenHIM the transaction is Successful).
_ANSWERED = (
    "(c.state IN ('done', 'invalid') OR (c.state = 'awaiting-adjudication' AND c.outcome = 'positive'))"
)

_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS claims (
    id TEXT PRIMARY KEY,
    claim_code TEXT NOT NULL,
    facility TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    openimis_id TEXT,
    outcome TEXT,
    response_status INTEGER,
    response_body TEXT,
    last_error TEXT,
    openhim_tx_id TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    UNIQUE (claim_code, facility)
);
-- OpenHIM transactions answered 202 for a claim: each gets the final result once it is known.
CREATE TABLE IF NOT EXISTS pending_reports (
    claim_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    PRIMARY KEY (claim_id, transaction_id)
);
-- Partial indexes: each holds only the claims its readers look for, so that a claim's intake
-- writes two index entries less and its result two less (a sixth of the store's CPU per claim).
-- Their readers repeat the index's condition word for word (`_IS_OPEN`, `_IS_FINISHED`):
-- SQLite only uses a partial index for a query whose WHERE clause contains its condition.
DROP INDEX IF EXISTS claims_due;
DROP INDEX IF EXISTS claims_openimis_id;
DROP INDEX IF EXISTS claims_updated;
-- claims_open's condition predates the unconfirmed state: replaced by claims_open_states.
DROP INDEX IF EXISTS claims_open;
CREATE INDEX IF NOT EXISTS claims_open_states ON claims (state, next_attempt_at) WHERE {is_open};
CREATE INDEX IF NOT EXISTS claims_by_openimis_id ON claims (openimis_id) WHERE openimis_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS claims_finished ON claims (updated_at) WHERE {is_finished};
"""

_SCHEMA = _SCHEMA_TEMPLATE.format(is_open=_IS_OPEN, is_finished=_IS_FINISHED)

_COLUMNS = COLUMNS
#: WAL pages after which a committing request checkpoints itself (the agent normally did long before).
_FALLBACK_CHECKPOINT_PAGES = 10_000
#: The WAL file is truncated back to this size after a checkpoint that emptied it.
_WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM claims"
_INSERT = f"INSERT INTO claims ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_INSERT_NEW = _INSERT + " ON CONFLICT (claim_code, facility) DO NOTHING"


class SqliteClaimStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        self._make_private()
        self._local = threading.local()
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        self._group: GroupCommit | None = None
        self._batch_db: sqlite3.Connection | None = None
        self._group_pid = 0
        with self._writing(), self._opening_alone():
            db = self._connection()
            (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise sqlite3.OperationalError(f"claim store {self.path}: journal mode {mode}, not wal")
            columns = {row[1] for row in db.execute("PRAGMA table_info(claims)")}
            if columns and "version" not in columns:  # a store of before notifications
                db.execute("ALTER TABLE claims ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
            db.executescript(_SCHEMA + NOTIFICATION_SCHEMA)
        self.notifications = NotificationTables(self._read_rows, self._transaction)

    def _make_private(self) -> None:
        """Claims carry personal health data: the store is 0600 before SQLite opens it, since
        SQLite creates the -wal and -shm files (claim data too) with the database file's mode.
        The -wal and -shm files an older version left readable are made private as well."""
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)

    @contextmanager
    def _opening_alone(self) -> Iterator[None]:
        """Hold the instance's open lock: one process at a time switches to WAL and makes the schema."""
        lock = os.open(self.path.with_name(self.path.name + ".openlock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            yield
        finally:
            os.close(lock)

    # -- connections -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or self._pid != os.getpid():  # never share a connection across a fork
            self._local.db = db = self._connect(busy_timeout_s=30.0)
            self._pid = os.getpid()
        return db

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        # WAL is a property of the file, set once when the store is opened (`__init__`).
        db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")
        # The agent checkpoints every second (`checkpoint`); a request thread only does when the
        # WAL grew this large without it (agent down), instead of every 1,000 pages.
        db.execute(f"PRAGMA wal_autocheckpoint={_FALLBACK_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT_BYTES}")
        return db

    def _batches(self) -> GroupCommit:
        """Intakes and results of this process's threads, committed in shared transactions.

        Through one connection of the process, used by whichever thread leads a batch (always
        in the process's turn to write). It has no busy timeout: the batch waits for the other
        processes in short pauses of its own (`group_commit`)."""
        group = self._group
        if group is None or self._group_pid != os.getpid():
            with self._writing():  # threads arriving together make one group, one connection
                if self._group is None or self._group_pid != os.getpid():
                    self._batch_db = batch_db = self._connect(busy_timeout_s=0.0)
                    self._group = GroupCommit(self._writing, lambda: batch_db)
                    self._group_pid = os.getpid()
                group = self._group
        return group

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This process's turn to write (other processes are kept out by SQLite's own lock)."""
        with self._thread_lock:
            yield

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
        if self._batch_db is not None and self._group_pid == os.getpid():
            with self._writing():
                self._batch_db.close()
                self._batch_db, self._group = None, None

    # -- reads -----------------------------------------------------------------------------

    def get(self, ident: str) -> ClaimRecord | None:
        row = (
            self._connection()
            .execute(f"{_SELECT} WHERE id = ? OR openimis_id = ?", (ident, ident))
            .fetchone()
        )
        return row_record(row) if row else None

    def by_key(self, claim_code: str, facility: str) -> ClaimRecord | None:
        row = (
            self._connection()
            .execute(f"{_SELECT} WHERE claim_code = ? AND facility = ?", (claim_code, facility))
            .fetchone()
        )
        return row_record(row) if row else None

    def by_claim_code(self, claim_code: str) -> list[ClaimRecord]:
        rows = self._connection().execute(f"{_SELECT} WHERE claim_code = ?", (claim_code,)).fetchall()
        return [row_record(r) for r in rows]

    def listing(self, states: tuple[ClaimState, ...], limit: int) -> list[ClaimRecord]:
        marks = ", ".join("?" for _ in states)
        among_open = f"{_IS_OPEN} AND " if set(states) <= set(OPEN_STATES) else ""
        rows = (
            self._connection()
            .execute(
                f"{_SELECT} WHERE {among_open}state IN ({marks}) ORDER BY created_at LIMIT ?",
                (*states, limit),
            )
            .fetchall()
        )
        return [row_record(r) for r in rows]

    def stats(self, now: float) -> QueueStats:
        db = self._connection()
        counts = dict(
            db.execute(f"SELECT state, COUNT(*) FROM claims WHERE {_IS_OPEN} GROUP BY state").fetchall()
        )
        (finished,) = db.execute(f"SELECT COUNT(*) FROM claims WHERE {_IS_FINISHED}").fetchone()
        oldest = db.execute(
            f"SELECT MIN(created_at) FROM claims WHERE {_IS_OPEN} AND state IN (?, ?)",
            (ClaimState.QUEUED, ClaimState.SENDING),
        ).fetchone()[0]
        last_error = db.execute(
            f"SELECT last_error FROM claims WHERE {_IS_OPEN} AND state = ? AND last_error IS NOT NULL "
            "ORDER BY updated_at DESC LIMIT 1",
            (ClaimState.QUEUED,),
        ).fetchone()
        return QueueStats.of(counts, now, oldest, last_error[0] if last_error else None, finished)

    def every_record(self, batch: int = 500) -> Iterator[list[ClaimRecord]]:
        """All records, a batch at a time, in the order they were stored (`store migrate`)."""
        last = 0
        while True:
            rows = (
                self._connection()
                .execute(
                    f"SELECT rowid, {', '.join(_COLUMNS)} FROM claims WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (last, batch),
                )
                .fetchall()
            )
            if not rows:
                return
            last = rows[-1][0]
            yield [row_record(r[1:]) for r in rows]

    def pending_reports(self) -> list[tuple[str, str]]:
        """Every (claim id, OpenHIM transaction id) still waiting for its result (`store migrate`)."""
        return self._connection().execute("SELECT claim_id, transaction_id FROM pending_reports").fetchall()

    def due_reports(self, limit: int) -> list[tuple[ClaimRecord, str]]:
        # CROSS JOIN keeps pending_reports the outer loop: left to itself, SQLite walked every
        # finished claim of the store (the `state` index) looking for its reports, every second.
        rows = (
            self._connection()
            .execute(
                f"SELECT {', '.join('c.' + c for c in _COLUMNS)}, p.transaction_id FROM pending_reports p "
                f"CROSS JOIN claims c ON c.id = p.claim_id WHERE {_ANSWERED} LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [(row_record(r[:-1]), r[-1]) for r in rows]

    # -- writes ----------------------------------------------------------------------------

    def intake(self, record: ClaimRecord) -> tuple[ClaimRecord, bool]:
        values = record_row(record)  # encoded before joining a batch: other writers wait on the batch

        def insert(db: sqlite3.Connection) -> tuple[ClaimRecord, bool]:
            cursor = db.execute(_INSERT_NEW, values)
            if cursor.rowcount == 1:
                return record, True
            return _intake_existing(db, record, values)

        return self._batches().run(insert)

    def finish(self, record_id: str, lease_owner: str | None, notify: bool = False, **fields: Any) -> bool:
        fields.setdefault("updated_at", time.time())
        sql, params = result_update(record_id, lease_owner, notify, fields, "?")
        held = fields.get("state") == ClaimState.QUEUED  # answered 202: in the mediator's custody
        if not notify:
            return self._batches().run(lambda db: db.execute(sql, params).rowcount == 1, durable=held)
        outbox = OUTBOX_INSERT.format(new_id=NEW_ID["sqlite"])

        def change_and_outbox(db: sqlite3.Connection) -> bool:
            """The answer's change and its notifications: one savepoint, so one commit."""
            db.execute("SAVEPOINT finish_notify")
            try:
                changed = db.execute(sql, params).rowcount == 1
                if changed:
                    db.execute(outbox, outbox_params(record_id, fields["updated_at"]))
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK TO finish_notify")
                    db.execute("RELEASE finish_notify")
                raise
            db.execute("RELEASE finish_notify")
            return changed

        # Durable: a notification is a promise only the mediator can keep.
        return self._batches().run(change_and_outbox, durable=True)

    # -- subscriptions and notifications (mediator.store.notifications) -----------------------

    def _read_rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._connection().execute(sql, params).fetchall()

    def _transaction(self, work: Any) -> Any:
        with self._writing():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db.execute)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

    def lease_due(self, now: float, lease_s: float, owner: str, limit: int) -> list[ClaimRecord]:
        with self._writing():
            return self._lease_due(now, lease_s, owner, limit)

    def _lease_due(self, now: float, lease_s: float, owner: str, limit: int) -> list[ClaimRecord]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"{_SELECT} WHERE {_IS_OPEN} AND ((state IN (?, ?, ?) AND next_attempt_at <= ? "
                "AND lease_until < ?) OR (state = ? AND lease_until < ?)) ORDER BY next_attempt_at LIMIT ?",
                (
                    ClaimState.QUEUED,
                    ClaimState.AWAITING_ADJUDICATION,
                    ClaimState.UNCONFIRMED,
                    now,
                    now,
                    ClaimState.SENDING,
                    now,
                    limit,
                ),
            ).fetchall()
            records = [row_record(r) for r in rows]
            for record in records:
                record.lease_until, record.lease_owner = now + lease_s, owner
                db.execute(
                    "UPDATE claims SET lease_until = ?, lease_owner = ? WHERE id = ?",
                    (record.lease_until, owner, record.id),
                )
            db.execute("COMMIT")
            return records
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def await_report(self, claim_id: str, transaction_id: str) -> None:
        self._batches().run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO pending_reports (claim_id, transaction_id) VALUES (?, ?)",
                (claim_id, transaction_id),
            ),
            durable=True,
        )

    def reported(self, claim_id: str, transaction_id: str) -> None:
        with self._writing():
            self._connection().execute(
                "DELETE FROM pending_reports WHERE claim_id = ? AND transaction_id = ?",
                (claim_id, transaction_id),
            )

    def retry_now(self, ident: str) -> bool:
        """Make a waiting claim due now; a claim in flight (live lease) is left to its sender."""
        with self._writing():
            cursor = self._connection().execute(
                "UPDATE claims SET next_attempt_at = 0 WHERE (id = ? OR openimis_id = ? OR claim_code = ?) "
                "AND (state IN (?, ?, ?) OR (state = ? AND lease_until < ?))",
                (
                    ident,
                    ident,
                    ident,
                    ClaimState.QUEUED,
                    ClaimState.AWAITING_ADJUDICATION,
                    ClaimState.UNCONFIRMED,
                    ClaimState.SENDING,
                    time.time(),
                ),
            )
        return cursor.rowcount > 0

    def checkpoint(self) -> None:
        """Copy committed pages from the WAL into the database file, without blocking writers.

        SQLite otherwise does this in whichever request's commit crosses 1,000 WAL pages, with an
        fsync, while that request holds the write lock: a stall of milliseconds for every writer
        of the instance, every hundred claims or so. The agent calls this every second instead.
        """
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def purge_finished(self, before: float) -> int:
        # By age, through the retention index, named: SQLite once chose a `state` index instead and
        # read every finished claim kept.
        with self._writing():
            cursor = self._connection().execute(
                f"DELETE FROM claims INDEXED BY claims_finished WHERE {_IS_FINISHED} AND updated_at < ? "
                "AND id NOT IN (SELECT claim_id FROM pending_reports)",
                (before,),
            )
        return cursor.rowcount


def _intake_existing(
    db: sqlite3.Connection, record: ClaimRecord, values: tuple[Any, ...]
) -> tuple[ClaimRecord, bool]:
    """The claim's key is taken: the stored claim, unless it was refused as invalid and this
    is a corrected version (which replaces it, in one step: a savepoint, since a lone write runs
    in SQLite's autocommit)."""
    db.execute("SAVEPOINT intake_existing")
    try:
        row = db.execute(
            f"{_SELECT} WHERE claim_code = ? AND facility = ?", (record.claim_code, record.facility)
        ).fetchone()
        existing = row_record(row) if row is not None else None
        if existing is not None and (
            existing.state != ClaimState.INVALID or existing.content_hash == record.content_hash
        ):
            result = existing, False
        else:
            if existing is not None:
                db.execute("DELETE FROM claims WHERE id = ?", (existing.id,))
            db.execute(_INSERT, values)
            result = record, True
    except BaseException:
        if db.in_transaction:  # SQLite rolls the whole transaction back itself on some errors
            db.execute("ROLLBACK TO intake_existing")
            db.execute("RELEASE intake_existing")
        raise
    db.execute("RELEASE intake_existing")
    return result
