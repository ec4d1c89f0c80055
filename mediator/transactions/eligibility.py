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

import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir.resources.R4B.coverageeligibilityrequest import CoverageEligibilityRequest
from pydantic import ValidationError

from mediator.fhir.elements import (
    ITEM_CATEGORY_SYSTEM,
    arr,
    coded,
    codes,
    obj,
    split_reference,
    text,
)
from mediator.fhir.outcome import FhirError, Issue
from mediator.fhir.parsing import fhirpath, parse_resource
from mediator.jsontext import compact_json_bytes, parse_json
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.reads import read_resource
from mediator.transactions import insurees

ROOT = "CoverageEligibilityRequest"
SOURCE_SYSTEM = "urn:openimis-mediator:eligibility-source"
SOURCE_OPENIMIS = "openimis"
SOURCE_FALLBACK = "coverage-fallback"
CATEGORIES = frozenset({"item", "service"})
STATUSES = frozenset({"active", "cancelled", "draft", "entered-in-error"})
PURPOSES = frozenset({"auth-requirements", "benefits", "discovery", "validation"})
#: What openIMIS's request parser needs besides the patient and items; it reads none of them.
UPSTREAM_INSURER = {"reference": "openIMIS"}

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True)
class EligibilityQuery:
    """What a facility asked, reduced to what openIMIS (and the fallback) can answer."""

    request: dict[str, Any]
    #: ("number", "070707070") or ("uuid", "<uuid>"): how the facility named the insuree.
    patient: tuple[str, str]
    #: (category, code) pairs: at most one service and one item, as openIMIS checks.
    items: tuple[tuple[str, str], ...]
    #: The dates care is for (servicedDate/servicedPeriod), or None for today.
    dates: tuple[date, date] | None


@dataclass(frozen=True)
class EligibilityAnswer:
    resource: dict[str, Any]
    source: str
    insuree_number: str
    policies_in_force: int


# --- parsing and validation -----------------------------------------------------------------------


def parse_request(body: bytes) -> dict[str, Any]:
    """Decode the body; anything that is not a CoverageEligibilityRequest object is a 400."""
    return parse_resource(body, ROOT)


def validate_request(resource: dict[str, Any]) -> EligibilityQuery:
    """Structural (R4B) and openIMIS checks, every problem at once as a 422 with FHIRPaths."""
    issues = _structure(resource)
    at_fault = tuple(i.expression[0] for i in issues if i.expression)
    patient, patient_issues = _patient(resource.get("patient"))
    items, item_issues = _items(resource.get("item"))
    dates, date_issues = _dates(resource)
    for issue in _codes(resource) + patient_issues + item_issues + date_issues:
        path = issue.expression[0]
        if not any(path == p or path.startswith((p + ".", p + "[")) for p in at_fault):
            issues.append(issue)
    if issues or patient is None:
        raise FhirError(422, issues)
    return EligibilityQuery(resource, patient, items, dates)


def _fhirpath(loc: tuple[int | str, ...]) -> str:
    return fhirpath(ROOT, loc)


def _structure(resource: dict[str, Any]) -> list[Issue]:
    try:
        CoverageEligibilityRequest.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            loc = tuple(err.get("loc", ()))
            if loc in (("insurer",), ("created",)) and err.get("type") == "missing":
                continue  # openIMIS does not read them; the mediator fills them in upstream
            path = _fhirpath(loc)
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "Unknown element"
            elif err.get("type") == "json_invalid":
                msg = "Expected a JSON object"
            issues.append(Issue("structure", f"{path}: {msg}", [path]))
        return issues
    return []


def _codes(resource: dict[str, Any]) -> list[Issue]:
    """Required bindings the R4B models do not enforce (absent values are filled in upstream)."""
    issues = []
    status = resource.get("status")
    if isinstance(status, str) and status not in STATUSES:
        allowed = ", ".join(sorted(STATUSES))
        issues.append(Issue("value", f"Unknown status {status!r}: expected {allowed}", [f"{ROOT}.status"]))
    for i, purpose in enumerate(arr(resource.get("purpose"))):
        if isinstance(purpose, str) and purpose not in PURPOSES:
            allowed = ", ".join(sorted(PURPOSES))
            issues.append(
                Issue("value", f"Unknown purpose {purpose!r}: expected {allowed}", [f"{ROOT}.purpose[{i}]"])
            )
    return issues


