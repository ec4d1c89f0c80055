"""Turn a valid FHIR R4 Claim into the shape openIMIS actually accepts.

openIMIS reads a few fields more narrowly than FHIR allows (item category from `text` only,
the claim code from one identifier type, the item reference from `extension[0]`). The facility
sends standard FHIR; the differences are absorbed here, on dicts, without touching the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediator.fhir.elements import (
    CLAIM_CODE_TYPES,
    IDENTIFIER_SYSTEM,
    ITEM_KINDS,
    SUPPORTING_INFO_SYSTEM,
    arr,
    coded,
    identifier_type_code,
    is_uuid,
    item_reference_index,
    number,
    obj,
    split_reference,
    text,
)
from mediator.transactions.claims.validation import SUPPORTING_INFO_CATEGORIES


@dataclass(frozen=True)
class ItemRef:
    """One request line, kept to match openIMIS's renumbered response lines back to it."""

    sequence: int
    kind: str  # "item" | "service"
    ref: str | None  # UUID or code of the Medication/ActivityDefinition, as the facility gave it
    quantity: float | None
    unit_price: float | None
    currency: str | None = None
    #: every id the line is known by (reference id, identifier value, productOrService text)
    keys: tuple[str, ...] = ()

    @property
    def submitted(self) -> float | None:
        if self.quantity is None or self.unit_price is None:
            return None
        return self.quantity * self.unit_price


@dataclass
class NormalisedClaim:
    claim: dict[str, Any]
    #: Set when the insuree was given by insuree number: resolve it to the insuree's UUID (openIMIS
    #: would otherwise pick the first row with that number, possibly a historical one).
    patient_chfid: str | None = None
    item_refs: list[ItemRef] = field(default_factory=list)


def normalise_claim(claim: dict[str, Any]) -> NormalisedClaim:
    """A new claim dict ready for openIMIS, plus what the caller needs to finish and match it."""
    out = dict(claim)
    out["identifier"] = _identifiers(arr(claim.get("identifier")))
    for name, rtype in (("provider", "Organization"), ("enterer", "Practitioner")):
        if isinstance(claim.get(name), dict):
            out[name] = _literal(claim[name], rtype)
    out["patient"], chfid = _patient(obj(claim.get("patient")))
    if "supportingInfo" in claim:
        out["supportingInfo"] = [_supporting_info(obj(s)) for s in arr(claim.get("supportingInfo"))]
    items, refs = [], []
    for i, raw in enumerate(arr(claim.get("item"))):
        item, ref = _item(obj(raw), i)
        items.append(item)
        refs.append(ref)
    out["item"] = items
    return NormalisedClaim(out, chfid, refs)


def with_patient_uuid(normalised: NormalisedClaim, uuid: str) -> dict[str, Any]:
    """The claim to send once the caller resolved `patient_chfid` to the current insuree's UUID."""
    claim = dict(normalised.claim)
    patient: dict[str, Any] = {"reference": f"Patient/{uuid}", "type": "Patient"}
    if normalised.patient_chfid:
        patient["display"] = normalised.patient_chfid
    claim["patient"] = patient
    return claim


def _identifiers(identifiers: list[Any]) -> list[Any]:
    """Send the claim code typed both "Code" (IG) and "MR" (backend default setting).

    openIMIS takes the claim code from the identifier whose `type.coding[0]` has its configured
    code (some versions also check the openimis-identifiers system); sending both is safe.
    """
    valued = [i for i in identifiers if text(obj(i).get("value"))]
    chosen = next((i for i in valued if identifier_type_code(i) in CLAIM_CODE_TYPES), None)
    chosen = chosen or next((i for i in valued if not obj(i).get("type")), None) or next(iter(valued), None)
    if chosen is None:
        return list(identifiers)
    value = text(chosen["value"])
    typed = [i for i in valued if _typed_claim_code(i, value)]  # already right: kept as sent
    have = {identifier_type_code(i) for i in typed}
    base = {k: v for k, v in chosen.items() if k != "type"}
    twins = [
        {**base, "value": value, "type": {"coding": [{"system": IDENTIFIER_SYSTEM, "code": code}]}}
        for code in CLAIM_CODE_TYPES
        if code not in have
    ]
    kept = {id(i) for i in typed} | {id(chosen)}
    return [*typed, *twins, *(i for i in identifiers if id(i) not in kept)]


