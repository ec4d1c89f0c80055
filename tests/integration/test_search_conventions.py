"""FHIR search conventions over HTTP: `identifier=A,B` is OR, repeated `identifier` is AND, and a
page past the end of a list still leads back. Services and items are searched both from openIMIS
and from the mediator's copy: the answers must not depend on where they come from."""

from __future__ import annotations

import pytest
import requests

from tests.support.services import running_mediator
from tests.support.waiting import wait_until

FHIR = {"Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def cached_mediator(sandbox):
    env = {"OPENIMIS_URL": sandbox.url, "MASTER_DATA_CACHE_ENABLED": "true"}
    with running_mediator(env) as service:
        wait_until(lambda: "services/items cache refreshed" in service.log())
        yield service


@pytest.fixture(params=["openIMIS", "cache"])
def catalogue_mediator(request, mediator):
    return mediator if request.param == "openIMIS" else request.getfixturevalue("cached_mediator")


def search(mediator, path):
    answer = requests.get(mediator.url + path, headers=FHIR, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def codes(bundle):
    found = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        found.append(resource.get("name") or resource["identifier"][0]["value"])
    return sorted(found)


def medication_uuid(mediator, code):
    return search(mediator, f"/fhir/Medication?identifier={code}")["entry"][0]["resource"]["id"]


def test_comma_separated_identifiers_are_ored(catalogue_mediator):
    items = search(catalogue_mediator, "/fhir/Medication?identifier=0004,0001,NOPE")
    assert items["total"] == 2 and len(items["entry"]) == 2
    services = search(catalogue_mediator, "/fhir/ActivityDefinition?identifier=A1,L1")
    assert codes(services) == ["A1", "L1"]


def test_repeated_identifiers_are_anded(catalogue_mediator):
    assert search(catalogue_mediator, "/fhir/Medication?identifier=0004&identifier=0001")["total"] == 0
    uuid = medication_uuid(catalogue_mediator, "0004")
    both = search(catalogue_mediator, f"/fhir/Medication?identifier=0004&identifier={uuid}")
    assert [e["resource"]["id"] for e in both["entry"]] == [uuid]
    either_and_one = search(catalogue_mediator, "/fhir/ActivityDefinition?identifier=A1,L1&identifier=L1")
    assert codes(either_and_one) == ["L1"]


def test_patient_identifiers_or_and_and(mediator):
    either = search(mediator, "/fhir/Patient?identifier=070707070,070707072")
    assert either["total"] == 2
    (first,) = search(mediator, "/fhir/Patient?identifier=070707070")["entry"]
    uuid = first["resource"]["id"]
    assert search(mediator, f"/fhir/Patient?identifier=070707070&identifier={uuid}")["total"] == 1
    assert search(mediator, "/fhir/Patient?identifier=070707070&identifier=070707072")["total"] == 0


@pytest.mark.parametrize("path", ["/fhir/Patient?identifier=", "/fhir/Medication?identifier=0004,"])
def test_an_empty_identifier_value_is_a_400_naming_identifier(mediator, path):
    answer = requests.get(mediator.url + path, headers=FHIR, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["identifier"]


def test_a_page_past_the_end_is_empty_and_leads_back_to_the_last_page(catalogue_mediator):
    past = search(catalogue_mediator, "/fhir/Medication?_count=2&page-offset=50")
    assert past["entry"] == [] and past["total"] == 9
    links = {link["relation"]: link["url"] for link in past["link"]}
    assert "next" not in links
    last = requests.get(links["previous"], headers=FHIR, timeout=10).json()
    assert len(last["entry"]) == 1, "9 items, 2 a page: the last page has one"
    assert "next" not in {link["relation"] for link in last["link"]}
