"""The mediator as an OpenHIM citizen, against a real OpenHIM core 4.0.5.

Four environment variables take an operator from an empty OpenHIM to a registered mediator with
working channels; facilities then go through the router, and auditors read the transaction log.
Core 4.0.5 speaks only the legacy token scheme: `OPENHIM_AUTH=auto` must find that out itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from mediator import __version__
from tests.sandbox.helpers import make_claim
from tests.support.services import free_port, running_mediator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

URN = "urn:mediator:openimis-fhir-r4"
CLIENT_ID, CLIENT_PASSWORD = "clinic-emr-1", "clinic-secret-pass"
FHIR = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


def mediator_record(core):
    answer = core.api("GET", f"/mediators/{quote(URN, safe='')}")
    return answer.json() if answer.status_code == 200 else None


@pytest.fixture(scope="module")
def registered(openhim_core, sandbox):
    port = free_port()
    env = {
        "MEDIATOR_PORT": str(port),
        "MEDIATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENIMIS_URL": sandbox.url,
        # The four variables of the README, plus what a self-signed test core needs:
        "OPENHIM_API_URL": openhim_core.api_url,
        "OPENHIM_USERNAME": openhim_core.root_email,
        "OPENHIM_PASSWORD": openhim_core.root_password,
        "OPENHIM_INSTALL_CHANNELS": "true",
        "OPENHIM_VERIFY_TLS": "false",
        "OPENHIM_HEARTBEAT_INTERVAL": "1",
        "MEDIATOR_ROUTE_HOST": "127.0.0.1",
        "FORWARD_BACKOFF_INITIAL": "1",
        # Every query goes to openIMIS, so that its orchestrations reach the transaction log.
        "MASTER_DATA_CACHE_ENABLED": "false",
    }
    with running_mediator(env) as mediator:
        wait_until(lambda: mediator_record(openhim_core))
        core_client = openhim_core.create_client(CLIENT_ID, CLIENT_PASSWORD, ["openimis-facility"])
        assert core_client["clientID"] == CLIENT_ID
        yield mediator


def through_router(core, method, path, **kwargs):
    kwargs.setdefault("auth", (CLIENT_ID, CLIENT_PASSWORD))
    kwargs.setdefault("headers", FHIR)
    return core.router(method, path, **kwargs)


def test_registration_shows_a_complete_mediator_in_the_console(openhim_core, registered):
    record = mediator_record(openhim_core)
    assert record["version"] == __version__
    assert record["name"] == "openIMIS FHIR R4 mediator"
    assert {d["param"] for d in record["configDefs"]} >= {"openimisUrl", "openimisPassword", "logLevel"}
    assert record["endpoints"][0]["host"] == "127.0.0.1"
    assert int(record["endpoints"][0]["port"]) == int(registered.url.rsplit(":", 1)[1])
    wait_until(lambda: mediator_record(openhim_core).get("_lastHeartbeat"))
    log = registered.log()
    assert "registered with OpenHIM" in log and '"auth": "token"' in log
    assert "TLS verification towards OpenHIM is OFF" in log
    ready = requests.get(registered.url + "/ready", timeout=10).json()
    assert ready["openhim"]["registered"] is True


def test_default_channels_are_installed(openhim_core, registered):
    channels = {c["name"]: c for c in openhim_core.api("GET", "/channels").json()}
    for name in (
        "openIMIS medical services and items",
        "openIMIS claims",
        "openIMIS claim responses",
        "openIMIS coverage eligibility",
        "openIMIS patient lookup",
    ):
        assert name in channels
        route = channels[name]["routes"][0]
        assert (route["host"], int(route["port"])) == ("127.0.0.1", int(registered.url.rsplit(":", 1)[1]))


def test_facility_request_through_the_router_is_audited(openhim_core, registered):
    answer = openhim_core.wait_for_router(
        "/fhir/Medication?_count=2",
        lambda status: status == 200,
        auth=(CLIENT_ID, CLIENT_PASSWORD),
        headers=FHIR,
    )
    bundle = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    denied = through_router(openhim_core, "GET", "/fhir/Medication", auth=(CLIENT_ID, "wrong"))
    assert denied.status_code == 401

    tx = openhim_core.wait_for_transaction(
        lambda t: t["request"]["path"] == "/fhir/Medication" and t.get("orchestrations")
    )
    assert tx["status"] == "Successful"
    # The id a clinic quotes is the console's transaction id.
    assert answer.headers["X-Request-ID"] == answer.headers["X-OpenHIM-TransactionID"] == tx["_id"]
    assert "openIMIS medical items list" in [o["name"] for o in tx["orchestrations"]]
    assert tx["properties"]["transaction"] == "medical items search"
    dumped = json.dumps(tx)
    assert "admin123" not in dumped and "Bearer ey" not in dumped and CLIENT_PASSWORD not in dumped


def test_claims_through_the_router_positive_and_queued_completed_later(
    openhim_core, registered, clean_sandbox
):
    positive = make_claim("HIM-POS-1")
    answer = through_router(openhim_core, "POST", "/fhir/Claim", data=json.dumps(positive))
    assert answer.status_code == 201, answer.text
    assert answer.json()["resourceType"] == "ClaimResponse"
    tx = openhim_core.wait_for_transaction(lambda t: t.get("properties", {}).get("claim_code") == "HIM-POS-1")
    assert tx["status"] == "Successful" and tx["properties"]["outcome"] == "positive"

    # openIMIS down at submission: the clinic gets 202, the transaction stays Processing until
    # the forwarder delivers the claim and writes the result to the same transaction.
    requests.post(
        clean_sandbox.url + "/_sandbox/faults", json={"fail_next": 1, "fail_status": 503}, timeout=5
    )
    held = through_router(openhim_core, "POST", "/fhir/Claim", data=json.dumps(make_claim("HIM-HELD-1")))
    assert held.status_code == 202, held.text
    assert held.json()["outcome"] == "queued"
    final = openhim_core.wait_for_transaction(
        lambda t: t.get("properties", {}).get("claim_code") == "HIM-HELD-1" and t["status"] != "Processing",
        timeout=45,
    )
    assert final["status"] == "Successful"
    assert final["response"]["status"] == 201
    assert json.loads(final["response"]["body"])["outcome"] in ("partial", "complete")
    rerun = through_router(openhim_core, "POST", "/fhir/Claim", data=json.dumps(make_claim("HIM-HELD-1")))
    assert rerun.status_code == 201
    stored = requests.get(clean_sandbox.url + "/_sandbox/claims", timeout=5).json()["claims"]
    assert len([c for c in stored if c.get("code") == "HIM-HELD-1"]) == 1


def test_the_final_update_of_a_held_claim_keeps_its_history(openhim_core, registered, clean_sandbox):
    """An auditor reads every call: the first attempt's, core's route to the mediator, the delivery's."""
    requests.post(
        clean_sandbox.url + "/_sandbox/faults", json={"fail_next": 1, "fail_status": 503}, timeout=5
    )
    held = through_router(openhim_core, "POST", "/fhir/Claim", data=json.dumps(make_claim("HIM-HIST-1")))
    assert held.status_code == 202, held.text
    final = openhim_core.wait_for_transaction(
        lambda t: t.get("properties", {}).get("claim_code") == "HIM-HIST-1" and t["status"] != "Processing",
        timeout=45,
    )
    orchestrations = final["orchestrations"]

    def when(orchestration):
        return datetime.fromisoformat(orchestration["request"]["timestamp"])

    def status(orchestration):
        return (orchestration.get("response") or {}).get("status")

    assert "openIMIS mediator" in [o["name"] for o in orchestrations], "core's record of its route"
    first_attempt = [o for o in orchestrations if status(o) == 503]
    delivery = [o for o in orchestrations if o["name"] == "openIMIS claim submit" and status(o) in (200, 201)]
    assert first_attempt and delivery, [(o["name"], status(o)) for o in orchestrations]
    assert when(first_attempt[0]) < when(delivery[-1])
    keys = [(o["name"], o["request"]["timestamp"]) for o in orchestrations]
    assert len(keys) == len(set(keys)), "no call recorded twice"

    properties = final["properties"]
    assert properties["outcome"] == "positive"
    assert properties["transaction"] == "claim submit", "what the first answer said is kept"
    assert properties["openimis_status"] and float(properties["total_claimed"]) > 0
    assert json.loads(final["response"]["body"])["resourceType"] == "ClaimResponse"


