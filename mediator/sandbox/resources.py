"""FHIR rendering of sandbox objects, shaped like the openIMIS 1.10 converters emit them.

ActivityDefinition, Medication and Patient are rendered from the module's own fixtures
(kept in data/) so that the shape, extension URLs included, stays exactly the one
openIMIS produces: note the unit-price extension URL differs between ActivityDefinition
(StructureDefinition/unit-price) and Medication (CodeSystem/unit-price).
"""

from __future__ import annotations

import copy
import json
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from mediator.fhir.elements import REJECTION_REASONS

from .store import (
    POLICY_ACTIVE,
    POLICY_EXPIRED,
    POLICY_IDLE,
    POLICY_SUSPENDED,
    STATUS_CHECKED,
    STATUS_ENTERED,
    STATUS_NAMES,
    STATUS_PROCESSED,
    STATUS_REJECTED,
    STATUS_VALUATED,
    ClaimAdmin,
    ClaimLine,
    Facility,
    Insuree,
    Item,
    Policy,
    Product,
    Service,
    Store,
    StoredClaim,
)

IG = "https://openimis.github.io/openimis_fhir_r4_ig/"
IDENTIFIER_SYSTEM = IG + "CodeSystem/openimis-identifiers"
CLAIM_STATUS_SYSTEM = IG + "CodeSystem/claim-status"
REJECTION_REASON_SYSTEM = IG + "CodeSystem/claim-rejection-reasons"
VISIT_TYPE_SYSTEM = IG + "CodeSystem/claim-visit-type"
ITEM_REFERENCE_URL = IG + "StructureDefinition/claim-item-reference"
OUTCOME_BY_STATUS = {1: "complete", 2: "queued", 4: "partial", 8: "partial", 16: "complete"}
VISIT_TYPES = {"E": "Emergency", "R": "Referrals", "O": "Other"}
DATA_DIR = Path(__file__).with_name("data")

Json = dict[str, Any]


@cache
def _template(name: str) -> Json:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def template(name: str) -> Json:
    """A fresh copy of a fixture from data/ (used as rendering template)."""
    return copy.deepcopy(_template(name))


def identifier(code: str, value: str, use: str | None = None) -> Json:
    ident: Json = {}
    if use:
        ident["use"] = use
    ident["type"] = {"coding": [{"system": IDENTIFIER_SYSTEM, "code": code}]}
    ident["value"] = value
    return ident


def reference(rtype: str, uuid: str, display: str | None = None) -> Json:
    """openIMIS UUID reference: reference + type + identifier (+ display)."""
    ref: Json = {"reference": f"{rtype}/{uuid}", "type": rtype, "identifier": identifier("UUID", uuid)}
    if display is not None:
        ref["display"] = display
    return ref


def code_reference(rtype: str, code: str, display: str | None = None) -> Json:
    """openIMIS code reference (what a ClaimResponse carries): `Type/<code>` + identifier `Code`."""
    ref: Json = {"reference": f"{rtype}/{code}", "type": rtype, "identifier": identifier("Code", code)}
    if display is not None:
        ref["display"] = display
    return ref


def money(value: float, currency: str) -> Json:
    return {"value": float(value), "currency": currency}


