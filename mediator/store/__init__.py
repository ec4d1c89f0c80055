"""Durable claim store: nothing lost, nothing doubled.

A validated claim is recorded here before it is sent upstream, keyed on (claim code, facility),
so that a retry or a re-run finds the recorded answer instead of sending it again, and a crash
at any point leaves a record the forwarder can finish. `ClaimStore` is the interface;
`SqliteClaimStore` the embedded implementation (a shared PostgreSQL one can follow it).
"""

from mediator.store.records import OPEN_STATES, ClaimRecord, ClaimState, ClaimStore, QueueStats
from mediator.store.sqlite import SqliteClaimStore

__all__ = ["OPEN_STATES", "ClaimRecord", "ClaimState", "ClaimStore", "QueueStats", "SqliteClaimStore"]
