"""OpenHIE transactions 11/13/15, read side: a facility polls a ClaimResponse until it is final.

A claim the mediator recorded is answered from the store (and, while openIMIS has it entered,
refreshed from openIMIS so the facility sees adjudication as soon as it happens); any other
claim is read from openIMIS and classified the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mediator.fhir.elements import is_fhir_id
from mediator.fhir.outcome import FhirError
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.quirks import searchset
from mediator.openimis.reads import read_resource
from mediator.store import ClaimRecord, ClaimState
from mediator.transactions.claims.answers import held_claim_response
from mediator.transactions.claims.classification import classify
from mediator.transactions.claims.submission import ClaimSubmission


def read(
    submission: ClaimSubmission, client: OpenImisClient, ident: str, recorder: OrchestrationRecorder
) -> dict[str, Any]:
    found = find(submission, client, ident, recorder)
    if found is None:
        raise FhirError.of(404, "not-found", f"ClaimResponse/{ident} is not known")
    return found


def search(
    submission: ClaimSubmission,
    client: OpenImisClient,
    params: Sequence[tuple[str, str]],
    recorder: OrchestrationRecorder,
    public_base: str,
) -> dict[str, Any]:
    """`identifier=<claim code>` or `request=Claim/<id>`: 0..n entries (a code is unique per facility)."""
    args = dict(params)
    if "identifier" in args:
        code = args["identifier"].rsplit("|", 1)[-1]
        records = submission.store.by_claim_code(code) if code else []
        found = [current_response(submission, client, r, recorder) for r in records]
        if not found:
            upstream = find(submission, client, code, recorder)
            found = [upstream] if upstream else []
        query = f"identifier={args['identifier']}"
    elif "request" in args:
        claim_id = args["request"].removeprefix("Claim/")
        upstream = find(submission, client, claim_id, recorder)
        found = [upstream] if upstream else []
        query = f"request={args['request']}"
    else:
        raise FhirError.of(
            400,
            "required",
            "search ClaimResponse by identifier (the claim code) or by request (Claim/<id>)",
            ["identifier"],
        )
    return searchset(found, public_base, f"{public_base}/ClaimResponse?{query}")


def find(
    submission: ClaimSubmission, client: OpenImisClient, ident: str, recorder: OrchestrationRecorder
) -> dict[str, Any] | None:
    if not ident or not is_fhir_id(ident):
        return None
    record = submission.store.get(ident)
    if record is not None:
        return current_response(submission, client, record, recorder)
    upstream = read_resource(client, "ClaimResponse", ident, recorder, "openIMIS claim response read")
    return classify(upstream).claim_response if upstream else None


def current_response(
    submission: ClaimSubmission, client: OpenImisClient, record: ClaimRecord, recorder: OrchestrationRecorder
) -> dict[str, Any]:
    if record.state == ClaimState.AWAITING_ADJUDICATION and record.openimis_id:
        refreshed = submission.refresh_adjudication(client, record, recorder)
        if refreshed is not None:
            return refreshed
    if record.state == ClaimState.INVALID and record.response_body:
        return invalid_claim_response(record, json.loads(record.response_body))
    return submission.recorded_answer(record).body


def invalid_claim_response(record: ClaimRecord, outcome: dict[str, Any]) -> dict[str, Any]:
    """A claim openIMIS refused as invalid, seen by a facility that polls it (it was held first)."""
    response = held_claim_response(record, "")
    reasons = "; ".join(i.get("diagnostics", "") for i in outcome.get("issue", []))
    response.update(
        {
            "outcome": "error",
            "disposition": f"Claim refused by openIMIS as invalid: {reasons}",
            "error": [{"code": {"text": i.get("diagnostics", "")}} for i in outcome.get("issue", [])],
        }
    )
    response["meta"]["tag"][0].update({"code": "negative", "display": "Negative: refused as invalid"})
    return response