def operation_outcome(text: str | None, severity: str = "error", code: str = "exception") -> Json:
    issue: Json = {"severity": severity, "code": code}
    if text:
        issue["details"] = {"text": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


# ---------------------------------------------------------------- catalogue
_LEVELS = {"S": "Simple Service", "V": "Visit", "D": "Day of stay", "H": "Hospital case"}
_TOPICS = {"P": "Preventive", "C": "Curative"}
_CATEGORIES = {
    "S": "Surgery",
    "D": "Delivery",
    "A": "Antenatal",
    "H": "Hospitalization",
    "C": "Consultation",
    "O": "Other",
    "V": "Visit",
}


def activity_definition(svc: Service, currency: str) -> Json:
    res = template("test_activity_definition.json")
    res["id"] = svc.uuid
    price, level = res["extension"]
    price["valueMoney"] = money(svc.price, currency)
    level["valueCodeableConcept"]["coding"][0].update(code=svc.level, display=_LEVELS[svc.level])
    level["valueCodeableConcept"]["text"] = _LEVELS[svc.level]
    res["identifier"][0]["value"] = svc.uuid
    res["identifier"][1]["value"] = svc.code
    res["name"] = svc.code
    res["title"] = svc.name
    res["date"] = svc.updated.isoformat()
    for ctx in res["useContext"]:
        if ctx["code"]["code"] == "workflow":
            label = _CATEGORIES[svc.category]
            ctx["valueCodeableConcept"]["coding"][0].update(code=svc.category, display=label)
            ctx["valueCodeableConcept"]["text"] = label
    res["topic"][0]["coding"][0].update(code=svc.topic, display=_TOPICS[svc.topic])
    res["timingTiming"]["repeat"]["period"] = float(svc.frequency or 0)
    return res


def medication(item: Item, currency: str) -> Json:
    res = template("test_medication.json")
    out: Json = {"resourceType": "Medication", "id": item.uuid}
    ext = res["extension"]
    ext[0]["valueMoney"] = money(item.price, currency)
    kind = {"D": "Drug", "M": "Medical Consumable"}[item.item_type]
    ext[1]["valueCodeableConcept"]["coding"][0].update(code=item.item_type, display=kind)
    ext[2]["valueTiming"]["repeat"]["period"] = float(item.frequency or 0)
    if not item.frequency:
        del ext[2]  # 24.04 leaves the frequency extension out when an item has none
    out["extension"] = ext
    out["identifier"] = [identifier("UUID", item.uuid), identifier("Code", item.code)]
    out["code"] = {"text": item.name}
    out["status"] = "active"
    out["form"] = {"text": item.form}
    out["amount"] = {"numerator": {"value": float(item.package)}}
    return out


# ---------------------------------------------------------------- people
def patient(ins: Insuree, head_chf_id: str) -> Json:
    """As a real 24.04 backend answers: `id` is the insuree number, the UUID only an identifier."""
    res = template("test_patient.json")
    group = code_reference("Group", head_chf_id)
    out: Json = {
        "resourceType": "Patient",
        "id": ins.chf_id,
        "extension": [
            {"url": IG + "StructureDefinition/patient-is-head", "valueBoolean": ins.is_head},
            {"url": IG + "StructureDefinition/patient-card-issued", "valueBoolean": False},
            {"url": IG + "StructureDefinition/patient-group-reference", "valueReference": group},
        ],
        "identifier": [identifier("UUID", ins.uuid), identifier("Code", ins.chf_id)],
        "name": [{"use": "usual", "family": ins.last_name, "given": [ins.other_names]}],
        "gender": ins.gender,
        "birthDate": ins.birth_date.isoformat(),
    }
    if ins.phone:
        out["telecom"] = [{"system": "phone", "use": "home", "value": ins.phone}]
    out["address"] = [
        {
            "extension": [
                {"url": IG + "StructureDefinition/address-municipality", "valueString": "Rapta"},
                {
                    "url": IG + "StructureDefinition/address-location-reference",
                    "valueReference": code_reference("Location", "R1D1M1V1"),
                },
            ],
            "use": "home",
            "type": "physical",
            "text": "Plot 12, Market Road",
            "city": "Rapta",
            "district": "Rapta",
            "state": "Ultha",
        }
    ]
    out["maritalStatus"] = res["maritalStatus"]
    return out


def organization(hf: Facility) -> Json:
    levels = {"H": "Hospital", "C": "Health Centre", "D": "Dispensary"}
    forms = {"G": "Government", "P": "Private organization", "C": "Charity"}
    return {
        "resourceType": "Organization",
        "id": hf.uuid,
        "extension": [
            {
                "url": IG + "StructureDefinition/organization-hf-legal-form",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": IG + "CodeSystem/organization-hf-legal-form",
                            "code": hf.legal_form,
                            "display": forms[hf.legal_form],
                        }
                    ]
                },
            },
            {
                "url": IG + "StructureDefinition/organization-hf-level",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": IG + "CodeSystem/organization-hf-level",
                            "code": hf.level,
                            "display": levels[hf.level],
                        }
                    ]
                },
            },
        ],
        "identifier": [identifier("UUID", hf.uuid), identifier("Code", hf.code)],
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": hf.name,
        "address": [{"use": "work", "type": "physical", "district": hf.district}],
    }


def practitioner(ca: ClaimAdmin) -> Json:
    return {
        "resourceType": "Practitioner",
        "id": ca.uuid,
        "identifier": [identifier("UUID", ca.uuid), identifier("Code", ca.code)],
        "name": [{"use": "usual", "family": ca.last_name, "given": [ca.other_names]}],
    }


_COVERAGE_STATUS = {
    POLICY_IDLE: "draft",
    POLICY_ACTIVE: "active",
    POLICY_SUSPENDED: "cancelled",
    POLICY_EXPIRED: "cancelled",
}


