"""OpenHIE steps 1/4 over HTTP, as a facility system and as OpenHIM would call the mediator."""

import json

import pytest
import requests

FHIR = {"Accept": "application/fhir+json"}


def get(mediator, path, **kwargs):
    kwargs.setdefault("headers", FHIR)
    return requests.get(mediator.url + path, timeout=10, **kwargs)


@pytest.mark.parametrize("resource_type", ["Medication", "ActivityDefinition"])
def test_paging_through_the_whole_list_follows_public_links(mediator, resource_type):
    url = f"{mediator.url}/fhir/{resource_type}?_count=2"
    seen, pages = [], 0
    while url:
        answer = requests.get(url, headers=FHIR, timeout=10)
        assert answer.status_code == 200
        bundle = answer.json()
        assert "/api/api_fhir_r4" not in answer.text, "the upstream host must never reach a client"
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert links["self"].startswith(mediator.url + "/fhir/")
        url = links.get("next")
        pages += 1
        assert pages < 20
    assert len(seen) == len(set(seen)) == bundle["total"]
    assert pages == (bundle["total"] + 1) // 2


def test_identifier_search_is_a_searchset_even_though_openimis_answers_bare(mediator):
    bundle = get(mediator, "/fhir/Medication?identifier=0004").json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 1
    medication = bundle["entry"][0]["resource"]
    assert medication["code"]["text"] == "Paracetamol" or "0004" in json.dumps(medication["identifier"])
    assert bundle["entry"][0]["fullUrl"] == f"{mediator.url}/fhir/Medication/{medication['id']}"

    services = get(mediator, "/fhir/ActivityDefinition?identifier=A1").json()
    assert services["total"] == 1 and services["entry"][0]["resource"]["name"] == "A1"


def test_unknown_identifier_is_an_empty_searchset_not_an_error(mediator):
    answer = get(mediator, "/fhir/Medication?identifier=NOPE99")
    assert answer.status_code == 200
    assert answer.json()["total"] == 0 and answer.json()["entry"] == []


def test_read_by_uuid_and_by_code(mediator):
    by_code = get(mediator, "/fhir/Medication/0004")
    assert by_code.status_code == 200
    by_uuid = get(mediator, f"/fhir/Medication/{by_code.json()['id']}")
    assert by_uuid.json() == by_code.json()
    assert get(mediator, "/fhir/ActivityDefinition/A1").json()["title"] == "General Consultation"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "expression"),
    [
        ("GET", "/fhir/Medication/UNKNOWN1", {}, 404, None),
        ("GET", "/fhir/Medication?_count=many", {}, 400, "_count"),
        ("GET", "/fhir/Medication?_lastUpdated=yesterday", {}, 400, "_lastUpdated"),
        ("GET", "/fhir/Observation", {}, 404, None),
        ("DELETE", "/fhir/Medication/0004", {}, 405, None),
        ("GET", "/fhir/Medication", {"headers": {"Accept": "application/xml"}}, 406, None),
        (
            "POST",
            "/fhir/Medication",
            {"data": b"x" * 300_000, "headers": {"Content-Type": "application/fhir+json"}},
            413,
            None,
        ),
    ],
)
def test_errors_are_operation_outcomes_with_the_right_status(
    mediator, method, path, kwargs, status, expression
):
    answer = requests.request(method, mediator.url + path, timeout=10, **kwargs)
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/fhir+json")
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] == "error" and issue["diagnostics"]
    if expression:
        assert issue["expression"] == [expression]
    assert "Traceback" not in answer.text and "<html" not in answer.text.lower()


def test_metadata_lists_what_is_served(mediator):
    capability = get(mediator, "/fhir/metadata").json()
    assert capability["resourceType"] == "CapabilityStatement" and capability["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in capability["rest"][0]["resource"]}
    assert {"ActivityDefinition", "Medication"} <= set(resources)
    assert {i["code"] for i in resources["Medication"]["interaction"]} == {"read", "search-type"}


def test_through_openhim_the_answer_is_an_envelope_with_orchestrations(mediator):
    answer = get(
        mediator, "/fhir/Medication?_count=3", headers={**FHIR, "X-OpenHIM-TransactionID": "tx-abc-1"}
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json+openhim"
    envelope = answer.json()
    assert envelope["x-mediator-urn"] == "urn:mediator:openimis-fhir-r4"
    assert envelope["status"] == "Successful"
    response = envelope["response"]
    assert response["status"] == 200 and isinstance(response["body"], str)
    assert response["headers"]["Content-Type"].startswith("application/fhir+json")
    assert json.loads(response["body"])["resourceType"] == "Bundle"
    names = [o["name"] for o in envelope["orchestrations"]]
    assert names[-1] == "openIMIS medical items list"
    for orchestration in envelope["orchestrations"]:
        assert orchestration["request"]["timestamp"].endswith("+00:00")
        assert orchestration["response"]["timestamp"].endswith("+00:00")
    assert "Bearer ey" not in answer.text and "admin123" not in answer.text
    assert envelope["properties"]["transaction"] == "medical items search"

    log_lines = [json.loads(line) for line in mediator.log().splitlines() if line.startswith("{")]
    summary = [line for line in log_lines if line.get("transaction_id") == "tx-abc-1"]
    assert [line["message"] for line in summary] == ["transaction"]
    assert summary[0]["status"] == 200 and summary[0]["upstream"][-1]["name"] == "openIMIS medical items list"


def test_logs_are_json_lines_without_secrets(mediator):
    get(mediator, "/fhir/Medication/0004", headers={**FHIR, "X-OpenHIM-TransactionID": "tx-log-2"})
    log = mediator.log()
    for line in log.splitlines():
        if line.strip():
            json.loads(line)  # every line is one JSON object
    assert "admin123" not in log and "Bearer ey" not in log
