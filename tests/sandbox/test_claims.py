"""Claim submission, rule engine outcomes, late adjudication and openIMIS quirks."""

from __future__ import annotations

import pytest

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE, load_fixture, make_claim, uuid_of

STATUS_SYSTEM = "https://openimis.github.io/openimis_fhir_r4_ig/CodeSystem/claim-status"
REASON_SYSTEM = "https://openimis.github.io/openimis_fhir_r4_ig/CodeSystem/claim-rejection-reasons"


def _adjudication(item):
    return [
        (a["category"]["coding"][0]["code"], a["reason"]["coding"][0]["code"]) for a in item["adjudication"]
    ]


def _ref(item):
    return item["extension"][0]["valueReference"]["display"]


def test_positive_claim_is_checked(api):
    resp = api.post("Claim/", make_claim("C-POS-1"))
    assert resp.status_code == 201
    cr = resp.json
    assert cr["resourceType"] == "ClaimResponse"
    assert cr["outcome"] == "partial"
    codes = {i["type"]["coding"][0]["code"]: i["value"] for i in cr["identifier"]}
    assert codes["Code"] == "C-POS-1" and cr["id"] == "C-POS-1"  # as 24.04: the code, not the UUID
    # items first (0004), then services (A1), whatever the request order was
    assert [_ref(i) for i in cr["item"]] == ["0004", "A1"]
    assert [i["itemSequence"] for i in cr["item"]] == [1, 2]
    assert _adjudication(cr["item"][0]) == [("2", "0"), ("4", "0")]
    first = cr["item"][0]["adjudication"][0]
    assert first["category"]["coding"][0]["system"] == STATUS_SYSTEM
    assert first["reason"]["coding"][0] == {"system": REASON_SYSTEM, "code": "0", "display": "ACCEPTED"}
    assert first["amount"] == {"value": 10.0, "currency": "$"} and first["value"] == 2.0
    assert [t["category"]["coding"][0]["code"] for t in cr["total"]] == ["2", "4"]
    assert cr["total"][1]["amount"]["value"] == 30.0
    assert cr["patient"]["reference"] == "Patient/070707070"
    assert cr["requestor"]["reference"] == "Practitioner/JMDP0011"
    assert cr["request"]["reference"] == "ClaimV2/C-POS-1"
    assert cr["item"][0]["extension"][0]["url"].endswith("/StructureDefinition/claim-item-reference")


def test_response_shape_matches_module_fixture(api):
    fixture = load_fixture("test_claimResponse.json")
    cr = api.post("Claim/", make_claim("C-SHAPE")).json
    assert set(fixture) <= set(cr)
    assert set(fixture["item"][0]) == set(cr["item"][0])
    assert set(fixture["item"][0]["adjudication"][0]) == set(cr["item"][0]["adjudication"][0])


def test_negative_claim_not_in_price_list(api):
    body = make_claim(
        "C-NEG-1",
        facility="HF0003",
        admin="JMDP0013",
        lines=[("service", "S1", 1, 150.0), ("item", "0099", 1, 6.0)],
    )
    cr = api.post("Claim/", body).json
    assert cr["outcome"] == "complete"
    assert "total" not in cr
    for item in cr["item"]:
        assert _adjudication(item) == [("1", "2")]
        assert item["adjudication"][0]["reason"]["coding"][0]["display"] == "NOT IN PRICE LIST"
    summary = api.control("claims").json["claims"][0]
    assert summary["status"] == 1 and summary["status_name"] == "rejected"


def test_partly_rejected_claim_is_positive(api):
    body = make_claim(
        "C-MIX-1",
        facility="HF0003",
        admin="JMDP0013",
        lines=[("service", "A1", 1, 10.0), ("service", "S1", 1, 150.0)],
    )
    cr = api.post("Claim/", body).json
    assert cr["outcome"] == "partial"
    by_code = {_ref(i): _adjudication(i) for i in cr["item"]}
    assert by_code == {"A1": [("2", "0"), ("4", "0")], "S1": [("1", "2")]}
    totals = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in cr["total"]}
    assert totals == {"2": 160.0, "4": 10.0}


@pytest.mark.parametrize("chf", ["070707071", "070707072"])
def test_no_policy_in_force_rejects_with_reason_3(api, chf):
    cr = api.post("Claim/", make_claim(f"C-NOPOL-{chf}", patient=f"Patient/{chf}")).json
    assert cr["outcome"] == "complete"
    assert {_adjudication(i)[0] for i in cr["item"]} == {("1", "3")}


