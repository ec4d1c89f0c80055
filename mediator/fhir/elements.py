"""Defensive readers of FHIR JSON dicts, and the openIMIS terminology the transactions share.

The transactions work on parsed JSON dicts (validating with pydantic once, on the way in), so
these helpers read nested values defensively: a malformed claim must produce an Issue, never a
TypeError.
"""

from __future__ import annotations

import re
from typing import Any

IG_BASE = "https://openimis.github.io/openimis_fhir_r4_ig/"
IDENTIFIER_SYSTEM = IG_BASE + "CodeSystem/openimis-identifiers"
CLAIM_STATUS_SYSTEM = IG_BASE + "CodeSystem/claim-status"
REJECTION_REASON_SYSTEM = IG_BASE + "CodeSystem/claim-rejection-reasons"
ITEM_CATEGORY_SYSTEM = IG_BASE + "CodeSystem/claim-item-category"
SUPPORTING_INFO_SYSTEM = IG_BASE + "CodeSystem/claim-supporting-info-category"
ITEM_REFERENCE_URL = IG_BASE + "StructureDefinition/claim-item-reference"
ITEM_REFERENCE_SUFFIX = "claim-item-reference"

#: Claim code identifier type codes: the IG and openIMIS's tests use "Code", the backend's default
#: setting (`fhir_code_for_imis_claim_code_type`) is "MR".
CLAIM_CODE_TYPES = ("Code", "MR")
ITEM_KINDS = {"item": "Medication", "service": "ActivityDefinition"}
KIND_OF_TYPE = {v: k for k, v in ITEM_KINDS.items()}

#: openIMIS rejection reasons (api_fhir_r4/mapping/claimMapping.py, ClaimResponseMapping;
#: CodeSystem claim-rejection-reasons). There is no code 18.
REJECTION_REASONS: dict[int, str] = {
    -2: "REJECTED BY AI EVALUATION",
    -1: "REJECTED BY MEDICAL OFFICER",
    0: "ACCEPTED",
    1: "INVALID ITEM OR SERVICE",
    2: "NOT IN PRICE LIST",
    3: "NO PRODUCT FOUND",
    4: "CATEGORY LIMITATION",
    5: "FREQUENCY FAILURE",
    6: "DUPLICATED",
    7: "FAMILY",
    8: "DIAGNOSIS NOT IN LIST",
    9: "TARGET DATE",
    10: "CARE TYPE",
    11: "MAX HOSPITAL ADMISSIONS",
    12: "MAX VISITS",
    13: "MAX CONSULTATIONS",
    14: "MAX SURGERIES",
    15: "MAX DELIVERIES",
    16: "QTY OVER LIMIT",
    17: "WAITING PERIOD FAIL",
    19: "MAX ANTENATAL",
}

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


_FHIR_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9\-.]{1,64}$")


def is_fhir_id(value: str) -> bool:
    """A FHIR id (also what openIMIS codes look like); never a path segment like `..`."""
    return bool(_FHIR_ID.match(value))


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (malformed input reads as absent)."""
    return value if isinstance(value, dict) else {}


def arr(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-blank string, stripped, or None."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def number(value: Any) -> float | None:
    """A JSON number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer no float can hold: no usable amount
            return None
    return None


def first_code(concept: Any) -> str | None:
    """`coding[0].code` of a CodeableConcept: the one openIMIS reads."""
    codings = arr(obj(concept).get("coding"))
    return text(obj(codings[0]).get("code")) if codings else None


def codes(concept: Any) -> list[str]:
    return [c for c in (text(obj(x).get("code")) for x in arr(obj(concept).get("coding"))) if c]


def coded(concept: Any, allowed: set[str] | frozenset[str] | dict[str, Any]) -> str | None:
    """The concept's value among `allowed`, read from `text` or any coding code (case-insensitive)."""
    candidates = [text(obj(concept).get("text")), *codes(concept)]
    for c in candidates:
        if c and c.lower() in allowed:
            return c.lower()
    return None


def split_reference(reference: Any) -> tuple[str | None, str | None]:
    """("Medication", "0004") from "Medication/0004" or "#Medication/0004"; (None, None) otherwise."""
    ref = text(reference)
    if not ref or "/" not in ref:
        return None, None
    path, _, rid = ref.lstrip("#").rpartition("/")
    rtype = path.rpartition("/")[2] or None
    return rtype, (rid or None)


def reference_id(ref: Any) -> str | None:
    """The UUID or code a Reference points at: its literal id, else its identifier value."""
    ref = obj(ref)
    _, rid = split_reference(ref.get("reference"))
    return rid or text(obj(ref.get("identifier")).get("value"))


def reference_type(ref: Any) -> str | None:
    ref = obj(ref)
    return text(ref.get("type")) or split_reference(ref.get("reference"))[0]


def item_reference_index(item: dict[str, Any]) -> int | None:
    """Index of the claim-item-reference extension of a claim/response item.

    Matched by URL suffix (deployments may use another IG base); failing that, openIMIS itself
    reads `extension[0].valueReference`, so that one counts too.
    """
    exts = arr(item.get("extension"))
    for i, ext in enumerate(exts):
        url = text(obj(ext).get("url")) or ""
        if url.endswith(ITEM_REFERENCE_SUFFIX):
            return i
    if exts and isinstance(obj(exts[0]).get("valueReference"), dict):
        return 0
    return None


def item_reference(item: dict[str, Any]) -> dict[str, Any] | None:
    idx = item_reference_index(item)
    if idx is None:
        return None
    ref = obj(item["extension"][idx]).get("valueReference")
    return ref if isinstance(ref, dict) else None


def identifier_type_code(identifier: Any) -> str | None:
    return first_code(obj(identifier).get("type"))
