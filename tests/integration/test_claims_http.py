"""OpenHIE transactions 7, 11/13/15 over HTTP: a clinic system submitting claims and polling.

The mediator runs under gunicorn (two workers and its agent) in front of the openIMIS sandbox;
`/_sandbox/claims` tells what openIMIS really received, so "exactly once" is checked upstream.
"""

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.sandbox.helpers import load_fixture, make_claim, uuid_of
from tests.support.services import running_mediator
from tests.support.waiting import wait_until

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
CLAIM_STATUS = "https://openimis.github.io/openimis_fhir_r4_ig/CodeSystem/claim-status"


def code(prefix: str = "C") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


def submit(mediator, claim, headers=None):
    return requests.post(
        mediator.url + "/fhir/Claim", data=json.dumps(claim), headers=headers or FHIR, timeout=30
    )


def follow(mediator, location):
    assert location.startswith(mediator.url + "/fhir/ClaimResponse/")
    return requests.get(location, headers=FHIR, timeout=30)


def upstream(sandbox):
    return requests.get(sandbox.url + "/_sandbox/claims", timeout=5).json()


def submissions(sandbox, claim_code):
    return upstream(sandbox)["submissions"].get(claim_code, 0)


def fault(sandbox, **faults):
    requests.post(sandbox.url + "/_sandbox/faults", json=faults, timeout=5).raise_for_status()


def tag(resource):
    return resource["meta"]["tag"][0]["code"]


# -- the three answers ----------------------------------------------------------------------


def test_positive_claim_is_201_with_amounts_and_a_location(mediator, clean_sandbox):
    claim = make_claim(code(), lines=[("service", "A1", 1, 10.0), ("item", "0004", 2, 10.0)])
    answer = submit(mediator, claim)
    assert answer.status_code == 201
    response = answer.json()
    assert response["resourceType"] == "ClaimResponse"
    assert tag(response) == "positive" and response["outcome"] in ("partial", "complete")
    assert "accepted" in response["disposition"]
    assert {line["itemSequence"] for line in response["item"]} == {1, 2}
    submitted = {t["category"]["coding"][0]["code"]: t["amount"]["value"] for t in response["total"]}
    assert submitted["submitted"] == 30.0
    assert follow(mediator, answer.headers["Location"]).json()["id"] == response["id"]


def test_negative_claim_names_the_reason_per_request_line(mediator, clean_sandbox):
    # HF0003's price list has A1 and 0004 but not S1 (service) nor 0099 (item); openIMIS
    # renumbers items first, so the reasons must be matched back by reference, not position.
    claim = make_claim(
        code(),
        facility="HF0003",
        admin="JMDP0013",
        lines=[("service", "S1", 1, 150.0), ("item", "0099", 1, 6.0)],
    )
    answer = submit(mediator, claim)
    assert answer.status_code == 200
    response = answer.json()
    assert tag(response) == "negative" and response["outcome"] == "error"
    errors = {e["itemSequence"]: e["code"]["coding"][0]["code"] for e in response["error"]}
    assert errors == {1: "2", 2: "2"}
    assert "NOT IN PRICE LIST" in response["disposition"]


def test_partly_rejected_claim_is_positive_with_the_rejected_line_named(mediator, clean_sandbox):
    claim = make_claim(
        code(),
        facility="HF0003",
        admin="JMDP0013",
        lines=[("service", "S1", 1, 150.0), ("item", "0004", 1, 10.0)],
    )
    response = submit(mediator, claim).json()
    assert tag(response) == "positive"
    assert [e["itemSequence"] for e in response["error"]] == [1]


