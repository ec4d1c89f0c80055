"""Helpers shared by the sandbox tests (not fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

BASE = "/api/api_fhir_r4/"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openimis"
IG = "https://openimis.github.io/openimis_fhir_r4_ig/"
ID_SYSTEM = IG + "CodeSystem/openimis-identifiers"


def uuid_of(resource):
    """A resource's openIMIS UUID: its identifier typed UUID (real openIMIS keeps codes in `id`)."""
    return next(i["value"] for i in resource["identifier"] if i["type"]["coding"][0]["code"] == "UUID")


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class Api:
    """Thin helper over the test client with auth headers."""

    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers

    def get(self, path: str, **kw: Any):
        return self.client.get(BASE + path, headers=self.headers, **kw)

    def post(self, path: str, body: Any):
        return self.client.post(BASE + path, headers=self.headers, json=body)

    def control(self, path: str, body: Any = None):
        if body is None:
            return self.client.get("/_sandbox/" + path)
        return self.client.post("/_sandbox/" + path, json=body)


def ident(code: str, value: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": ID_SYSTEM, "code": code}]}, "value": value}


def make_claim(
    code: str,
    *,
    patient: str = "Patient/070707070",
    facility: str = "HF0001",
    admin: str = "JMDP0011",
    lines: list[tuple[str, str, float, float]] | None = None,
    day: str = "2024-05-02",
    created: str | None = None,
    icd: list[str] | None = None,
) -> dict[str, Any]:
    """A Claim as openIMIS accepts it; lines are (category, code, qty, unit price)."""
    lines = lines if lines is not None else [("service", "A1", 1, 10.0), ("item", "0004", 2, 10.0)]
    items = []
    for seq, (cat, ref_code, qty, price) in enumerate(lines, start=1):
        rtype = "Medication" if cat == "item" else "ActivityDefinition"
        items.append(
            {
                "extension": [
                    {
                        "url": IG + "StructureDefinition/claim-item-reference",
                        "valueReference": {"type": rtype, "identifier": ident("Code", ref_code)},
                    }
                ],
                "sequence": seq,
                "category": {"text": cat},
                "productOrService": {"text": ref_code},
                "quantity": {"value": qty},
                "unitPrice": {"value": price, "currency": "$"},
            }
        )
    total = sum(q * p for _, _, q, p in lines) or 1.0
    return {
        "resourceType": "Claim",
        "identifier": [ident("Code", code), ident("MR", code)],
        "status": "active",
        "type": {"coding": [{"system": IG + "CodeSystem/claim-visit-type", "code": "O"}]},
        "use": "claim",
        "patient": {"reference": patient},
        "billablePeriod": {"start": day, "end": day},
        "created": created or day,
        "enterer": {"reference": f"Practitioner/{admin}"},
        "provider": {"reference": f"Organization/{facility}"},
        "priority": {"coding": [{"code": "normal"}]},
        "diagnosis": [
            {"sequence": i, "diagnosisCodeableConcept": {"coding": [{"code": c}]}}
            for i, c in enumerate(icd or ["B54"], start=1)
        ],
        "item": items,
        "total": {"value": total, "currency": "$"},
    }
