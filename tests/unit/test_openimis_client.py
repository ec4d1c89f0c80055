"""The openIMIS client: token caching and refresh, the login guard, error classification."""

import json

import pytest
import requests
import responses
from responses import matchers

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis import client as client_module
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import (
    OpenImisLoginRefused,
    OpenImisRateLimited,
    OpenImisTimeout,
    OpenImisUnreachable,
)

BASE = "https://imis.example.org/api/api_fhir_r4/"
JWT_1 = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbiI6MX0.c2lnbmF0dXJlLW9uZS1vbmU"
JWT_2 = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbiI6Mn0.c2lnbmF0dXJlLXR3by10d28"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(settings, clock):
    return OpenImisClient(settings, clock=clock)


def login_ok(rsps, token=JWT_1, exp=None, clock=None):
    exp = exp if exp is not None else (clock.now if clock else 1_000_000) + 86400
    return rsps.post(BASE + "login/", json={"token": token, "exp": exp})


@responses.activate
def test_logs_in_once_and_reuses_the_token(client, clock):
    login = login_ok(responses, clock=clock)
    listing = responses.get(
        BASE + "Medication/",
        json={"resourceType": "Bundle"},
        match=[matchers.header_matcher({"Authorization": f"Bearer {JWT_1}", "Accept": "application/json"})],
    )
    for _ in range(3):
        assert client.get("Medication/", OrchestrationRecorder(), "list").ok
    assert login.call_count == 1
    assert listing.call_count == 3
    assert json.loads(login.calls[0].request.body) == {"username": "Admin", "password": "s3cret-pass"}


@responses.activate
def test_renews_the_token_shortly_before_it_expires(client, clock):
    login_ok(responses, JWT_1, exp=clock.now + 3600)
    responses.get(BASE + "Medication/", json={})
    client.get("Medication/", OrchestrationRecorder(), "list")
    clock.now += 3600 - 30  # inside the renewal margin
    responses.replace(responses.POST, BASE + "login/", json={"token": JWT_2, "exp": clock.now + 3600})
    client.get("Medication/", OrchestrationRecorder(), "list")
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {JWT_2}"


@responses.activate
def test_refreshes_once_on_401_then_gives_up(client, clock):
    login = login_ok(responses, clock=clock)
    responses.get(BASE + "Medication/", status=401, json={"detail": "expired"})
    recorder = OrchestrationRecorder()
    with pytest.raises(OpenImisLoginRefused):
        client.get("Medication/", recorder, "openIMIS medical items list")
    assert login.call_count == 2
    names = [c.name for c in recorder.calls]
    assert names == [
        "openIMIS login",
        "openIMIS medical items list",
        "openIMIS login",
        "openIMIS medical items list (after token refresh)",
    ]


@responses.activate
def test_failed_login_is_not_retried_until_the_guard_expires(client, clock, settings):
    login = responses.post(BASE + "login/", status=401, json="INCORRECT_CREDENTIALS")
    for _ in range(5):
        with pytest.raises(OpenImisLoginRefused):
            client.get("Medication/", OrchestrationRecorder(), "list")
    assert login.call_count == 1, "a failed login must not be hammered (openIMIS locks after 5)"
    other_process = OpenImisClient(settings, clock=clock)  # same state dir: same instance
    with pytest.raises(OpenImisLoginRefused):
        other_process.get("Medication/", OrchestrationRecorder(), "list")
    assert login.call_count == 1, "the failure is remembered by every process of the instance"
    clock.now += 61
    with pytest.raises(OpenImisLoginRefused):
        client.get("Medication/", OrchestrationRecorder(), "list")
    assert login.call_count == 2
    clock.now += 61  # the second failure doubled the wait
    with pytest.raises(OpenImisLoginRefused):
        client.get("Medication/", OrchestrationRecorder(), "list")
    assert login.call_count == 2
    clock.now += 60
    responses.replace(responses.POST, BASE + "login/", json={"token": JWT_1, "exp": clock.now + 86400})
    responses.get(BASE + "Medication/", json={})
    assert client.get("Medication/", OrchestrationRecorder(), "list").ok


