"""The final update of a `Processing` transaction adds to what core has; it never replaces it."""

import json
import time
from types import SimpleNamespace

import pytest
import responses

from mediator.forwarder import CallJournal, Forwarder
from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.openhim.envelope import TransactionStatus
from mediator.openhim.orchestrations import UpstreamCall
from mediator.openhim.transactions import update_transaction
from mediator.store import ClaimRecord, ClaimState, SqliteClaimStore

BASE = "https://openhim.example.org:8080"
TX = "5f0c6a2b9d3e4a0012345678"
TX_URL = f"{BASE}/transactions/{TX}"

#: What core 4.0.5 keeps of a claim answered 202: the mediator's calls, its own route, properties.
STORED = {
    "_id": TX,
    "status": "Processing",
    "response": {"status": 202, "timestamp": "2026-01-05T10:00:01.000Z"},
    "orchestrations": [
        {"name": "openIMIS claim submit", "request": {"timestamp": "2026-01-05T10:00:00.500Z"}},
        {"name": "openIMIS mediator", "request": {"timestamp": "2026-01-05T10:00:00.000Z"}},
    ],
    "properties": {"transaction": "claim submit", "claim_code": "C-1", "outcome": "queued"},
}


@pytest.fixture
def api(settings):
    return OpenHimApi(
        settings.with_overrides(
            {"openhim_api_url": BASE, "openhim_password": "him-secret", "openhim_auth": "basic"}
        )
    )


def orchestration(name: str, timestamp: str) -> dict:
    return {"name": name, "request": {"timestamp": timestamp, "body": "{}"}}


def sent_update() -> dict:
    return json.loads(next(c for c in responses.calls if c.request.method == "PUT").request.body)


def update(api, orchestrations, properties=None):
    update_transaction(
        api, TX, TransactionStatus.SUCCESSFUL, 201, {"Location": "x"}, "{}", orchestrations, properties
    )


@responses.activate
def test_new_orchestrations_are_appended_and_properties_merged(api):
    responses.get(TX_URL + "?filterRepresentation=simpledetails", json=STORED)
    responses.put(TX_URL, body="updated")
    delivery = orchestration("openIMIS claim submit", "2026-01-05T10:05:00.000+00:00")
    update(api, [delivery], {"outcome": "positive", "openimis_status": "4", "total_claimed": 30.0})
    sent = sent_update()
    assert "orchestrations" not in sent, "a field sent replaces what core has"
    assert sent["$push"] == {"orchestrations": {"$each": [delivery]}}
    assert sent["properties"] == {
        "transaction": "claim submit",
        "claim_code": "C-1",
        "outcome": "positive",
        "openimis_status": "4",
        "total_claimed": "30.0",
    }
    assert sent["status"] == "Successful" and sent["response"]["status"] == 201


@responses.activate
def test_an_orchestration_core_has_already_is_not_appended_again(api):
    """A report repeated after its answer was lost: core's `...Z` is the same instant as ours."""
    responses.get(TX_URL + "?filterRepresentation=simpledetails", json=STORED)
    responses.put(TX_URL, body="updated")
    again = orchestration("openIMIS claim submit", "2026-01-05T10:00:00.500+00:00")
    update(api, [again], {"outcome": "positive"})
    assert "$push" not in sent_update()


@responses.activate
def test_a_transaction_core_has_not_stored_yet_is_left_for_the_next_round(api):
    responses.get(TX_URL + "?filterRepresentation=simpledetails", json={**STORED, "response": None})
    with pytest.raises(OpenHimError, match="not stored by core yet"):
        update(api, [], {"outcome": "positive"})
    assert [c.request.method for c in responses.calls] == ["GET"]


def call(name: str, at: float) -> UpstreamCall:
    return UpstreamCall(name, "POST", "https://imis.example.org/api/Claim/", {}, b"{}", at, at + 0.1, 201)


def test_the_journal_keeps_the_first_and_latest_calls_and_counts_the_others():
    journal = CallJournal(first=2, latest=3, max_claims=2)
    journal.add("a", [call(f"retry {i}", i) for i in range(10)], {"outcome": "queued"})
    history = journal.get("a")
    assert [c.name for c in history.calls] == ["retry 0", "retry 1", "retry 7", "retry 8", "retry 9"]
    assert history.left_out == 5
    journal.add("b", [])
    journal.add("c", [])
    assert journal.get("a") is None and len(journal) == 2, "the oldest claim is forgotten first"


class Claims:
    """The claim service's two answers the forwarder needs: a delivery, and the recorded answer."""

    def __init__(self, store):
        self.store = store

    def deliver(self, record, recorder):
        now = time.time()
        recorder.record(call("openIMIS claim submit", now))
        self.store.finish(record.id, None, state=ClaimState.DONE, outcome="positive", response_status=201)
        record.state = ClaimState.DONE
        return SimpleNamespace(outcome="positive", properties={"outcome": "positive", "openimis_status": "4"})

    def recorded_answer(self, record):
        return SimpleNamespace(
            transaction_status=TransactionStatus.SUCCESSFUL,
            http_status=201,
            headers={},
            encoded='{"resourceType": "ClaimResponse"}',
            body=None,
            properties={"claim_code": record.claim_code, "outcome": "positive"},
        )


@responses.activate
def test_a_core_down_at_report_time_still_gets_the_delivery_calls_later(api, settings, tmp_path):
    store = SqliteClaimStore(tmp_path / "claims.sqlite3")
    record = ClaimRecord(
        id="r-1",
        claim_code="C-1",
        facility="HF1",
        content_hash="h",
        state=ClaimState.QUEUED,
        payload={"claim": {}},
        created_at=1.0,
        updated_at=1.0,
        openhim_tx_id=TX,
    )
    store.intake(record)
    store.await_report(record.id, TX)
    runtime = SimpleNamespace(
        settings=settings, store=store, claims=Claims(store), refresh_live_config=lambda: None
    )
    forwarder = Forwarder(runtime, api)

    responses.get(TX_URL + "?filterRepresentation=simpledetails", status=503, body="down")
    assert forwarder.run_once() == 1
    assert store.due_reports(10), "not reported while core is down"

    responses.replace(responses.GET, TX_URL + "?filterRepresentation=simpledetails", json=STORED)
    responses.put(TX_URL, body="updated")
    assert forwarder.run_once() == 0
    sent = sent_update()
    assert [o["name"] for o in sent["$push"]["orchestrations"]["$each"]] == ["openIMIS claim submit"]
    assert (
        sent["properties"]["openimis_status"] == "4" and sent["properties"]["transaction"] == "claim submit"
    )
    assert store.due_reports(10) == [] and len(forwarder.journal) == 0


@responses.activate
def test_a_notification_is_added_to_the_claims_transaction_without_changing_its_answer(api):
    from mediator.openhim.transactions import append_orchestrations

    stored = json.loads(json.dumps(STORED))
    responses.get(TX_URL, json=stored)
    put = responses.put(TX_URL, json={})
    delivery = {
        "name": "notification to the facility (subscription S1)",
        "request": {"timestamp": "2026-01-05T11:00:00.000Z"},
    }
    append_orchestrations(api, TX, [delivery])
    body = json.loads(put.calls[0].request.body)
    assert body == {"$push": {"orchestrations": {"$each": [delivery]}}}, (
        "status, response, properties untouched"
    )
    stored["orchestrations"].append(delivery)
    responses.replace(responses.GET, TX_URL, json=stored)
    append_orchestrations(api, TX, [delivery])
    assert put.call_count == 1, "an orchestration core has is not added again"
