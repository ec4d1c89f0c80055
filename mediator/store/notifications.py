"""Subscriptions and the notification outbox, in the claim store (SQLite or PostgreSQL).

A facility's Subscription says which claims' answers it wants pushed. When a claim's answer
changes after the facility was first answered, the store writes one outbox row per matching
subscription **in the same transaction** as the change (`OUTBOX_INSERT`, run by `finish`): a
crash can lose neither the change nor its notification. The notifier then leases due rows and
delivers them at least once; each carries a stable id and the claim's version, so that a
receiver can drop repeats.

The SQL is written once for both backends (`?` placeholders, turned into `%s` for psycopg);
`NotificationTables` runs it through the backend's own read and write functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A subscription's status, as FHIR R4 names it.
ACTIVE, ERROR, OFF = "active", "error", "off"

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    facility TEXT,
    claim_code TEXT,
    outcome TEXT,
    endpoint TEXT NOT NULL,
    with_payload INTEGER NOT NULL,
    headers TEXT NOT NULL,
    end_at DOUBLE PRECISION,
    error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    resource TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    claim_version INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    created_at DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_error TEXT,
    last_status INTEGER,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS notifications_of_claim ON notifications (claim_id);
"""

#: One outbox row per subscription the claim now matches (run where its change is recorded).
#: Subscriptions in error keep collecting: they are delivered when the facility resumes them.
OUTBOX_INSERT = """
INSERT INTO notifications (id, subscription_id, claim_id, claim_version, created_at, next_attempt_at)
SELECT {new_id}, s.id, c.id, c.version, ?, ?
FROM subscriptions s JOIN claims c ON c.id = ?
WHERE s.status IN ('active', 'error') AND (s.end_at IS NULL OR s.end_at > ?)
  AND (s.claim_code IS NULL OR s.claim_code = c.claim_code)
  AND (s.facility IS NULL OR lower(s.facility) = lower(c.facility))
  AND (s.outcome IS NULL OR s.outcome = c.outcome OR (s.outcome = 'negative' AND c.outcome = 'invalid'))
"""
NEW_ID = {
    "sqlite": "lower(hex(randomblob(16)))",
    "postgresql": "md5(random()::text || clock_timestamp()::text)",
}


def outbox_params(claim_id: str, now: float) -> tuple[Any, ...]:
    return (now, now, claim_id, now)


@dataclass
class Subscription:
    id: str
    status: str
    endpoint: str
    with_payload: bool
    #: "Name: value" lines sent with every notification: secrets, never shown back.
    headers: list[str]
    resource: dict[str, Any]
    created_at: float
    updated_at: float
    facility: str | None = None
    claim_code: str | None = None
    outcome: str | None = None
    end_at: float | None = None
    error: str | None = None
    failures: int = 0


@dataclass
class Notification:
    id: str
    subscription_id: str
    claim_id: str
    claim_version: int
    state: str
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    lease_until: float = 0.0
    lease_owner: str | None = None
    last_error: str | None = None
    last_status: int | None = None
    delivered_at: float | None = None


@dataclass(frozen=True)
class NotificationStats:
    pending: int
    delivered: int
    subscriptions_active: int
    subscriptions_in_error: int


_SUB_COLUMNS = (
    "id",
    "status",
    "facility",
    "claim_code",
    "outcome",
    "endpoint",
    "with_payload",
    "headers",
    "end_at",
    "error",
    "failures",
    "resource",
    "created_at",
    "updated_at",
)
_NOTE_COLUMNS = tuple(f.name for f in Notification.__dataclass_fields__.values())  # type: ignore[attr-defined]


def _subscription(row: Sequence[Any]) -> Subscription:
    values = dict(zip(_SUB_COLUMNS, row, strict=True))
    values["with_payload"] = bool(values["with_payload"])
    values["headers"] = json.loads(values["headers"])
    values["resource"] = json.loads(values["resource"])
    return Subscription(**values)


