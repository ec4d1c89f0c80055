"""Insuree lookup and coverage eligibility over HTTP: gunicorn mediator in front of the sandbox,
with openIMIS's eligibility service working and failing (PostgreSQL 24.04)."""

import copy
import json
from datetime import date

import pytest
import requests

from tests.conftest import FIXTURES
from tests.sandbox.helpers import uuid_of

FHIR = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
SOURCE_TAG = "urn:openimis-mediator:eligibility-source"
SP_ERROR_MARKERS = ("EXEC", "uspServiceItemEnquiry", "syntax error", "Traceback", "<html")


def faults(sandbox, **values):
    requests.post(sandbox.url + "/_sandbox/faults", json=values, timeout=5).raise_for_status()


def ask(mediator, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        mediator.url + "/fhir/CoverageEligibilityRequest",
        data=data,
        headers={**FHIR, **(headers or {})},
        timeout=10,
    )


def enquiry(patient="Patient/070707070", **extra):
    body = {
        "resourceType": "CoverageEligibilityRequest",
        "identifier": [{"system": "urn:clinic:visits", "value": "V-2025-001"}],
        "status": "active",
        "purpose": ["benefits"],
        "patient": {"reference": patient} if isinstance(patient, str) else patient,
        "created": date.today().isoformat(),
        "item": [{"category": {"coding": [{"code": "service"}]}, "productOrService": {"text": "A1"}}],
    }
    body.update(extra)
    return body


def no_upstream_leak(answer):
    for marker in SP_ERROR_MARKERS:
        assert marker not in answer.text, f"{marker!r} leaked to the facility"
    assert "/api/api_fhir_r4" not in answer.text


# --- openIMIS eligibility working ------------------------------------------------------------------------


def test_policy_in_force(mediator, clean_sandbox):
    answer = ask(mediator, enquiry())
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/fhir+json")
    resource = answer.json()
    assert resource["resourceType"] == "CoverageEligibilityResponse"
    assert resource["outcome"] == "complete"
    assert len(resource["insurance"]) == 1 and resource["insurance"][0]["inforce"] is True
    assert resource["insurance"][0]["coverage"]["reference"].startswith("Coverage/")
    assert resource["disposition"].startswith("1 policy in force on ")
    assert resource["request"]["identifier"] == {"system": "urn:clinic:visits", "value": "V-2025-001"}
    assert "meta" not in resource or SOURCE_TAG not in json.dumps(resource["meta"])


def test_no_policy_is_a_201_without_insurance_upstream_and_says_so(mediator, clean_sandbox):
    resource = ask(mediator, enquiry("Patient/070707072")).json()
    assert "insurance" not in resource
    assert resource["disposition"].startswith("no policy in force on ")
    assert resource["outcome"] == "complete"


def test_patient_by_uuid_and_by_identifier(mediator, clean_sandbox):
    bundle = requests.get(
        mediator.url + "/fhir/Patient?identifier=070707070", headers=FHIR, timeout=10
    ).json()
    patient = bundle["entry"][0]["resource"]
    uuid = uuid_of(patient)
    by_uuid = ask(mediator, enquiry(f"Patient/{uuid}"))
    assert by_uuid.status_code == 200 and len(by_uuid.json()["insurance"]) == 1
    by_identifier = ask(mediator, enquiry({"identifier": {"value": "070707070"}}))
    assert by_identifier.status_code == 200 and len(by_identifier.json()["insurance"]) == 1


def test_module_fixture_names_an_insuree_chfid_that_does_not_exist(mediator, clean_sandbox):
    fixture = json.loads((FIXTURES / "openimis" / "test_coverageEligibilityRequest.json").read_text())
    answer = ask(mediator, fixture)
    assert answer.status_code == 422
    assert answer.json()["issue"][0]["expression"] == ["CoverageEligibilityRequest.patient"]

    fixture = copy.deepcopy(fixture)
    fixture["patient"] = {"reference": "Patient/070707070"}
    resource = ask(mediator, fixture).json()
    assert resource["insurance"][0]["inforce"] is True
    # STEST/ITEST are not in the sandbox catalogue: openIMIS flags them excluded, passed on as is.
    categories = {i["category"].get("text"): i for i in resource["insurance"][0]["item"]}
    assert categories["is_service_ok"]["excluded"] is True


