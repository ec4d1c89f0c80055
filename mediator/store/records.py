"""The claim record and the store interface."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from mediator.jsontext import compact_json


class ClaimState(StrEnum):
    #: Leased by a worker or the forwarder: an upstream call may be in flight.
    SENDING = "sending"
    #: openIMIS was unavailable: held here, the forwarder retries with backoff.
    QUEUED = "queued"
    #: In openIMIS, entered: adjudication pending; the forwarder polls for the result.
    AWAITING_ADJUDICATION = "awaiting-adjudication"
    #: openIMIS says it holds this claim code, but shows no claim of this facility under it:
    #: never submitted again, looked up now and then, settled by an operator (`queue retry`).
    UNCONFIRMED = "unconfirmed"
    #: Final answer recorded (positive or negative).
    DONE = "done"
    #: openIMIS refused the claim as invalid: final, but the key may be reused with corrections.
    INVALID = "invalid"


FINISHED_STATES = (ClaimState.DONE, ClaimState.INVALID)
#: Not finished: the forwarder's (held, in flight, waiting for adjudication).
OPEN_STATES = (
    ClaimState.SENDING,
    ClaimState.QUEUED,
    ClaimState.AWAITING_ADJUDICATION,
    ClaimState.UNCONFIRMED,
)


@dataclass
class ClaimRecord:
    id: str
    claim_code: str
    facility: str
    content_hash: str
    state: ClaimState
    #: What is sent upstream and what classification needs: {"claim", "patient_chfid", "item_refs"}.
    payload: dict[str, Any]
    created_at: float
    updated_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_until: float = 0.0
    lease_owner: str | None = None
    openimis_id: str | None = None
    outcome: str | None = None
    response_status: int | None = None
    response_body: str | None = None
    last_error: str | None = None
    #: The OpenHIM transaction that brought the claim first (for operators).
    openhim_tx_id: str | None = None
    #: How many times the claim's answer changed after the first one (notifications carry it).
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def public_id(self) -> str:
        """The ClaimResponse id facilities see, from the first answer on: one claim, one id.

        openIMIS's claim UUID, once known, is one of the ClaimResponse's identifiers (and a read
        by it still finds the claim), never its id: a client that kept the id of a 202 must find
        the same claim under it once delivered.
        """
        return self.id


class StoreUnavailable(Exception):
    """The claim store cannot be reached: nothing may be acknowledged that it has not stored."""


#: A record's columns, in the order both stores keep them.
COLUMNS = (
    "id",
    "claim_code",
    "facility",
    "content_hash",
    "state",
    "payload",
    "created_at",
    "updated_at",
    "attempts",
    "next_attempt_at",
    "lease_until",
    "lease_owner",
    "openimis_id",
    "outcome",
    "response_status",
    "response_body",
    "last_error",
    "openhim_tx_id",
    "version",
)


def column_value(name: str, value: Any) -> Any:
    """A field as a column holds it (the payload as JSON text, a state as its name)."""
    if name == "payload":
        return compact_json(value)
    if isinstance(value, ClaimState):
        return str(value)
    return value


def result_update(
    record_id: str, lease_owner: str | None, notify: bool, fields: dict[str, Any], mark: str
) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE that records a result (both stores): only by the lease's holder when one is
    named; `notify` counts a new version of the claim's answer. `mark`: the driver's placeholder."""
    assignments = ", ".join(f"{name} = {mark}" for name in fields) + (
        ", version = version + 1" if notify else ""
    )
    values = tuple(column_value(name, value) for name, value in fields.items())
    if lease_owner is None:
        return f"UPDATE claims SET {assignments} WHERE id = {mark}", (*values, record_id)
    return f"UPDATE claims SET {assignments} WHERE id = {mark} AND lease_owner = {mark}", (
        *values,
        record_id,
        lease_owner,
    )


def record_row(record: ClaimRecord) -> tuple[Any, ...]:
    return tuple(column_value(name, getattr(record, name)) for name in COLUMNS)


def row_record(row: tuple[Any, ...] | Any) -> ClaimRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["payload"] = json.loads(values["payload"])
    values["state"] = ClaimState(values["state"])
    return ClaimRecord(**values)


@dataclass(frozen=True)
class QueueStats:
    depth: int
    awaiting_adjudication: int
    #: Claims openIMIS holds by code that could not be confirmed as the facility's (operator's).
    unconfirmed: int
    oldest_queued_age_s: float | None
    last_error: str | None
    finished: int

    @classmethod
    def of(
        cls, counts: dict[Any, int], now: float, oldest: float | None, last_error: str | None, finished: int
    ) -> QueueStats:
        """From the open records counted by state (both stores read the same numbers)."""
        return cls(
            depth=counts.get(ClaimState.QUEUED, 0) + counts.get(ClaimState.SENDING, 0),
            awaiting_adjudication=counts.get(ClaimState.AWAITING_ADJUDICATION, 0),
            unconfirmed=counts.get(ClaimState.UNCONFIRMED, 0),
            oldest_queued_age_s=round(now - oldest, 1) if oldest is not None else None,
            last_error=last_error,
            finished=finished,
        )


class ClaimStore(Protocol):
    def intake(self, record: ClaimRecord) -> tuple[ClaimRecord, bool]:
        """Insert unless the key exists; returns (the record in force, whether it is new).

        An INVALID record with other content is replaced: the facility corrected its claim.
        """

    def get(self, ident: str) -> ClaimRecord | None:
        """By the mediator's id or openIMIS's id."""

    def by_key(self, claim_code: str, facility: str) -> ClaimRecord | None: ...

    def by_claim_code(self, claim_code: str) -> list[ClaimRecord]: ...

    def finish(self, record_id: str, lease_owner: str | None, **fields: Any) -> bool:
        """Update a record the caller holds the lease of; False if the lease was lost."""

    def lease_due(self, now: float, lease_s: float, owner: str, limit: int) -> list[ClaimRecord]:
        """Take the records the forwarder must work on now (queued, stale, awaiting poll)."""

    def await_report(self, claim_id: str, transaction_id: str) -> None:
        """An OpenHIM transaction was answered 202 for this claim: it gets the final result."""

    def due_reports(self, limit: int) -> list[tuple[ClaimRecord, str]]:
        """(finished claim, transaction id) pairs whose result still has to reach OpenHIM."""

    def reported(self, claim_id: str, transaction_id: str) -> None: ...

    def retry_now(self, ident: str) -> bool: ...

    def listing(self, states: tuple[ClaimState, ...], limit: int) -> list[ClaimRecord]: ...

    def stats(self, now: float) -> QueueStats: ...

    def checkpoint(self) -> None: ...

    def purge_finished(self, before: float) -> int: ...

    def close(self) -> None: ...