def _notification(row: Sequence[Any]) -> Notification:
    return Notification(**dict(zip(_NOTE_COLUMNS, row, strict=True)))


Read = Callable[[str, tuple[Any, ...]], list[Any]]
Write = Callable[[Callable[[Callable[[str, tuple[Any, ...]], Any]], Any]], Any]


@dataclass
class NotificationTables:
    """The subscription and outbox operations, over a backend's `read` and `write` functions.

    `write(work)` runs `work(execute)` in one transaction, `execute(sql, params)` returning the
    backend's cursor (with `rowcount`, `fetchall`); `read(sql, params)` returns rows.
    """

    read: Read
    write: Write
    placeholder: str = "?"
    #: PostgreSQL: leased rows are skipped by the other replicas' notifiers, not waited for.
    lock_clause: str = ""
    _cache: dict[str, str] = field(default_factory=dict)

    def sql(self, text: str) -> str:
        if self.placeholder == "?":
            return text
        converted = self._cache.get(text)
        if converted is None:
            converted = self._cache[text] = text.replace("?", self.placeholder)
        return converted

    def _rows(self, text: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.read(self.sql(text), params)

    # -- subscriptions -----------------------------------------------------------------------

    def save_subscription(self, sub: Subscription) -> None:
        """Insert or replace; a subscription set active again has its pending notifications due now."""
        values = (
            sub.id,
            sub.status,
            sub.facility,
            sub.claim_code,
            sub.outcome,
            sub.endpoint,
            int(sub.with_payload),
            json.dumps(sub.headers),
            sub.end_at,
            sub.error,
            sub.failures,
            json.dumps(sub.resource),
            sub.created_at,
            sub.updated_at,
        )
        marks = ", ".join("?" for _ in _SUB_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _SUB_COLUMNS if c not in ("id", "created_at"))

        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> None:
            execute(
                self.sql(
                    f"INSERT INTO subscriptions ({', '.join(_SUB_COLUMNS)}) VALUES ({marks}) "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}"
                ),
                values,
            )
            if sub.status == ACTIVE:
                execute(
                    self.sql(
                        "UPDATE notifications SET next_attempt_at = 0 WHERE subscription_id = ? AND state = 'pending'"
                    ),
                    (sub.id,),
                )

        self.write(work)

    def subscription(self, ident: str) -> Subscription | None:
        rows = self._rows(f"SELECT {', '.join(_SUB_COLUMNS)} FROM subscriptions WHERE id = ?", (ident,))
        return _subscription(rows[0]) if rows else None

    def subscriptions(self, status: str | None = None) -> list[Subscription]:
        select = f"SELECT {', '.join(_SUB_COLUMNS)} FROM subscriptions"
        if status is None:
            return [_subscription(r) for r in self._rows(select + " ORDER BY created_at")]
        return [
            _subscription(r) for r in self._rows(select + " WHERE status = ? ORDER BY created_at", (status,))
        ]

    def delete_subscription(self, ident: str) -> bool:
        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> bool:
            execute(
                self.sql("DELETE FROM notifications WHERE subscription_id = ? AND state = 'pending'"),
                (ident,),
            )
            return execute(self.sql("DELETE FROM subscriptions WHERE id = ?"), (ident,)).rowcount == 1

        return bool(self.write(work))

    # -- the outbox ----------------------------------------------------------------------------

    def lease_notifications(self, now: float, lease_s: float, owner: str, limit: int) -> list[Notification]:
        """Due notifications of active subscriptions, leased to `owner` (one sender each)."""

        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> list[Notification]:
            rows = execute(
                self.sql(
                    f"SELECT {', '.join('n.' + c for c in _NOTE_COLUMNS)} FROM notifications n "
                    "JOIN subscriptions s ON s.id = n.subscription_id "
                    "WHERE n.state = 'pending' AND n.next_attempt_at <= ? AND n.lease_until < ? AND s.status = 'active' "
                    "ORDER BY n.next_attempt_at LIMIT ?" + self.lock_clause
                ),
                (now, now, limit),
            ).fetchall()
            taken = []
            for row in rows:
                note = _notification(row)
                claimed = execute(
                    self.sql(
                        "UPDATE notifications SET lease_until = ?, lease_owner = ? WHERE id = ? AND lease_until < ?"
                    ),
                    (now + lease_s, owner, note.id, now),
                )
                if claimed.rowcount == 1:
                    note.lease_until, note.lease_owner = now + lease_s, owner
                    taken.append(note)
            return taken

        return list(self.write(work))

    def delivered(self, note: Notification, status: int, now: float) -> None:
        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> None:
            execute(
                self.sql(
                    "UPDATE notifications SET state = 'delivered', delivered_at = ?, last_status = ?, "
                    "attempts = attempts + 1, last_error = NULL, lease_until = 0 WHERE id = ? AND lease_owner = ?"
                ),
                (now, status, note.id, note.lease_owner),
            )
            execute(
                self.sql("UPDATE subscriptions SET failures = 0, error = NULL WHERE id = ?"),
                (note.subscription_id,),
            )

        self.write(work)

    def failed(
        self,
        note: Notification,
        error: str,
        status: int | None,
        next_attempt_at: float,
        max_failures: int,
        now: float,
    ) -> bool:
        """Record a failed delivery; True when the subscription is now in error (too many failures)."""

        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> bool:
            execute(
                self.sql(
                    "UPDATE notifications SET attempts = attempts + 1, last_error = ?, last_status = ?, "
                    "next_attempt_at = ?, lease_until = 0 WHERE id = ? AND lease_owner = ?"
                ),
                (error, status, next_attempt_at, note.id, note.lease_owner),
            )
            execute(
                self.sql("UPDATE subscriptions SET failures = failures + 1, updated_at = ? WHERE id = ?"),
                (now, note.subscription_id),
            )
            went = execute(
                self.sql(
                    "UPDATE subscriptions SET status = 'error', error = ? WHERE id = ? AND status = 'active' "
                    "AND failures >= ?"
                ),
                (error, note.subscription_id, max_failures),
            )
            return went.rowcount == 1

        return bool(self.write(work))

    def notification(self, ident: str) -> Notification | None:
        rows = self._rows(f"SELECT {', '.join(_NOTE_COLUMNS)} FROM notifications WHERE id = ?", (ident,))
        return _notification(rows[0]) if rows else None

    def notifications(self, state: str | None, limit: int) -> list[Notification]:
        select = f"SELECT {', '.join(_NOTE_COLUMNS)} FROM notifications"
        if state is None:
            return [
                _notification(r) for r in self._rows(select + " ORDER BY created_at DESC LIMIT ?", (limit,))
            ]
        rows = self._rows(select + " WHERE state = ? ORDER BY created_at DESC LIMIT ?", (state, limit))
        return [_notification(r) for r in rows]

    def retry_notification(self, ident: str) -> bool:
        def work(execute: Callable[[str, tuple[Any, ...]], Any]) -> bool:
            cursor = execute(
                self.sql("UPDATE notifications SET next_attempt_at = 0 WHERE id = ? AND state = 'pending'"),
                (ident,),
            )
            return cursor.rowcount == 1

        return bool(self.write(work))

    def notification_stats(self) -> NotificationStats:
        counts = dict(self._rows("SELECT state, COUNT(*) FROM notifications GROUP BY state"))
        subs = dict(self._rows("SELECT status, COUNT(*) FROM subscriptions GROUP BY status"))
        return NotificationStats(
            pending=counts.get("pending", 0),
            delivered=counts.get("delivered", 0),
            subscriptions_active=subs.get(ACTIVE, 0),
            subscriptions_in_error=subs.get(ERROR, 0),
        )
