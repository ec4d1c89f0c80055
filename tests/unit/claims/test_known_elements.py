"""Validated claim elements remembered per worker: the same issues as a full validation, faster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from claim_fixtures import CLAIMS, load
from pydantic import BaseModel

from mediator.jsontext import compact_json
from mediator.transactions.claims.known_elements import KnownElements, canonical_claim
from mediator.transactions.claims.validation import validate_claim


def issues(claim: dict[str, Any], known: KnownElements | None = None) -> list[tuple[str, list[str], str]]:
    return [(i.code, i.expression, i.diagnostics) for i in validate_claim(claim, known)]


@pytest.fixture
def warm() -> KnownElements:
    """Remembers every element of the fixture claims, as a worker would after a while."""
    known = KnownElements()
    for name in CLAIMS:
        assert validate_claim(load(name), known) == []
    assert len(known) > 20
    return known


@pytest.mark.parametrize("name", CLAIMS)
def test_the_canonical_text_is_the_sorted_compact_json_of_the_claim(name: str) -> None:
    claim = load(name)
    claim["note"] = [{"text": "Fièvre, paludisme — « grave »"}]
    claim["_status"] = {"extension": [{"url": "x", "valueString": "é"}]}
    claim["empty"] = []
    assert canonical_claim(claim).text == compact_json(claim, sort_keys=True)


def test_a_claim_like_earlier_ones_is_checked_against_their_validated_elements(warm) -> None:
    claim = load("test_claim.json")
    claim["identifier"][0]["value"] = "NEW-CODE-1"
    candidate, unknown = warm.substitute(claim, canonical_claim(claim))
    assert all(isinstance(candidate[k], BaseModel) for k in ("patient", "provider", "type", "total"))
    assert all(isinstance(item, BaseModel) for item in candidate["item"])
    identifier = candidate["identifier"][0]
    assert isinstance(identifier, dict) and isinstance(identifier["type"], BaseModel), (
        "an element not seen before is validated, its known parts are not"
    )
    assert [u[0] for u in unknown] == ["identifier"]
    assert validate_claim(claim, warm) == []


def broken_variants() -> list[dict[str, Any]]:
    """Claims that differ from known ones in one place, or many."""
    variants = []
    claim = load("test_claim.json")
    claim["item"][0]["bogus"] = 1  # an unknown element inside an otherwise known item
    variants.append(claim)
    claim = load("test_claim.json")
    claim["item"][1]["quantity"] = {"value": "abc"}  # a bad value next to known parts
    variants.append(claim)
    claim = load("Claim-Claim001.json")
    claim["patient"] = [claim["patient"]]  # a list where one element is expected
    claim["item"] = claim["item"][0]  # one element where a list is expected
    variants.append(claim)
    claim = load("test_claim_contained.json")
    claim["provider"] = claim["enterer"]  # a known element in another place
    claim["total"]["value"] = "lots"
    variants.append(claim)
    claim = load("test_claim.json")
    claim["diagnosis"].append(None)
    claim["created"] = "yesterday"
    variants.append(claim)
    claim = load("test_claim.json")
    del claim["identifier"]
    del claim["enterer"]
    claim["type"]["coding"][0]["code"] = "X"
    item, service = claim["item"]
    item["category"] = {"text": "drug"}
    del service["extension"]
    claim["bogus"] = True
    variants.append(claim)
    return variants


@pytest.mark.parametrize("index", range(len(broken_variants())))
def test_issues_are_those_of_a_full_validation(warm, index: int) -> None:
    claim = broken_variants()[index]
    expected = issues(copy.deepcopy(claim))
    assert expected, "each variant is invalid"
    assert issues(claim, warm) == expected


def test_an_invalid_claim_teaches_nothing(warm) -> None:
    before = len(warm)
    claim = load("test_claim.json")
    claim["item"][0]["quantity"]["value"] = "abc"
    claim["provider"] = {"reference": "Organization/never-seen", "bogus": 1}
    claim["patient"] = {"reference": "Patient/never-seen"}
    assert issues(claim, warm)
    assert len(warm) == before


def test_the_memory_is_bounded() -> None:
    known = KnownElements(capacity=5)
    for name in CLAIMS:
        validate_claim(load(name), known)
    assert len(known) == 5
