"""Frozen openIMIS answers for the benchmark upstream, taken from the embedded sandbox once.

The sandbox is too slow and stateful to be the upstream of a load test, but its answers are the
realistic ones (openIMIS quirks included). They are captured here through its test client and
written to a JSON file that `tests.benchmarks.upstream` serves as fixed bodies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

#: Placeholder replaced by a unique claim code in every claim request.
CODE_PLACEHOLDER = "@@CODE@@"
TEMPLATE_CODE = "BENCH-TEMPLATE-0001"
INSUREE = "070707070"
BASE = "/api/api_fhir_r4/"
ITEM_CATEGORY_SYSTEM = "https://openimis.github.io/openimis_fhir_r4_ig/CodeSystem/claim-item-category"


def eligibility_request() -> dict[str, Any]:
    """A facility's eligibility question for insuree 070707070 (one service, one item)."""
    return {
        "resourceType": "CoverageEligibilityRequest",
        "identifier": [{"value": "bench-eligibility-1"}],
        "status": "active",
        "purpose": ["benefits"],
        "patient": {"reference": f"Patient/{INSUREE}"},
        "created": "2024-05-02",
        "insurer": {"reference": "openIMIS"},
        "item": [
            {
                "category": {"coding": [{"system": ITEM_CATEGORY_SYSTEM, "code": "service"}]},
                "productOrService": {"text": "A1"},
            },
            {
                "category": {"coding": [{"system": ITEM_CATEGORY_SYSTEM, "code": "item"}]},
                "productOrService": {"text": "0004"},
            },
        ],
    }


#: Claims differ as a facility's claims do: insuree, visit day, diagnoses, quantities.
CLAIM_VARIANTS = 256
DIAGNOSES = ("B54", "A09", "J06", "J18", "B50", "K29", "N39", "L08", "H10", "A01", "R50", "O80")


def claim_variants() -> list[str]:
    """Claims of one facility (its catalogue's service A1 and item 0004, as the upstream's
    ClaimResponse has them), each with a placeholder for a unique code."""
    from tests.sandbox.helpers import make_claim

    rng = random.Random(6)
    variants = []
    for _ in range(CLAIM_VARIANTS):
        day = f"2024-05-{rng.randint(1, 30):02d}"
        lines = [("service", "A1", rng.randint(1, 2), 10.0), ("item", "0004", rng.randint(1, 4), 10.0)]
        icd = rng.sample(DIAGNOSES, rng.randint(1, 2))
        insuree = f"Patient/{rng.randint(100_000_000, 100_000_120):09d}"
        claim = make_claim(CODE_PLACEHOLDER, patient=insuree, lines=lines, day=day, icd=icd)
        variants.append(json.dumps(claim, separators=(",", ":")))
    return variants


def build(path: Path) -> dict[str, Any]:
    """Drive the sandbox in-process and write what the benchmark upstream answers to `path`."""
    from mediator.sandbox import SandboxConfig, create_sandbox_app
    from tests.sandbox.helpers import make_claim

    client = create_sandbox_app(SandboxConfig()).test_client()

    def ok(response: Any, status: int) -> Any:
        if response.status_code != status:
            raise RuntimeError(f"sandbox answered {response.status_code}: {response.get_data()[:300]!r}")
        return response

    login = ok(client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"}), 200)
    token = login.get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    bundles = {
        rtype: ok(client.get(f"{BASE}{rtype}/?_count=10", headers=headers), 200).get_data(as_text=True)
        for rtype in ("Medication", "ActivityDefinition")
    }
    patient = ok(client.get(f"{BASE}Patient/?identifier={INSUREE}", headers=headers), 200)
    patient_uuid = patient.get_json()["id"]
    upstream_claim = make_claim(TEMPLATE_CODE, patient=f"Patient/{patient_uuid}")
    claim_response = ok(client.post(BASE + "Claim/", json=upstream_claim, headers=headers), 201)
    eligibility = ok(
        client.post(BASE + "CoverageEligibilityRequest/", json=eligibility_request(), headers=headers), 201
    )
    fixtures = {
        "token": token,
        "bundles": bundles,
        "patient": patient.get_data(as_text=True),
        "claim_response": claim_response.get_data(as_text=True),
        "claim_response_uuid": claim_response.get_json()["id"],
        "claim_template_code": TEMPLATE_CODE,
        "eligibility_response": eligibility.get_data(as_text=True),
        "eligibility_status": eligibility.status_code,  # openIMIS answers 201
        # What the load generator sends (the claim with a placeholder for a unique code).
        "claim_request": json.dumps(make_claim(CODE_PLACEHOLDER), separators=(",", ":")),
        "claim_requests": claim_variants(),
        "eligibility_request": json.dumps(eligibility_request(), separators=(",", ":")),
    }
    path.write_text(json.dumps(fixtures), encoding="utf-8")
    return fixtures
