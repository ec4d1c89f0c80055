"""Normalisation: a standard FHIR claim becomes one openIMIS accepts, the input untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from claim_fixtures import CLAIMS, load

from mediator.transactions.claims.normalise import ItemRef, normalise_claim, with_patient_uuid
from mediator.transactions.claims.validation import validate_claim

IDS = "https://openimis.github.io/openimis_fhir_r4_ig/CodeSystem/openimis-identifiers"


def id_types(claim: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    return [
        (i["type"]["coding"][0].get("system"), i["type"]["coding"][0]["code"], i["value"])
        for i in claim["identifier"]
    ]


@pytest.mark.parametrize("name", CLAIMS)
def test_normalisation_does_not_mutate_and_stays_valid(name: str) -> None:
    claim = load(name)
    before = copy.deepcopy(claim)
    normalised = normalise_claim(claim)
    assert claim == before
    assert normalised.claim is not claim
    assert validate_claim(normalised.claim) == []
    for item in normalised.claim["item"]:
        assert item["category"]["text"] in ("item", "service")
        assert "/" in item["extension"][0]["valueReference"]["reference"]
    code = normalised.claim["identifier"][0]["value"]
    assert {(IDS, "Code", code), (IDS, "MR", code)} <= set(id_types(normalised.claim))
    # patching the patient does not touch the normalised claim either
    snapshot = copy.deepcopy(normalised.claim)
    with_patient_uuid(normalised, "0f6a2c1e-0000-4000-8000-000000000001")
    assert normalised.claim == snapshot


def test_ig_claim_coding_only_categories_are_filled() -> None:
    normalised = normalise_claim(load("Claim-Claim001.json"))
    service, item = normalised.claim["item"]
    assert service["category"]["text"] == "service"
    assert service["category"]["coding"][0]["code"] == "service"  # the coding is kept
    assert item["category"]["text"] == "item"
    assert normalised.patient_chfid == "john-doe"  # Patient/<not a UUID> is an insuree number
    assert normalised.item_refs == [
        ItemRef(
            1,
            "service",
            "GeneralConsultationService",
            1.0,
            40.0,
            "EUR",
            ("GeneralConsultationService", "General Consultation"),
        ),
        ItemRef(
            2,
            "item",
            "AspirinMedication",
            2.0,
            10.0,
            "EUR",
            ("AspirinMedication", "ACETYLSALICYLIC ACID (ASPIRIN) TABS 300MG"),
        ),
    ]
    assert normalised.item_refs[1].submitted == 20.0


def test_identifier_references_become_literal_references() -> None:
    normalised = normalise_claim(load("test_claim_with_code_references.json"))
    claim = normalised.claim
    assert claim["provider"]["reference"] == "Organization/12345678"
    assert claim["enterer"]["reference"] == "Practitioner/VITEST99"
    assert claim["provider"]["identifier"]["value"] == "12345678"  # kept for readers
    refs = [i["extension"][0]["valueReference"]["reference"] for i in claim["item"]]
    assert refs == ["Medication/0004", "ActivityDefinition/M7"]
    assert normalised.patient_chfid == "999000001"
    assert [(r.sequence, r.kind, r.ref) for r in normalised.item_refs] == [
        (1, "item", "0004"),
        (2, "service", "M7"),
    ]

    sent = with_patient_uuid(normalised, "76aca309-f8cf-4890-8f2e-b416d78de00b")
    assert sent["patient"] == {
        "reference": "Patient/76aca309-f8cf-4890-8f2e-b416d78de00b",
        "type": "Patient",
        "display": "999000001",
    }
    assert sent["item"] is claim["item"]


def test_reference_type_is_taken_from_the_line_category() -> None:
    claim = load("Claim-Claim001.json")
    claim["provider"] = {"identifier": {"value": "HF0001"}}
    claim["item"][0]["extension"][0]["valueReference"] = {"identifier": {"value": "M7"}}
    normalised = normalise_claim(claim).claim
    assert normalised["provider"]["reference"] == "Organization/HF0001"
    assert normalised["item"][0]["extension"][0]["valueReference"]["reference"] == "ActivityDefinition/M7"


@pytest.mark.parametrize(
    ("patient", "reference", "chfid"),
    [
        (
            {"reference": "Patient/76aca309-f8cf-4890-8f2e-b416d78de00b"},
            "Patient/76aca309-f8cf-4890-8f2e-b416d78de00b",
            None,
        ),
        ({"reference": "Patient/070707070"}, "Patient/070707070", "070707070"),
        ({"identifier": {"value": "070707070"}}, None, "070707070"),
        (
            {"type": "Patient", "identifier": {"value": "76ACA309-F8CF-4890-8F2E-B416D78DE00B"}},
            "Patient/76ACA309-F8CF-4890-8F2E-B416D78DE00B",
            None,
        ),
        ({"reference": "#Patient/AAAA08B5"}, "#Patient/AAAA08B5", None),
    ],
)
def test_patient_forms(patient: dict[str, Any], reference: str | None, chfid: str | None) -> None:
    claim = load("test_claim.json")
    claim["patient"] = patient
    normalised = normalise_claim(claim)
    assert normalised.claim["patient"].get("reference") == reference
    assert normalised.patient_chfid == chfid


@pytest.mark.parametrize(
    "identifiers",
    [
        [{"value": "C1"}],
        [{"type": {"coding": [{"system": IDS, "code": "MR"}]}, "value": "C1"}],
        [{"type": {"coding": [{"code": "Code"}]}, "value": "C1", "use": "official"}],
        [
            {"type": {"coding": [{"system": IDS, "code": "Code"}]}, "value": "C1"},
            {"type": {"coding": [{"system": IDS, "code": "MR"}]}, "value": "C1"},
        ],
    ],
)
def test_claim_code_is_sent_typed_code_and_mr(identifiers: list[dict[str, Any]]) -> None:
    claim = load("test_claim.json")
    claim["identifier"] = [*identifiers, {"system": "urn:facility", "value": "local-9"}]
    out = normalise_claim(claim).claim["identifier"]
    typed = sorted(i["type"]["coding"][0]["code"] for i in out if "type" in i)
    assert typed == ["Code", "MR"]
    assert all(i["value"] == "C1" for i in out if "type" in i)
    assert all(i["type"]["coding"][0]["system"] == IDS for i in out if "type" in i)
    assert out[-1] == {"system": "urn:facility", "value": "local-9"}


def test_item_reference_extension_is_moved_first_and_supporting_info_completed() -> None:
    claim = load("test_claim.json")
    claim["item"][0]["extension"].insert(0, {"url": "urn:other", "valueString": "x"})
    claim["supportingInfo"][0]["category"] = {"text": "Guarantee"}
    out = normalise_claim(claim).claim
    exts = out["item"][0]["extension"]
    assert exts[0]["url"].endswith("claim-item-reference")
    assert exts[1] == {"url": "urn:other", "valueString": "x"}
    category = out["supportingInfo"][0]["category"]
    assert category["coding"][0]["code"] == "guarantee"  # what openIMIS reads
    assert category["text"] == "Guarantee"
    assert out["supportingInfo"][1]["category"]["text"] == "explanation"
