"""Coverage eligibility and insuree lookup against a mocked openIMIS (validation, normalisation,
the coverage fallback and when it must refuse to answer)."""

import copy
import json
import uuid
from datetime import date

import pytest
import responses
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from responses import matchers

from mediator.fhir.outcome import FhirError
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisTimeout
from mediator.transactions import eligibility, insurees
from mediator.transactions.eligibility import coverage_fallback
from tests.conftest import FIXTURES, real_capture

BASE = "https://imis.example.org/api/api_fhir_r4/"
PUBLIC = "https://hie.example.org/openimis"
TODAY = date(2025, 3, 14)
#: The current row of insuree 070707070 on the real backend (the UUID is only in its identifier).
UUID = "0539afeb-21a1-4b3f-9478-23e6f41b0024"
POLICY = "7d3f0e1c-2222-4a4a-9b9b-abcdefabcdef"
#: What the real 24.04 eligibility service answers (500) for an insuree with a policy in force.
SP_ERROR = real_capture("CoverageEligibilityRequest_500")["issue"][0]["details"]["text"]


@pytest.fixture
def client(settings):
    return OpenImisClient(settings)


@pytest.fixture
def recorder():
    return OrchestrationRecorder()


@pytest.fixture
def imis():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(
            BASE + "login/", json={"token": "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", "exp": 4_000_000_000}
        )
        yield rsps


def patient():
    """The real answer to `Patient/?identifier=070707070`: `id` is the insuree number."""
    return real_capture("Patient_search_identifier_070707070")


def request(**overrides):
    body = {
        "resourceType": "CoverageEligibilityRequest",
        "id": "visit-42",
        "status": "active",
        "purpose": ["benefits"],
        "patient": {"reference": "Patient/070707070"},
        "created": "2025-03-14",
        "insurer": {"reference": "openIMIS"},
        "item": [
            {"category": {"coding": [{"code": "service"}]}, "productOrService": {"text": "A1"}},
            {"category": {"text": "item"}, "productOrService": {"coding": [{"code": "0004"}]}},
        ],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def working_answer(policies=(POLICY,)):
    template = json.loads((FIXTURES / "openimis" / "test_coverageEligibilityResponse.json").read_text())
    proto = template["insurance"][0]
    template["request"] = {"reference": "CoverageEligibilityRequest"}
    template["insurance"] = []
    for pol in policies:
        entry = copy.deepcopy(proto)
        entry["coverage"] = {"reference": f"Coverage/{pol}"}
        template["insurance"].append(entry)
    if not policies:
        del template["insurance"]
    return template


def coverage(
    beneficiary="Patient/070707070", status="active", start="2020-01-01", end="2027-12-31", cid=POLICY
):
    """A Coverage as the real backend lists it: no `id`, known by its UUID (and ACSN) identifier."""
    real = real_capture("Coverage_search_beneficiary_count_2")["entry"][0]["resource"]
    assert "id" not in real
    real["identifier"][0]["value"] = policy_uuid(cid)
    real["status"] = status
    for role in ("beneficiary", "policyHolder"):
        real[role] = {"reference": beneficiary}
    real["period"] = {"start": start, "end": end}
    return real


def policy_uuid(name):
    """Policies are named in the tests; openIMIS knows them by UUID."""
    return name if len(name) == 36 else str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def bundle(*resources, more=False):
    out = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [
            {"relation": "self", "url": "https%3A%2F%2Fimis.example.org%2Fapi%2Fapi_fhir_r4%2FCoverage%2F"}
        ],
        "entry": [{"resource": r} for r in resources],
    }
    if more:
        out["link"].append({"relation": "next", "url": "https%3A%2F%2Fimis.example.org%2Fnext"})
    return out


def check(client, recorder, body, properties=None):
    props = {} if properties is None else properties
    return eligibility.check(client, json.dumps(body).encode(), recorder, props, today=TODAY)


def failing(imis):
    return imis.post(
        BASE + "CoverageEligibilityRequest/",
        status=500,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "fatal", "details": {"text": SP_ERROR}}],
        },
    )


# --- parsing and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (b"{not json", None),
        (b"[1, 2]", "CoverageEligibilityRequest"),
        (b'{"resourceType": "Claim"}', "resourceType"),
        (b"{}", "resourceType"),
    ],
)
def test_unreadable_or_foreign_bodies_are_400(body, expression):
    with pytest.raises(FhirError) as err:
        eligibility.parse_request(body)
    assert err.value.status == 400
    if expression:
        assert err.value.issues[0].expression == [expression]


