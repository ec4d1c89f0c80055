"""openIMIS unreachable, slow, refusing the login or rate-limiting: told apart from client errors."""

import requests

from tests.support.services import free_port, running_mediator

FHIR = {"Accept": "application/fhir+json"}


def fault(sandbox, **faults):
    requests.post(sandbox.url + "/_sandbox/faults", json=faults, timeout=5).raise_for_status()


def test_unreachable_openimis_is_502_and_not_ready(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_mediator({"OPENIMIS_URL": dead, "MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        answer = requests.get(mediator.url + "/fhir/Medication", headers=FHIR, timeout=10)
        assert answer.status_code == 502
        assert answer.json()["issue"][0]["code"] == "transient"
        assert "unreachable" in answer.json()["issue"][0]["diagnostics"]
        ready = requests.get(mediator.url + "/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["openimis"]["ready"] is False


def test_slow_openimis_is_504(mediator, clean_sandbox):
    fault(clean_sandbox, delay_s=3.0)  # the mediator under test waits 2 s
    answer = requests.get(mediator.url + "/fhir/Medication/0001", headers=FHIR, timeout=20)
    assert answer.status_code == 504
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_broken_openimis_is_502_without_its_page(mediator, clean_sandbox):
    fault(clean_sandbox, fail_next=5, fail_status=503)
    answer = requests.get(mediator.url + "/fhir/Medication", headers=FHIR, timeout=10)
    assert answer.status_code == 502
    assert "<html" not in answer.text.lower() and "nginx" not in answer.text


def test_rate_limited_openimis_is_503_with_retry_after(mediator, clean_sandbox):
    fault(clean_sandbox, rate_limit=1)
    statuses = []
    for _ in range(4):
        answer = requests.get(mediator.url + "/fhir/Medication/0004", headers=FHIR, timeout=10)
        statuses.append(answer.status_code)
        if answer.status_code == 503:
            assert int(answer.headers["Retry-After"]) > 0
    assert 503 in statuses


def test_refused_login_is_503_and_never_hammered(sandbox, tmp_path):
    requests.post(sandbox.url + "/_sandbox/reset", timeout=5).raise_for_status()
    env = {
        "OPENIMIS_URL": sandbox.url,
        "OPENIMIS_PASSWORD": "wrong-password",
        "MEDIATOR_STATE_DIR": str(tmp_path),
        "MEDIATOR_WORKERS": "1",
    }
    with running_mediator(env) as mediator:
        for _ in range(8):
            answer = requests.get(mediator.url + "/fhir/Medication", headers=FHIR, timeout=10)
            assert answer.status_code == 503
            assert "wrong-password" not in answer.text
        stats = requests.get(sandbox.url + "/_sandbox/stats", timeout=5).json()
    assert "wrong-password" not in mediator.log()
    failed = stats.get("logins", {}).get("failed", stats.get("logins_failed"))
    assert failed == 1, f"one failed login, then the guard: {stats}"
    requests.post(sandbox.url + "/_sandbox/reset", timeout=5).raise_for_status()
