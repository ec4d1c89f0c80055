"""What a facility asks for eligibility, checked and reduced to what openIMIS can answer.

openIMIS reads only the patient and one item and one service; the rest of a FHIR
CoverageEligibilityRequest is validated for the facility's sake (a clear 4xx naming the field),
not for openIMIS's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from fhir.resources.R4B.coverageeligibilityrequest import CoverageEligibilityRequest
from pydantic import ValidationError

from mediator.fhir.elements import (
    arr,
    coded,
    codes,
    obj,
    split_reference,
    text,
)
from mediator.fhir.outcome import FhirError, Issue
from mediator.fhir.parsing import fhirpath, parse_resource
from mediator.transactions import insurees

ROOT = "CoverageEligibilityRequest"
CATEGORIES = frozenset({"item", "service"})
STATUSES = frozenset({"active", "cancelled", "draft", "entered-in-error"})
PURPOSES = frozenset({"auth-requirements", "benefits", "discovery", "validation"})

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


def date_range(value: Any) -> tuple[date, date] | None:
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
        return date_range(resource["servicedDate"]), []
    period = obj(resource.get("servicedPeriod"))
    start, end = date_range(period.get("start")), date_range(period.get("end"))
    if start is None and end is None:
        return None, []
    first, last = (start or end)[0], (end or start)[1]  # type: ignore[index]
    if last < first:
        return None, [Issue("value", "servicedPeriod ends before it starts", [f"{ROOT}.servicedPeriod"])]
    return (first, last), []


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
