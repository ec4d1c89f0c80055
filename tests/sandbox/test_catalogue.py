"""Lists, paging links, identifier searches and reads."""

from __future__ import annotations

from urllib.parse import quote_plus, unquote_plus

import pytest

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE, load_fixture, uuid_of


def _links(bundle):
    return {link["relation"]: link["url"] for link in bundle["link"]}


def test_medication_paging_links_are_quote_plus_encoded(api):
    bundle = api.get("Medication/?_count=2&page-offset=2").json
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == 9
    assert len(bundle["entry"]) == 2
    links = _links(bundle)
    # As 24.04: the whole URL quote_plus-encoded, scheme included.
    assert links["self"] == quote_plus("http://localhost/api/api_fhir_r4/Medication/?_count=2&page-offset=2")
    assert links["next"] == quote_plus("http://localhost/api/api_fhir_r4/Medication/?_count=2&page-offset=3")
    assert links["previous"] == quote_plus("http://localhost/api/api_fhir_r4/Medication/?_count=2")
    # following the decoded next link works
    nxt = unquote_plus(links["next"]).split("localhost", 1)[1]
    assert api.client.get(nxt, headers=api.headers).json["entry"][0]["resource"]["id"]
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == "http://localhost/api/api_fhir_r4/Medication/" + entry["resource"]["id"]


def test_plain_link_style():
    client = create_sandbox_app(SandboxConfig(link_style="plain")).test_client()
    token = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"}).json
    bundle = client.get(
        BASE + "Medication/?_count=4", headers={"Authorization": "Bearer " + token["token"]}
    ).json
    assert _links(bundle)["next"].endswith("/Medication/?_count=4&page-offset=2")


def test_default_page_size_and_last_page(api):
    bundle = api.get("ActivityDefinition/").json
    assert bundle["total"] == 9 and len(bundle["entry"]) == 9
    assert set(_links(bundle)) == {"self"}
    last = api.get("Medication/?_count=4&page-offset=3").json
    assert len(last["entry"]) == 1 and "next" not in _links(last)


def test_page_out_of_range_is_404(api):
    resp = api.get("Medication/?_count=4&page-offset=9")
    assert resp.status_code == 404
    assert resp.json["issue"][0]["details"]["text"] == "Invalid page."


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gt2024-01-01T00:00:00", {"S1", "H1"}),
        ("lt2019-06-01", {"A1", "A2"}),
        ("eq2020-03-15", {"L1", "L2"}),
        ("ge2023-11-02T14:05:00", {"L3", "S1", "H1"}),
    ],
)
def test_last_updated_filter(api, query, expected):
    bundle = api.get(f"ActivityDefinition/?_lastUpdated={query}").json
    assert {e["resource"]["name"] for e in bundle["entry"]} == expected


def test_last_updated_invalid_is_500(api):
    assert api.get("Medication/?_lastUpdated=yesterday").status_code == 500


def test_activity_definition_shape_matches_module_fixture(api):
    fixture = load_fixture("test_activity_definition.json")
    res = api.get("ActivityDefinition/A1/").json
    assert set(res) == set(fixture)
    assert [e["url"] for e in res["extension"]] == [e["url"] for e in fixture["extension"]]
    assert res["name"] == "A1" and res["title"] == "General Consultation"
    assert res["extension"][0]["valueMoney"] == {"value": 10.0, "currency": "$"}
    assert api.get(f"ActivityDefinition/{res['id']}/").json["name"] == "A1"


def test_medication_identifier_gives_bare_resource(api):
    fixture = load_fixture("test_medication.json")
    res = api.get("Medication/?identifier=0004").json
    assert res["resourceType"] == "Medication"
    assert res["id"] == "e2bc1546-390b-4d41-8571-632ecf7a0936"
    # 0004 has no frequency: 24.04 then leaves that extension out (real capture: 0002).
    expected = [e["url"] for e in fixture["extension"] if not e["url"].endswith("medication-frequency")]
    assert [e["url"] for e in res["extension"]] == expected
    assert res["extension"][0]["url"].endswith("/CodeSystem/unit-price")
    assert api.get("Medication/0004/").json["id"] == res["id"]
    assert api.get(f"Medication/{res['id']}/").json["code"]["text"] == "PARACETAMOL TABS 500MG"


def test_read_missing_is_500_identifier_missing_is_404(api):
    resp = api.get("Medication/9999/")
    assert resp.status_code == 500
    assert resp.json["issue"][0]["severity"] == "error"
    resp = api.get("Patient/?identifier=123456789")
    assert resp.status_code == 404
    assert resp.json["issue"][0]["code"] == "not-found"


def test_patient_identifier_and_read(api):
    res = api.get("Patient/?identifier=070707070").json
    assert res["resourceType"] == "Patient"
    codes = {i["type"]["coding"][0]["code"]: i["value"] for i in res["identifier"]}
    assert codes["Code"] == "070707070" == res["id"]  # as 24.04: `id` is the insuree number
    assert api.get(f"Patient/{codes['UUID']}/").json["id"] == res["id"]
    assert api.get("Patient/070707070/").json["id"] == res["id"]


def test_twin_insuree_identifier_gives_current_row(api, app):
    store = app.extensions["openimis_sandbox"].store
    rows = [i for i in store.insurees if i.chf_id == "070707073"]
    assert len(rows) == 2 and rows[0].validity_to is not None
    res = api.get("Patient/?identifier=070707073").json
    assert uuid_of(res) == rows[1].uuid
    bundle = api.get("Patient/?_count=50").json
    assert rows[0].uuid not in {uuid_of(e["resource"]) for e in bundle["entry"]}


def test_coverage_by_patient(api):
    """As 24.04: `beneficiary` filters nothing, and a Coverage has no `id` (UUID and ACSN identifiers)."""
    bundle = api.get("Coverage/?beneficiary=Patient/070707070").json
    assert bundle["total"] == len(api.get("Coverage/").json["entry"]) > 1
    entries = bundle["entry"]
    assert all("fullUrl" not in e and "id" not in e["resource"] for e in entries)
    cov = next(
        e["resource"] for e in entries if e["resource"]["beneficiary"]["reference"] == "Patient/070707070"
    )
    assert cov["status"] == "active"
    assert cov["class"][0]["value"] == "BHC"
    assert [i["type"]["coding"][0]["code"] for i in cov["identifier"]] == ["UUID", "ACSN"]
    assert api.get(f"Coverage/{uuid_of(cov)}/").json["period"] == cov["period"]
    expired = next(
        e["resource"] for e in entries if e["resource"]["beneficiary"]["reference"] == "Patient/070707071"
    )
    assert expired["status"] == "cancelled" and expired["period"]["end"] == "2019-12-31"


def test_organization_and_practitioner_search(api):
    orgs = api.get("Organization/?type=prov&code=HF0001").json
    assert orgs["total"] == 1
    org = orgs["entry"][0]["resource"]
    assert org["name"] == "Rapta District Hospital"
    assert api.get("Organization/HF0001/").json["id"] == org["id"]
    cas = api.get("Practitioner/?resourceType=ca&code=JMDP0011").json
    assert cas["total"] == 1
    assert api.get("Practitioner/JMDP0011/").json["id"] == cas["entry"][0]["resource"]["id"]


def test_seed_endpoint(client):
    seed = client.get("/_sandbox/seed").json
    assert {f["code"] for f in seed["facilities"]} >= {"HF0001", "HF0002", "HF0003"}
    assert "070707070" in {i["chf_id"] for i in seed["insurees"]}
