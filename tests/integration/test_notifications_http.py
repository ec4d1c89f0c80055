"""Claim results pushed to facilities: Subscriptions, the outbox and deliveries, end to end.

A real mediator (gunicorn, its agent) in front of the sandbox, and a real HTTP receiver as the
facility's endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import requests

from tests.sandbox.helpers import make_claim
from tests.support.receiver import running_receiver
from tests.support.services import free_port, running_mediator
from tests.support.waiting import wait_until

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
SECRET = "Bearer facility-api-token-42"


@pytest.fixture(scope="module")
def receiver():
    with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def notifying_mediator(sandbox, receiver, tmp_path_factory):
    port = free_port()
    env = {
        "MEDIATOR_PORT": str(port),
        "MEDIATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENIMIS_URL": sandbox.url,
        "OPENIMIS_READ_TIMEOUT": "2",
        "MEDIATOR_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "MASTER_DATA_CACHE_ENABLED": "false",
        "SUBSCRIPTION_ENDPOINT_ALLOWLIST": receiver.url + "/",
        "FORWARD_POLL_INTERVAL": "0.2",
        "FORWARD_BACKOFF_INITIAL": "0.3",
        "ADJUDICATION_POLL_INTERVAL": "0.5",
        "NOTIFICATION_BACKOFF_INITIAL": "0.2",
        "NOTIFICATION_BACKOFF_MAX": "0.5",
        "NOTIFICATION_MAX_FAILURES": "4",
    }
    with running_mediator(env) as service:
        yield service


def subscribe(mediator, receiver, criteria, payload=True, path="/hook"):
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "claim results for the clinic",
        "criteria": criteria,
        "channel": {
            "type": "rest-hook",
            "endpoint": receiver.url + path,
            "header": [f"Authorization: {SECRET}"],
        },
    }
    if payload:
        body["channel"]["payload"] = "application/fhir+json"
    return requests.post(f"{mediator.url}/fhir/Subscription", data=json.dumps(body), headers=FHIR, timeout=10)


def code(prefix="N-"):
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def adjudicate(sandbox, claim_code, status="valuated"):
    requests.post(
        f"{sandbox.url}/_sandbox/adjudicate", json={"claim_code": claim_code, "status": status}, timeout=5
    ).raise_for_status()


def submit(mediator, claim):
    return requests.post(f"{mediator.url}/fhir/Claim", data=json.dumps(claim), headers=FHIR, timeout=15)


def test_a_queued_claim_is_notified_with_its_final_answer_and_the_registered_header(
    notifying_mediator, sandbox, receiver
):
    claim_code = code("Q-")
    created = subscribe(notifying_mediator, receiver, f"ClaimResponse?identifier={claim_code}")
    assert created.status_code == 201, created.text
    sub = created.json()
    assert (
        created.headers["Location"].endswith(f"/fhir/Subscription/{sub['id']}") and sub["status"] == "active"
    )
    assert sub["channel"]["header"] == ["Authorization: ***"], "header values are never shown back"
    read = requests.get(created.headers["Location"], timeout=10).json()
    assert SECRET not in json.dumps(read)

    queued = submit(notifying_mediator, make_claim(claim_code))
    assert queued.status_code == 202
    adjudicate(sandbox, claim_code)
    [note] = wait_until(lambda: receiver.for_claim(claim_code), timeout=30)
    assert note.path == "/hook" and note.headers["Authorization"] == SECRET
    assert note.headers["Content-Type"] == "application/fhir+json"
    body = note.json()
    assert body["resourceType"] == "ClaimResponse" and body["outcome"] == "complete"
    assert body["id"] == queued.json()["id"] and body["meta"]["versionId"] == note.headers["X-Claim-Version"]
    assert note.headers["X-Notification-Id"] and note.headers["X-Subscription-Id"] == sub["id"]
    assert SECRET not in notifying_mediator.log()


def test_a_claim_held_while_openimis_is_down_is_notified_once_delivered(
    notifying_mediator, sandbox, receiver
):
    created = subscribe(notifying_mediator, receiver, "ClaimResponse?requestor=Organization/HF0002")
    assert created.status_code == 201
    requests.post(f"{sandbox.url}/_sandbox/faults", json={"fail_next": 1, "fail_status": 503}, timeout=5)
    claim_code = code()
    held = submit(notifying_mediator, make_claim(claim_code, facility="HF0002", admin="JMDP0012"))
    assert held.status_code == 202
    [note] = wait_until(lambda: receiver.for_claim(claim_code), timeout=30)
    assert note.json()["meta"]["tag"][0]["code"] == "positive"
    answered_at_once = code()
    direct = submit(notifying_mediator, make_claim(answered_at_once, facility="HF0002", admin="JMDP0012"))
    assert direct.status_code == 201
    wait_until(lambda: receiver.fail_next == 0 and len(receiver.for_claim(claim_code)) == 1, timeout=3)
    assert receiver.for_claim(answered_at_once) == [], "a facility answered at once is not told again"
    requests.delete(created.headers["Location"], timeout=10)


def test_a_failing_receiver_gets_the_notification_again_until_it_takes_it(
    notifying_mediator, sandbox, receiver
):
    claim_code = code("Q-")
    subscribe(notifying_mediator, receiver, f"ClaimResponse?identifier={claim_code}", payload=False)
    assert submit(notifying_mediator, make_claim(claim_code)).status_code == 202
    receiver.fail_next = 2
    before = len(receiver.received)
    adjudicate(sandbox, claim_code)
    wait_until(lambda: len(receiver.received) - before >= 3, timeout=30)
    attempts = receiver.received[before : before + 3]
    assert len({a.headers["X-Notification-Id"] for a in attempts}) == 1, "the same notification, again"
    assert all(a.body == b"" for a in attempts), "without payload: an empty ping"


def test_a_deleted_subscription_hears_nothing_and_a_foreign_endpoint_is_refused(
    notifying_mediator, sandbox, receiver
):
    claim_code = code("Q-")
    created = subscribe(notifying_mediator, receiver, f"ClaimResponse?identifier={claim_code}")
    assert requests.delete(created.headers["Location"], timeout=10).status_code == 204
    assert requests.get(created.headers["Location"], timeout=10).status_code == 404
    assert submit(notifying_mediator, make_claim(claim_code)).status_code == 202
    adjudicate(sandbox, claim_code)
    wait_until(
        lambda: (
            requests.get(
                f"{notifying_mediator.url}/fhir/ClaimResponse", params={"identifier": claim_code}, timeout=10
            ).json()["entry"][0]["resource"]["outcome"]
            == "complete"
        ),
        timeout=20,
    )
    assert receiver.for_claim(claim_code) == []

    body = json.loads(subscribe(notifying_mediator, receiver, "ClaimResponse?identifier=X").request.body)
    for endpoint, expression in (
        ("https://elsewhere.example.org/hook", "Subscription.channel.endpoint"),
        ("ftp://facility/hook", "Subscription.channel.endpoint"),
    ):
        body["channel"]["endpoint"] = endpoint
        refused = requests.post(
            f"{notifying_mediator.url}/fhir/Subscription", data=json.dumps(body), headers=FHIR, timeout=10
        )
        assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == [expression]
    body["criteria"] = "Patient?identifier=070707070"
    refused = requests.post(
        f"{notifying_mediator.url}/fhir/Subscription", data=json.dumps(body), headers=FHIR, timeout=10
    )
    assert refused.status_code == 422 and refused.json()["issue"][0]["expression"] == [
        "Subscription.criteria"
    ]


def test_a_positive_claim_is_followed_and_notified_again_when_valuated(notifying_mediator, sandbox, receiver):
    claim_code = code()
    answer = submit(notifying_mediator, make_claim(claim_code))
    assert answer.status_code == 201 and answer.json()["outcome"] == "partial", "checked: not final yet"
    subscribe(notifying_mediator, receiver, f"ClaimResponse?identifier={claim_code}")
    adjudicate(sandbox, claim_code, "valuated")
    [note] = wait_until(lambda: receiver.for_claim(claim_code), timeout=30)
    valuated = note.json()
    assert valuated["outcome"] == "complete" and valuated["id"] == answer.json()["id"]
    assert "benefit" in {t["category"]["coding"][0]["code"] for t in valuated["total"]}
    polled = requests.get(
        f"{notifying_mediator.url}/fhir/ClaimResponse/{answer.json()['id']}", timeout=10
    ).json()
    assert polled["outcome"] == "complete" and polled["meta"]["tag"][0]["code"] == "positive"


def test_a_notification_due_when_the_mediator_is_killed_is_delivered_after_the_restart(
    sandbox, receiver, tmp_path
):
    port = free_port()
    env = {
        "MEDIATOR_PORT": str(port),
        "MEDIATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENIMIS_URL": sandbox.url,
        "MEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "MASTER_DATA_CACHE_ENABLED": "false",
        "SUBSCRIPTION_ENDPOINT_ALLOWLIST": receiver.url + "/",
        "FORWARD_POLL_INTERVAL": "0.2",
        "ADJUDICATION_POLL_INTERVAL": "0.5",
        "NOTIFICATION_BACKOFF_INITIAL": "0.3",
        "NOTIFICATION_BACKOFF_MAX": "0.5",
        "NOTIFICATION_MAX_FAILURES": "1000",
    }
    claim_code = code("Q-")
    receiver.fail_next = 10_000  # the facility's endpoint is down
    with running_mediator(env) as mediator:
        subscribe(mediator, receiver, f"ClaimResponse?identifier={claim_code}")
        assert submit(mediator, make_claim(claim_code)).status_code == 202
        adjudicate(sandbox, claim_code)
        wait_until(lambda: len(receiver.for_claim(claim_code)) >= 2, timeout=30)  # tried, failed, due again
        os.killpg(mediator.process.pid, signal.SIGKILL)
        mediator.process.wait()
    receiver.fail_next = 0
    tried = len(receiver.for_claim(claim_code))
    with running_mediator(env) as restarted:
        wait_until(lambda: len(receiver.for_claim(claim_code)) > tried, timeout=30)
        listing = subprocess.run(
            [sys.executable, "-m", "mediator", "notifications", "list"],
            env={**os.environ, **restarted.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert listing.returncode == 0 and "delivered: 1" in listing.stdout, listing.stdout + listing.stderr
    ids = {r.headers["X-Notification-Id"] for r in receiver.for_claim(claim_code)}
    assert len(ids) == 1, "one notification, delivered at least once"