def test_expired_policy_still_covers_care_inside_its_period(api):
    cr = api.post("Claim/", make_claim("C-2019", patient="Patient/070707071", day="2019-06-01")).json
    assert cr["outcome"] == "partial"


def test_target_date_reason_9(api):
    cr = api.post("Claim/", make_claim("C-DATE", day="2024-05-02", created="2024-05-01")).json
    assert cr["outcome"] == "complete"
    assert {_adjudication(i)[0] for i in cr["item"]} == {("1", "9")}


def test_historical_insuree_row_reason_7(api):
    cr = api.post("Claim/", make_claim("C-HIST", patient="Patient/070707073")).json
    assert cr["outcome"] == "complete"
    assert {_adjudication(i)[0] for i in cr["item"]} == {("1", "7")}
    assert cr["item"][0]["adjudication"][0]["reason"]["coding"][0]["display"] == "FAMILY"
    found = api.get("Patient/?identifier=070707073").json
    assert found["id"] == "070707073"  # as 24.04: `id` is the insuree number, which resolves to row 1
    cr = api.post("Claim/", make_claim("C-CURR", patient=f"Patient/{uuid_of(found)}")).json
    assert cr["outcome"] == "partial"
    assert cr["patient"]["reference"] == "Patient/070707073"


def test_queued_prefix_then_adjudicate_later(api):
    cr = api.post("Claim/", make_claim("Q-0001")).json
    assert cr["outcome"] == "queued"
    assert {tuple(_adjudication(i)) for i in cr["item"]} == {(("2", "0"),)}
    assert [t["category"]["coding"][0]["code"] for t in cr["total"]] == ["2"]
    assert api.get("ClaimResponse/Q-0001/").json["outcome"] == "queued"
    resp = api.control("adjudicate", {"claim_code": "Q-0001", "status": "checked"})
    assert resp.status_code == 200
    assert api.get("ClaimResponse/Q-0001/").json["outcome"] == "partial"
    api.control("adjudicate", {"claim_code": "Q-0001", "status": "valuated", "reasons": {"0004": -1}})
    cr = api.get(f"ClaimResponse/{cr['id']}/").json
    assert cr["outcome"] == "complete"
    by_code = {_ref(i): _adjudication(i) for i in cr["item"]}
    assert by_code["A1"] == [("2", "0"), ("4", "0"), ("8", "0"), ("16", "0")]
    assert by_code["0004"] == [("1", "-1")]
    assert [t["category"]["coding"][0]["code"] for t in cr["total"]] == ["2", "4", "8", "16"]


def test_queued_claim_adjudicated_negative(api):
    api.post("Claim/", make_claim("Q-0002"))
    api.control("adjudicate", {"claim_code": "Q-0002", "status": "rejected"})
    cr = api.get("ClaimResponse/Q-0002/").json
    assert cr["outcome"] == "complete" and "total" not in cr
    assert {_adjudication(i)[0] for i in cr["item"]} == {("1", "-1")}


def test_adjudicate_unknown_claim_is_404(api):
    assert api.control("adjudicate", {"claim_code": "nope", "status": "checked"}).status_code == 404


def test_deferred_mode_queues_everything():
    client = create_sandbox_app(SandboxConfig(claim_adjudication="deferred")).test_client()
    token = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"}).json
    resp = client.post(
        BASE + "Claim/", json=make_claim("C-DEF"), headers={"Authorization": "Bearer " + token["token"]}
    )
    assert resp.json["outcome"] == "queued"


def test_duplicate_claim_code(api):
    assert api.post("Claim/", make_claim("C-DUP")).status_code == 201
    resp = api.post("Claim/", make_claim("C-DUP"))
    assert resp.status_code == 500
    assert resp.json["issue"][0]["details"]["text"] == "Claim with code 'C-DUP' already exists."
    # unique per facility
    other = make_claim("C-DUP", facility="HF0002", admin="JMDP0012")
    assert api.post("Claim/", other).status_code == 201
    claims = api.control("claims").json
    assert claims["submissions"]["C-DUP"] == 3
    assert claims["accepted"]["C-DUP"] == 2


