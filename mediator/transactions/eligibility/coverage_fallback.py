"""Eligibility from the insuree's policies, when openIMIS's eligibility service fails.

On PostgreSQL deployments of release 24.04 `CoverageEligibilityRequest` answers 500 for every
insuree with a policy in force. The answer is then derived from what openIMIS does serve, but
only when it can be vouched for: a Coverage whose beneficiary is this insuree, active, and in
force on the date asked. Anything less is "eligibility unavailable", never "not covered".

What a real openIMIS sends shapes this: `Coverage?beneficiary=` is not filtered (every policy
comes back, page by page, the family head as beneficiary, `Patient/<insuree number>`), and a
Coverage has no `id`: it is known by its `UUID` identifier.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from mediator.fhir.elements import arr, obj, split_reference, text
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.identifiers import openimis_uuid
from mediator.transactions import insurees
from mediator.transactions.eligibility.answers import (
    SOURCE_FALLBACK,
    SOURCE_SYSTEM,
    EligibilityAnswer,
    policies_in_force,
    unavailable,
    unknown_insuree,
)
from mediator.transactions.eligibility.request import EligibilityQuery, date_range, request_reference

#: Coverage read per page, and pages read at most: openIMIS may list every policy it holds.
PAGE_SIZE = 100
MAX_PAGES = 5


def fallback(
    client: OpenImisClient, query: EligibilityQuery, number: str, recorder: OrchestrationRecorder, today: date
) -> EligibilityAnswer:
    patient = insurees.find(client, number, recorder, "openIMIS insuree lookup (eligibility fallback)")
    if patient is None:
        raise unknown_insuree(number)
    uuid = openimis_uuid(patient)  # a Patient's `id` is its insuree number, not its UUID
    if uuid is None:
        raise OpenImisBroken("openIMIS Patient has no UUID identifier")
    first, last = query.dates or (today, today)
    in_force = [
        c
        for c in coverages(client, number, recorder)
        if _beneficiary_is(c, uuid, number)
        if c.get("status") == "active" and _covers(c, first, last)
    ]
    if not in_force:
        # openIMIS does not filter by beneficiary and names the family head as beneficiary:
        # absence proves nothing.
        raise unavailable("no policy of this insuree in force on the date asked could be confirmed")
    resource = fallback_response(query, number, in_force, today)
    return EligibilityAnswer(resource, SOURCE_FALLBACK, number, len(in_force))


def coverages(client: OpenImisClient, number: str, recorder: OrchestrationRecorder) -> list[dict[str, Any]]:
    """The Coverage openIMIS lists for this insuree, following its pages up to `MAX_PAGES`.

    Each policy once, by UUID (a policy added meanwhile shifts the pages).
    """
    found: dict[str, dict[str, Any]] = {}
    for page in range(1, MAX_PAGES + 1):
        params = {"beneficiary": f"Patient/{number}", "_count": str(PAGE_SIZE)}
        if page > 1:
            params["page-offset"] = str(page)
        response = client.get(
            "Coverage/",
            recorder,
            f"openIMIS coverage search (eligibility fallback), page {page}",
            params=params,
        )
        if not response.ok:
            raise unavailable(f"the coverage search answered {response.status}")
        bundle = response.json()
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise unavailable("the coverage search did not answer a Bundle")
        for entry in arr(bundle.get("entry")):
            resource = obj(obj(entry).get("resource"))
            uuid = openimis_uuid(resource) if resource.get("resourceType") == "Coverage" else None
            if uuid is not None:
                found.setdefault(uuid.lower(), resource)
        if not any(obj(link).get("relation") == "next" for link in arr(bundle.get("link"))):
            break
    return list(found.values())


def _beneficiary_is(coverage: dict[str, Any], uuid: str, number: str) -> bool:
    ref = obj(coverage.get("beneficiary"))
    rtype, rid = split_reference(ref.get("reference"))
    if rtype not in (None, "Patient"):
        return False
    ids = [rid, text(obj(ref.get("identifier")).get("value"))]
    return any(i is not None and (i.lower() == uuid.lower() or i == number) for i in ids)


def _covers(coverage: dict[str, Any], first: date, last: date) -> bool:
    period = obj(coverage.get("period"))
    start, end = date_range(period.get("start")), date_range(period.get("end"))
    if start is None or start[0] > first:
        return False
    if period.get("end") is None:
        return True  # open-ended policy
    return end is not None and last <= end[1]


def fallback_response(
    query: EligibilityQuery, number: str, coverages: list[dict[str, Any]], today: date
) -> dict[str, Any]:
    """A CoverageEligibilityResponse from the insuree's policies in force (no benefit limits)."""
    first, last = query.dates or (today, today)
    when = first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
    resource: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "meta": {
            "tag": [
                {
                    "system": SOURCE_SYSTEM,
                    "code": SOURCE_FALLBACK,
                    "display": "Derived from the insuree's coverage (openIMIS eligibility service failed)",
                }
            ]
        },
        "status": "active",
        "purpose": ["benefits"],
        "patient": {"reference": f"Patient/{number}", "display": number},
        "created": today.isoformat(),
        "request": request_reference(query.request),
        "outcome": "complete",
        "disposition": (
            f"{policies_in_force(len(coverages))} on {when}, derived from the insuree's coverage because "
            "openIMIS's eligibility service failed; benefit limits and service/item checks are not included"
        ),
        "insurer": obj(query.request.get("insurer")) or {"display": "openIMIS"},
        "insurance": [
            {
                "coverage": {"reference": f"Coverage/{openimis_uuid(c)}"},
                "inforce": True,
                "benefitPeriod": {k: v for k, v in obj(c.get("period")).items() if k in ("start", "end")},
            }
            for c in coverages
        ],
    }
    if "servicedDate" in query.request:
        resource["servicedDate"] = query.request["servicedDate"]
    elif "servicedPeriod" in query.request:
        resource["servicedPeriod"] = query.request["servicedPeriod"]
    else:
        resource["servicedDate"] = today.isoformat()
    return resource
