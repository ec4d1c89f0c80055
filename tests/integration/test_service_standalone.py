"""`python -m mediator` with nothing configured: gunicorn plus the embedded sandbox."""

import json

import requests

from tests.support.services import running_mediator


def test_fresh_start_answers_medication_from_the_embedded_sandbox(tmp_path):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        answer = requests.get(mediator.url + "/fhir/Medication", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("application/fhir+json")
        bundle = answer.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        assert bundle["total"] > 0 and bundle["entry"][0]["resource"]["resourceType"] == "Medication"

        ready = requests.get(mediator.url + "/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["openhim"] == {"mode": "standalone"}

    log = mediator.log()
    json_lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("embedded openIMIS sandbox" in line["message"] for line in json_lines)
    assert "admin123" not in log