def test_every_problem_is_reported_at_once_with_its_fhirpath():
    body = request(
        status="bogus",
        servicedDate="14/03/2025",
        patient={"reference": "joe-doe"},
        item=[
            {"category": {"text": "drug"}, "productOrService": {"text": "A1"}},
            {"category": {"text": "service"}},
            {"category": {"text": "service"}, "productOrService": {"text": "A1"}},
            {"category": {"text": "service"}, "productOrService": {"text": "A2"}},
        ],
    )
    with pytest.raises(FhirError) as err:
        eligibility.validate_request(body)
    assert err.value.status == 422
    paths = [i.expression[0] for i in err.value.issues]
    assert paths == [
        "CoverageEligibilityRequest.servicedDate",
        "CoverageEligibilityRequest.status",
        "CoverageEligibilityRequest.patient.reference",
        "CoverageEligibilityRequest.item[0].category",
        "CoverageEligibilityRequest.item[1].productOrService",
        "CoverageEligibilityRequest.item[3]",
    ]
    assert "joe-doe" in err.value.issues[2].diagnostics


def test_the_ig_example_references_its_patient_as_joe_doe_which_is_not_a_patient_reference():
    ig = json.loads(
        (FIXTURES / "openimis" / "ig" / "CoverageEligibilityRequest-JoeDoeEnquiring.json").read_text()
    )
    with pytest.raises(FhirError) as err:
        eligibility.validate_request(ig)
    assert [i.expression for i in err.value.issues] == [["CoverageEligibilityRequest.patient.reference"]]


def test_missing_patient_and_wrong_patient_type():
    for patient_ref, path in [
        (None, "CoverageEligibilityRequest.patient"),
        ({"reference": "Organization/HF0001"}, "CoverageEligibilityRequest.patient.reference"),
        ({"identifier": {"value": "07 07"}}, "CoverageEligibilityRequest.patient.identifier.value"),
    ]:
        with pytest.raises(FhirError) as err:
            eligibility.validate_request(request(patient=patient_ref))
        assert path in [i.expression[0] for i in err.value.issues]


def test_lenient_where_openimis_is_insurer_and_created_may_be_absent():
    query = eligibility.validate_request(request(insurer=None, created=None, item=None))
    assert query.patient == ("number", "070707070") and query.items == ()


def test_patient_forms_and_items_are_read_as_openimis_needs_them():
    query = eligibility.validate_request(
        request(patient={"identifier": {"system": "x", "value": "070707070"}})
    )
    assert query.patient == ("number", "070707070")
    assert query.items == (("service", "A1"), ("item", "0004"))
    query = eligibility.validate_request(request(patient={"reference": f"Patient/{UUID}"}))
    assert query.patient == ("uuid", UUID)


def test_module_fixture_is_valid_and_upstream_body_is_what_openimis_reads():
    fixture = json.loads((FIXTURES / "openimis" / "test_coverageEligibilityRequest.json").read_text())
    query = eligibility.validate_request(fixture)
    upstream = eligibility.upstream_request(query, "chfid", TODAY)
    assert upstream["patient"] == {"reference": "Patient/chfid"}
    assert [
        (i["category"]["coding"][0]["code"], i["productOrService"]["text"]) for i in upstream["item"]
    ] == [
        ("service", "STEST"),
        ("item", "ITEST"),
    ]
    assert upstream["insurer"] == {"reference": "openIMIS"} and upstream["created"] == "2025-03-14"


def test_serviced_dates_are_days_spanned():
    assert eligibility.validate_request(request(servicedDate="2024-02")).dates == (
        date(2024, 2, 1),
        date(2024, 2, 29),
    )
    period = {"start": "2024-05-01T08:00:00+03:00", "end": "2024-05-03"}
    assert eligibility.validate_request(request(servicedPeriod=period)).dates == (
        date(2024, 5, 1),
        date(2024, 5, 3),
    )
    with pytest.raises(FhirError) as err:
        eligibility.validate_request(request(servicedPeriod={"start": "2024-05-03", "end": "2024-05-01"}))
    assert err.value.issues[0].expression == ["CoverageEligibilityRequest.servicedPeriod"]


# --- openIMIS's eligibility works ------------------------------------------------------------------------


