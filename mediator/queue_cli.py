"""Operator commands: `queue list|show|retry` (the durable claim queue) and `cache status|refresh`
(the services/items copy)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mediator.openhim.live_config import SharedState
from mediator.settings import Settings
from mediator.store import OPEN_STATES, ClaimRecord, ClaimState, SqliteClaimStore
from mediator.transactions.catalogue import CATALOGUE_FILE, RESOURCE_TYPES, request_refresh


def run_queue_command(settings: Settings, command: str, key: str | None) -> int:
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


def _find(store: SqliteClaimStore, key: str) -> list[ClaimRecord]:
    record = store.get(key)
    return [record] if record else store.by_claim_code(key)


def _line(record: ClaimRecord) -> str:
    due = _when(record.next_attempt_at) if record.state == ClaimState.QUEUED else "-"
    return (
        f"{record.claim_code:<20} {record.facility:<38} {record.state:<22} attempts={record.attempts:<3} "
        f"next={due} error={record.last_error or '-'}"
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
        "last_error": record.last_error,
        "openhim_transaction": record.openhim_tx_id,
    }


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s"


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
