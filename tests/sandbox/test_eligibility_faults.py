"""CoverageEligibilityRequest in both modes, runtime faults, rate limiting, controls."""

from __future__ import annotations

import time

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE, load_fixture, make_claim


def _eligibility(chf: str) -> dict:
    body = load_fixture("test_coverageEligibilityRequest.json")
    body["patient"] = {"reference": f"Patient/{chf}"}
    body["item"][0]["productOrService"]["text"] = "A1"
    body["item"][1]["productOrService"]["text"] = "0004"
    return body


def test_eligibility_working(api, client):
    resp = api.post("CoverageEligibilityRequest/", _eligibility("070707070"))
    assert resp.status_code == 201
    res = resp.json
    assert res["resourceType"] == "CoverageEligibilityResponse" and res["outcome"] == "complete"
    assert len(res["insurance"]) == 1
    ins = res["insurance"][0]
    policy = next(i for i in client.get("/_sandbox/seed").json["insurees"] if i["chf_id"] == "070707070")[
        "policies"
    ][0]
    assert ins["coverage"]["reference"] == f"Coverage/{policy['uuid']}"
    cats = {i["category"]["text"]: i for i in ins["item"]}
    assert cats["is_service_ok"]["excluded"] is False
    assert cats["total_visits"]["benefit"][0]["allowedUnsignedInt"] == 3


def test_eligibility_without_active_policy(api):
    for chf in ("070707071", "070707072"):
        resp = api.post("CoverageEligibilityRequest/", _eligibility(chf))
        assert resp.status_code == 201
        assert "insurance" not in resp.json


def test_eligibility_failing_mode():
    client = create_sandbox_app(SandboxConfig(eligibility_mode="failing")).test_client()
    token = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"}).json
    h = {"Authorization": "Bearer " + token["token"]}
    resp = client.post(BASE + "CoverageEligibilityRequest/", json=_eligibility("070707070"), headers=h)
    assert resp.status_code == 500
    assert resp.json["resourceType"] == "OperationOutcome"
    resp = client.post(BASE + "CoverageEligibilityRequest/", json=_eligibility("070707072"), headers=h)
    assert resp.status_code == 201


def test_eligibility_mode_fault_and_unknown_insuree(api):
    api.control("faults", {"eligibility_mode": "failing"})
    assert api.post("CoverageEligibilityRequest/", _eligibility("070707070")).status_code == 500
    api.control("faults", {"eligibility_mode": "working"})
    assert api.post("CoverageEligibilityRequest/", _eligibility("070707070")).status_code == 201
    assert api.post("CoverageEligibilityRequest/", _eligibility("111111111")).status_code == 500


def test_fail_next(api):
    api.control("faults", {"fail_next": 2})
    for _ in range(2):
        resp = api.get("Medication/")
        assert resp.status_code == 500
        assert resp.json["issue"][0]["details"]["text"] == "Internal server error"
    assert api.get("Medication/").status_code == 200


def test_fail_next_gateway_status(api):
    api.control("faults", {"fail_next": 1, "fail_status": 503})
    resp = api.get("Medication/")
    assert resp.status_code == 503
    assert resp.mimetype == "text/html"


def test_fail_next_does_not_hit_login(client):
    client.post("/_sandbox/faults", json={"fail_next": 1})
    resp = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"})
    assert resp.status_code == 200


def test_fail_after_commit_then_retry_is_duplicate(api):
    api.control("faults", {"fail_after_commit": 1, "fail_status": 502})
    assert api.post("Claim/", make_claim("C-LOST")).status_code == 502
    resp = api.post("Claim/", make_claim("C-LOST"))
    assert resp.status_code == 500
    assert "already exists" in resp.json["issue"][0]["details"]["text"]
    assert api.get("ClaimResponse/C-LOST/").json["outcome"] == "partial"
    claims = api.control("claims").json
    assert claims["submissions"]["C-LOST"] == 2
    assert len(claims["claims"]) == 1


def test_delay(api):
    api.control("faults", {"delay_s": 0.2})
    start = time.monotonic()
    api.get("Medication/")
    assert time.monotonic() - start >= 0.2


def test_rate_limit_fault(api):
    api.control("faults", {"rate_limit": 3})
    assert [api.get("Medication/").status_code for _ in range(3)] == [200] * 3
    resp = api.get("Medication/")
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


def test_rate_limit_config_counts_login():
    client = create_sandbox_app(SandboxConfig(request_budget_per_minute=2)).test_client()
    good = {"username": "Admin", "password": "admin123"}
    assert client.post(BASE + "login/", json=good).status_code == 200
    assert client.post(BASE + "login/", json=good).status_code == 200
    assert client.post(BASE + "login/", json=good).status_code == 429


def test_login_fails_fault(client):
    client.post("/_sandbox/faults", json={"login_fails": True})
    resp = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"})
    assert resp.status_code == 401


def test_unknown_fault_is_400(client):
    assert client.post("/_sandbox/faults", json={"explode": True}).status_code == 400


def test_stats_and_reset(api):
    api.post("Claim/", make_claim("C-STATS"))
    api.get("Medication/")
    stats = api.control("stats").json
    assert stats["logins"]["ok"] == 1
    assert stats["api_calls"]["POST Claim"] == 1
    assert stats["api_calls"]["GET Medication"] == 1
    api.control("faults", {"fail_next": 5})
    assert api.control("reset", {}).json["faults"]["fail_next"] == 0
    assert api.control("claims").json == {"claims": [], "submissions": {}, "accepted": {}}
    # tokens survive a reset
    assert api.get("Medication/").status_code == 200
