"""What a facility is told about eligibility: openIMIS's answer in standard terms, or an error
that never reads as "not covered".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from mediator.fhir.elements import arr, obj
from mediator.fhir.outcome import FhirError
from mediator.transactions.eligibility.request import ROOT, EligibilityQuery, request_reference

SOURCE_SYSTEM = "urn:openimis-mediator:eligibility-source"
SOURCE_OPENIMIS = "openimis"
SOURCE_FALLBACK = "coverage-fallback"


@dataclass(frozen=True)
class EligibilityAnswer:
    resource: dict[str, Any]
    source: str
    insuree_number: str
    policies_in_force: int


def policies_in_force(n: int) -> str:
    return "no policy in force" if n == 0 else f"{n} {'policy' if n == 1 else 'policies'} in force"


def normalise(response: dict[str, Any], query: EligibilityQuery, number: str, today: date) -> dict[str, Any]:
    """openIMIS's answer in standard terms: it lists only policies in force, for today."""
    insurance = [i for i in arr(response.get("insurance")) if isinstance(i, dict)]
    for entry in insurance:
        entry["inforce"] = True
    if insurance:
        response["insurance"] = insurance
    else:
        response.pop("insurance", None)
    response["request"] = request_reference(query.request)
    response["outcome"] = "complete"
    if not obj(response.get("patient")):
        response["patient"] = {"reference": f"Patient/{number}"}
    disposition = f"{policies_in_force(len(insurance))} on {today.isoformat()}"
    if query.dates is not None and query.dates != (today, today):
        disposition += "; openIMIS checks eligibility for the current date only, not for the date asked"
    response["disposition"] = disposition
    return response


def unknown_insuree(what: str) -> FhirError:
    return FhirError.of(
        422,
        "not-found",
        f"{what} is not an insuree known to openIMIS",
        [f"{ROOT}.patient"],
    )


def unavailable(why: str) -> FhirError:
    return FhirError.of(
        502,
        "transient",
        "Eligibility is unavailable: openIMIS's eligibility service failed and the insuree's coverage "
        f"could not be confirmed from openIMIS either ({why}). This does NOT mean the insuree is not "
        "covered; retry later or check coverage by other means.",
        outcome="eligibility-unavailable",
    )
