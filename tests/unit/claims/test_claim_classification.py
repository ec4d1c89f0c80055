"""openIMIS's ClaimResponse, classified and made readable from standard FHIR fields."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse

from mediator.transactions.claims.classification import (
    ADJUDICATION_SYSTEM,
    OUTCOME_TAG_SYSTEM,
    REJECTION_REASONS,
    ClaimOutcome,
    classify,
)
from mediator.transactions.claims.normalise import ItemRef, normalise_claim

FIXTURES = Path(__file__).parent / "fixtures"
IG = "https://openimis.github.io/openimis_fhir_r4_ig/"
STATUS = {1: "rejected", 2: "entered", 4: "checked", 8: "processed", 16: "valuated"}
UUID_A = "e2bc1546-390b-4d41-8571-632ecf7a0936"
UUID_B = "0b7e7a5e-0e36-4b7b-8a8b-6d8e1d5f0002"
UUID_S = "a17602f4-e9ff-4f42-a6a4-ccefcb23b4d6"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def adj(status: int, price: float, qty: float, reason: int = 0) -> dict[str, Any]:
    return {
        "category": {
            "coding": [
                {"system": IG + "CodeSystem/claim-status", "code": str(status), "display": STATUS[status]}
            ]
        },
        "reason": {
            "coding": [
                {
                    "system": IG + "CodeSystem/claim-rejection-reasons",
                    "code": str(reason),
                    "display": REJECTION_REASONS[reason],
                }
            ]
        },
        "amount": {"value": price, "currency": "$"},
        "value": qty,
    }


def line(seq: int, rtype: str, uuid: str, code: str, *adjudications: dict[str, Any]) -> dict[str, Any]:
    return {
        "extension": [
            {
                "url": IG + "StructureDefinition/claim-item-reference",
                "valueReference": {
                    "reference": f"{rtype}/{uuid}",
                    "type": rtype,
                    "identifier": {"type": {"coding": [{"code": "UUID"}]}, "value": uuid},
                    "display": code,
                },
            }
        ],
        "itemSequence": seq,
        "adjudication": list(adjudications),
    }


def codes_by_sequence(claim_response: dict[str, Any]) -> dict[int, str]:
    return {i["itemSequence"]: i["extension"][0]["valueReference"]["display"] for i in claim_response["item"]}


def total(status: int, value: float) -> dict[str, Any]:
    return {
        "category": {"coding": [{"system": IG + "CodeSystem/claim-status", "code": str(status)}]},
        "amount": {"value": value, "currency": "$"},
    }


def response(
    outcome: str, items: list[dict[str, Any]], totals: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "identifier": [
            {
                "type": {"coding": [{"system": IG + "CodeSystem/openimis-identifiers", "code": "UUID"}]},
                "value": "ae580700-0277-4c98-adab-d98c0f7e681b",
            },
            {
                "type": {"coding": [{"system": IG + "CodeSystem/openimis-identifiers", "code": "Code"}]},
                "value": "CLM-1",
            },
        ],
        "status": "active",
        "type": {"coding": [{"code": "O"}]},
        "use": "claim",
        "patient": {"reference": "Patient/76aca309-f8cf-4890-8f2e-b416d78de00b"},
        "created": "2024-05-02",
        "insurer": {"reference": "openIMIS"},
        "outcome": outcome,
        "item": items,
    }
    if totals:
        r["total"] = totals
    return r


#: The request: item A by code, service S by UUID, item B by code. openIMIS answers items first.
REQUEST = [
    ItemRef(1, "item", "0004", 10.0, 10.0, "$", ("0004",)),
    ItemRef(2, "service", UUID_S, 1.0, 800.0, "$", (UUID_S, "M7")),
    ItemRef(3, "item", "0099", 2.0, 5.0, "$", ("0099",)),
]


def assert_valid_fhir(resource: dict[str, Any]) -> None:
    ClaimResponse.model_validate(resource)


def categories(item: dict[str, Any]) -> dict[str, float]:
    return {
        a["category"]["coding"][0]["code"]: a["amount"]["value"]
        for a in item["adjudication"]
        if a["category"]["coding"][0]["system"] == ADJUDICATION_SYSTEM
    }


def tag(resource: dict[str, Any]) -> str:
    (t,) = [t for t in resource["meta"]["tag"] if t["system"] == OUTCOME_TAG_SYSTEM]
    return t["code"]


def test_openimis_fixture_response_is_queued() -> None:
    refs = normalise_claim(load("test_claim.json")).item_refs
    raw = load("test_claimResponse.json")
    before = copy.deepcopy(raw)
    result = classify(raw, refs)
    assert raw == before
    assert result.outcome is ClaimOutcome.QUEUED
    assert result.openimis_status == 2
    assert result.claim_code == "codeTest"
    assert result.currency == "$"
    assert result.total_approved is None
    assert result.total_claimed == 21100.0  # what the facility asked (10 x 10 + 1 x 21000)
    out = result.claim_response
    assert out["outcome"] == "queued"
    assert out["disposition"] == "Claim queued for adjudication"
    assert tag(out) == "queued"
    assert [i["itemSequence"] for i in out["item"]] == [1, 2]
    assert [categories(i) for i in out["item"]] == [{"submitted": 100.0}, {"submitted": 21000.0}]
    assert "error" not in out
    # openIMIS's own adjudications are kept
    assert out["item"][0]["adjudication"][0] == raw["item"][0]["adjudication"][0]
    assert_valid_fhir(out)


def test_ig_example_is_positive_checked() -> None:
    refs = normalise_claim(load("Claim-Claim001.json")).item_refs
    result = classify(load("ClaimResponse-Claim001.json"), refs)
    assert result.outcome is ClaimOutcome.POSITIVE
    assert result.openimis_status == 4
    assert result.claim_response["outcome"] == "partial"
    assert result.claim_response["disposition"] == "Claim accepted (checked): 2 of 2 lines accepted"
    assert (result.total_claimed, result.total_approved) == (60.0, 60.0)
    assert [categories(i) for i in result.claim_response["item"]] == [
        {"submitted": 40.0, "eligible": 40.0},
        {"submitted": 20.0, "eligible": 20.0},
    ]
    assert_valid_fhir(result.claim_response)


def test_positive_with_one_line_not_in_price_list_matched_by_reference() -> None:
    raw = response(
        "partial",
        [
            line(1, "Medication", UUID_A, "0004", adj(2, 10.0, 10.0), adj(4, 9.0, 10.0)),
            line(2, "Medication", UUID_B, "0099", adj(1, 5.0, 2.0, reason=2)),
            line(3, "ActivityDefinition", UUID_S, "M7", adj(2, 800.0, 1.0), adj(4, 800.0, 1.0)),
        ],
        [total(2, 910.0), total(4, 890.0)],
    )
    result = classify(raw, REQUEST)
    assert result.outcome is ClaimOutcome.POSITIVE
    assert result.openimis_status == 4
    out = result.claim_response
    assert out["outcome"] == "partial"
    # request sequences, not openIMIS's renumbered ones (items first, then services), in request order
    assert codes_by_sequence(out) == {1: "0004", 2: "M7", 3: "0099"}
    assert [i["itemSequence"] for i in out["item"]] == [1, 2, 3]
    assert out["error"] == [
        {
            "itemSequence": 3,
            "code": {
                "coding": [
                    {
                        "system": IG + "CodeSystem/claim-rejection-reasons",
                        "code": "2",
                        "display": "NOT IN PRICE LIST",
                    }
                ]
            },
        }
    ]
    assert (
        out["disposition"]
        == "Claim accepted (checked): 2 of 3 lines accepted; rejected line 3: NOT IN PRICE LIST (2)"
    )
    assert [categories(i) for i in out["item"]] == [
        {"submitted": 100.0, "eligible": 90.0},
        {"submitted": 800.0, "eligible": 800.0},
        {"submitted": 10.0},
    ]
    assert (result.total_claimed, result.total_approved, result.currency) == (910.0, 890.0, "$")
    assert [(r.item_sequence, r.reason_code, r.accepted) for r in result.line_reasons] == [
        (1, 0, True),
        (2, 0, True),
        (3, 2, False),
    ]
    std_totals = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in out["total"]}
    assert std_totals == {"2": 910.0, "4": 890.0, "submitted": 910.0, "eligible": 890.0}
    assert tag(out) == "positive"
    assert_valid_fhir(out)


def test_all_lines_rejected_is_negative_although_openimis_says_complete() -> None:
    raw = response(
        "complete",
        [
            line(1, "Medication", UUID_A, "0004", adj(1, 10.0, 10.0, reason=7)),
            line(2, "Medication", UUID_B, "0099", adj(1, 5.0, 2.0, reason=7)),
            line(3, "ActivityDefinition", UUID_S, "M7", adj(1, 800.0, 1.0, reason=2)),
        ],
    )
    result = classify(raw, REQUEST)
    assert result.outcome is ClaimOutcome.NEGATIVE
    assert result.openimis_status == 1
    out = result.claim_response
    assert out["outcome"] == "error"
    assert [(e["itemSequence"], e["code"]["coding"][0]["code"]) for e in out["error"]] == [
        (1, "7"),
        (2, "2"),
        (3, "7"),
    ]
    assert (
        out["disposition"]
        == "Claim rejected: line 1: FAMILY (7); line 2: NOT IN PRICE LIST (2); line 3: FAMILY (7)"
    )
    assert result.total_approved is None
    assert result.total_claimed == 910.0
    assert all("eligible" not in categories(i) for i in out["item"])
    assert [t["category"]["coding"][0]["code"] for t in out["total"]] == ["submitted"]
    assert tag(out) == "negative"
    assert_valid_fhir(out)


def test_claim_rejected_without_line_reasons_still_says_why_not() -> None:
    raw = response("complete", [line(1, "Medication", UUID_A, "0004", adj(1, 10.0, 10.0))])
    result = classify(raw, REQUEST[:1])
    assert result.outcome is ClaimOutcome.NEGATIVE
    assert result.claim_response["disposition"] == "Claim rejected by openIMIS"
    assert result.claim_response["error"][0]["code"]["text"]
    assert_valid_fhir(result.claim_response)


def test_queued_claim() -> None:
    raw = response(
        "queued",
        [line(1, "ActivityDefinition", UUID_S, "M7", adj(2, 800.0, 1.0))],
        [total(2, 800.0)],
    )
    result = classify(raw, [REQUEST[1]])
    assert result.outcome is ClaimOutcome.QUEUED
    assert result.claim_response["outcome"] == "queued"
    assert result.claim_response["item"][0]["itemSequence"] == 2
    assert_valid_fhir(result.claim_response)


def test_valuated_claim_is_complete_with_benefit() -> None:
    raw = response(
        "complete",
        [
            line(
                1,
                "Medication",
                UUID_A,
                "0004",
                adj(2, 10.0, 10.0),
                adj(4, 10.0, 10.0),
                adj(8, 10.0, 10.0),
                adj(16, 8.0, 10.0),
            )
        ],
        [total(2, 100.0), total(4, 100.0), total(8, 100.0), total(16, 80.0)],
    )
    result = classify(raw, REQUEST[:1])
    assert result.outcome is ClaimOutcome.POSITIVE
    assert result.openimis_status == 16
    assert result.claim_response["outcome"] == "complete"
    assert result.claim_response["disposition"] == "Claim accepted (valuated): 1 of 1 lines accepted"
    assert categories(result.claim_response["item"][0]) == {
        "submitted": 100.0,
        "eligible": 80.0,
        "benefit": 80.0,
    }
    assert result.total_approved == 80.0
    assert_valid_fhir(result.claim_response)


def test_same_reference_on_several_lines_is_matched_in_request_order() -> None:
    request = [
        ItemRef(1, "item", "0004", 1.0, 10.0, "$", ("0004",)),
        ItemRef(2, "service", "M7", 1.0, 800.0, "$", ("M7",)),
        ItemRef(3, "item", "0004", 3.0, 10.0, "$", ("0004",)),
    ]
    raw = response(
        "partial",
        [
            line(1, "Medication", UUID_A, "0004", adj(2, 10.0, 1.0), adj(4, 10.0, 1.0)),
            line(2, "Medication", UUID_A, "0004", adj(1, 10.0, 3.0, reason=16)),
            line(3, "ActivityDefinition", UUID_S, "M7", adj(2, 800.0, 1.0), adj(4, 800.0, 1.0)),
        ],
    )
    out = classify(raw, request).claim_response
    assert [i["itemSequence"] for i in out["item"]] == [1, 2, 3]
    assert [categories(i)["submitted"] for i in out["item"]] == [10.0, 800.0, 30.0]
    assert out["error"][0]["itemSequence"] == 3
    assert out["error"][0]["code"]["coding"][0]["display"] == "QTY OVER LIMIT"


def test_unmatched_lines_fall_back_to_order_within_their_kind() -> None:
    # The facility referenced items by a code openIMIS does not echo (e.g. a name): order per kind.
    request = [
        ItemRef(1, "service", "consult", 1.0, 40.0, None, ("consult",)),
        ItemRef(2, "item", "aspirin", 2.0, 10.0, None, ("aspirin",)),
    ]
    raw = response(
        "partial",
        [
            line(1, "Medication", UUID_A, "0004", adj(2, 10.0, 2.0), adj(4, 10.0, 2.0)),
            line(2, "ActivityDefinition", UUID_S, "M7", adj(2, 40.0, 1.0), adj(4, 40.0, 1.0)),
        ],
    )
    out = classify(raw, request).claim_response
    assert codes_by_sequence(out) == {1: "M7", 2: "0004"}


def test_without_the_request_sequences_are_kept() -> None:
    raw = response("partial", [line(7, "Medication", UUID_A, "0004", adj(2, 10.0, 2.0), adj(4, 10.0, 2.0))])
    result = classify(raw)
    assert result.claim_response["item"][0]["itemSequence"] == 7
    assert result.total_claimed == 20.0
    assert result.claim_code == "CLM-1"


def test_upper_case_uuids_match() -> None:
    request = [ItemRef(5, "item", UUID_A.upper(), 2.0, 10.0, None, (UUID_A.upper(),))]
    raw = response("partial", [line(1, "Medication", UUID_A, "0004", adj(2, 10.0, 2.0), adj(4, 10.0, 2.0))])
    assert classify(raw, request).claim_response["item"][0]["itemSequence"] == 5


@pytest.mark.parametrize(
    ("code", "display"),
    [
        (-2, "REJECTED BY AI EVALUATION"),
        (0, "ACCEPTED"),
        (2, "NOT IN PRICE LIST"),
        (7, "FAMILY"),
        (19, "MAX ANTENATAL"),
    ],
)
def test_rejection_reason_table(code: int, display: str) -> None:
    assert REJECTION_REASONS[code] == display
    assert sorted(REJECTION_REASONS) == [c for c in range(-2, 20) if c != 18]