def coverage(pol: Policy, product: Product, number: int) -> Json:
    """As a real 24.04 backend lists it: no `id`, identifiers UUID and ACSN (a running number)."""
    date_url = f"{IG}/StructureDefinition/coverage-date"  # sic: double slash, as upstream
    head = {"reference": f"Patient/{pol.head_chf_id}"}
    return {
        "resourceType": "Coverage",
        "extension": [
            {"url": date_url, "valueDate": pol.enroll_date.isoformat()},
            {"url": date_url, "valueDate": pol.effective_date.isoformat()},
        ],
        "identifier": [identifier("UUID", pol.uuid), identifier("ACSN", str(number))],
        "status": _COVERAGE_STATUS[pol.status],
        "policyHolder": dict(head),
        "beneficiary": dict(head),
        "period": {"start": pol.start_date.isoformat(), "end": pol.expiry_date.isoformat()},
        "payor": [dict(head)],
        "class": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "plan",
                            "display": "Plan",
                        }
                    ]
                },
                "value": product.code,
                "name": product.name,
            }
        ],
    }


# ---------------------------------------------------------------- claims
def _status_concept(status: int) -> Json:
    return {"coding": [{"system": CLAIM_STATUS_SYSTEM, "code": str(status), "display": STATUS_NAMES[status]}]}


def _visit_type(code: str) -> Json:
    return {"coding": [{"system": VISIT_TYPE_SYSTEM, "code": code, "display": VISIT_TYPES[code]}]}


def _line_reference(line: ClaimLine, by_code: bool = False) -> Json:
    """A line's item or service: by UUID in a Claim, by code in a ClaimResponse (as upstream)."""
    rtype = "Medication" if line.kind == "item" else "ActivityDefinition"
    ref = code_reference(rtype, line.code, line.code) if by_code else reference(rtype, line.ref_uuid)
    return {"url": ITEM_REFERENCE_URL, "valueReference": ref}


def _adjudications(claim: StoredClaim, line: ClaimLine, currency: str) -> list[Json]:
    """Same branches as ClaimResponseConverter.build_fhir_item_adjudication."""

    def adj(status: int, price: float, qty: float) -> Json:
        reason = line.rejection_reason or 0
        return {
            "category": _status_concept(status),
            "reason": {
                "coding": [
                    {
                        "system": REJECTION_REASON_SYSTEM,
                        "code": str(reason),
                        "display": REJECTION_REASONS.get(reason, str(reason)),
                    }
                ]
            },
            "amount": money(price, currency),
            "value": float(qty),
        }

    if line.rejection_reason or claim.status == STATUS_REJECTED:
        return [adj(STATUS_REJECTED, line.price_asked, line.qty)]
    price = line.price_approved if line.price_approved is not None else line.price_asked
    qty = line.qty_approved or line.qty
    out = [adj(STATUS_ENTERED, line.price_asked, line.qty)]
    out += [
        adj(s, price, qty) for s in (STATUS_CHECKED, STATUS_PROCESSED, STATUS_VALUATED) if claim.status >= s
    ]
    return out


def ordered_lines(claim: StoredClaim) -> list[ClaimLine]:
    """openIMIS renumbers: items first, then services."""
    return claim.items + claim.services


def claim_response(store: Store, claim: StoredClaim, currency: str) -> Json:
    items = []
    totals = {STATUS_ENTERED: 0.0, STATUS_CHECKED: 0.0, STATUS_PROCESSED: 0.0, STATUS_VALUATED: 0.0}
    for seq, line in enumerate(ordered_lines(claim), start=1):
        adjs = _adjudications(claim, line, currency)
        for a in adjs:
            amount = a["amount"]["value"] * a["value"]
            status = int(a["category"]["coding"][0]["code"])
            if a["reason"]["coding"][0]["code"] != "0":
                totals[STATUS_ENTERED] += amount
            elif status in totals:
                totals[status] += amount
        items.append(
            {"extension": [_line_reference(line, by_code=True)], "itemSequence": seq, "adjudication": adjs}
        )
    insuree, admin = store.insuree_by_uuid(claim.insuree_uuid), store.admin(claim.admin_uuid)
    res: Json = {  # as a real 24.04 backend answers: `id` and references by code, `request` a ClaimV2
        "resourceType": "ClaimResponse",
        "id": claim.code,
        "identifier": [identifier("UUID", claim.uuid), identifier("Code", claim.code)],
        "status": "active",
        "type": _visit_type(claim.visit_type),
        "use": "claim",
        "patient": code_reference("Patient", insuree.chf_id),
        "created": store.today().isoformat(),
        "insurer": {"reference": "openIMIS"},
        "requestor": code_reference("Practitioner", admin.code),
        "request": code_reference("ClaimV2", claim.code),
        "outcome": OUTCOME_BY_STATUS[claim.status],
        "item": items,
    }
    total = [
        {"category": _status_concept(s), "amount": money(v, currency)}
        for s, v in totals.items()
        if claim.status >= s
    ]
    if total:
        res["total"] = total
    return res


