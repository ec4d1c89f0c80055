"""Read openIMIS's ClaimResponse: positive, negative or queued, and say so in standard FHIR.

openIMIS's `outcome` alone misleads (a rejected claim comes back `complete`); the claim status
is carried by the adjudication categories of its `claim-status` CodeSystem, and the line
numbers are renumbered (items first, then services). This module reads the few fields it needs
from the parsed dict (no pydantic on the hot path) and builds the facility-facing ClaimResponse:
openIMIS's details kept, plus `outcome`, `disposition`, standard adjudications, `error[]` and the
request's item sequences. See docs/claim-response-mapping.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mediator.fhir.elements import (
    CLAIM_CODE_TYPES,
    CLAIM_STATUS_SYSTEM,
    IDENTIFIER_SYSTEM,
    KIND_OF_TYPE,
    REJECTION_REASON_SYSTEM,
    REJECTION_REASONS,
    arr,
    identifier_type_code,
    item_reference,
    number,
    obj,
    split_reference,
    text,
)
from mediator.openimis.identifiers import openimis_uuid
from mediator.transactions.claims.normalise import ItemRef


class ClaimOutcome(StrEnum):
    """The OpenHIE view of an adjudication (transactions 11, 13, 15)."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    QUEUED = "queued"


#: openIMIS claim statuses (claim.models.Claim.STATUS_*)
REJECTED, ENTERED, CHECKED, PROCESSED, VALUATED = 1, 2, 4, 8, 16
STATUS_NAMES = {
    REJECTED: "rejected",
    ENTERED: "entered",
    CHECKED: "checked",
    PROCESSED: "processed",
    VALUATED: "valuated",
}


ADJUDICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/adjudication"
#: meta.tag carrying the mediator's classification (a tag changes no FHIR semantics).
OUTCOME_TAG_SYSTEM = "urn:openimis-mediator:claim-outcome"
_TAG_DISPLAY = {
    ClaimOutcome.POSITIVE: "Positive: claim accepted by openIMIS",
    ClaimOutcome.NEGATIVE: "Negative: claim rejected by openIMIS",
    ClaimOutcome.QUEUED: "Queued: claim entered, adjudication pending",
}
_ADJ_DISPLAY = {"submitted": "Submitted Amount", "eligible": "Eligible Amount", "benefit": "Benefit Amount"}

#: What the caller answers: HTTP status (positive: 201 on submission, 200 on a read) and OpenHIM
#: transaction status.
HTTP_STATUS = {ClaimOutcome.POSITIVE: 201, ClaimOutcome.NEGATIVE: 200, ClaimOutcome.QUEUED: 202}
OPENHIM_STATUS = {
    ClaimOutcome.POSITIVE: "Successful",
    ClaimOutcome.NEGATIVE: "Completed",
    ClaimOutcome.QUEUED: "Processing",
}


@dataclass(frozen=True)
class LineReason:
    """How openIMIS adjudicated one line, numbered as the facility's request numbered it."""

    item_sequence: int
    status: int
    reason_code: int
    reason_display: str
    accepted: bool
    submitted: float | None = None
    approved: float | None = None


@dataclass
class ClassifiedResponse:
    outcome: ClaimOutcome
    claim_response: dict[str, Any]
    claim_code: str | None
    openimis_status: int
    total_claimed: float | None
    total_approved: float | None
    currency: str | None
    line_reasons: list[LineReason] = field(default_factory=list)


