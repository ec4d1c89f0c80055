"""Operator commands: `queue list|show|retry` (the durable claim queue), `notifications
list|show|retry` (the outbox), `store migrate` and `cache status|refresh` (the services/items copy)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mediator.openhim.live_config import SharedState
from mediator.redaction import masked_url
from mediator.settings import Settings
from mediator.store import (
    OPEN_STATES,
    ClaimRecord,
    ClaimState,
    ClaimStore,
    SqliteClaimStore,
    StoreUnavailable,
    open_claim_store,
)
from mediator.store.notifications import ERROR
from mediator.transactions.catalogue import CATALOGUE_FILE, RESOURCE_TYPES, request_refresh


def run_queue_command(settings: Settings, command: str, key: str | None) -> int:
    if settings.claim_store_url:  # the store replicas share
        path = masked_url(settings.claim_store_url.reveal())
        try:
            store: ClaimStore = open_claim_store(settings)
        except StoreUnavailable as exc:
            print(f"cannot open the claim store {path}: {exc}", file=sys.stderr)
            return 1
    else:
        path = settings.claim_store_file
        if not path.is_file():
            # The service creates its store as it starts: none here means other settings.
            print(
                f"no claim store at {path}: no instance has run with these settings; run this command "
                "with the service's MEDIATOR_STATE_DIR (or CLAIM_STORE_PATH)",
                file=sys.stderr,
            )
            return 1
        try:
            store = SqliteClaimStore(path)
        except (OSError, sqlite3.Error) as exc:
            print(f"cannot open the claim store {path}: {exc}", file=sys.stderr)
            return 1
    if command == "list":
        stats = store.stats(time.time())
        print(
            f"claim store {path}\n"
            f"held or in flight: {stats.depth}  awaiting adjudication: {stats.awaiting_adjudication}  "
            f"unconfirmed (for an operator): {stats.unconfirmed}  "
            f"oldest held: {_age(stats.oldest_queued_age_s)}  last error: {stats.last_error or '-'}"
        )
        for record in store.listing(OPEN_STATES, 1000):
            print(_line(record))
        return 0
    records = _find(store, key or "")
    if not records:
        print(f"no claim record for {key!r}", file=sys.stderr)
        return 1
    if command == "show":
        for record in records:
            print(json.dumps(_summary(record), indent=2))
        return 0
    if command == "retry":
        if not store.retry_now(key or ""):
            print(f"{key!r} is not waiting for anything (state: {records[0].state})", file=sys.stderr)
            return 1
        print(f"{key}: due now; the forwarder takes it within {settings.forward_poll_interval:g} s")
        return 0
    return 2


def _find(store: ClaimStore, key: str) -> list[ClaimRecord]:
    record = store.get(key)
    return [record] if record else store.by_claim_code(key)


def _line(record: ClaimRecord) -> str:
    due = (
        _when(record.next_attempt_at) if record.state in (ClaimState.QUEUED, ClaimState.UNCONFIRMED) else "-"
    )
    return (
        f"{record.claim_code:<20} {record.facility:<38} {record.state:<22} attempts={record.attempts:<3} "
        f"next={due} held-by={record.lease_owner if record.lease_until > time.time() else '-'} "
        f"error={record.last_error or '-'}"
    )


def _summary(record: ClaimRecord) -> dict[str, object]:
    """Identifiers and state only: the claim's clinical content stays in the store."""
    return {
        "id": record.id,
        "claim_code": record.claim_code,
        "facility": record.facility,
        "state": str(record.state),
        "outcome": record.outcome,
        "attempts": record.attempts,
        "received": _when(record.created_at),
        "updated": _when(record.updated_at),
        "next_attempt": _when(record.next_attempt_at) if record.state in OPEN_STATES else None,
        "openimis_id": record.openimis_id,
        "lease": (
            {"holder": record.lease_owner, "until": _when(record.lease_until)}
            if record.lease_until > time.time()
            else None
        ),
        "last_error": record.last_error,
        "openhim_transaction": record.openhim_tx_id,
    }


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s"


def run_notification_command(settings: Settings, command: str, key: str | None) -> int:
    """`notifications list|show|retry`: what was told to facilities, what waits, what failed."""
    tables = open_claim_store(settings).notifications
    if command == "list":
        stats = tables.notification_stats()
        print(
            f"pending: {stats.pending}  delivered: {stats.delivered}  subscriptions active: "
            f"{stats.subscriptions_active}  in error: {stats.subscriptions_in_error}"
        )
        for sub in tables.subscriptions(ERROR):
            print(f"subscription {sub.id} in error: {sub.error}")
        for note in tables.notifications(None, 100):
            print(
                f"{note.id}  {note.state:<9} subscription={note.subscription_id} claim={note.claim_id} "
                f"v{note.claim_version} attempts={note.attempts} error={note.last_error or '-'}"
            )
        return 0
    note = tables.notification(key or "")
    if note is None:
        print(f"no notification {key!r}", file=sys.stderr)
        return 1
    if command == "show":
        shown = {
            **vars(note),
            "created_at": _when(note.created_at),
            "next_attempt_at": _when(note.next_attempt_at),
        }
        print(json.dumps(shown, indent=2, default=str))
        return 0
    if not tables.retry_notification(note.id):
        print(f"{key!r} is not pending (state: {note.state})", file=sys.stderr)
        return 1
    print(f"{key}: due now; the agent sends it within {settings.forward_poll_interval:g} s")
    return 0


def run_store_command(settings: Settings, source: str | None) -> int:
    """`store migrate`: this instance's SQLite records into the shared PostgreSQL store."""
    if not settings.claim_store_url:
        print("set CLAIM_STORE_URL to the PostgreSQL store to migrate to", file=sys.stderr)
        return 2
    from mediator.store.migration import migrate_sqlite_to_postgres
    from mediator.store.postgres import PostgresClaimStore

    path = Path(source) if source else settings.claim_store_file
    try:
        report = migrate_sqlite_to_postgres(path, PostgresClaimStore(settings.claim_store_url.reveal()))
    except (FileNotFoundError, StoreUnavailable) as exc:
        print(f"store migrate: {exc}", file=sys.stderr)
        return 1
    print(
        f"{path} -> PostgreSQL: {report.copied} records copied, {report.already_there} already there, "
        f"{report.reports} OpenHIM transactions waiting for their result"
    )
    return 0


def run_cache_command(settings: Settings, command: str) -> int:
    if not Path(settings.mediator_state_dir).is_dir():
        print(
            f"no state directory at {settings.mediator_state_dir}: no instance has run with these "
            "settings; run this command with the service's MEDIATOR_STATE_DIR",
            file=sys.stderr,
        )
        return 1
    state = SharedState(settings.mediator_state_dir)
    if command == "refresh":
        request_refresh(state)
        print("full reload requested; the agent does it within a second (the current copy serves until then)")
        return 0
    document = state.read(CATALOGUE_FILE)
    if not settings.master_data_cache_enabled:
        print("the services/items cache is off (MASTER_DATA_CACHE_ENABLED=false)")
    if not document:
        print(f"no copy yet in {settings.mediator_state_dir}: queries go to openIMIS")
        return 0
    counts = ", ".join(f"{t}: {len(document['resources'].get(t, []))}" for t in RESOURCE_TYPES)
    print(
        f"refreshed {_when(document['refreshed_at'])} (full {_when(document['full_refreshed_at'])}); {counts}"
    )
    return 0