def test_category_coding_only_is_500(api):
    body = make_claim("C-CAT")
    body["item"][0]["category"] = {"coding": [{"code": "service"}]}
    resp = api.post("Claim/", body)
    assert resp.status_code == 500
    assert "Unknown item category: `None`" in resp.json["issue"][0]["details"]["text"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("created"), "Missing `created` attribute"),
        (lambda b: b.pop("identifier"), "Missing or invalid `identifier` attribute"),
        (lambda b: b.update(patient={"reference": "Patient/000000000"}), "`patient` reference"),
        (lambda b: b.update(provider={"reference": "Organization/XX"}), "`provider` reference"),
        (lambda b: b.update(enterer={"reference": "Practitioner/XX"}), "`enterer` reference"),
        (lambda b: b.pop("billablePeriod"), "'billable_period'"),
        (lambda b: b.update(total={"value": 0}), "Missing `total` attribute"),
        (lambda b: b.update(type={"coding": [{"code": "X"}]}), "`type` attribute"),
        (lambda b: b.update(diagnosis=[]), "`diagnosis` attribute"),
        (
            lambda b: b.update(supportingInfo=[{"category": {"coding": [{"code": "other"}]}}]),
            "Unknown supporting info category: `other`",
        ),
    ],
)
def test_validation_errors_are_500(api, mutate, message):
    body = make_claim("C-VAL")
    mutate(body)
    resp = api.post("Claim/", body)
    assert resp.status_code == 500
    text = resp.json["issue"][0]["details"]["text"]
    assert text.startswith("The request cannot be processed due to the following issues:")
    assert message in text
    assert api.control("claims").json["claims"] == []


def test_unknown_icd_and_unknown_item_are_500(api):
    resp = api.post("Claim/", make_claim("C-ICD", icd=["ZZZ"]))
    assert resp.status_code == 500
    assert resp.json["issue"][0]["details"]["text"] == "Diagnosis matching query does not exist."
    resp = api.post("Claim/", make_claim("C-ITEM", lines=[("item", "9999", 1, 1.0)]))
    assert resp.status_code == 500


def test_references_by_uuid_and_identifier(api, client):
    seed = client.get("/_sandbox/seed").json
    hf = next(f for f in seed["facilities"] if f["code"] == "HF0002")
    body = make_claim("C-UUID", facility=hf["uuid"], admin="JMDP0012")
    body["patient"] = {"type": "Patient", "identifier": {"value": "070707070"}}
    cr = api.post("Claim/", body).json
    assert cr["outcome"] == "partial"


def test_claim_read_list_and_identifier_quirk(api):
    cr = api.post("Claim/", make_claim("C-READ")).json
    claim = api.get(f"Claim/{cr['id']}/").json
    assert claim["resourceType"] == "Claim"
    assert [i["productOrService"]["text"] for i in claim["item"]] == ["0004", "A1"]
    resp = api.get("Claim/?identifier=C-READ")
    assert resp.status_code == 500
    assert resp.json["issue"][0]["details"]["text"] == "'Insuree' object has no attribute 'code'"
    assert api.get("Claim/").json["total"] == 1
    assert api.get("ClaimResponse/").json["entry"][0]["resource"]["id"] == cr["id"]
    assert api.get("ClaimResponse/unknown-code/").status_code == 500


def test_module_fixture_test_claim_is_accepted(api):
    cr = api.post("Claim/", load_fixture("test_claim.json"))
    assert cr.status_code == 201
    cr = cr.json
    assert cr["outcome"] == "partial"
    # As 24.04 answers: references by code, whatever the claim referenced them by.
    assert cr["patient"]["reference"] == "Patient/999000001"
    assert cr["requestor"]["reference"] == "Practitioner/VITEST99"
    refs = [i["extension"][0]["valueReference"]["reference"] for i in cr["item"]]
    assert refs == ["Medication/0004", "ActivityDefinition/M7"]


def test_module_fixture_with_code_references_is_accepted(api):
    cr = api.post("Claim/", load_fixture("test_claim_with_code_references.json")).json
    assert cr["outcome"] == "partial"


def test_ig_example_claim_is_rejected_by_converter(api):
    resp = api.post("Claim/", load_fixture("ig/Claim-Claim001.json"))
    assert resp.status_code == 500
    text = resp.json["issue"][0]["details"]["text"]
    for part in (
        "`provider` reference",
        "`patient` reference",
        "`enterer` reference",
        "Unknown item category: `None`",
    ):
        assert part in text