def classify(claim_response: dict[str, Any], request_items: Sequence[ItemRef] = ()) -> ClassifiedResponse:
    """Classify openIMIS's answer and build the ClaimResponse a facility can read (input untouched)."""
    items = [obj(i) for i in arr(claim_response.get("item"))]
    lines = [_read_line(i) for i in items]
    matched = _match(lines, list(request_items))

    status = _claim_status(claim_response, lines)
    outcome = (
        ClaimOutcome.NEGATIVE
        if status == REJECTED
        else ClaimOutcome.QUEUED
        if status == ENTERED
        else ClaimOutcome.POSITIVE
    )
    currency = _currency(claim_response, lines, request_items)

    reasons: list[LineReason] = []
    out_items: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item, line, req in zip(items, lines, matched, strict=True):
        seq = req.sequence if req is not None else line.sequence
        submitted = req.submitted if req is not None and req.submitted is not None else line.submitted
        accepted = not line.rejected and status != REJECTED and line.status >= CHECKED
        approved = line.approved if accepted else None
        reasons.append(
            LineReason(seq, line.status, line.reason, _reason_display(line), accepted, submitted, approved)
        )
        adjudication = list(arr(item.get("adjudication")))
        if submitted is not None:
            adjudication.append(_adjudication("submitted", submitted, currency))
        if accepted and approved is not None:
            adjudication.append(_adjudication("eligible", approved, currency))
            if line.status >= VALUATED:
                adjudication.append(_adjudication("benefit", approved, currency))
        out_item = {**item, "adjudication": adjudication}
        if seq is not None:
            out_item["itemSequence"] = seq
        out_items.append(out_item)
        if line.reason != 0:
            errors.append(
                {
                    **({"itemSequence": seq} if seq is not None else {}),
                    "code": {
                        "coding": [
                            {
                                "system": REJECTION_REASON_SYSTEM,
                                "code": str(line.reason),
                                "display": _reason_display(line),
                            }
                        ]
                    },
                }
            )
    # In the request's order: openIMIS lists items first, then services.
    reasons.sort(key=lambda r: _in_order(r.item_sequence))
    out_items.sort(key=lambda i: _in_order(i.get("itemSequence")))
    errors.sort(key=lambda e: _in_order(e.get("itemSequence")))
    if outcome is ClaimOutcome.NEGATIVE and not errors:
        errors.append({"code": {"text": "Claim rejected by openIMIS (no line reason given)"}})

    total_claimed = _sum(r.submitted for r in reasons) if reasons else _total(claim_response, ENTERED)
    total_approved = None
    if outcome is ClaimOutcome.POSITIVE:
        total_approved = _total(claim_response, status)
        if total_approved is None:
            total_approved = _sum(r.approved for r in reasons if r.accepted)

    response = dict(claim_response)
    response["item"] = out_items
    response["outcome"] = _fhir_outcome(outcome, status)
    response["disposition"] = _disposition(outcome, status, reasons)
    response["request"] = _request_reference(claim_response)
    if errors:
        response["error"] = [*arr(claim_response.get("error")), *errors]
    totals = list(arr(claim_response.get("total")))
    if total_claimed is not None:
        totals.append(_adjudication("submitted", total_claimed, currency))
    if total_approved is not None:
        totals.append(_adjudication("eligible", total_approved, currency))
        if status >= VALUATED:
            totals.append(_adjudication("benefit", total_approved, currency))
    if totals:
        response["total"] = totals
    meta = dict(obj(claim_response.get("meta")))
    tags = [t for t in arr(meta.get("tag")) if obj(t).get("system") != OUTCOME_TAG_SYSTEM]
    meta["tag"] = [
        *tags,
        {"system": OUTCOME_TAG_SYSTEM, "code": outcome.value, "display": _TAG_DISPLAY[outcome]},
    ]
    response["meta"] = meta

    return ClassifiedResponse(
        outcome=outcome,
        claim_response=response,
        claim_code=_claim_code(claim_response),
        openimis_status=status,
        total_claimed=total_claimed,
        total_approved=total_approved,
        currency=currency,
        line_reasons=reasons,
    )


# --- reading openIMIS's lines ---------------------------------------------------------------


@dataclass
class _Line:
    sequence: int | None
    kind: str | None
    keys: tuple[str, ...]
    status: int  # highest claim-status category on the line (0 if none)
    reason: int
    reason_text: str | None
    rejected: bool
    submitted: float | None
    approved: float | None
    currency: str | None


def _in_order(sequence: int | None) -> tuple[bool, int]:
    return sequence is None, sequence or 0


def _status_code(adjudication: dict[str, Any]) -> int | None:
    for coding in arr(obj(adjudication.get("category")).get("coding")):
        coding = obj(coding)
        if coding.get("system") == CLAIM_STATUS_SYSTEM or str(coding.get("system", "")).endswith(
            "/claim-status"
        ):
            code = text(coding.get("code"))
            if code and code.lstrip("-").isdigit():
                return int(code)
    return None


def _reason(adjudication: dict[str, Any]) -> tuple[int | None, str | None]:
    for coding in arr(obj(adjudication.get("reason")).get("coding")):
        code = text(obj(coding).get("code"))
        if code and code.lstrip("-").isdigit():
            return int(code), text(obj(coding).get("display"))
    return None, None


def _line_amount(adjudication: dict[str, Any]) -> float | None:
    """openIMIS puts the unit price in `amount` and the quantity in `value`."""
    price = number(obj(adjudication.get("amount")).get("value"))
    if price is None:
        return None
    qty = number(adjudication.get("value"))
    return price * (qty if qty is not None else 1.0)


def _read_line(item: dict[str, Any]) -> _Line:
    status, reason, reason_text = 0, 0, None
    by_status: dict[int, dict[str, Any]] = {}
    currency = None
    for adj in arr(item.get("adjudication")):
        adj = obj(adj)
        code = _status_code(adj)
        if code is None:
            continue
        by_status[code] = adj
        status = max(status, code)
        r, display = _reason(adj)
        if r and not reason:  # the first non-zero reason is the line's rejection reason
            reason, reason_text = r, display
        currency = currency or text(obj(adj.get("amount")).get("currency"))
    rejected = REJECTED in by_status or reason != 0
    first = by_status.get(ENTERED) or by_status.get(REJECTED)
    best = max((c for c in by_status if c >= CHECKED), default=None)

    ref = item_reference(item) or {}
    rtype = text(ref.get("type")) or split_reference(ref.get("reference"))[0]
    rid = split_reference(ref.get("reference"))[1]
    keys = [k for k in (rid, text(ref.get("display")), text(obj(ref.get("identifier")).get("value"))) if k]
    seq = item.get("itemSequence")
    return _Line(
        sequence=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        kind=KIND_OF_TYPE.get(rtype or ""),
        keys=tuple(k.lower() for k in keys),
        status=status,
        reason=reason,
        reason_text=reason_text,
        rejected=rejected,
        submitted=_line_amount(first) if first else None,
        approved=_line_amount(by_status[best]) if best is not None else None,
        currency=currency,
    )