def test_queued_claim_is_202_and_polling_shows_the_adjudication(mediator, clean_sandbox):
    claim_code = code("Q-")
    answer = submit(mediator, make_claim(claim_code))
    assert answer.status_code == 202
    assert tag(answer.json()) == "queued" and answer.json()["outcome"] == "queued"
    location = answer.headers["Location"]
    assert follow(mediator, location).json()["outcome"] == "queued"

    requests.post(
        clean_sandbox.url + "/_sandbox/adjudicate",
        json={"claim_code": claim_code, "status": "valuated"},
        timeout=5,
    ).raise_for_status()
    polled = follow(mediator, location)
    assert polled.status_code == 200
    assert tag(polled.json()) == "positive" and polled.json()["outcome"] == "complete"
    by_code = requests.get(
        f"{mediator.url}/fhir/ClaimResponse", params={"identifier": claim_code}, timeout=10
    )
    assert by_code.json()["total"] == 1 and tag(by_code.json()["entry"][0]["resource"]) == "positive"


def test_claim_response_search_by_request(mediator, clean_sandbox):
    answer = submit(mediator, make_claim(code())).json()
    claim_ref = answer["request"]["reference"]
    bundle = requests.get(
        f"{mediator.url}/fhir/ClaimResponse", params={"request": claim_ref}, timeout=10
    ).json()
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == answer["id"]
    empty = requests.get(
        f"{mediator.url}/fhir/ClaimResponse", params={"identifier": "NO-SUCH-CLAIM"}, timeout=10
    )
    assert empty.status_code == 200 and empty.json()["total"] == 0
    assert requests.get(f"{mediator.url}/fhir/ClaimResponse/unknown-id-1", timeout=10).status_code == 404


# -- what facilities send -------------------------------------------------------------------


def test_module_and_ig_shaped_claims_go_through(mediator, clean_sandbox):
    module_claim = load_fixture("test_claim.json")
    module_claim["identifier"][0]["value"] = code()
    assert submit(mediator, module_claim).status_code == 201

    # The IG example: category by coding only (openIMIS reads text), claim code typed "Code".
    ig_claim = load_fixture("ig/Claim-Claim001.json")
    ig_claim.update(
        {
            "identifier": [{"type": {"coding": [{"code": "Code"}]}, "value": code()}],
            "patient": {"reference": "Patient/070707070"},
            "provider": {"reference": "Organization/HF0001"},
            "enterer": {"reference": "Practitioner/JMDP0011"},
        }
    )
    ig_claim["item"][0]["extension"][0]["valueReference"]["reference"] = "ActivityDefinition/A1"
    ig_claim["item"][1]["extension"][0]["valueReference"]["reference"] = "Medication/0001"
    answer = submit(mediator, ig_claim)
    assert answer.status_code in (200, 201), answer.text
    assert answer.json()["resourceType"] == "ClaimResponse"


@pytest.mark.parametrize("form", ["reference by number", "identifier", "reference by UUID"])
def test_insuree_number_is_resolved_to_the_current_insuree(mediator, clean_sandbox, form):
    """070707073 has a historical row first: openIMIS matches a number to it and rejects (7).

    The sandbox answers as real openIMIS does (`Patient.id` is the insuree number, the UUID only
    in the identifier typed UUID), so reading the UUID from `id` fails this test.
    """
    found = requests.get(f"{mediator.url}/fhir/Patient?identifier=070707073", timeout=10).json()
    patient = found["entry"][0]["resource"]
    assert patient["id"] == "070707073"
    current = uuid_of(patient)
    reference = {
        "reference by number": {"reference": "Patient/070707073"},
        "identifier": {"type": "Patient", "identifier": {"value": "070707073"}},
        "reference by UUID": {"reference": f"Patient/{current}"},
    }[form]
    claim = make_claim(code())
    claim["patient"] = reference
    answer = submit(mediator, claim)
    assert answer.status_code == 201, answer.text
    assert tag(answer.json()) == "positive"
    [stored] = [c for c in upstream(clean_sandbox)["claims"] if c["code"] == claim["identifier"][0]["value"]]
    assert stored["insuree"] == current