def _typed_claim_code(identifier: dict[str, Any], value: str | None) -> bool:
    codings = arr(obj(identifier.get("type")).get("coding"))
    first = obj(codings[0]) if codings else {}
    return (
        first.get("system") == IDENTIFIER_SYSTEM
        and first.get("code") in CLAIM_CODE_TYPES
        and text(identifier.get("value")) == value
    )


def _literal(ref: dict[str, Any], rtype: str) -> dict[str, Any]:
    """`{"identifier": {"value": "HF0001"}}` -> also `"reference": "Organization/HF0001"`.

    openIMIS resolves `Type/<id>` by UUID when <id> parses as one, else by code; the identifier
    is kept for the reader.
    """
    if text(ref.get("reference")):
        return ref
    value = text(obj(ref.get("identifier")).get("value"))
    if not value:
        return ref
    rtype = text(ref.get("type")) or rtype
    return {**ref, "reference": f"{rtype}/{value}", "type": rtype}


def _patient(ref: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    reference = text(ref.get("reference"))
    if reference:
        if reference.startswith("#"):
            return ref, None  # a contained Patient: openIMIS creates or matches it
        _, rid = split_reference(reference)
        if rid and not is_uuid(rid):
            return ref, rid
        return ref, None
    ident = obj(ref.get("identifier"))
    value = text(ident.get("value"))
    if not value:
        return ref, None
    if is_uuid(value) and (identifier_type_code(ident) or "UUID").lower() != "code":
        return {**ref, "reference": f"Patient/{value}", "type": "Patient"}, None
    return ref, value


def _supporting_info(info: dict[str, Any]) -> dict[str, Any]:
    """openIMIS reads `category.coding[0].code`; readers expect `text`: fill both."""
    category = obj(info.get("category"))
    value = coded(category, SUPPORTING_INFO_CATEGORIES)
    if value is None:
        return info
    category = dict(category)
    category.setdefault("text", value)
    codings = arr(category.get("coding"))
    if not codings or text(obj(codings[0]).get("code")) not in SUPPORTING_INFO_CATEGORIES:
        category["coding"] = [{"system": SUPPORTING_INFO_SYSTEM, "code": value}, *codings]
    return {**info, "category": category}


def _item(item: dict[str, Any], index: int) -> tuple[dict[str, Any], ItemRef]:
    out = dict(item)
    kind = coded(item.get("category"), ITEM_KINDS)
    if kind is not None:
        # openIMIS reads only `category.text`, exactly "item" or "service".
        out["category"] = {**obj(item.get("category")), "text": kind}

    ref_id = None
    keys: list[str] = []
    idx = item_reference_index(item)
    if idx is not None:
        exts = list(arr(item.get("extension")))
        ext = dict(obj(exts[idx]))
        vref = obj(ext.get("valueReference"))
        rtype = text(vref.get("type")) or split_reference(vref.get("reference"))[0]
        rtype = rtype or (ITEM_KINDS[kind] if kind else None)
        if rtype:
            vref = _literal(vref, rtype)
        ext["valueReference"] = vref
        # openIMIS reads `extension[0].valueReference`: put the item reference first.
        out["extension"] = [ext, *exts[:idx], *exts[idx + 1 :]]
        ref_id = split_reference(vref.get("reference"))[1]
        keys += [k for k in (ref_id, text(obj(vref.get("identifier")).get("value"))) if k]
    product = text(obj(item.get("productOrService")).get("text"))
    if product:
        keys.append(product)

    sequence = item.get("sequence")
    price = obj(item.get("unitPrice"))
    ref = ItemRef(
        sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else index + 1,
        kind=kind or "item",
        ref=ref_id,
        quantity=number(obj(item.get("quantity")).get("value")),
        unit_price=number(price.get("value")),
        currency=text(price.get("currency")),
        keys=tuple(dict.fromkeys(keys)),
    )
    return out, ref