def _match(lines: list[_Line], requests: list[ItemRef]) -> list[ItemRef | None]:
    """The request line of each response line: by reference (UUID or code), then by order per kind.

    openIMIS renumbers lines (items first, then services), so position means nothing; a reference
    used on several lines is matched in request order.
    """
    result: list[ItemRef | None] = [None] * len(lines)
    free = list(range(len(requests)))
    keys = [{k.lower() for k in r.keys} | ({r.ref.lower()} if r.ref else set()) for r in requests]
    for li, line in enumerate(lines):
        for ri in free:
            req = requests[ri]
            if (line.kind is None or line.kind == req.kind) and keys[ri].intersection(line.keys):
                result[li] = req
                free.remove(ri)
                break
    for li, line in enumerate(lines):  # unmatched: the next unmatched request line of the same kind
        if result[li] is None:
            ri = next((ri for ri in free if line.kind is None or requests[ri].kind == line.kind), None)
            if ri is not None:
                result[li] = requests[ri]
                free.remove(ri)
    return result


def _claim_status(claim_response: dict[str, Any], lines: list[_Line]) -> int:
    """openIMIS's claim status: the highest claim-status category reached by any line."""
    status = max((line.status for line in lines), default=0)
    if lines and all(line.rejected for line in lines):
        return REJECTED  # no accepted line: whatever else it says, the claim is rejected
    if status:
        return status
    totals = [_status_code(obj(t)) for t in arr(claim_response.get("total"))]
    status = max((t for t in totals if t), default=0)
    if status:
        return status
    outcome = claim_response.get("outcome")
    return {"queued": ENTERED, "partial": CHECKED, "error": REJECTED}.get(outcome, REJECTED)


def _reason_display(line: _Line) -> str:
    return REJECTION_REASONS.get(line.reason) or line.reason_text or f"REASON {line.reason}"


def _currency(claim_response: dict[str, Any], lines: list[_Line], requests: Sequence[ItemRef]) -> str | None:
    for t in arr(claim_response.get("total")):
        if c := text(obj(obj(t).get("amount")).get("currency")):
            return c
    for c in (*(line.currency for line in lines), *(r.currency for r in requests)):
        if c:
            return c
    return None


def _total(claim_response: dict[str, Any], status: int) -> float | None:
    for t in arr(claim_response.get("total")):
        if _status_code(obj(t)) == status:
            return number(obj(obj(t).get("amount")).get("value"))
    return None


def _sum(values: Any) -> float | None:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))


def _claim_code(claim_response: dict[str, Any]) -> str | None:
    for ident in arr(claim_response.get("identifier")):
        if identifier_type_code(ident) in CLAIM_CODE_TYPES:
            return text(obj(ident).get("value"))
    return None


# --- building the facility's answer ----------------------------------------------------------


def _request_reference(claim_response: dict[str, Any]) -> dict[str, Any]:
    """openIMIS points at its internal `ClaimV2/<code>`; facilities get `Claim/<openIMIS UUID>`."""
    ref: dict[str, Any] = {"type": "Claim"}
    if uuid := openimis_uuid(claim_response):
        ref["reference"] = f"Claim/{uuid}"
    if code := _claim_code(claim_response):
        ref["identifier"] = {
            "type": {"coding": [{"system": IDENTIFIER_SYSTEM, "code": "Code"}]},
            "value": code,
        }
    return ref


def _adjudication(code: str, amount: float, currency: str | None) -> dict[str, Any]:
    money: dict[str, Any] = {"value": round(amount, 2)}
    if currency:
        money["currency"] = currency
    return {
        "category": {
            "coding": [{"system": ADJUDICATION_SYSTEM, "code": code, "display": _ADJ_DISPLAY[code]}]
        },
        "amount": money,
    }


def _fhir_outcome(outcome: ClaimOutcome, status: int) -> str:
    if outcome is ClaimOutcome.NEGATIVE:
        return "error"
    if outcome is ClaimOutcome.QUEUED:
        return "queued"
    return "complete" if status >= VALUATED else "partial"


def _disposition(outcome: ClaimOutcome, status: int, reasons: list[LineReason]) -> str:
    rejected = [r for r in reasons if r.reason_code != 0]
    why = "; ".join(f"line {r.item_sequence}: {r.reason_display} ({r.reason_code})" for r in rejected)
    if outcome is ClaimOutcome.QUEUED:
        return "Claim queued for adjudication"
    if outcome is ClaimOutcome.NEGATIVE:
        return f"Claim rejected: {why}" if why else "Claim rejected by openIMIS"
    accepted = sum(1 for r in reasons if r.accepted)
    text_ = (
        f"Claim accepted ({STATUS_NAMES.get(status, status)}): {accepted} of {len(reasons)} lines accepted"
    )
    return f"{text_}; rejected {why}" if why else text_
