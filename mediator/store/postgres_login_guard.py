"""Failed openIMIS logins, remembered by every replica of a deployment in their shared database.

openIMIS locks an account after five failed logins, and the replicas log in with the same
account: one replica's failure must suspend the logins of all, and their logins must not race
(a session advisory lock, held for the login's duration, does what the file lock does within
one instance). The backoff is LoginGuard's; only where the record lives differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from mediator.openimis.login_guard import LoginGuard

log = logging.getLogger("mediator.store")

#: Advisory lock key of the deployment's openIMIS login (any constant the replicas share).
_LOGIN_LOCK = 0x6C6F67696E  # "login"


class PostgresLoginGuard(LoginGuard):
    def __init__(
        self,
        connection: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        base_delay: float,
        credentials: str = "",
    ) -> None:
        super().__init__(path=None, base_delay=base_delay, credentials=credentials)  # type: ignore[arg-type]
        self._connection = connection

    @contextmanager
    def attempt(self) -> Iterator[None]:
        with self._connection() as db:
            db.execute("SELECT pg_advisory_lock(%s)", (_LOGIN_LOCK,))
            try:
                yield
            finally:
                db.execute("SELECT pg_advisory_unlock(%s)", (_LOGIN_LOCK,))

    def _load(self) -> Any:
        with self._connection() as db:
            row = db.execute(
                "SELECT failures, suspended_until, credentials FROM openimis_login_guard WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        return {"failures": row[0], "suspended_until": row[1], "credentials": row[2]}

    def _write(self, record: dict[str, Any]) -> None:
        with self._connection() as db:
            db.execute(
                "INSERT INTO openimis_login_guard (id, failures, suspended_until, credentials) "
                "VALUES (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET failures = EXCLUDED.failures, "
                "suspended_until = EXCLUDED.suspended_until, credentials = EXCLUDED.credentials",
                (record["failures"], record["suspended_until"], record["credentials"]),
            )

    def _clear(self) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM openimis_login_guard WHERE id = 1")
