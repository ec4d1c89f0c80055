"""What only the PostgreSQL store does: migrate its own schema, replicas starting together, and
say plainly (never with its password) that the database cannot be reached."""

from __future__ import annotations

import threading

import psycopg
import pytest
import responses

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisLoginRefused
from mediator.settings import load_settings
from mediator.store import ClaimState, StoreUnavailable
from mediator.store.postgres import MIGRATIONS, PostgresClaimStore
from tests.store.test_claim_store_contract import record
from tests.support.postgres import PASSWORD
from tests.support.services import free_port


def test_replicas_started_together_on_an_empty_database_all_come_up(postgres_url):
    stores, errors, barrier = [], [], threading.Barrier(6)

    def start():
        barrier.wait()
        try:
            stores.append(PostgresClaimStore(postgres_url))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 6
    stores[0].intake(record())
    assert all(s.by_key("C1", "HF1") is not None for s in stores)
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    for s in stores:
        s.close()


def test_a_database_gone_away_is_store_unavailable_without_the_password(postgres, postgres_url):
    store = PostgresClaimStore(postgres_url)
    store.intake(record())
    with psycopg.connect(postgres.admin_url, autocommit=True) as db:
        db.execute("ALTER ROLE mediator NOLOGIN")
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mediator'")
    try:
        with pytest.raises(StoreUnavailable) as err:
            for _ in range(3):  # a pooled connection may first find itself closed
                store.get("id-C1-HF1-h1")
        assert PASSWORD not in str(err.value)
    finally:
        with psycopg.connect(postgres.admin_url, autocommit=True) as db:
            db.execute("ALTER ROLE mediator LOGIN")
        store.close()
    assert PASSWORD not in repr(store) and "***" in repr(store)


def test_an_unreachable_database_at_start_is_retried_then_refused(monkeypatch):
    monkeypatch.setattr("mediator.store.postgres.START_RETRY_S", 1.5)
    url = f"postgresql://mediator:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreUnavailable) as err:
        PostgresClaimStore(url)
    assert PASSWORD not in str(err.value)


def test_the_lease_holder_is_visible_to_operators(postgres_url):
    store = PostgresClaimStore(postgres_url)
    store.intake(record("Q", state=ClaimState.QUEUED, next_attempt_at=1.0))
    [leased] = store.lease_due(now=10.0, lease_s=60, owner="replica-b:forwarder", limit=5)
    assert store.get(leased.id).lease_owner == "replica-b:forwarder"
    store.close()


@responses.activate
def test_a_failed_login_of_one_replica_suspends_the_logins_of_all(postgres_url, tmp_path):
    """openIMIS locks the account after five failures: replicas must not spend one each."""
    base = "https://imis.example.org/api/api_fhir_r4/"
    login = responses.post(base + "login/", status=401, json="INCORRECT_CREDENTIALS")
    replicas = []
    for name in ("a", "b", "c"):
        settings = load_settings(
            {
                "MEDIATOR_STATE_DIR": str(tmp_path / name),  # no state directory in common
                "OPENIMIS_URL": "https://imis.example.org",
                "OPENIMIS_USERNAME": "Admin",
                "OPENIMIS_PASSWORD": "wrong-password",
                "OPENIMIS_LOGIN_RETRY_AFTER": "60",
            }
        )
        store = PostgresClaimStore(postgres_url)
        replicas.append((OpenImisClient(settings, login_guard=store.login_guard), store))
    for client, _ in replicas:
        with pytest.raises(OpenImisLoginRefused):
            client.get("Medication/", OrchestrationRecorder(), "list")
    assert login.call_count == 1, "one failure suspends every replica's logins"
    for _, store in replicas:
        store.close()
