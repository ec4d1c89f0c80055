"""A minimal openIMIS stand-in answering fixed, realistic bodies (see fixtures.py), fast enough
that the upstream is never the bottleneck of the benchmark.

    BENCH_FIXTURES=<file> gunicorn -k gthread -w 2 --threads 8 tests.benchmarks.upstream:app
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from flask import Flask, Response, request

BASE = "/api/api_fhir_r4/"
JSON = "application/json"

_fixtures = json.loads(Path(os.environ["BENCH_FIXTURES"]).read_text(encoding="utf-8"))
_TOKEN = _fixtures["token"]
_BUNDLES = {rtype: body.encode() for rtype, body in _fixtures["bundles"].items()}
_PATIENT = _fixtures["patient"].encode()
_CLAIM_RESPONSE = _fixtures["claim_response"]
_CLAIM_RESPONSE_UUID = _fixtures["claim_response_uuid"]
_TEMPLATE_CODE = _fixtures["claim_template_code"]
_ELIGIBILITY = _fixtures["eligibility_response"].encode()
_ELIGIBILITY_STATUS = _fixtures["eligibility_status"]
_NOT_FOUND = json.dumps(
    {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
).encode()

app = Flask(__name__)


def _answer(body: bytes | str, status: int = 200) -> Response:
    return Response(body, status=status, content_type=JSON)


@app.post(BASE + "login/")
def login() -> Response:
    return _answer(json.dumps({"token": _TOKEN, "exp": int(time.time()) + 86400}))


@app.get(BASE + "<rtype>/")
def search(rtype: str) -> Response:
    if rtype == "Patient":
        return _answer(_PATIENT)  # openIMIS answers ?identifier= with the bare resource
    bundle = _BUNDLES.get(rtype)
    return _answer(bundle) if bundle is not None else _answer(_NOT_FOUND, 404)


@app.post(BASE + "Claim/")
def claim() -> Response:
    """A checked (positive) ClaimResponse for the claim code that was sent."""
    sent = json.loads(request.get_data())
    code = next(
        (
            i.get("value")
            for i in sent.get("identifier") or []
            if any(c.get("code") in ("Code", "MR") for c in (i.get("type") or {}).get("coding") or [])
        ),
        _TEMPLATE_CODE,
    )
    body = _CLAIM_RESPONSE.replace(_TEMPLATE_CODE, code).replace(_CLAIM_RESPONSE_UUID, str(uuid.uuid4()))
    return _answer(body, 201)


@app.post(BASE + "CoverageEligibilityRequest/")
def eligibility() -> Response:
    # Read, as openIMIS reads it: a body left unread on a keep-alive connection makes gunicorn's
    # gthread worker park a thread on that connection until its next request (requests of the
    # next cell then queued behind parked threads and timed out).
    request.get_data()
    return _answer(_ELIGIBILITY, _ELIGIBILITY_STATUS)