def test_unknown_insuree_is_422_on_the_patient(mediator, clean_sandbox):
    answer = submit(mediator, make_claim(code(), patient="Patient/555555555"))
    assert answer.status_code == 422
    assert answer.json()["issue"][0]["expression"] == ["Claim.patient"]


def test_every_problem_is_reported_at_once(mediator, clean_sandbox):
    claim = make_claim(code())
    del claim["created"]
    claim["type"]["coding"][0]["code"] = "X"
    claim["item"][0]["category"] = {"text": "drug"}
    claim["item"][1]["quantity"] = {"value": "lots"}
    claim["diagnosis"] = []
    answer = submit(mediator, claim)
    assert answer.status_code == 422
    expressions = {e for issue in answer.json()["issue"] for e in issue.get("expression", [])}
    for expected in ("Claim.created", "Claim.type", "Claim.item[0].category", "Claim.item[1].quantity.value"):
        assert any(e.startswith(expected) for e in expressions), (expected, expressions)
    assert any("diagnosis" in e for e in expressions)
    assert upstream(clean_sandbox)["submissions"] == {}, "nothing invalid may reach openIMIS"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/fhir+json", 400),
        (b'{"resourceType": "Patient"}', "application/fhir+json", 400),
        (b"<Claim/>", "application/fhir+xml", 415),
        (b"{}", "text/plain", 415),
    ],
)
def test_unreadable_submissions(mediator, body, content_type, status):
    answer = requests.post(
        mediator.url + "/fhir/Claim", data=body, headers={"Content-Type": content_type}, timeout=10
    )
    assert answer.status_code == status
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_oversized_claim_is_413(mediator):
    answer = requests.post(
        mediator.url + "/fhir/Claim", data=b"{" + b" " * 300_000 + b"}", headers=FHIR, timeout=10
    )
    assert answer.status_code == 413


@pytest.mark.parametrize("use", ["preauthorization", "predetermination"])
def test_preauthorization_and_predetermination_are_not_supported(mediator, clean_sandbox, use):
    claim = make_claim(code())
    claim["use"] = use
    answer = submit(mediator, claim)
    assert answer.status_code == 422
    assert answer.json()["issue"][0]["code"] == "not-supported"
    assert answer.json()["issue"][0]["expression"] == ["Claim.use"]


def test_claim_openimis_refuses_is_422_with_its_reason_and_can_be_corrected(mediator, clean_sandbox):
    claim = make_claim(code(), icd=["ZZ99"])
    answer = submit(mediator, claim)
    assert answer.status_code == 422
    assert "openIMIS refused the claim" in answer.json()["issue"][0]["diagnostics"]
    corrected = copy.deepcopy(claim)
    corrected["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] = "B54"
    assert submit(mediator, corrected).status_code == 201, "a refused claim code may be used again once fixed"


# -- nothing lost, nothing doubled ------------------------------------------------------------


def test_retry_gets_the_recorded_answer_and_never_a_second_claim(mediator, clean_sandbox):
    claim = make_claim(code())
    first, second = submit(mediator, claim), submit(mediator, claim)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert submissions(clean_sandbox, claim["identifier"][0]["value"]) == 1


def test_same_code_other_content_is_409(mediator, clean_sandbox):
    claim = make_claim(code())
    assert submit(mediator, claim).status_code == 201
    changed = copy.deepcopy(claim)
    changed["item"][0]["quantity"]["value"] = 3
    changed["total"]["value"] = 50.0
    answer = submit(mediator, changed)
    assert answer.status_code == 409
    assert answer.json()["issue"][0]["expression"] == ["Claim.identifier"]


def test_openhim_rerun_is_idempotent(mediator, clean_sandbox):
    claim = make_claim(code())
    original = submit(mediator, claim, {**FHIR, "X-OpenHIM-TransactionID": "tx-original-1"})
    rerun = submit(
        mediator,
        claim,
        {**FHIR, "X-OpenHIM-TransactionID": "tx-rerun-2", "parentID": "tx-original-1", "taskID": "task-9"},
    )
    assert json.loads(rerun.json()["response"]["body"]) == json.loads(original.json()["response"]["body"])
    assert rerun.json()["properties"]["replayed"] == "true"
    assert submissions(clean_sandbox, claim["identifier"][0]["value"]) == 1


def test_concurrent_duplicates_reach_openimis_once(mediator, clean_sandbox):
    claim = make_claim(code())
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: submit(mediator, claim), range(8)))
    assert {a.status_code for a in answers} <= {201, 202}
    assert submissions(clean_sandbox, claim["identifier"][0]["value"]) == 1
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1