def test_working_answer_is_normalised_for_facilities(client, recorder, imis):
    sent = imis.post(BASE + "CoverageEligibilityRequest/", status=201, json=working_answer())
    props = {}
    answer = check(client, recorder, request(identifier=[{"system": "urn:clinic", "value": "Q-9"}]), props)

    body = json.loads(sent.calls[0].request.body)
    assert body["patient"] == {"reference": "Patient/070707070"}
    assert body["item"][1]["category"]["coding"][0]["code"] == "item"
    assert body["item"][1]["productOrService"] == {"text": "0004"}
    resource = answer.resource
    assert resource["request"] == {
        "type": "CoverageEligibilityRequest",
        "reference": "CoverageEligibilityRequest/visit-42",
        "identifier": {"system": "urn:clinic", "value": "Q-9"},
    }
    assert [i["inforce"] for i in resource["insurance"]] == [True]
    assert resource["outcome"] == "complete"
    assert resource["disposition"] == "1 policy in force on 2025-03-14"
    assert answer.source == "openimis" and answer.policies_in_force == 1
    assert props == {
        "transaction": "coverage eligibility",
        "insuree_number": "070707070",
        "policies_in_force": 1,
        "eligibility_source": "openimis",
    }
    CoverageEligibilityResponse.model_validate(resource)
    assert [c.name for c in recorder.calls] == ["openIMIS login", "openIMIS eligibility request"]


def test_no_insurance_means_no_policy_in_force(client, recorder, imis):
    imis.post(BASE + "CoverageEligibilityRequest/", status=201, json=working_answer(policies=()))
    answer = check(client, recorder, request(id=None))
    assert "insurance" not in answer.resource
    assert answer.resource["disposition"] == "no policy in force on 2025-03-14"
    assert answer.resource["request"]["display"]
    assert answer.policies_in_force == 0


def test_an_answer_without_patient_and_insurance_is_checked_for_an_unknown_insuree(client, recorder, imis):
    answer = working_answer(policies=())
    del answer["patient"]
    imis.post(BASE + "CoverageEligibilityRequest/", status=201, json=answer)
    imis.get(BASE + "Patient/", status=404, json={"resourceType": "OperationOutcome", "issue": []})
    with pytest.raises(FhirError) as err:
        check(client, recorder, request())
    assert err.value.status == 422
    imis.replace(responses.GET, BASE + "Patient/", json=patient())
    resource = check(client, recorder, request()).resource
    assert resource["patient"] == {"reference": "Patient/070707070"}
    assert resource["disposition"].startswith("no policy in force")


def test_a_date_other_than_today_is_flagged_in_the_working_answer(client, recorder, imis):
    imis.post(BASE + "CoverageEligibilityRequest/", status=201, json=working_answer())
    answer = check(client, recorder, request(servicedDate="2024-01-10"))
    assert "current date only" in answer.resource["disposition"]


def test_uuid_is_resolved_to_the_insuree_number(client, recorder, imis):
    imis.get(BASE + f"Patient/{UUID}/", json=patient())
    sent = imis.post(BASE + "CoverageEligibilityRequest/", status=201, json=working_answer())
    answer = check(client, recorder, request(patient={"reference": f"Patient/{UUID}"}))
    assert json.loads(sent.calls[0].request.body)["patient"] == {"reference": "Patient/070707070"}
    assert answer.insuree_number == "070707070"
    assert recorder.calls[1].name == "openIMIS insuree read (UUID to insuree number)"


def test_unknown_uuid_is_422_on_patient(client, recorder, imis):
    imis.get(
        BASE + f"Patient/{UUID}/",
        status=500,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"details": {"text": "Insuree matching query does not exist."}}],
        },
    )
    with pytest.raises(FhirError) as err:
        check(client, recorder, request(patient={"reference": f"Patient/{UUID}"}))
    assert err.value.status == 422 and err.value.issues[0].expression == [
        "CoverageEligibilityRequest.patient"
    ]


# --- openIMIS's eligibility fails: the coverage fallback -----------------------------------------------


