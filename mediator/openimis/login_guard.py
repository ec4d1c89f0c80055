"""Failed openIMIS logins, remembered by every process of an instance.

openIMIS locks an account after five failed logins. Workers and the agent each hold their own
token, so the memory of a failure must be shared, or each process would spend one of the five:
it lives in a small file of the state directory, logins are serialised with a file lock, and
consecutive failures back off exponentially (the operator must fix the credentials). Replicas
on one PostgreSQL claim store share it there instead (`store.postgres_login_guard`): a failure
of one replica suspends the logins of all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_DELAY_S = 3600.0


class LoginGuard:
    def __init__(self, path: Path, base_delay: float, credentials: str = "") -> None:
        self.path = path
        self.base_delay = base_delay
        # Failures are remembered for these credentials only: once the operator fixes the
        # password (console or restart), the next request may log in at once.
        self.fingerprint = hashlib.sha256(credentials.encode()).hexdigest()[:16]

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Hold the instance-wide login lock (another process's login finishes first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def suspended_for(self, now: float) -> float:
        return max(self._read().get("suspended_until", 0.0) - now, 0.0)

    def failed(self, now: float) -> float:
        """Record a failure; returns how long logins are now suspended."""
        failures = int(self._read().get("failures", 0)) + 1
        delay = min(self.base_delay * 2 ** (failures - 1), MAX_DELAY_S)
        self._write({"failures": failures, "suspended_until": now + delay, "credentials": self.fingerprint})
        return delay

    def succeeded(self) -> None:
        self._clear()

    def _read(self) -> dict[str, Any]:
        """The failures recorded for these credentials (none for other credentials)."""
        record = self._load()
        return record if isinstance(record, dict) and record.get("credentials") == self.fingerprint else {}

    # -- where the record lives: a file of the state directory ------------------------------

    def _load(self) -> Any:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _write(self, record: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)

    def _clear(self) -> None:
        self.path.unlink(missing_ok=True)