def claim_resource(store: Store, claim: StoredClaim, currency: str) -> Json:
    ins = store.insuree_by_uuid(claim.insuree_uuid)
    hf = store.facility(claim.facility_code)
    ca = store.admin(claim.admin_uuid)
    res: Json = {
        "resourceType": "Claim",
        "id": claim.uuid,
        "identifier": [identifier("UUID", claim.uuid), identifier("Code", claim.code)],
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": IG + "CodeSystem/claim-visit-type",
                    "code": claim.visit_type,
                    "display": VISIT_TYPES[claim.visit_type],
                }
            ]
        },
        "use": "claim",
        "patient": reference("Patient", ins.uuid, ins.chf_id),
        "billablePeriod": {
            "start": claim.date_from.isoformat(),
            "end": (claim.date_to or claim.date_from).isoformat(),
        },
        "created": claim.date_claimed.isoformat(),
        "enterer": reference("Practitioner", ca.uuid, ca.code),
        "provider": reference("Organization", hf.uuid, hf.code),
        "priority": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                    "code": "normal",
                    "display": "Normal",
                }
            ]
        },
    }
    info = []
    for code, value in (("guarantee", claim.guarantee_id), ("explanation", claim.explanation)):
        if value:
            info.append(
                {
                    "sequence": len(info) + 1,
                    "category": {
                        "coding": [{"system": IG + "CodeSystem/claim-supporting-info-category", "code": code}]
                    },
                    "valueString": value,
                }
            )
    if info:  # 24.04 leaves empty lists out
        res["supportingInfo"] = info
    res["diagnosis"] = [
        {
            "sequence": i,
            "diagnosisCodeableConcept": {
                "coding": [
                    {
                        "system": IG + "CodeSystem/diagnosis-ICD10-level1",
                        "code": icd,
                        "display": store.icd.get(icd, icd),
                    }
                ]
            },
        }
        for i, icd in enumerate(claim.icd_codes, start=1)
    ]
    res["item"] = [
        {
            "extension": [_line_reference(line)],
            "sequence": seq,
            "category": {"text": line.kind},
            "productOrService": {"text": line.code},
            "quantity": {"value": float(line.qty)},
            "unitPrice": money(line.price_asked, currency),
        }
        for seq, line in enumerate(ordered_lines(claim), start=1)
    ]
    res["total"] = money(claim.claimed, currency)
    return res


# ---------------------------------------------------------------- eligibility
def eligibility_response(
    request: Json,
    chf_id: str,
    policies: list[Policy],
    store: Store,
    service_ok: bool,
    item_ok: bool,
    today: date,
) -> Json:
    """CoverageEligibilityResponse as in test_coverageEligibilityResponse.json."""
    res = template("test_coverageEligibilityResponse.json")
    res["patient"] = {"reference": f"Patient/{chf_id}"}
    res["created"] = today.isoformat()
    req_id = next((i.get("value") for i in request.get("identifier") or [] if isinstance(i, dict)), None)
    res["request"] = {"reference": f"CoverageEligibilityRequest/{req_id or ''}"}
    proto = res["insurance"][0]
    res["insurance"] = []
    for pol in policies:
        product = store.products[pol.product_code]
        ins = copy.deepcopy(proto)
        ins["coverage"] = {"reference": f"Coverage/{pol.uuid}"}
        ins["benefitPeriod"] = {"start": pol.effective_date.isoformat(), "end": pol.expiry_date.isoformat()}
        for entry in ins["item"]:
            name = entry["category"]["text"]
            if name == "is_service_ok":
                entry["excluded"] = not service_ok
            elif name == "is_item_ok":
                entry["excluded"] = not item_ok
            elif name in product.benefits:
                benefit = entry["benefit"][0]
                if "allowedMoney" in benefit:
                    benefit["allowedMoney"] = {"value": float(product.benefits[name])}
                else:
                    benefit["allowedUnsignedInt"] = int(product.benefits[name])
        res["insurance"].append(ins)
    if not res["insurance"]:
        del res["insurance"]
    return res