def test_ig_example_references_joe_doe_which_is_not_a_patient_reference(mediator, clean_sandbox):
    ig = json.loads(
        (FIXTURES / "openimis" / "ig" / "CoverageEligibilityRequest-JoeDoeEnquiring.json").read_text()
    )
    answer = ask(mediator, ig)
    assert answer.status_code == 422
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["CoverageEligibilityRequest.patient.reference"]
    assert "joe-doe" in issue["diagnostics"]


@pytest.mark.parametrize(
    ("body", "status", "expressions"),
    [
        (b"{nope", 400, []),
        (b'{"resourceType": "Claim"}', 400, ["resourceType"]),
        (
            json.dumps(enquiry(item=[{"category": {"text": "drug"}}], servicedDate="soon")).encode(),
            422,
            [
                "CoverageEligibilityRequest.servicedDate",
                "CoverageEligibilityRequest.item[0].category",
                "CoverageEligibilityRequest.item[0].productOrService",
            ],
        ),
    ],
)
def test_bad_requests_are_operation_outcomes(mediator, clean_sandbox, body, status, expressions):
    answer = ask(mediator, body)
    assert answer.status_code == status
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"][0] for i in outcome["issue"] if "expression" in i] == expressions


def test_unknown_insuree_is_422(mediator, clean_sandbox):
    answer = ask(mediator, enquiry("Patient/999999999"))
    assert answer.status_code == 422
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["CoverageEligibilityRequest.patient"] and issue["code"] == "not-found"
    no_upstream_leak(answer)


def test_plain_text_body_is_415(mediator):
    answer = requests.post(
        mediator.url + "/fhir/CoverageEligibilityRequest",
        data=b"x",
        headers={"Content-Type": "text/plain", "Accept": "application/fhir+json"},
        timeout=10,
    )
    assert answer.status_code == 415


# --- openIMIS eligibility failing (PostgreSQL 24.04) --------------------------------------------------


def test_failing_eligibility_is_answered_from_coverage(mediator, clean_sandbox):
    faults(clean_sandbox, eligibility_mode="failing")
    answer = ask(mediator, enquiry())
    assert answer.status_code == 200, answer.text
    resource = answer.json()
    assert resource["meta"]["tag"][0] == {
        "system": SOURCE_TAG,
        "code": "coverage-fallback",
        "display": resource["meta"]["tag"][0]["display"],
    }
    assert resource["outcome"] == "complete"
    assert len(resource["insurance"]) == 1
    insurance = resource["insurance"][0]
    assert insurance["inforce"] is True and insurance["benefitPeriod"]["start"] == "2020-01-01"
    assert "eligibility service failed" in resource["disposition"]
    no_upstream_leak(answer)


def test_html_gateway_error_instead_of_an_answer_also_takes_the_fallback(mediator, clean_sandbox):
    faults(clean_sandbox, fail_next=1, fail_status=502)
    answer = ask(mediator, enquiry())
    assert answer.status_code == 200
    assert answer.json()["meta"]["tag"][0]["code"] == "coverage-fallback"
    no_upstream_leak(answer)


def test_failing_eligibility_that_coverage_cannot_vouch_for_is_502_not_not_covered(mediator, clean_sandbox):
    faults(clean_sandbox, eligibility_mode="failing")
    # The policy of 070707070 started 2020-01-01: in force today (so openIMIS fails), not in 2019.
    answer = ask(mediator, enquiry(servicedDate="2019-06-01"))
    assert answer.status_code == 502
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == "transient" and "unavailable" in issue["diagnostics"]
    assert "NOT mean the insuree is not covered" in issue["diagnostics"]
    no_upstream_leak(answer)


