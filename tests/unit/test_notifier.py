"""The notifier's record of a delivery: what auditors see in OpenHIM never holds the facility's secrets."""

import json

import responses

from mediator.notifications.delivery import Notifier
from mediator.runtime import MediatorRuntime
from mediator.store import ClaimRecord, ClaimState
from mediator.store.notifications import ACTIVE, Subscription

ENDPOINT = "https://emr.clinic.example.org/hook"


def test_a_delivery_is_reported_to_the_claims_transaction_without_the_headers(settings):
    runtime = MediatorRuntime(settings)
    store = runtime.store
    store.notifications.save_subscription(
        Subscription(
            "S1", ACTIVE, ENDPOINT, True, ["Authorization: Bearer emr-secret"], {}, 1.0, 1.0, facility="HF1"
        )
    )
    claim = ClaimRecord(
        "r1", "C1", "HF1", "h", ClaimState.QUEUED, {"claim": {}}, 1.0, 1.0, openhim_tx_id="tx-1"
    )
    store.intake(claim)
    body = {"resourceType": "ClaimResponse", "id": "r1", "outcome": "complete"}
    store.finish(
        "r1", None, notify=True, state=ClaimState.DONE, outcome="positive", response_body=json.dumps(body)
    )
    reports = []
    with responses.RequestsMock() as endpoint:
        hook = endpoint.post(ENDPOINT, status=204)
        assert (
            Notifier(runtime, lambda tx, orchestration: reports.append((tx, orchestration))).run_once() == 1
        )
        sent = hook.calls[0].request
    assert sent.headers["Authorization"] == "Bearer emr-secret"
    assert json.loads(sent.body)["meta"]["versionId"] == "1"
    [(tx, orchestration)] = reports
    assert tx == "tx-1" and orchestration["response"]["status"] == 204
    assert "emr-secret" not in json.dumps(orchestration)
    assert store.notifications.notification_stats().delivered == 1
