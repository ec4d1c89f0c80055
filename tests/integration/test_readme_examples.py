"""The README's quick start, request for request, against the mediator on its sandbox.

A newcomer's first minutes: every example in docs/examples/ must answer what the README says,
and the demo claim (codes of openIMIS's stock demo data) must be accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def post(mediator, resource_type, example, claim_code=None):
    body = (EXAMPLES / example).read_bytes()
    if claim_code is not None:  # the mediator's store outlives the sandbox's reset between tests
        resource = json.loads(body)
        resource["identifier"][0]["value"] = claim_code
        body = json.dumps(resource).encode()
    return requests.post(f"{mediator.url}/fhir/{resource_type}", data=body, headers=FHIR, timeout=15)


def outcome_tag(resource):
    return next(
        t["code"] for t in resource["meta"]["tag"] if t["system"] == "urn:openimis-mediator:claim-outcome"
    )


@pytest.mark.parametrize(
    ("example", "status", "outcome"),
    [
        ("claim.json", 201, "positive"),
        ("claim-demo.json", 201, "positive"),
        ("claim-negative.json", 200, "negative"),
        ("claim-queued.json", 202, "queued"),
    ],
)
def test_each_example_claim_answers_as_the_readme_says(mediator, clean_sandbox, example, status, outcome):
    answer = post(mediator, "Claim", example)
    assert answer.status_code == status, answer.text
    assert outcome_tag(answer.json()) == outcome
    if status in (201, 202):
        assert answer.headers["Location"].startswith(f"{mediator.url}/fhir/ClaimResponse/")
    again = post(mediator, "Claim", example)
    assert again.status_code == status and outcome_tag(again.json()) == outcome  # recorded, not resent


def test_the_queued_example_is_polled_to_its_final_answer(mediator, clean_sandbox):
    assert post(mediator, "Claim", "claim-queued.json", claim_code="Q-CLM-POLL").status_code == 202
    poll = f"{mediator.url}/fhir/ClaimResponse?identifier=Q-CLM-POLL"
    assert outcome_tag(requests.get(poll, timeout=10).json()["entry"][0]["resource"]) == "queued"
    requests.post(
        f"{clean_sandbox.url}/_sandbox/adjudicate",
        json={"claim_code": "Q-CLM-POLL", "status": "valuated"},
        timeout=5,
    ).raise_for_status()
    final = requests.get(poll, timeout=10).json()["entry"][0]["resource"]
    assert outcome_tag(final) == "positive" and final["outcome"] == "complete"


def test_the_catalogue_insuree_and_eligibility_examples(mediator, clean_sandbox):
    services = requests.get(f"{mediator.url}/fhir/ActivityDefinition?_count=5", timeout=10).json()
    assert services["resourceType"] == "Bundle" and len(services["entry"]) == 5
    item = requests.get(f"{mediator.url}/fhir/Medication?identifier=0004", timeout=10).json()
    assert item["total"] == 1
    insuree = requests.get(f"{mediator.url}/fhir/Patient?identifier=070707070", timeout=10).json()
    assert insuree["total"] == 1 and insuree["entry"][0]["resource"]["id"] == "070707070"
    eligibility = post(mediator, "CoverageEligibilityRequest", "eligibility-request.json")
    assert eligibility.status_code == 200, eligibility.text
    assert json.loads(eligibility.text)["insurance"][0]["inforce"] is True