def test_openimis_down_holds_the_claim_and_delivers_it_later(mediator, clean_sandbox):
    fault(clean_sandbox, fail_next=1, fail_status=503)
    claim = make_claim(code())
    answer = submit(mediator, claim)
    assert answer.status_code == 202
    held = answer.json()
    assert held["outcome"] == "queued" and "held by the mediator" in held["disposition"]
    ready = requests.get(mediator.url + "/ready", timeout=10).json()["claims"]
    assert ready["queue_depth"] >= 1 and ready["last_forwarding_error"]

    delivered = wait_until(
        lambda: (r := follow(mediator, answer.headers["Location"]).json())["outcome"] != "queued" and r
    )
    assert tag(delivered) == "positive"
    # One claim, one id: the 202's id stays the id; openIMIS's claim UUID is an identifier.
    assert delivered["id"] == held["id"] == answer.headers["Location"].rsplit("/", 1)[1]
    [stored] = [c for c in upstream(clean_sandbox)["claims"] if c["code"] == claim["identifier"][0]["value"]]
    assert uuid_of(delivered) == stored["uuid"]
    assert follow(mediator, f"{mediator.url}/fhir/ClaimResponse/{stored['uuid']}").json()["id"] == held["id"]
    again = submit(mediator, claim).json()
    assert again["outcome"] == delivered["outcome"] and again["id"] == held["id"]
    assert upstream(clean_sandbox)["accepted"].get(claim["identifier"][0]["value"], 1) == 1