def test_a_rerun_of_a_held_claim_is_completed_too(openhim_core, registered, clean_sandbox):
    requests.post(
        clean_sandbox.url + "/_sandbox/faults", json={"fail_next": 10_000, "fail_status": 503}, timeout=5
    )
    claim = json.dumps(make_claim("HIM-RERUN-1"))
    assert through_router(openhim_core, "POST", "/fhir/Claim", data=claim).status_code == 202
    assert through_router(openhim_core, "POST", "/fhir/Claim", data=claim).status_code == 202  # a retry
    requests.post(clean_sandbox.url + "/_sandbox/reset", timeout=5)

    def both_final():
        txs = [
            t
            for t in openhim_core.transactions()
            if t.get("properties", {}).get("claim_code") == "HIM-RERUN-1"
        ]
        return len(txs) == 2 and all(t["status"] == "Successful" for t in txs) and txs

    for tx in wait_until(both_final, timeout=60):
        assert tx["response"]["status"] == 201
    stored = requests.get(clean_sandbox.url + "/_sandbox/claims", timeout=5).json()["claims"]
    assert len([c for c in stored if c.get("code") == "HIM-RERUN-1"]) == 1


def test_console_change_reaches_every_worker_and_a_bad_value_is_refused(openhim_core, registered):
    urn = quote(URN, safe="")
    config = dict(mediator_record(openhim_core).get("config") or {})
    config.update({"openimisReadTimeout": 11, "logLevel": "INFO"})
    assert openhim_core.api("PUT", f"/mediators/{urn}/config", config).status_code == 200

    def every_worker_has(value):
        # At least 20 answers, and more until both workers have answered: on a busy machine one
        # worker may accept 20 new connections in a row. Every answer counts.
        answers, workers = [], set()
        while len(answers) < 20 or (len(workers) < 2 and len(answers) < 200):
            ready = requests.get(registered.url + "/ready", timeout=10).json()
            answers.append(ready["config"]["openimisReadTimeout"])
            workers.add(ready["worker"])
        return len(workers) >= 2 and all(v == value for v in answers)

    wait_until(lambda: every_worker_has(11), timeout=15)

    config["openimisReadTimeout"] = -5
    assert openhim_core.api("PUT", f"/mediators/{urn}/config", config).status_code == 200
    wait_until(
        lambda: requests.get(registered.url + "/ready", timeout=10).json()["openhim"].get("config_error"),
        timeout=15,
    )
    assert every_worker_has(11), "the previous value stays in force"
    assert "console configuration refused" in registered.log()
    config["openimisReadTimeout"] = 30
    openhim_core.api("PUT", f"/mediators/{urn}/config", config)