@responses.activate
def test_transport_failures_are_told_apart(client, clock):
    login_ok(responses, clock=clock)
    responses.get(BASE + "Medication/", body=requests.ConnectTimeout("slow"))
    with pytest.raises(OpenImisTimeout):
        client.get("Medication/", OrchestrationRecorder(), "list")
    responses.replace(responses.GET, BASE + "Medication/", body=requests.ConnectionError("refused"))
    with pytest.raises(OpenImisUnreachable):
        client.get("Medication/", OrchestrationRecorder(), "list")
    responses.replace(responses.GET, BASE + "Medication/", status=429, headers={"Retry-After": "30"})
    with pytest.raises(OpenImisRateLimited) as limited:
        client.get("Medication/", OrchestrationRecorder(), "list")
    assert limited.value.retry_after == 30


@responses.activate
def test_answers_with_errors_are_returned_for_the_transaction_to_judge(client, clock):
    login_ok(responses, clock=clock)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "exception",
                "details": {"text": "Claim with code 'X' already exists."},
            }
        ],
    }
    responses.post(BASE + "Claim/", status=500, json=outcome)
    answer = client.post("Claim/", b"{}", OrchestrationRecorder(), "submit")
    assert answer.status == 500
    assert answer.outcome_messages() == ["Claim with code 'X' already exists."]


@responses.activate
def test_orchestrations_never_carry_credentials(client, clock):
    login_ok(responses, clock=clock)
    responses.get(BASE + "Medication/", json={"resourceType": "Bundle"})
    recorder = OrchestrationRecorder()
    client.get("Medication/", recorder, "openIMIS medical items list", params={"_count": "2"})
    dumped = json.dumps(recorder.orchestrations())
    assert "s3cret-pass" not in dumped
    assert JWT_1 not in dumped
    login_orch, list_orch = recorder.orchestrations()
    assert login_orch["name"] == "openIMIS login"
    assert json.loads(login_orch["request"]["body"]) == {"username": "Admin", "password": "***"}
    assert list_orch["request"]["querystring"] == "_count=2"
    assert list_orch["request"]["timestamp"].endswith("+00:00")
    assert list_orch["response"]["status"] == 200


@responses.activate
def test_tls_is_verified_unless_turned_off(settings, tmp_path, monkeypatch):
    # requests lets REQUESTS_CA_BUNDLE override a session-level verify=False: pass it per call.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    login_ok(responses)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    for overrides, expected in [
        ({}, "/etc/ssl/certs/ca-certificates.crt"),  # verified, with the CA bundle of the environment
        ({"openimis_ca_bundle": str(ca)}, str(ca)),
        ({"openimis_verify_tls": "false"}, False),
    ]:
        OpenImisClient(settings.with_overrides(overrides)).ensure_login(OrchestrationRecorder())
        assert responses.calls[-1].request.req_kwargs["verify"] == expected


@responses.activate
def test_fixed_credentials_may_log_in_at_once(client, clock, settings):
    responses.post(BASE + "login/", status=401, json="INCORRECT_CREDENTIALS")
    with pytest.raises(OpenImisLoginRefused):
        client.get("Medication/", OrchestrationRecorder(), "list")
    fixed = OpenImisClient(settings.with_overrides({"openimis_password": "the-right-one"}), clock=clock)
    responses.replace(responses.POST, BASE + "login/", json={"token": JWT_1, "exp": clock.now + 86400})
    responses.get(BASE + "Medication/", json={})
    assert fixed.get("Medication/", OrchestrationRecorder(), "list").ok


@pytest.mark.parametrize(
    ("method", "body", "params"),
    [
        ("POST", b'{"resourceType":"Claim"}', None),
        ("GET", None, {"_count": "10", "page-offset": "2"}),
        ("GET", None, {"identifier": "Code|A 1/é&x=y"}),
        ("GET", None, None),
    ],
)
def test_calls_are_prepared_as_requests_itself_prepares_them(method, body, params):
    url = "http://openimis.example:8000/api/api_fhir_r4/Medication/"
    headers = {"Accept": "application/json", "Authorization": "Bearer t"}
    ours = client_module._prepare(method, url, headers, body, params)
    theirs = requests.Request(method, url, headers=headers, data=body, params=params).prepare()
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert dict(ours.headers) == dict(theirs.headers)
