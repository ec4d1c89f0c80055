"""The shared claim store: one PostgreSQL database for every replica of a deployment.

Several mediator instances (each its own host, port and state directory) share the claims, so
that a claim is submitted once whichever replica a clinic's retry lands on, and a claim held by
a replica that dies is delivered by the others. The database enforces both:

- the claim key (claim code, facility) is a unique key: an intake is one `INSERT ... ON CONFLICT
  DO NOTHING`, so concurrent identical submissions spread over the replicas make one record;
- a claim is worked on under a lease (`lease_owner`, `lease_until`) taken in one statement with
  `FOR UPDATE SKIP LOCKED`: two forwarders never take the same claim, and one whose holder died
  is taken over once its lease has expired;
- a result is recorded only by the lease's holder (`finish` checks `lease_owner`).

The schema is created and migrated by the mediator itself, versioned (`schema_version`), under
a transaction-level advisory lock: replicas started together on an empty database wait for one
another instead of failing.

Commits are synchronous (flushed to the database's disk before they return) wherever only the
mediator can keep a promise: a claim held for later delivery (answered 202: state QUEUED, or
any result recorded with a 202), the OpenHIM transaction waiting for its result, leases, the
login guard, `store migrate`, and every write not named below. A synchronous commit also
flushes every earlier commit, so an intake is durable once the 202 of its claim is given. Two
writes are committed with `synchronous_commit=off`, as the SQLite store writes them without an
fsync: the intake of a claim (sent upstream next; nothing is promised yet) and a result that
openIMIS gave (the claim is in openIMIS's custody by the time the facility is answered). A
crash of the database server or its machine may lose the last such commits (PostgreSQL never
loses more than ~3 x `wal_writer_delay`, and never corrupts); a claim whose record was lost is,
if resent, recognised by openIMIS ("already exists") and read back, and one whose result was
lost stays "in doubt" and is looked up upstream before any resend: nothing is sent twice. A
crash of the mediator loses nothing (the database holds every commit it acknowledged). The
asynchronous commits spare each claim two WAL flushes that its request would wait for.

A database that cannot be reached raises `StoreUnavailable`: the claim is not acknowledged.
Times are Unix seconds from each replica's clock: the replicas' clocks must agree (NTP) to well
within `CLAIM_LEASE_S`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from mediator.openimis.login_guard import LoginGuard
from mediator.redaction import masked_url
from mediator.store.notifications import NEW_ID, OUTBOX_INSERT, NotificationTables, outbox_params
from mediator.store.notifications import SCHEMA as NOTIFICATION_SCHEMA
from mediator.store.postgres_login_guard import PostgresLoginGuard
from mediator.store.records import (
    COLUMNS,
    FINISHED_STATES,
    OPEN_STATES,
    ClaimRecord,
    ClaimState,
    QueueStats,
    StoreUnavailable,
    record_row,
    result_update,
    row_record,
)

log = logging.getLogger("mediator.store")

T = TypeVar("T")

_COLUMNS = COLUMNS
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM claims"
_INSERT = f"INSERT INTO claims ({', '.join(_COLUMNS)}) VALUES ({', '.join('%s' for _ in _COLUMNS)})"
_INSERT_NEW = _INSERT + " ON CONFLICT DO NOTHING RETURNING id"
_OPEN = tuple(str(s) for s in OPEN_STATES)
_FINISHED = tuple(str(s) for s in FINISHED_STATES)
_DUE_STATES = (str(ClaimState.QUEUED), str(ClaimState.AWAITING_ADJUDICATION), str(ClaimState.UNCONFIRMED))

#: How long a store opened at start keeps trying to reach its database.
START_RETRY_S = 60.0
#: Any constant both sides agree on: the key of the advisory lock held while migrating.
_MIGRATION_LOCK = 0x6F70656E494D4953  # "openIMIS"
#: Schema versions, in order; each applied once, in the transaction that records it.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE claims (
        id TEXT PRIMARY KEY,
        claim_code TEXT NOT NULL,
        facility TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        lease_owner TEXT,
        openimis_id TEXT,
        outcome TEXT,
        response_status INTEGER,
        response_body TEXT,
        last_error TEXT,
        openhim_tx_id TEXT,
        UNIQUE (claim_code, facility)
    );
    CREATE TABLE pending_reports (
        claim_id TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        PRIMARY KEY (claim_id, transaction_id)
    );
    CREATE INDEX claims_open ON claims (next_attempt_at)
        WHERE state IN ('sending', 'queued', 'awaiting-adjudication', 'unconfirmed');
    CREATE INDEX claims_by_openimis_id ON claims (openimis_id) WHERE openimis_id IS NOT NULL;
    CREATE INDEX claims_finished ON claims (updated_at) WHERE state IN ('done', 'invalid');
    """,
    # 2: the deployment's failed openIMIS logins, shared by its replicas.
    """
    CREATE TABLE openimis_login_guard (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        failures INTEGER NOT NULL,
        suspended_until DOUBLE PRECISION NOT NULL,
        credentials TEXT NOT NULL
    );
    """,
    # 3: subscriptions and the notification outbox; a claim's version.
    "ALTER TABLE claims ADD COLUMN version INTEGER NOT NULL DEFAULT 0;\n" + NOTIFICATION_SCHEMA,
)