def test_reregistration_needs_a_greater_version(openhim_core, registered):
    from mediator.openhim import registration
    from mediator.openhim.api import OpenHimApi
    from mediator.settings import load_settings

    settings = load_settings(
        {
            "OPENHIM_API_URL": openhim_core.api_url,
            "OPENHIM_PASSWORD": openhim_core.root_password,
            "OPENHIM_VERIFY_TLS": "false",
        }
    )
    api = OpenHimApi(settings)
    document = registration.registration_document(settings)
    document["description"] = "changed without a new version"
    registration.register(api, document)
    assert mediator_record(openhim_core)["description"] != "changed without a new version"


def test_tls_is_verified_by_default_and_the_service_keeps_serving(openhim_core, sandbox):
    env = {
        "OPENIMIS_URL": sandbox.url,
        "OPENHIM_API_URL": openhim_core.api_url,
        "OPENHIM_PASSWORD": openhim_core.root_password,
        "MEDIATOR_URN": "urn:mediator:tls-check",
    }
    with running_mediator(env) as mediator:
        state = wait_until(
            lambda: requests.get(mediator.url + "/ready", timeout=10).json()["openhim"].get("error"),
            timeout=20,
        )
        assert "unreachable" in state or "SSL" in state
        assert requests.get(mediator.url + "/fhir/Medication/0004", timeout=10).status_code == 200
    assert mediator_record_by_urn(openhim_core, "urn:mediator:tls-check") is None
    assert mediator.log().count("OpenHIM registration failed") >= 1


