"""Validate an incoming Claim before it reaches openIMIS.

openIMIS answers almost every bad claim with HTTP 500 and one message at a time; a facility
gets a 422 from the mediator instead, listing every problem with its FHIRPath. Structural FHIR
validation (pydantic, ~600 µs) runs once here; the openIMIS profile rules are cheap dict walks.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from fhir.resources.R4B.claim import Claim, ClaimInsurance
from pydantic import ValidationError

from mediator.fhir.elements import (
    CLAIM_CODE_TYPES,
    ITEM_KINDS,
    KIND_OF_TYPE,
    arr,
    coded,
    first_code,
    identifier_type_code,
    item_reference,
    item_reference_index,
    number,
    obj,
    reference_id,
    reference_type,
    split_reference,
    text,
)
from mediator.fhir.outcome import Issue
from mediator.fhir.parsing import fhirpath, parse_resource
from mediator.transactions.claims.known_elements import CanonicalClaim, KnownElements, canonical_claim

VISIT_TYPES = frozenset({"E", "R", "O"})
SUPPORTING_INFO_CATEGORIES = frozenset({"guarantee", "explanation", "attachment"})
USES = frozenset({"claim", "preauthorization", "predetermination"})
MAX_DIAGNOSES = 5

#: dateTime with a time but no zone: invalid FHIR, but openIMIS emits it itself (contained
#: resources of its own fixtures) and parses it fine, so a claim is not refused for it.
_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
#: FHIR requires Claim.insurance, openIMIS does not read it (the insuree's policies decide
#: coverage) and its own sample claims omit it: a claim without it is validated as if it had this.
_UNSTATED_INSURANCE = {"sequence": 1, "focal": True, "coverage": {"display": "not stated"}}


@functools.cache
def _unstated_insurance() -> ClaimInsurance:
    """The placeholder validated once: as a model, it costs the claim's validation nothing
    (validating it as a dict was a third of the validation of an otherwise known claim)."""
    return ClaimInsurance.model_validate(_UNSTATED_INSURANCE)


def parse_claim(body: bytes) -> dict[str, Any]:
    """Decode the request body; anything that is not a Claim object is a 400, not a 422."""
    return parse_resource(body, "Claim")


def validate_claim(
    claim: dict[str, Any], known: KnownElements | None = None, canon: CanonicalClaim | None = None
) -> list[Issue]:
    """Every problem of the claim, structural and openIMIS profile, at once (empty list = valid).

    With `known`, elements validated in earlier claims are not validated again (same outcome).
    """
    issues = _structure(claim, known, canon)
    at_fault = tuple(i.expression[0] for i in issues if i.expression)
    for issue in _profile(claim):
        path = issue.expression[0]
        # A field pydantic already reported (e.g. a missing `type`) is not reported twice.
        if not any(path == p or path.startswith((p + ".", p + "[")) for p in at_fault):
            issues.append(issue)
    return issues


def claim_code(claim: dict[str, Any]) -> str | None:
    """The claim code: the identifier typed Code/MR, else the first identifier with a value."""
    fallback = None
    for ident in arr(claim.get("identifier")):
        value = text(obj(ident).get("value"))
        if not value:
            continue
        if identifier_type_code(ident) in CLAIM_CODE_TYPES:
            return value
        fallback = fallback or value
    return fallback


def claim_key(claim: dict[str, Any]) -> tuple[str, str]:
    """(claim code, facility UUID-or-code): openIMIS keeps claim codes unique per facility.

    The facility part is the id the claim used (`Organization/<id>` or the identifier value), so
    a facility that switches between its UUID and its code gets two keys; openIMIS still refuses
    the duplicate code.
    """
    provider = obj(claim.get("provider"))
    return claim_code(claim) or "", reference_id(provider) or text(provider.get("display")) or ""


# --- structure --------------------------------------------------------------------------------


def _fhirpath(loc: tuple[int | str, ...]) -> str:
    return fhirpath("Claim", loc)


def _tolerated(error: dict[str, Any]) -> bool:
    value = error.get("input")
    return (
        isinstance(value, str) and bool(_NAIVE_DATETIME.match(value)) and "DateTime" in error.get("msg", "")
    )


def _structure(
    claim: dict[str, Any], known: KnownElements | None = None, canon: CanonicalClaim | None = None
) -> list[Issue]:
    candidate, unknown = (
        known.substitute(claim, canon or canonical_claim(claim)) if known is not None else (claim, [])
    )
    if "insurance" not in candidate:
        candidate = {**candidate, "insurance": [_unstated_insurance()]}
    try:
        validated = Claim.model_validate(candidate)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            if _tolerated(err):
                continue
            path = _fhirpath(tuple(err.get("loc", ())))
            msg = err.get("msg", "invalid").removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "Unknown element"
            issues.append(Issue("structure", f"{path}: {msg}", [path]))
        return issues
    if known is not None:
        known.remember(validated, unknown)
    return []


# --- openIMIS profile -------------------------------------------------------------------------


def _has_reference(ref: Any) -> bool:
    return bool(text(obj(ref).get("reference")) or text(obj(obj(ref).get("identifier")).get("value")))


def _profile(claim: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []

    def add(code: str, path: str, message: str) -> None:
        issues.append(Issue(code, message, [path]))

    if not any(text(obj(i).get("value")) for i in arr(claim.get("identifier"))):
        add("required", "Claim.identifier", "The claim code (identifier with a value) is required")
    if not text(claim.get("created")):
        add("required", "Claim.created", "created (date the claim was made) is required")
    if not text(obj(claim.get("billablePeriod")).get("start")):
        add("required", "Claim.billablePeriod.start", "billablePeriod.start (visit date) is required")

    _reference(claim, "patient", "Patient", "the insuree", add)
    _reference(claim, "provider", "Organization", "the health facility", add)
    _reference(claim, "enterer", "Practitioner", "the claim administrator", add)

    total = obj(claim.get("total")).get("value")
    if total is None:
        add("required", "Claim.total.value", "total.value (amount claimed) is required")
    elif number(total) == 0:
        add("value", "Claim.total.value", "total.value must not be zero")

    visit = first_code(claim.get("type"))
    if visit is None:
        add("required", "Claim.type.coding[0].code", "The visit type (E, R or O) is required")
    elif visit not in VISIT_TYPES:
        add("value", "Claim.type.coding[0].code", f"Unknown visit type {visit!r}: expected E, R or O")

    use = claim.get("use")
    if isinstance(use, str) and use not in USES:
        add(
            "value", "Claim.use", f"Unknown use {use!r}: expected claim, preauthorization or predetermination"
        )

    _diagnoses(arr(claim.get("diagnosis")), add)
    _supporting_info(arr(claim.get("supportingInfo")), add)
    _items(claim.get("item"), add)
    _total_of_lines(claim, add)
    return issues


def _total_of_lines(claim: dict[str, Any], add: Any) -> None:
    """A total that is not the sum of its lines is refused rather than guessed at.

    openIMIS records `total.value` as the amount claimed, beside lines it values one by one: a
    claim whose total disagrees would reach the claims officer and the auditors as two amounts.
    """
    total = number(obj(claim.get("total")).get("value"))
    lines = [
        (number(obj(obj(i).get("quantity")).get("value")), number(obj(obj(i).get("unitPrice")).get("value")))
        for i in arr(claim.get("item"))
    ]
    if total is None or not lines or any(q is None or p is None for q, p in lines):
        return  # missing parts are reported on their own
    lines_sum = sum(q * p for q, p in lines)  # type: ignore[operator]
    if abs(total - lines_sum) > 0.005:
        add(
            "value",
            "Claim.total.value",
            f"total.value {total:g} is not the sum of the lines' quantity x unit price ({lines_sum:g})",
        )


def _reference(claim: dict[str, Any], field: str, rtype: str, what: str, add: Any) -> None:
    ref = claim.get(field)
    path = f"Claim.{field}"
    if not _has_reference(ref):
        add("required", path, f"{field} ({what}) is required, as a reference or an identifier")
        return
    given = split_reference(obj(ref).get("reference"))[0] or text(obj(ref).get("type"))
    if given and given != rtype:
        add("invalid", path, f"{field} must refer to a {rtype}, not a {given}")


def _diagnoses(diagnoses: list[Any], add: Any) -> None:
    if not diagnoses:
        add("required", "Claim.diagnosis", "At least one diagnosis is required")
        return
    if len(diagnoses) > MAX_DIAGNOSES:
        add("invalid", "Claim.diagnosis", f"openIMIS takes at most {MAX_DIAGNOSES} diagnoses")
    for i, diagnosis in enumerate(diagnoses):
        if not first_code(obj(diagnosis).get("diagnosisCodeableConcept")):
            path = f"Claim.diagnosis[{i}].diagnosisCodeableConcept.coding[0].code"
            add("required", path, "The diagnosis needs an ICD code")


def _supporting_info(infos: list[Any], add: Any) -> None:
    for i, info in enumerate(infos):
        category = obj(info).get("category")
        path = f"Claim.supportingInfo[{i}].category"
        if not category:
            add("required", path, "supportingInfo needs a category (guarantee, explanation or attachment)")
        elif coded(category, SUPPORTING_INFO_CATEGORIES) is None:
            add("value", path, "supportingInfo category must be guarantee, explanation or attachment")


def _items(items: Any, add: Any) -> None:
    items = arr(items)
    if not items:
        add("required", "Claim.item", "At least one item or service is required")
        return
    for i, raw in enumerate(items):
        item = obj(raw)
        base = f"Claim.item[{i}]"
        kind = coded(item.get("category"), ITEM_KINDS)
        if not item.get("category"):
            add("required", f"{base}.category", "The line category (item or service) is required")
        elif kind is None:
            add("value", f"{base}.category", "The line category must be item or service")

        idx = item_reference_index(item)
        ref = item_reference(item)
        if idx is None:
            add(
                "required",
                f"{base}.extension",
                "The line needs a claim-item-reference extension to a Medication or ActivityDefinition",
            )
        elif not _has_reference(ref):
            add("required", f"{base}.extension[{idx}].valueReference", "The item reference is empty")
        else:
            rtype = reference_type(ref)
            ref_path = f"{base}.extension[{idx}].valueReference"
            if rtype is not None and rtype not in KIND_OF_TYPE:
                add(
                    "invalid",
                    ref_path,
                    f"An item reference must be to Medication or ActivityDefinition, not {rtype}",
                )
            elif rtype is not None and kind is not None and KIND_OF_TYPE[rtype] != kind:
                add("invalid", ref_path, f"A line of category {kind} must refer to a {ITEM_KINDS[kind]}")

        qty = obj(item.get("quantity")).get("value")
        if qty is None:
            add("required", f"{base}.quantity.value", "The quantity is required")
        elif (q := number(qty)) is not None and q <= 0:
            add("value", f"{base}.quantity.value", "The quantity must be greater than zero")

        price = obj(item.get("unitPrice")).get("value")
        if price is None:
            add("required", f"{base}.unitPrice.value", "The unit price is required")
        elif (p := number(price)) is not None and p < 0:
            add("value", f"{base}.unitPrice.value", "The unit price must not be negative")
