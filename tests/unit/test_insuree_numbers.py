"""A claim's insuree number resolved to the current insuree's UUID, as a real openIMIS shows it."""

import pytest
import responses
from responses import matchers

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.insuree_numbers import InsureeNumbers
from tests.conftest import real_capture

BASE = "https://imis.example.org/api/api_fhir_r4/"
CURRENT_UUID = "0539afeb-21a1-4b3f-9478-23e6f41b0024"


@pytest.fixture
def imis():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(
            BASE + "login/", json={"token": "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "exp": 4_000_000_000}
        )
        yield rsps


def lookup(settings, number):
    return InsureeNumbers().current_uuid(OpenImisClient(settings), number, OrchestrationRecorder())


def test_the_uuid_comes_from_the_identifier_typed_uuid_not_from_id(settings, imis):
    """Real openIMIS puts the insuree number in `Patient.id`; referencing it picks a historical row."""
    real = real_capture("Patient_search_identifier_070707070")
    assert real["id"] == "070707070"
    imis.get(BASE + "Patient/", json=real, match=[matchers.query_param_matcher({"identifier": "070707070"})])
    assert lookup(settings, "070707070") == CURRENT_UUID


def test_an_unknown_insuree_number_is_none(settings, imis):
    imis.get(BASE + "Patient/", status=404, json=real_capture("Patient_search_identifier_unknown_404"))
    assert lookup(settings, "999999999") is None


def test_a_patient_without_a_uuid_identifier_is_an_upstream_failure(settings, imis):
    real = real_capture("Patient_search_identifier_070707070")
    real["identifier"] = [i for i in real["identifier"] if i["type"]["coding"][0]["code"] != "UUID"]
    imis.get(BASE + "Patient/", json=real)
    with pytest.raises(OpenImisBroken):
        lookup(settings, "070707070")


def test_the_answer_is_remembered(settings, imis):
    search = imis.get(BASE + "Patient/", json=real_capture("Patient_search_identifier_070707070"))
    numbers, client, recorder = InsureeNumbers(), OpenImisClient(settings), OrchestrationRecorder()
    assert numbers.current_uuid(client, "070707070", recorder) == CURRENT_UUID
    assert numbers.current_uuid(client, "070707070", recorder) == CURRENT_UUID
    assert search.call_count == 1