def mediator_record_by_urn(core, urn):
    answer = core.api("GET", f"/mediators/{quote(urn, safe='')}")
    return answer.json() if answer.status_code == 200 else None


def test_a_restart_against_a_core_that_knows_the_mediator_heartbeats(openhim_core, sandbox, tmp_path):
    """Every deploy or crash restart: core has the mediator and its channels already."""
    urn = "urn:mediator:restart-check"
    template = json.loads((Path(__file__).parents[2] / "mediator.json").read_text())
    for channel in template["defaultChannelConfig"]:  # names and paths of their own: no other test
        channel["name"] += " (restart check)"  # routes through them, and they start absent
        channel["urlPattern"] = "^/restart-check" + channel["urlPattern"].lstrip("^")
    names = [c["name"] for c in template["defaultChannelConfig"]]
    (tmp_path / "mediator.json").write_text(json.dumps(template))
    env = {
        "OPENIMIS_URL": sandbox.url,
        "OPENHIM_API_URL": openhim_core.api_url,
        "OPENHIM_PASSWORD": openhim_core.root_password,
        "OPENHIM_INSTALL_CHANNELS": "true",
        "OPENHIM_VERIFY_TLS": "false",
        "OPENHIM_HEARTBEAT_INTERVAL": "1",
        "MEDIATOR_URN": urn,
        "MEDIATOR_JSON": str(tmp_path / "mediator.json"),
        "MEDIATOR_STATE_DIR": str(tmp_path / "state"),
    }

    def ours():
        return [c for c in openhim_core.api("GET", "/channels").json() if c["name"] in names]

    def beat_since(moment):
        beat = (mediator_record_by_urn(openhim_core, urn) or {}).get("_lastHeartbeat")
        return beat and datetime.fromisoformat(beat) > moment

    try:
        with running_mediator(env) as first:
            wait_until(lambda: beat_since(datetime.now(UTC) - timedelta(days=1)), timeout=30)
            assert sorted(c["name"] for c in ours()) == sorted(names)
            assert '"channels_installed": ["openIMIS medical services and items' in first.log()
        claims = next(c for c in ours() if c["name"] == "openIMIS claims (restart check)")
        edited = openhim_core.api("PUT", f"/channels/{claims['_id']}", {"description": "the operator's"})
        assert edited.status_code == 200, edited.text

        restarted_at = datetime.now(UTC)
        with running_mediator(env) as second:
            wait_until(lambda: beat_since(restarted_at), timeout=30)
            log = second.log()
            assert "OpenHIM registration failed" not in log
            assert '"channels_installed": []' in log
            ready = requests.get(second.url + "/ready", timeout=10).json()
            assert ready["openhim"]["registered"] is True
        assert sorted(c["name"] for c in ours()) == sorted(names), "each channel once"
        again = next(c for c in ours() if c["_id"] == claims["_id"])
        assert again["description"] == "the operator's", "an existing channel is left as it is"
    finally:
        for channel in ours():
            openhim_core.api("DELETE", f"/channels/{channel['_id']}")