class _StoreConnection(psycopg.Connection[Any]):
    """A pooled connection that remembers its session's `synchronous_commit` (None: as the
    server's default, which the store does not assume), so that it is set only when it changes."""

    synchronous_commit: bool | None = None

    def commit_synchronously(self, durable: bool) -> None:
        if self.synchronous_commit is not durable:
            self.execute("SET synchronous_commit = on" if durable else "SET synchronous_commit = off")
            self.synchronous_commit = durable


class PostgresClaimStore:
    def __init__(self, url: str, pool_size: int = 10, connect_timeout_s: float = 5.0) -> None:
        self._url = url
        self._pool_size = pool_size
        self._timeout = connect_timeout_s
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self.migrate()
        self.notifications = NotificationTables(
            lambda sql, params: self._run(lambda db: db.execute(sql, params).fetchall()),
            lambda work: self._transaction(lambda db: work(db.execute)),
            placeholder="%s",
            lock_clause=" FOR UPDATE OF n SKIP LOCKED",
        )

    def __repr__(self) -> str:
        return f"PostgresClaimStore({masked_url(self._url)})"

    # -- connections -----------------------------------------------------------------------

    def _connections(self) -> psycopg_pool.ConnectionPool:
        """This process's pool (a pool is never shared across a fork)."""
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = psycopg_pool.ConnectionPool(
                        self._url,
                        min_size=1,
                        max_size=self._pool_size,
                        kwargs={"autocommit": True, "connect_timeout": max(1, int(self._timeout))},
                        connection_class=_StoreConnection,
                        timeout=self._timeout,
                        open=False,
                        name="claim-store",
                    )
                    self._pool.open(wait=False)
                    self._pid = os.getpid()
                pool = self._pool
        return pool

    @contextmanager
    def _connection(self, durable: bool | None = True) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection whose commits are synchronous (`durable`), asynchronous (False,
        only for the writes the module's docstring names), or as they come (None: reads)."""
        try:
            with self._connections().connection() as db:
                if durable is not None:
                    db.commit_synchronously(durable)
                yield db
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(
                f"the claim store database is unreachable ({type(exc).__name__})"
            ) from None

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], durable: bool | None = True) -> T:
        with self._connection(durable) as db:
            return work(db)

    def _transaction(self, work: Callable[[psycopg.Connection[Any]], T], durable: bool = True) -> T:
        with self._connection(durable) as db, db.transaction():
            return work(db)

    def login_guard(self, base_delay: float, credentials: str) -> LoginGuard:
        """Failed openIMIS logins shared by every replica on this database."""
        return PostgresLoginGuard(self._connection, base_delay, credentials)

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.close()
            self._pool = None

    def migrate(self) -> int:
        """Bring the schema to the latest version; returns the version. Safe to run concurrently."""
        deadline = time.monotonic() + START_RETRY_S
        while True:
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as db:
                    return _migrate(db)
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    why = masked_url(
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    )
                    raise StoreUnavailable(f"the claim store database is unreachable: {why}") from None
                log.warning(
                    "claim store database unreachable at start, retrying",
                    extra={"store": masked_url(self._url), "error": type(exc).__name__},
                )
                time.sleep(1.0)

    # -- reads -----------------------------------------------------------------------------

    def _one(self, sql: str, params: tuple[Any, ...]) -> ClaimRecord | None:
        row = self._run(lambda db: db.execute(sql, params).fetchone(), durable=None)
        return row_record(row) if row else None

    def _many(self, sql: str, params: tuple[Any, ...]) -> list[ClaimRecord]:
        rows = self._run(lambda db: db.execute(sql, params).fetchall(), durable=None)
        return [row_record(r) for r in rows]

    def get(self, ident: str) -> ClaimRecord | None:
        return self._one(f"{_SELECT} WHERE id = %s OR openimis_id = %s LIMIT 1", (ident, ident))

    def by_key(self, claim_code: str, facility: str) -> ClaimRecord | None:
        return self._one(f"{_SELECT} WHERE claim_code = %s AND facility = %s", (claim_code, facility))

    def by_claim_code(self, claim_code: str) -> list[ClaimRecord]:
        return self._many(f"{_SELECT} WHERE claim_code = %s", (claim_code,))

    def listing(self, states: tuple[ClaimState, ...], limit: int) -> list[ClaimRecord]:
        wanted = [str(s) for s in states]
        return self._many(f"{_SELECT} WHERE state = ANY(%s) ORDER BY created_at LIMIT %s", (wanted, limit))

    def stats(self, now: float) -> QueueStats:
        def read(db: psycopg.Connection[Any]) -> QueueStats:
            counts = dict(
                db.execute(
                    "SELECT state, COUNT(*) FROM claims WHERE state = ANY(%s) GROUP BY state", (list(_OPEN),)
                ).fetchall()
            )
            (finished,) = db.execute(
                "SELECT COUNT(*) FROM claims WHERE state IN ('done', 'invalid')"
            ).fetchone() or (0,)
            (oldest,) = db.execute(
                "SELECT MIN(created_at) FROM claims WHERE state IN ('queued', 'sending')"
            ).fetchone() or (None,)
            last_error = db.execute(
                "SELECT last_error FROM claims WHERE state = 'queued' AND last_error IS NOT NULL "
                "ORDER BY updated_at DESC LIMIT 1"
            ).fetchone()
            return QueueStats.of(counts, now, oldest, last_error[0] if last_error else None, finished)

        return self._run(read, durable=None)

    def due_reports(self, limit: int) -> list[tuple[ClaimRecord, str]]:
        rows = self._run(
            lambda db: db.execute(
                f"SELECT {', '.join('c.' + c for c in _COLUMNS)}, p.transaction_id FROM pending_reports p "
                "JOIN claims c ON c.id = p.claim_id WHERE (c.state = ANY(%s) OR "
                "(c.state = 'awaiting-adjudication' AND c.outcome = 'positive')) LIMIT %s",
                (list(_FINISHED), limit),
            ).fetchall(),
            durable=None,
        )
        return [(row_record(r[:-1]), r[-1]) for r in rows]

    # -- writes ----------------------------------------------------------------------------

    def intake(self, record: ClaimRecord) -> tuple[ClaimRecord, bool]:
        """A new claim is one statement, committed asynchronously (the module's docstring says
        why); a key already held is read and, if refused as invalid, replaced, in a transaction."""
        values = record_row(record)
        if self._run(lambda db: db.execute(_INSERT_NEW, values).fetchone(), durable=False) is not None:
            return record, True

        def insert(db: psycopg.Connection[Any]) -> tuple[ClaimRecord, bool]:
            inserted = db.execute(_INSERT_NEW, values).fetchone()
            if inserted is not None:
                return record, True
            row = db.execute(
                f"{_SELECT} WHERE claim_code = %s AND facility = %s FOR UPDATE",
                (record.claim_code, record.facility),
            ).fetchone()
            existing = row_record(row) if row is not None else None
            if existing is not None and (
                existing.state != ClaimState.INVALID or existing.content_hash == record.content_hash
            ):
                return existing, False
            if existing is not None:  # refused as invalid, now corrected: replaced
                db.execute("DELETE FROM claims WHERE id = %s", (existing.id,))
            db.execute(_INSERT, values)
            return record, True

        return self._transaction(insert, durable=False)

    def finish(self, record_id: str, lease_owner: str | None, notify: bool = False, **fields: Any) -> bool:
        """Update a record the caller holds the lease of; with `notify`, its outbox rows too."""
        fields.setdefault("updated_at", time.time())
        sql, params = result_update(record_id, lease_owner, notify, fields, "%s")
        if not notify:
            # answered 202: in the mediator's custody (else openIMIS has given the result)
            held = fields.get("state") == ClaimState.QUEUED or fields.get("response_status") == 202
            return self._run(lambda db: db.execute(sql, params).rowcount == 1, durable=held)
        outbox = OUTBOX_INSERT.format(new_id=NEW_ID["postgresql"]).replace("?", "%s")

        def change_and_outbox(db: psycopg.Connection[Any]) -> bool:
            changed = db.execute(sql, params).rowcount == 1
            if changed:
                db.execute(outbox, outbox_params(record_id, fields["updated_at"]))
            return changed

        # Synchronous: a notification is a promise only the mediator can keep.
        return self._transaction(change_and_outbox, durable=True)

    def lease_due(self, now: float, lease_s: float, owner: str, limit: int) -> list[ClaimRecord]:
        """One statement: the due claims no other forwarder holds, leased to `owner`."""
        sql = (
            f"UPDATE claims SET lease_until = %s, lease_owner = %s WHERE id IN ("
            "SELECT id FROM claims WHERE state = ANY(%s) AND ("
            "(state = ANY(%s) AND next_attempt_at <= %s AND lease_until < %s) "
            "OR (state = 'sending' AND lease_until < %s)) "
            "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"RETURNING {', '.join(_COLUMNS)}"
        )
        params = (now + lease_s, owner, list(_OPEN), list(_DUE_STATES), now, now, now, limit)
        records = [row_record(r) for r in self._run(lambda db: db.execute(sql, params).fetchall())]
        return sorted(records, key=lambda r: r.next_attempt_at)

    def import_records(self, records: list[ClaimRecord]) -> int:
        """Copy records as they are (`store migrate`); a key already held is left. Returns the copied."""

        def insert(db: psycopg.Connection[Any]) -> int:
            copied = 0
            for record in records:
                cursor = db.execute(_INSERT + " ON CONFLICT DO NOTHING", record_row(record))
                copied += cursor.rowcount
            return copied

        return self._transaction(insert)

    def await_report(self, claim_id: str, transaction_id: str) -> None:
        self._run(
            lambda db: db.execute(
                "INSERT INTO pending_reports (claim_id, transaction_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (claim_id, transaction_id),
            )
        )

    def reported(self, claim_id: str, transaction_id: str) -> None:
        self._run(
            lambda db: db.execute(
                "DELETE FROM pending_reports WHERE claim_id = %s AND transaction_id = %s",
                (claim_id, transaction_id),
            )
        )

    def retry_now(self, ident: str) -> bool:
        """Make a waiting claim due now; a claim in flight (live lease) is left to its sender."""
        sql = (
            "UPDATE claims SET next_attempt_at = 0 WHERE (id = %s OR openimis_id = %s OR claim_code = %s) "
            "AND (state = ANY(%s) OR (state = 'sending' AND lease_until < %s))"
        )
        params = (ident, ident, ident, list(_DUE_STATES), time.time())
        return self._run(lambda db: db.execute(sql, params).rowcount > 0)

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints itself."""

    def purge_finished(self, before: float) -> int:
        sql = (
            "DELETE FROM claims WHERE state IN ('done', 'invalid') AND updated_at < %s "
            "AND NOT EXISTS (SELECT 1 FROM pending_reports p WHERE p.claim_id = claims.id)"
        )
        return self._run(lambda db: db.execute(sql, (before,)).rowcount)


def _migrate(db: psycopg.Connection[Any]) -> int:
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row else 0
        for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
            db.execute(step)
            log.info("claim store schema migrated", extra={"schema_version": version})
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS),))
        elif current < len(MIGRATIONS):
            db.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
        return len(MIGRATIONS)