def _patient(ref: Any) -> tuple[tuple[str, str] | None, list[Issue]]:
    path = f"{ROOT}.patient"
    expected = "Patient/<insuree number>, Patient/<UUID> or an identifier reference"
    if not isinstance(ref, dict):
        return None, [Issue("required", f"patient (the insuree) is required, as {expected}", [path])]
    reference = text(ref.get("reference"))
    ident = text(obj(ref.get("identifier")).get("value"))
    if reference:
        rtype, rid = split_reference(reference)
        if rtype != "Patient" or not rid:
            return None, [
                Issue("value", f"patient.reference {reference!r} is not {expected}", [f"{path}.reference"])
            ]
        value, where = rid, f"{path}.reference"
    elif ident:
        value, where = ident, f"{path}.identifier.value"
    else:
        return None, [Issue("required", f"patient needs a reference or an identifier: {expected}", [path])]
    if not insurees.is_valid_id(value):
        return None, [Issue("value", f"{value!r} is not an insuree number or UUID", [where])]
    return ("uuid" if insurees.is_uuid(value) else "number", value), []


def _items(items: Any) -> tuple[tuple[tuple[str, str], ...], list[Issue]]:
    found: list[tuple[str, str]] = []
    issues: list[Issue] = []
    for i, item in enumerate(arr(items)):
        path = f"{ROOT}.item[{i}]"
        item = obj(item)
        category = coded(item.get("category"), CATEGORIES)
        product = obj(item.get("productOrService"))
        code = text(product.get("text")) or next(iter(codes(product)), None)
        if category is None:
            issues.append(
                Issue(
                    "value",
                    "category must be 'item' or 'service' (coding code or text)",
                    [f"{path}.category"],
                )
            )
        if code is None:
            issues.append(
                Issue(
                    "required",
                    "productOrService needs the item or service code (text or coding code)",
                    [f"{path}.productOrService"],
                )
            )
        if category is None or code is None:
            continue
        if any(c == category for c, _ in found):
            issues.append(
                Issue("not-supported", f"openIMIS checks one {category} per request; send one each", [path])
            )
            continue
        found.append((category, code))
    return tuple(found), issues


