"""What a facility is told about a claim, from its record: the answer of every submit, replay
and poll (the status, the ClaimResponse, its Location, the OpenHIM transaction's properties)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediator.openhim.envelope import TransactionStatus
from mediator.openhim.orchestrations import iso_now
from mediator.settings import Settings
from mediator.store import ClaimRecord, ClaimState
from mediator.transactions.claims.classification import (
    HTTP_STATUS,
    OPENHIM_STATUS,
    OUTCOME_TAG_SYSTEM,
    ClaimOutcome,
    ClassifiedResponse,
)


@dataclass
class ClaimAnswer:
    """What the facility is told, and what the OpenHIM transaction records."""

    http_status: int
    body: dict[str, Any]
    transaction_status: TransactionStatus
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    #: `body` as recorded in the store, when it was: answered as is, not encoded again.
    encoded: str | None = None


class ClaimAnswers:
    """The answers a record stands for (mixed into ClaimSubmission, which sets `_settings`)."""

    _settings: Callable[[], Settings]

    def recorded_answer(self, record: ClaimRecord) -> ClaimAnswer:
        """The answer a record stands for now (also what a replay gets)."""
        if record.state == ClaimState.SENDING or not record.response_body:
            body = held_claim_response(record, "the claim is being delivered to openIMIS")
            return self._held_answer(record, body)
        body = json.loads(record.response_body)
        if record.state == ClaimState.INVALID:
            return ClaimAnswer(
                422,
                body,
                TransactionStatus.COMPLETED,
                "invalid",
                properties=_properties(record, None),
                encoded=record.response_body,
            )
        if record.state in (ClaimState.QUEUED, ClaimState.UNCONFIRMED):
            return self._held_answer(record, body, record.response_body)
        outcome = ClaimOutcome(record.outcome)
        return ClaimAnswer(
            HTTP_STATUS[outcome],
            body,
            TransactionStatus(OPENHIM_STATUS[outcome]),
            str(outcome),
            headers=self._location(record),
            properties=_properties(record, body),
            encoded=record.response_body,
        )

    def _held_answer(
        self, record: ClaimRecord, body: dict[str, Any], encoded: str | None = None
    ) -> ClaimAnswer:
        return ClaimAnswer(
            202,
            body,
            TransactionStatus.PROCESSING,
            "held",
            headers=self._location(record),
            properties=_properties(record, body),
            encoded=encoded,
        )

    def _answer(
        self, record: ClaimRecord, body: dict[str, Any], classified: ClassifiedResponse
    ) -> ClaimAnswer:
        properties = _properties(record, body)
        properties.update(
            {
                "openimis_status": str(classified.openimis_status),
                "total_claimed": classified.total_claimed,
                "total_approved": classified.total_approved,
                "currency": classified.currency,
            }
        )
        return ClaimAnswer(
            HTTP_STATUS[classified.outcome],
            body,
            TransactionStatus(OPENHIM_STATUS[classified.outcome]),
            str(classified.outcome),
            headers=self._location(record),
            properties={k: v for k, v in properties.items() if v is not None},
            encoded=record.response_body,
        )

    def _location(self, record: ClaimRecord) -> dict[str, str]:
        return {"Location": f"{self._settings().public_base_url}/ClaimResponse/{record.public_id}"}


def as_ours(body: dict[str, Any], record: ClaimRecord) -> dict[str, Any]:
    """One claim, one id: the ClaimResponse's id and its `request` (`GET /fhir/Claim/<id>`) are
    the mediator's, from the first answer on; openIMIS's UUID stays among the identifiers."""
    body["id"] = record.public_id
    body["request"] = {**body.get("request", {"type": "Claim"}), "reference": f"Claim/{record.public_id}"}
    return body


def held_claim_response(record: ClaimRecord, reason: str) -> dict[str, Any]:
    """A ClaimResponse for a claim the mediator holds: queued, with an id the facility can poll."""
    claim = record.payload["claim"]
    return {
        "resourceType": "ClaimResponse",
        "id": record.public_id,
        "meta": {
            "tag": [
                {"system": OUTCOME_TAG_SYSTEM, "code": "queued", "display": "Queued: held by the mediator"}
            ]
        },
        "identifier": [i for i in claim.get("identifier", []) if isinstance(i, dict)][:1],
        "status": "active",
        "type": claim.get("type"),
        "use": "claim",
        "patient": claim.get("patient"),
        "created": iso_now()[:10],
        "insurer": {"reference": "openIMIS"},
        "requestor": claim.get("enterer") or claim.get("provider"),
        "request": {"reference": f"Claim/{record.public_id}", "type": "Claim"},
        "outcome": "queued",
        "disposition": (
            "Claim received and held by the mediator; it will be forwarded to openIMIS automatically "
            f"({reason}). Poll this ClaimResponse for the result."
        ),
    }


def _properties(record: ClaimRecord, body: dict[str, Any] | None) -> dict[str, Any]:
    claim = record.payload.get("claim", {})
    patient = record.payload.get("patient_chfid") or (claim.get("patient") or {}).get("reference", "")
    return {
        "claim_code": record.claim_code,
        "facility": record.facility,
        "insuree": patient.removeprefix("Patient/"),
        "outcome": record.outcome or "queued",
        "claim_response_id": record.public_id,
        **({"disposition": body.get("disposition")} if body and body.get("disposition") else {}),
    }
