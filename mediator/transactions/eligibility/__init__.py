"""Coverage eligibility (CoverageEligibilityRequest -> CoverageEligibilityResponse) for facilities.

A clinic asks "is this insuree covered?" before care. openIMIS's own endpoint is fragile: on
PostgreSQL deployments of release 24.04 it answers 500 for every insuree *with* a policy in force
(it calls an SQL Server-only stored procedure), and a 500 must never read as "not covered".

- Working endpoint: its answer is passed on, normalised (request reference, `inforce`, outcome,
  disposition).
- Failing endpoint: the answer is derived from what openIMIS does serve (the insuree, then the
  insuree's Coverage), but only when the result can be vouched for: a Coverage whose beneficiary
  is this insuree, active, and in force on the date asked. Otherwise 502 "eligibility
  unavailable" - never a negative answer. Benefit limits are not available on that path.

Leniency: openIMIS reads only the patient and the items, so `insurer` may be absent (there is
only one insurer behind the mediator) and the body sent upstream is rebuilt from what openIMIS
reads, with the fields its parser requires filled in (status, purpose, created, insurer).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import date
from typing import Any

from mediator.fhir.elements import ITEM_CATEGORY_SYSTEM, arr, obj
from mediator.jsontext import compact_json_bytes, parse_json
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.reads import read_resource
from mediator.transactions import insurees
from mediator.transactions.eligibility.answers import (
    SOURCE_FALLBACK,
    SOURCE_OPENIMIS,
    SOURCE_SYSTEM,
    EligibilityAnswer,
    normalise,
    unavailable,
    unknown_insuree,
)
from mediator.transactions.eligibility.coverage_fallback import fallback, fallback_response
from mediator.transactions.eligibility.request import (
    ROOT,
    EligibilityQuery,
    parse_request,
    request_reference,
    validate_request,
)

__all__ = [
    "ROOT",
    "SOURCE_FALLBACK",
    "SOURCE_OPENIMIS",
    "SOURCE_SYSTEM",
    "EligibilityAnswer",
    "EligibilityQuery",
    "check",
    "fallback_response",
    "normalise",
    "parse_request",
    "request_reference",
    "upstream_request",
    "validate_request",
]

#: What openIMIS's request parser needs besides the patient and items; it reads none of them.
UPSTREAM_INSURER = {"reference": "openIMIS"}


def check(
    client: OpenImisClient,
    body: bytes,
    recorder: OrchestrationRecorder,
    properties: MutableMapping[str, Any],
    today: date | None = None,
) -> EligibilityAnswer:
    """Answer a facility's eligibility request; `properties` (identifiers only) fill as it goes."""
    today = today or date.today()
    properties["transaction"] = "coverage eligibility"
    query = validate_request(parse_request(body))
    number = _insuree_number(client, query, recorder)
    properties["insuree_number"] = number
    upstream = compact_json_bytes(upstream_request(query, number, today))
    response = client.post(f"{ROOT}/", upstream, recorder, "openIMIS eligibility request")
    answer = _usable_answer(response.status, response.content)
    if answer is not None and not arr(answer.get("insurance")) and not obj(answer.get("patient")):
        # openIMIS leaves `patient` out when it finds no current insuree with that number: an
        # unknown insuree must not read as "no policy in force".
        found = insurees.find(
            client, number, recorder, "openIMIS insuree lookup (eligibility without patient)"
        )
        if found is None:
            raise unknown_insuree(number)
    if answer is not None:
        resource = normalise(answer, query, number, today)
        result = EligibilityAnswer(resource, SOURCE_OPENIMIS, number, len(resource.get("insurance") or []))
    else:
        try:
            result = fallback(client, query, number, recorder, today)
        except OpenImisBroken as exc:
            raise unavailable(f"the eligibility fallback failed too ({exc})") from None
    properties["policies_in_force"] = result.policies_in_force
    properties["eligibility_source"] = result.source
    return result


def _insuree_number(client: OpenImisClient, query: EligibilityQuery, recorder: OrchestrationRecorder) -> str:
    """openIMIS's eligibility reads an insuree number: a UUID is resolved through a Patient read."""
    kind, value = query.patient
    if kind == "number":
        return value
    patient = read_resource(
        client, "Patient", value, recorder, "openIMIS insuree read (UUID to insuree number)"
    )
    number = insurees.insuree_number(patient) if patient else None
    if patient is None:
        raise unknown_insuree(f"Patient/{value}")
    if number is None:
        raise OpenImisBroken("openIMIS Patient has no insuree number (Code identifier)")
    return number


def upstream_request(query: EligibilityQuery, number: str, today: date) -> dict[str, Any]:
    """The request as openIMIS reads it: `Patient/<number>`, category coding, code in text."""
    return {
        "resourceType": ROOT,
        "status": "active",
        "purpose": ["benefits"],
        "patient": {"reference": f"Patient/{number}"},
        "created": today.isoformat(),
        "insurer": dict(UPSTREAM_INSURER),
        "item": [
            {
                "category": {
                    "coding": [
                        {"system": ITEM_CATEGORY_SYSTEM, "code": category, "display": category.capitalize()}
                    ]
                },
                "productOrService": {"text": code},
            }
            for category, code in query.items
        ],
    }


def _usable_answer(status: int, content: bytes) -> dict[str, Any] | None:
    """openIMIS's CoverageEligibilityResponse, or None if the endpoint failed in any way."""
    if not 200 <= status < 300:
        return None
    try:
        body = parse_json(content)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "CoverageEligibilityResponse":
        return None
    if body.get("outcome") not in (None, "complete") or body.get("error"):
        return None
    return body
