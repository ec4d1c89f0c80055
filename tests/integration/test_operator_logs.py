"""The log as an operator reads it: why a request was refused, one word per kind of refusal,
and the id a clinic quotes on every answer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import requests

from tests.support.services import running_mediator
from tests.support.waiting import wait_until

FHIR = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
#: The README's vocabulary of the transaction line's `outcome` for a client error.
CLIENT_OUTCOMES = {"invalid", "not-found", "not-supported", "conflict", "too-large", "forbidden"}


def transaction_line(mediator, request_id: str) -> dict:
    def found():
        for line in mediator.log().splitlines():
            if request_id in line and '"message": "transaction"' in line:
                return json.loads(line)
        return None

    return wait_until(found)


def call(mediator, method, path, **kwargs):
    kwargs.setdefault("headers", FHIR)
    return requests.request(method, mediator.url + path, timeout=10, **kwargs)


CLIENT_ERRORS = [
    ("GET", "/fhir/Medication?_count=x", {}, 400, "invalid", ["_count"]),
    ("GET", "/fhir/Patient", {}, 400, "invalid", ["identifier"]),
    ("GET", "/fhir/Medication/nope-0", {}, 404, "not-found", None),
    ("GET", "/nothing-here", {}, 404, "not-found", None),
    ("DELETE", "/fhir/Claim", {}, 405, "not-supported", None),
    ("GET", "/fhir/metadata", {"headers": {"Accept": "text/html"}}, 406, "not-supported", None),
    (
        "POST",
        "/fhir/Claim",
        {"headers": {"Content-Type": "text/plain"}, "data": "x"},
        415,
        "not-supported",
        None,
    ),
    ("POST", "/fhir/Claim", {"data": b"{" * 300_000}, 413, "too-large", None),
    ("POST", "/fhir/CoverageEligibilityRequest", {"data": "{oops"}, 400, "invalid", None),
    (
        "POST",
        "/fhir/CoverageEligibilityRequest",
        {"data": json.dumps({"resourceType": "CoverageEligibilityRequest"})},
        422,
        "invalid",
        ["CoverageEligibilityRequest.patient"],
    ),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "outcome", "expression"), CLIENT_ERRORS)
def test_the_transaction_line_of_a_client_error_says_why(
    mediator, method, path, kwargs, status, outcome, expression
):
    answer = call(mediator, method, path, **kwargs)
    assert answer.status_code == status
    request_id = answer.headers["X-Request-ID"]
    line = transaction_line(mediator, request_id)
    assert line["status"] == status and line["outcome"] == outcome
    assert outcome in CLIENT_OUTCOMES
    answered = answer.json()["issue"]
    assert [i["code"] for i in line["issues"]] == [i["code"] for i in answered]
    assert line["issues"][0]["diagnostics"] == answered[0]["diagnostics"]
    if expression:
        assert expression in [i.get("expression") for i in line["issues"]]


def test_every_answer_carries_its_transaction_id(mediator):
    seen = set()
    for path in ("/fhir/metadata", "/health", "/ready", "/fhir/Medication?_count=1"):
        answer = call(mediator, "GET", path)
        assert answer.status_code == 200
        request_id = answer.headers["X-Request-ID"]
        assert transaction_line(mediator, request_id)["path"] == path.split("?")[0]
        seen.add(request_id)
    assert len(seen) == 4


def test_a_clients_own_request_id_is_logged_beside_the_mediators(mediator):
    answer = call(mediator, "GET", "/fhir/metadata", headers={"X-Request-ID": "emr-2026-000123"})
    assert answer.headers["X-Request-ID"].startswith("req-")
    assert (
        transaction_line(mediator, answer.headers["X-Request-ID"])["client_request_id"] == "emr-2026-000123"
    )
    odd = call(mediator, "GET", "/fhir/metadata", headers={"X-Request-ID": "x" * 500})
    assert transaction_line(mediator, odd.headers["X-Request-ID"])["client_request_id"] is None


def json_lines(text: str) -> list[dict]:
    """Every line of a log, as JSON: a line that is not JSON fails the test."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a line that is not JSON: {line!r}") from None
    return lines


@pytest.mark.parametrize("stopped", ["process-group", "master-only"])
def test_a_clean_run_with_the_embedded_sandbox_logs_only_json_and_no_error(tmp_path, stopped):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        assert call(mediator, "GET", "/fhir/Medication?_count=1").status_code == 200
        wait_until(lambda: "services/items cache refreshed" in mediator.log())
        if stopped == "master-only":  # as `docker stop` does
            os.kill(mediator.process.pid, signal.SIGTERM)
            mediator.process.wait(timeout=30)
    lines = json_lines(mediator.log())
    assert any(line["message"] == "openIMIS sandbox listening" for line in lines)
    assert any(line["message"] == "Shutting down: Master" for line in lines)
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []


def test_the_sandbox_says_in_json_that_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mediator.sandbox", "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    (line,) = json_lines(done.stderr + done.stdout)
    assert line["level"] == "ERROR" and f"127.0.0.1:{port}" in line["message"]
    assert "in use" in line["message"]