def test_through_openhim_the_fallback_is_visible_to_auditors(mediator, clean_sandbox):
    faults(clean_sandbox, eligibility_mode="failing")
    answer = ask(mediator, enquiry(), headers={"X-OpenHIM-TransactionID": "tx-elig-1"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json+openhim"
    envelope = answer.json()
    assert envelope["status"] == "Completed with error(s)"
    names = [o["name"] for o in envelope["orchestrations"]]
    assert names[-3:] == [
        "openIMIS eligibility request",
        "openIMIS insuree lookup (eligibility fallback)",
        "openIMIS coverage search (eligibility fallback), page 1",
    ]
    assert envelope["orchestrations"][-3]["response"]["status"] == 500
    assert envelope["properties"] == {
        "transaction": "coverage eligibility",
        "insuree_number": "070707070",
        "policies_in_force": "1",
        "eligibility_source": "coverage-fallback",
    }
    body = envelope["response"]["body"]
    assert json.loads(body)["resourceType"] == "CoverageEligibilityResponse"
    assert "EXEC" not in body and "<html" not in body
    assert "Bearer ey" not in answer.text and "admin123" not in answer.text

    working = ask(mediator, enquiry("Patient/070707072"), headers={"X-OpenHIM-TransactionID": "tx-elig-2"})
    assert working.json()["status"] == "Successful"
    assert working.json()["properties"]["eligibility_source"] == "openimis"

    unavailable = ask(
        mediator, enquiry(servicedDate="2019-06-01"), headers={"X-OpenHIM-TransactionID": "tx-elig-3"}
    )
    assert unavailable.status_code == 502 and unavailable.json()["status"] == "Failed"
    log_lines = [json.loads(line) for line in mediator.log().splitlines() if line.startswith("{")]
    summary = [line for line in log_lines if line.get("transaction_id") == "tx-elig-1"]
    assert summary[0]["outcome"] == "coverage-fallback"
    assert "Doe" not in json.dumps(summary) and "John" not in json.dumps(summary)


# --- insuree lookup ------------------------------------------------------------------------------------


def test_patient_search_found_empty_and_refused(mediator, clean_sandbox):
    found = requests.get(
        mediator.url + "/fhir/Patient?identifier=urn:openimis:chfid|070707073", headers=FHIR, timeout=10
    )
    assert found.status_code == 200
    bundle = found.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    patient = bundle["entry"][0]["resource"]
    assert patient["resourceType"] == "Patient"
    assert bundle["entry"][0]["fullUrl"] == f"{mediator.url}/fhir/Patient/{patient['id']}"
    assert "/api/api_fhir_r4" not in found.text

    empty = requests.get(mediator.url + "/fhir/Patient?identifier=999999999", headers=FHIR, timeout=10)
    assert empty.status_code == 200 and empty.json()["total"] == 0 and empty.json()["entry"] == []

    refused = requests.get(mediator.url + "/fhir/Patient", headers=FHIR, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["identifier"]


def test_patient_read_by_number_and_uuid_and_404(mediator, clean_sandbox):
    by_number = requests.get(mediator.url + "/fhir/Patient/070707073", headers=FHIR, timeout=10)
    assert by_number.status_code == 200
    assert by_number.json()["id"] == "070707073"  # as openIMIS answers: `id` is the insuree number
    uuid = next(
        i["value"] for i in by_number.json()["identifier"] if i["type"]["coding"][0]["code"] == "UUID"
    )
    by_uuid = requests.get(mediator.url + f"/fhir/Patient/{uuid}", headers=FHIR, timeout=10)
    assert by_uuid.json() == by_number.json()
    missing = requests.get(mediator.url + "/fhir/Patient/999999999", headers=FHIR, timeout=10)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"

    traced = requests.get(
        mediator.url + "/fhir/Patient?identifier=070707070",
        headers={**FHIR, "X-OpenHIM-TransactionID": "tx-pat-1"},
        timeout=10,
    ).json()
    assert traced["properties"] == {
        "transaction": "insuree search",
        "insuree_number": "070707070",
        "total": "1",
    }
    assert traced["orchestrations"][-1]["name"] == "openIMIS insuree search by insuree number"