def queue_cli(mediator, *args):
    env = {**os.environ, **mediator.env}
    return subprocess.run(
        [sys.executable, "-m", "mediator", "queue", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rate_limited_openimis_holds_the_claim_until_retry_after_or_a_nudge(mediator, clean_sandbox):
    fault(clean_sandbox, rate_limit=1)
    requests.get(mediator.url + "/fhir/Medication/0004", timeout=10)  # spends the budget
    claim = make_claim(code())
    claim_code = claim["identifier"][0]["value"]
    answer = submit(mediator, claim)
    assert answer.status_code == 202
    fault(clean_sandbox, rate_limit=None)
    time.sleep(3)  # longer than the first backoff: Retry-After (60 s) is honoured
    assert follow(mediator, answer.headers["Location"]).json()["outcome"] == "queued"
    listing = queue_cli(mediator, "list")
    assert claim_code in listing.stdout and "429" in listing.stdout
    shown = json.loads(queue_cli(mediator, "show", claim_code).stdout)
    assert shown["state"] == "queued" and shown["attempts"] in (0, 1)
    assert queue_cli(mediator, "retry", claim_code).returncode == 0
    wait_until(lambda: follow(mediator, answer.headers["Location"]).json()["outcome"] != "queued")
    assert submissions(clean_sandbox, claim_code) == 1


def test_lost_answer_is_reconciled_not_resubmitted(mediator, clean_sandbox):
    # openIMIS stores the claim but the answer is lost (a 502 from its proxy): the forwarder
    # must find it upstream by its code instead of creating a second one.
    fault(clean_sandbox, fail_after_commit=1, fail_status=502)
    claim = make_claim(code())
    claim_code = claim["identifier"][0]["value"]
    answer = submit(mediator, claim)
    assert answer.status_code == 202
    wait_until(lambda: follow(mediator, answer.headers["Location"]).json()["outcome"] != "queued")
    assert len([c for c in upstream(clean_sandbox)["claims"] if c.get("code") == claim_code]) == 1


# -- through OpenHIM ------------------------------------------------------------------------------


def test_envelope_status_and_properties(mediator, clean_sandbox):
    headers = {**FHIR, "X-OpenHIM-TransactionID": "tx-claim-env"}
    positive = submit(mediator, make_claim(code()), headers).json()
    assert positive["status"] == "Successful"
    props = positive["properties"]
    for key in ("claim_code", "facility", "insuree", "outcome", "total_claimed", "total_approved"):
        assert key in props
    assert [o["name"] for o in positive["orchestrations"]][-1] == "openIMIS claim submit"

    negative = submit(
        mediator,
        make_claim(code(), facility="HF0003", admin="JMDP0013", lines=[("service", "S1", 1, 150.0)]),
        headers,
    ).json()
    assert negative["status"] == "Completed" and negative["response"]["status"] == 200

    queued = submit(mediator, make_claim(code("Q-")), headers).json()
    assert queued["status"] == "Processing" and queued["response"]["status"] == 202
    assert queued["response"]["headers"]["Location"].startswith(mediator.url)
    for envelope in (positive, negative, queued):
        assert "Bearer" not in json.dumps(envelope) and "admin123" not in json.dumps(envelope)


def test_openimis_slower_than_the_timeout_is_reconciled_not_doubled(mediator, clean_sandbox):
    # The mediator gives up after 2 s, but openIMIS still stores the claim: in doubt. The
    # forwarder must find it by its code rather than send it again.
    fault(clean_sandbox, delay_s=3.0)
    claim = make_claim(code())
    claim_code = claim["identifier"][0]["value"]
    answer = submit(mediator, claim)
    assert answer.status_code == 202
    fault(clean_sandbox, delay_s=0)
    final = wait_until(
        lambda: (r := follow(mediator, answer.headers["Location"]).json())["outcome"] != "queued" and r
    )
    assert tag(final) == "positive"
    assert len([c for c in upstream(clean_sandbox)["claims"] if c.get("code") == claim_code]) == 1


def test_broken_openimis_500_holds_the_claim(mediator, clean_sandbox):
    fault(clean_sandbox, fail_next=2, fail_status=500)  # "Internal server error" OperationOutcome
    answer = submit(mediator, make_claim(code()))
    assert answer.status_code == 202, answer.text
    wait_until(lambda: follow(mediator, answer.headers["Location"]).json()["outcome"] != "queued")


def test_refused_login_holds_claims_until_openimis_lets_the_mediator_in(clean_sandbox):
    fault(clean_sandbox, login_fails=True)
    env = {
        "OPENIMIS_URL": clean_sandbox.url,
        "OPENIMIS_LOGIN_RETRY_AFTER": "1",
        "FORWARD_BACKOFF_INITIAL": "0.5",
    }
    with running_mediator(env) as fresh:
        claim = make_claim(code())
        answer = submit(fresh, claim)
        assert answer.status_code == 202
        assert "login" in answer.json()["disposition"]
        fault(clean_sandbox, login_fails=False)
        location = answer.headers["Location"].replace(
            f"http://localhost:{fresh.env['MEDIATOR_PORT']}", fresh.url
        )
        wait_until(lambda: requests.get(location, timeout=10).json()["outcome"] != "queued")
    assert submissions(clean_sandbox, claim["identifier"][0]["value"]) == 1


def test_same_claim_code_at_two_facilities_never_mixes_their_answers(mediator, clean_sandbox):
    # Claim codes are unique per facility only: openIMIS's ClaimResponse/<code>/ may answer the
    # other facility's claim. A held claim must be delivered as itself, not matched to that one.
    shared = code("DUP-")
    first = make_claim(shared, facility="HF0001", admin="JMDP0011")
    assert submit(mediator, first).status_code == 201
    fault(clean_sandbox, fail_next=1, fail_status=503)
    second = make_claim(shared, facility="HF0002", admin="JMDP0012", lines=[("service", "A1", 1, 10.0)])
    held = submit(mediator, second)
    assert held.status_code == 202
    final = wait_until(
        lambda: (r := follow(mediator, held.headers["Location"]).json())["outcome"] != "queued" and r
    )
    assert len(final["item"]) == 1, "the answer is HF0002's own one-line claim"
    stored = [c for c in upstream(clean_sandbox)["claims"] if c["code"] == shared]
    assert sorted(c["facility"] for c in stored) == ["HF0001", "HF0002"]


def test_a_claim_openimis_holds_but_shows_as_another_facilitys_is_never_submitted_again(
    mediator, clean_sandbox
):
    """openIMIS answers `ClaimResponse/<code>/` with the first claim of that code: HF0001's. HF0002's
    claim reached openIMIS but its answer was lost; "already exists" cannot be confirmed as ours."""
    shared = code("UNC-")
    assert submit(mediator, make_claim(shared, facility="HF0001", admin="JMDP0011")).status_code == 201
    fault(clean_sandbox, fail_after_commit=1, fail_status=503)
    ours = make_claim(shared, facility="HF0002", admin="JMDP0012", lines=[("service", "A1", 1, 10.0)])
    held = submit(mediator, ours)
    assert held.status_code == 202
    record_id = held.headers["Location"].rsplit("/", 1)[1]

    def state():
        return json.loads(queue_cli(mediator, "show", record_id).stdout)

    wait_until(lambda: state()["state"] == "unconfirmed", timeout=30)
    sent = submissions(clean_sandbox, shared)
    assert sent == 3, "HF0001's, ours (answer lost), and the one refused as existing"
    for _ in range(2):  # an operator's nudge looks it up again, and never resends it
        before = state()["last_error"]
        assert queue_cli(mediator, "retry", record_id).returncode == 0
        wait_until(lambda: state()["next_attempt"] is not None and state()["state"] == "unconfirmed")
        time.sleep(2 * float(mediator.env.get("FORWARD_POLL_INTERVAL", "1")))
        assert state()["last_error"] == before
    assert submissions(clean_sandbox, shared) == sent
    answer = follow(mediator, held.headers["Location"]).json()
    assert answer["outcome"] == "queued" and "operator" in answer["disposition"]
    ready = requests.get(mediator.url + "/ready", timeout=10).json()["claims"]
    assert ready["unconfirmed_for_an_operator"] == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType": "Claim", "total": {"value": 1' + b"0" * 400 + b"}}",
        b'{"resourceType": "Claim", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_pathological_json_is_a_client_error_not_a_500(mediator, body):
    answer = requests.post(mediator.url + "/fhir/Claim", data=body, headers=FHIR, timeout=10)
    assert answer.status_code in (400, 422)
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_the_claim_a_claim_response_points_at_is_the_claim_as_sent(mediator, clean_sandbox):
    claim = make_claim(code())
    claim["item"][0]["category"] = {"coding": [{"code": "service"}]}  # as sent: openIMIS needs text
    answer = submit(mediator, claim).json()
    assert answer["request"]["reference"] == f"Claim/{answer['id']}"
    read = requests.get(f"{mediator.url}/fhir/{answer['request']['reference']}", timeout=10)
    assert read.status_code == 200
    sent_back = read.json()
    assert sent_back["id"] == answer["id"] and sent_back["identifier"] == claim["identifier"]
    assert sent_back["item"][0]["category"] == {"coding": [{"code": "service"}]}, (
        "as received, not as normalised"
    )
    assert requests.get(f"{mediator.url}/fhir/Claim/no-such-claim", timeout=10).status_code == 404
