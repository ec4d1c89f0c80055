"""What the PostgreSQL store's speed-up for the benchmark may not cost: a claim answered 202 and
the OpenHIM transaction waiting for its result are committed synchronously; only the intake and
a result openIMIS gave are committed with `synchronous_commit=off` (mediator/store/postgres.py
says why). The setting is read from the server, in the session that ran each write.

(It belongs with the store's own tests in tests/store; it is here because this change was made
from the benchmark's work, whose files are these.)"""

from __future__ import annotations

from typing import Any

import pytest

from mediator.store import ClaimState
from mediator.store.postgres import PostgresClaimStore, _StoreConnection
from tests.store.test_claim_store_contract import record

pytestmark = pytest.mark.integration


@pytest.fixture
def commits(monkeypatch) -> list[tuple[str, str]]:
    """(statement's first words, the session's synchronous_commit) of every write, in order."""
    seen: list[tuple[str, str]] = []
    execute = _StoreConnection.execute

    def spying(self: _StoreConnection, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cursor = execute(self, query, params, **kwargs)
        words = str(query).split()
        if words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            (mode,) = execute(self, "SELECT current_setting('synchronous_commit')").fetchone()
            seen.append((" ".join(words[:3]), mode))
        return cursor

    monkeypatch.setattr(_StoreConnection, "execute", spying)
    return seen


def test_only_what_openimis_already_holds_is_committed_asynchronously(postgres_url, commits):
    store = PostgresClaimStore(postgres_url)
    try:
        accepted, held, unconfirmed = record("C1"), record("C2"), record("C3")
        for claim in (accepted, held, unconfirmed):
            assert store.intake(claim)[1]
        assert commits == [("INSERT INTO claims", "off")] * 3, "one statement per intake, nothing promised"
        commits.clear()

        store.finish(accepted.id, None, state=ClaimState.DONE, response_status=201, outcome="positive")
        store.finish(held.id, None, state=ClaimState.QUEUED, response_status=202, outcome="queued")
        store.await_report(held.id, "tx-1")
        store.finish(unconfirmed.id, None, state=ClaimState.UNCONFIRMED, response_status=202)
        store.lease_due(10**10, 60, "replica/forwarder", 10)
        store.reported(held.id, "tx-1")
        assert commits == [
            ("UPDATE claims SET", "off"),  # openIMIS gave the answer: in its custody
            ("UPDATE claims SET", "on"),  # answered 202: only the mediator holds it
            ("INSERT INTO pending_reports", "on"),  # the OpenHIM transaction waits for it
            ("UPDATE claims SET", "on"),  # answered 202 as well
            ("UPDATE claims SET", "on"),  # leases, and every write not named, as before
            ("DELETE FROM pending_reports", "on"),
        ]
        assert store.get(held.id).state == ClaimState.QUEUED
    finally:
        store.close()