def test_fallback_answers_from_the_insurees_coverage(client, recorder, imis):
    failing(imis)
    imis.get(
        BASE + "Patient/", json=patient(), match=[matchers.query_param_matcher({"identifier": "070707070"})]
    )
    search = imis.get(
        BASE + "Coverage/",
        json=bundle(coverage(beneficiary=f"Patient/{UUID.upper()}")),
        match=[matchers.query_param_matcher({"beneficiary": "Patient/070707070", "_count": "100"})],
    )
    props = {}
    answer = check(client, recorder, request(), props)

    assert search.call_count == 1
    resource = answer.resource
    assert answer.source == "coverage-fallback" and answer.policies_in_force == 1
    assert resource["meta"]["tag"][0]["system"] == "urn:openimis-mediator:eligibility-source"
    assert resource["meta"]["tag"][0]["code"] == "coverage-fallback"
    assert resource["insurance"] == [
        {
            "coverage": {"reference": f"Coverage/{POLICY}"},
            "inforce": True,
            "benefitPeriod": {"start": "2020-01-01", "end": "2027-12-31"},
        }
    ]
    assert resource["outcome"] == "complete"
    assert "eligibility service failed" in resource["disposition"]
    assert "benefit limits" in resource["disposition"]
    assert resource["request"]["reference"] == "CoverageEligibilityRequest/visit-42"
    assert SP_ERROR not in json.dumps(resource) and "Macintyre" not in json.dumps(resource)
    assert resource["patient"] == {"reference": "Patient/070707070", "display": "070707070"}
    assert props["eligibility_source"] == "coverage-fallback" and props["policies_in_force"] == 1
    CoverageEligibilityResponse.model_validate(resource)
    assert [c.name for c in recorder.calls][1:] == [
        "openIMIS eligibility request",
        "openIMIS insuree lookup (eligibility fallback)",
        "openIMIS coverage search (eligibility fallback), page 1",
    ]


def test_fallback_keeps_only_this_insurees_active_policies_in_force_on_the_date(client, recorder, imis):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    unfiltered = bundle(
        coverage(beneficiary="Patient/070707099", cid="other-family"),
        coverage(status="cancelled", cid="cancelled"),
        coverage(start="2019-01-01", end="2019-12-31", cid="expired"),
        coverage(cid="good"),
    )
    imis.get(BASE + "Coverage/", json=unfiltered)
    answer = check(client, recorder, request(servicedDate="2025-03-01"))
    assert [i["coverage"]["reference"] for i in answer.resource["insurance"]] == [
        f"Coverage/{policy_uuid('good')}"
    ]
    assert answer.resource["servicedDate"] == "2025-03-01"


def test_fallback_reads_on_through_pages_openimis_did_not_filter(client, recorder, imis):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    others = bundle(coverage(beneficiary="Patient/111111119", cid="neighbour"), more=True)
    imis.get(BASE + "Coverage/", json=others, match=[matchers.query_param_matcher({}, strict_match=False)])
    page2 = imis.get(
        BASE + "Coverage/",
        json=bundle(coverage(cid="ours")),
        match=[matchers.query_param_matcher({"page-offset": "2"}, strict_match=False)],
    )
    answer = check(client, recorder, request())
    assert page2.call_count == 1
    assert [i["coverage"]["reference"] for i in answer.resource["insurance"]] == [
        f"Coverage/{policy_uuid('ours')}"
    ]


def test_fallback_reads_a_bounded_number_of_pages(client, recorder, imis):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    search = imis.get(BASE + "Coverage/", json=bundle(coverage(beneficiary="Patient/111111119"), more=True))
    with pytest.raises(FhirError) as err:
        check(client, recorder, request())
    assert err.value.status == 502
    assert search.call_count == coverage_fallback.MAX_PAGES


def test_fallback_on_the_real_backends_answers_vouches_for_no_expired_policy(client, recorder, imis):
    """Stock demo data: the real Coverage list, every policy expired in 2020."""
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    imis.get(BASE + "Coverage/", json=real_capture("Coverage_search_beneficiary_count_2"))
    with pytest.raises(FhirError) as err:
        check(client, recorder, request())
    assert err.value.status == 502 and err.value.issues[0].code == "transient"


def test_fallback_vouches_for_a_real_coverage_in_force_on_the_date_asked(client, recorder, imis):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    imis.get(BASE + "Coverage/", json=real_capture("Coverage_search_beneficiary_count_2"))
    answer = check(client, recorder, request(servicedDate="2020-03-01"))
    assert [i["coverage"]["reference"] for i in answer.resource["insurance"]] == [
        "Coverage/a3df066b-3e23-429a-92ad-cd1ef46daa2f"  # 070707070's; 111111119's is left out
    ]


