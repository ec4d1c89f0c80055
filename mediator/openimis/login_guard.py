"""Failed openIMIS logins, remembered by every process of an instance.

openIMIS locks an account after five failed logins. Workers and the agent each hold their own
token, so the memory of a failure must be shared, or each process would spend one of the five:
it lives in a small file of the state directory, logins are serialised with a file lock, and
consecutive failures back off exponentially (the operator must fix the credentials).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        tmp = self.path.with_suffix(".tmp")
        record = {"failures": failures, "suspended_until": now + delay, "credentials": self.fingerprint}
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)
        return delay

    def succeeded(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, float]:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) and record.get("credentials") == self.fingerprint else {}