def _date_range(value: Any) -> tuple[date, date] | None:
    """A FHIR date/dateTime as the days it spans ('2024' is the whole year); None if unreadable."""
    m = _DATE.match(value) if isinstance(value, str) else None
    if not m:
        return None
    year, month, day = m.group(1), m.group(2), m.group(3)
    try:
        if day:
            d = date(int(year), int(month), int(day))
            return d, d
        if month:
            start = date(int(year), int(month), 1)
            nxt = date(start.year + start.month // 12, start.month % 12 + 1, 1)
            return start, date.fromordinal(nxt.toordinal() - 1)
        return date(int(year), 1, 1), date(int(year), 12, 31)
    except ValueError:
        return None


def _dates(resource: dict[str, Any]) -> tuple[tuple[date, date] | None, list[Issue]]:
    if "servicedDate" in resource:
        return _date_range(resource["servicedDate"]), []
    period = obj(resource.get("servicedPeriod"))
    start, end = _date_range(period.get("start")), _date_range(period.get("end"))
    if start is None and end is None:
        return None, []
    first, last = (start or end)[0], (end or start)[1]  # type: ignore[index]
    if last < first:
        return None, [Issue("value", "servicedPeriod ends before it starts", [f"{ROOT}.servicedPeriod"])]
    return (first, last), []


# --- the transaction ------------------------------------------------------------------------------


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
            raise _unknown_insuree(number)
    if answer is not None:
        resource = normalise(answer, query, number, today)
        result = EligibilityAnswer(resource, SOURCE_OPENIMIS, number, len(resource.get("insurance") or []))
    else:
        try:
            result = _fallback(client, query, number, recorder, today)
        except OpenImisBroken as exc:
            raise _unavailable(f"the eligibility fallback failed too ({exc})") from None
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
        raise _unknown_insuree(f"Patient/{value}")
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


def request_reference(request: dict[str, Any]) -> dict[str, Any]:
    """A reference to the facility's own request (openIMIS answers `CoverageEligibilityRequest`)."""
    ref: dict[str, Any] = {"type": ROOT}
    if rid := text(request.get("id")):
        ref["reference"] = f"{ROOT}/{rid}"
    ident = next((i for i in arr(request.get("identifier")) if text(obj(i).get("value"))), None)
    if ident is not None:
        ref["identifier"] = ident
    if len(ref) == 1:
        ref["display"] = "the request (it carried no id or identifier)"
    return ref


def _policies(n: int) -> str:
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
    disposition = f"{_policies(len(insurance))} on {today.isoformat()}"
    if query.dates is not None and query.dates != (today, today):
        disposition += "; openIMIS checks eligibility for the current date only, not for the date asked"
    response["disposition"] = disposition
    return response


# --- fallback when openIMIS's eligibility service fails ---------------------------------------------


def _fallback(
    client: OpenImisClient, query: EligibilityQuery, number: str, recorder: OrchestrationRecorder, today: date
) -> EligibilityAnswer:
    patient = insurees.find(client, number, recorder, "openIMIS insuree lookup (eligibility fallback)")
    if patient is None:
        raise _unknown_insuree(number)
    uuid = text(patient.get("id"))
    if uuid is None:
        raise OpenImisBroken("openIMIS Patient has no id")
    response = client.get(
        "Coverage/",
        recorder,
        "openIMIS coverage search (eligibility fallback)",
        params={"beneficiary": f"Patient/{uuid}"},
    )
    if not response.ok:
        raise _unavailable(f"the coverage search answered {response.status}")
    bundle = response.json()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _unavailable("the coverage search did not answer a Bundle")
    first, last = query.dates or (today, today)
    in_force = [
        c
        for c in (obj(e).get("resource") for e in arr(bundle.get("entry")))
        if isinstance(c, dict) and c.get("resourceType") == "Coverage" and text(c.get("id"))
        if _beneficiary_is(c, uuid, number) and c.get("status") == "active" and _covers(c, first, last)
    ]
    if not in_force:
        # openIMIS may not have filtered by beneficiary (24.04 ignores unknown parameters and lists
        # every policy, page by page, with the family head as beneficiary): absence proves nothing.
        raise _unavailable("no policy of this insuree in force on the date asked could be confirmed")
    resource = fallback_response(query, patient, number, in_force, today)
    return EligibilityAnswer(resource, SOURCE_FALLBACK, number, len(in_force))


def _beneficiary_is(coverage: dict[str, Any], uuid: str, number: str) -> bool:
    ref = obj(coverage.get("beneficiary"))
    rtype, rid = split_reference(ref.get("reference"))
    if rtype not in (None, "Patient"):
        return False
    ids = [rid, text(obj(ref.get("identifier")).get("value"))]
    return any(i is not None and (i.lower() == uuid.lower() or i == number) for i in ids)


def _covers(coverage: dict[str, Any], first: date, last: date) -> bool:
    period = obj(coverage.get("period"))
    start, end = _date_range(period.get("start")), _date_range(period.get("end"))
    if start is None or start[0] > first:
        return False
    if period.get("end") is None:
        return True  # open-ended policy
    return end is not None and last <= end[1]


def fallback_response(
    query: EligibilityQuery,
    patient: dict[str, Any],
    number: str,
    coverages: list[dict[str, Any]],
    today: date,
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
        "patient": {"reference": f"Patient/{patient['id']}", "display": number},
        "created": today.isoformat(),
        "request": request_reference(query.request),
        "outcome": "complete",
        "disposition": (
            f"{_policies(len(coverages))} on {when}, derived from the insuree's coverage because "
            "openIMIS's eligibility service failed; benefit limits and service/item checks are not included"
        ),
        "insurer": obj(query.request.get("insurer")) or {"display": "openIMIS"},
        "insurance": [
            {
                "coverage": {"reference": f"Coverage/{c['id']}"},
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


def _unknown_insuree(what: str) -> FhirError:
    return FhirError.of(
        422,
        "not-found",
        f"{what} is not an insuree known to openIMIS",
        [f"{ROOT}.patient"],
    )


def _unavailable(why: str) -> FhirError:
    return FhirError.of(
        502,
        "transient",
        "Eligibility is unavailable: openIMIS's eligibility service failed and the insuree's coverage "
        f"could not be confirmed from openIMIS either ({why}). This does NOT mean the insuree is not "
        "covered; retry later or check coverage by other means.",
        outcome="eligibility-unavailable",
    )