@pytest.mark.parametrize(
    "coverages",
    [
        (),  # nothing (or openIMIS did not filter and this insuree's policy is on another page)
        (coverage(beneficiary="Patient/070707099"),),  # the family head's, not this insuree's
        (coverage(end="2025-03-10"),),  # not in force on the date asked
        (coverage(status="draft"),),
    ],
)
def test_fallback_that_cannot_vouch_is_502_never_not_covered(client, recorder, imis, coverages):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    imis.get(BASE + "Coverage/", json=bundle(*coverages))
    with pytest.raises(FhirError) as err:
        check(client, recorder, request())
    assert err.value.status == 502
    issue = err.value.issues[0]
    assert issue.code == "transient" and "NOT mean the insuree is not covered" in issue.diagnostics


def test_fallback_failing_upstream_is_502_unavailable(client, recorder, imis):
    failing(imis)
    imis.get(BASE + "Patient/", json=patient())
    imis.get(BASE + "Coverage/", status=502, body="<html><body>Bad Gateway</body></html>")
    with pytest.raises(FhirError) as err:
        check(client, recorder, request())
    assert err.value.status == 502 and "<html" not in str(err.value)


def test_html_instead_of_a_response_takes_the_fallback(client, recorder, imis):
    imis.post(BASE + "CoverageEligibilityRequest/", status=200, body="<html>oops</html>")
    imis.get(BASE + "Patient/", json=patient())
    imis.get(BASE + "Coverage/", json=bundle(coverage()))
    assert check(client, recorder, request()).source == "coverage-fallback"


def test_unknown_insuree_is_422_not_an_upstream_failure(client, recorder, imis):
    imis.post(
        BASE + "CoverageEligibilityRequest/",
        status=500,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"details": {"text": "Insuree matching query does not exist."}}],
        },
    )
    imis.get(
        BASE + "Patient/",
        status=404,
        json={"resourceType": "OperationOutcome", "issue": [{"code": "not-found"}]},
    )
    with pytest.raises(FhirError) as err:
        check(client, recorder, request(patient={"reference": "Patient/999999999"}))
    assert err.value.status == 422
    assert err.value.issues[0].expression == ["CoverageEligibilityRequest.patient"]


def test_timeouts_propagate_as_openimis_errors(client, recorder, imis):
    import requests

    imis.post(BASE + "CoverageEligibilityRequest/", body=requests.ReadTimeout())
    with pytest.raises(OpenImisTimeout):
        check(client, recorder, request())


# --- insuree lookup ------------------------------------------------------------------------------------


def test_patient_search_wraps_the_bare_patient(client, recorder, imis):
    imis.get(
        BASE + "Patient/", json=patient(), match=[matchers.query_param_matcher({"identifier": "070707070"})]
    )
    found, number = insurees.search(client, [("identifier", "urn:x|070707070")], recorder, PUBLIC)
    assert number == "070707070"
    assert found["type"] == "searchset" and found["total"] == 1
    assert found["entry"][0]["fullUrl"] == f"{PUBLIC}/Patient/070707070"
    assert found["link"][0]["url"] == f"{PUBLIC}/Patient?identifier=070707070"


def test_unknown_insuree_is_an_empty_bundle(client, recorder, imis):
    imis.get(
        BASE + "Patient/",
        status=404,
        json={"resourceType": "OperationOutcome", "issue": [{"code": "not-found"}]},
    )
    found, _ = insurees.search(client, [("identifier", "123")], recorder, PUBLIC)
    assert found["total"] == 0 and found["entry"] == []


@pytest.mark.parametrize("params", [[], [("name", "Doe")], [("identifier", "")], [("identifier", "sys|")]])
def test_patient_search_needs_an_identifier(client, recorder, params):
    with pytest.raises(FhirError) as err:
        insurees.search(client, params, recorder, PUBLIC)
    assert err.value.status == 400 and err.value.issues[0].expression == ["identifier"]


def test_patient_read_by_number_uses_the_identifier_search_and_404s_when_unknown(client, recorder, imis):
    imis.get(BASE + "Patient/", json=patient())
    assert insurees.read(client, "070707070", recorder)["id"] == "070707070"
    imis.get(
        BASE + f"Patient/{UUID}/",
        status=500,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"details": {"text": "Insuree matching query does not exist."}}],
        },
    )
    with pytest.raises(FhirError) as err:
        insurees.read(client, UUID, recorder)
    assert err.value.status == 404
    with pytest.raises(FhirError) as err:
        insurees.read(client, "../login", recorder)
    assert err.value.status == 400
