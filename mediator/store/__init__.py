"""Durable claim store: nothing lost, nothing doubled.

A validated claim is recorded here before it is sent upstream, keyed on (claim code, facility),
so that a retry or a re-run finds the recorded answer instead of sending it again, and a crash
at any point leaves a record the forwarder can finish. `ClaimStore` is the interface;
`SqliteClaimStore` the embedded one (one instance), `store.postgres.PostgresClaimStore` the one
replicas share (imported only where `CLAIM_STORE_URL` asks for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediator.store.records import (
    OPEN_STATES,
    ClaimRecord,
    ClaimState,
    ClaimStore,
    QueueStats,
    StoreUnavailable,
)
from mediator.store.sqlite import SqliteClaimStore

if TYPE_CHECKING:
    from mediator.settings import Settings

__all__ = [
    "OPEN_STATES",
    "ClaimRecord",
    "ClaimState",
    "ClaimStore",
    "QueueStats",
    "SqliteClaimStore",
    "StoreUnavailable",
    "open_claim_store",
]


def open_claim_store(settings: Settings) -> ClaimStore:
    """The store the settings name: PostgreSQL when `CLAIM_STORE_URL` is set, else SQLite."""
    if settings.claim_store_url:
        from mediator.store.postgres import PostgresClaimStore  # psycopg only where it is used

        return PostgresClaimStore(settings.claim_store_url.reveal(), settings.claim_store_pool_size)
    return SqliteClaimStore(settings.claim_store_file)
