"""Incoming claims: parsed once, every problem reported at once with its FHIRPath."""

from __future__ import annotations

import copy

import pytest
from claim_fixtures import CLAIMS, FIXTURES, load

from mediator.fhir.outcome import FhirError
from mediator.transactions.claims.validation import claim_code, claim_key, parse_claim, validate_claim


@pytest.mark.parametrize("name", CLAIMS)
def test_fixture_claims_are_valid(name: str) -> None:
    claim = parse_claim((FIXTURES / name).read_bytes())
    assert validate_claim(claim) == []


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (b"{not json", ()),
        (b"", ()),
        (b"\xff\xfe\x00", ()),
        (b'{"resourceType": "Claim", "total": NaN}', ()),
        (b"[1, 2]", ("Claim",)),
        (b'"Claim"', ("Claim",)),
        (b'{"resourceType": "Patient"}', ("resourceType",)),
        (b'{"status": "active"}', ("resourceType",)),
    ],
)
def test_unreadable_bodies_are_400(body: bytes, expression: tuple[str, ...]) -> None:
    with pytest.raises(FhirError) as err:
        parse_claim(body)
    assert err.value.status == 400
    (issue,) = err.value.issues
    assert issue.code == "invalid"
    assert tuple(issue.expression) == expression


def test_a_claim_with_many_problems_gets_all_of_them() -> None:
    claim = load("test_claim.json")
    del claim["identifier"]
    del claim["created"]
    del claim["billablePeriod"]["start"]
    del claim["enterer"]
    claim["patient"] = {"reference": "Organization/6d0eea8c-62eb-11ea-94d6-c36229a16c2f"}
    claim["total"]["value"] = 0
    claim["type"]["coding"][0]["code"] = "X"
    claim["use"] = "payment"
    claim["supportingInfo"][0]["category"] = {"text": "receipt"}
    claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0].pop("code")
    claim["diagnosis"] += [copy.deepcopy(claim["diagnosis"][0]) for _ in range(5)]
    item, service = claim["item"]
    item["category"] = {"text": "drug"}
    item["quantity"]["value"] = 0
    service["unitPrice"]["value"] = -5
    del service["extension"]
    claim["item"].append(
        {
            "sequence": 3,
            "category": {"coding": [{"code": "service"}]},
            "productOrService": {"text": "X1"},
            "extension": [
                {"url": "https://x/claim-item-reference", "valueReference": {"reference": "Medication/A"}}
            ],
            "quantity": {"value": "abc"},
            "unitPrice": {"value": 1},
        }
    )
    claim["bogus"] = True

    issues = validate_claim(claim)
    got = {(i.code, i.expression[0]) for i in issues}
    assert all(len(i.expression) == 1 and i.diagnostics for i in issues)
    d = "diagnosisCodeableConcept.coding[0].code"
    assert got == {
        ("structure", "Claim.item[2].quantity.value"),
        ("structure", "Claim.bogus"),
        ("required", "Claim.identifier"),
        ("required", "Claim.created"),
        ("required", "Claim.billablePeriod.start"),
        ("required", "Claim.enterer"),
        ("invalid", "Claim.patient"),
        ("value", "Claim.total.value"),
        ("value", "Claim.type.coding[0].code"),
        ("value", "Claim.use"),
        ("value", "Claim.supportingInfo[0].category"),
        ("invalid", "Claim.diagnosis"),
        *{("required", f"Claim.diagnosis[{i}].{d}") for i in range(6)},
        ("value", "Claim.item[0].category"),
        ("value", "Claim.item[0].quantity.value"),
        ("required", "Claim.item[1].extension"),
        ("value", "Claim.item[1].unitPrice.value"),
        ("invalid", "Claim.item[2].extension[0].valueReference"),  # a service line referring to a Medication
    }
    assert all(i.severity == "error" for i in issues)


def test_missing_required_elements_are_reported_once() -> None:
    claim = load("test_claim.json")
    for name in ("provider", "type", "item"):
        del claim[name]
    got = {(i.code, i.expression[0]) for i in validate_claim(claim)}
    assert ("structure", "Claim.provider") in got
    assert ("structure", "Claim.type") in got
    assert ("required", "Claim.item") in got
    assert not any(e.startswith("Claim.type.") for _, e in got)
    assert not any(e == "Claim.provider" and c != "structure" for c, e in got)


def test_item_without_category_or_reference() -> None:
    claim = load("Claim-Claim001.json")
    del claim["item"][0]["category"]
    claim["item"][1]["extension"][0]["valueReference"] = {"display": "aspirin"}
    got = {(i.code, i.expression[0]) for i in validate_claim(claim)}
    assert got == {
        ("required", "Claim.item[0].category"),
        ("required", "Claim.item[1].extension[0].valueReference"),
    }


def test_leniencies_openimis_needs() -> None:
    # FHIR requires insurance (openIMIS ignores it) and zone-less times are openIMIS's own output.
    claim = load("test_claim.json")
    assert "insurance" not in claim
    claim["created"] = "2021-02-03T10:11:12"
    assert validate_claim(claim) == []
    claim["created"] = "yesterday"
    assert [i.expression[0] for i in validate_claim(claim)] == ["Claim.created"]


def test_claim_code_and_key() -> None:
    assert claim_key(load("test_claim.json")) == ("T00001", "6d0eea8c-62eb-11ea-94d6-c36229a16c2f")
    assert claim_key(load("test_claim_with_code_references.json")) == ("T00002", "12345678")
    assert claim_key(load("Claim-Claim001.json")) == ("Code001", "RaptaDistrictHospital")
    assert (
        claim_code({"identifier": [{"value": "A"}, {"type": {"coding": [{"code": "MR"}]}, "value": "B"}]})
        == "B"
    )
    assert claim_code({"identifier": [{"value": " "}, {"value": "A"}]}) == "A"
    assert claim_key({}) == ("", "")


def test_a_total_that_is_not_the_sum_of_the_lines_is_refused_on_claim_total() -> None:
    claim = load("test_claim.json")
    lines_sum = sum(i["quantity"]["value"] * i["unitPrice"]["value"] for i in claim["item"])
    assert claim["total"]["value"] == lines_sum and validate_claim(claim) == []
    claim["total"]["value"] = lines_sum + 1
    (issue,) = validate_claim(claim)
    assert issue.expression == ["Claim.total.value"] and issue.code == "value"
    assert f"{lines_sum:g}" in issue.diagnostics
    claim["total"]["value"] = lines_sum + 0.004  # a rounding of the facility's, not a disagreement
    assert validate_claim(claim) == []
