"""`openimis-mediator store migrate`: an instance's SQLite claims into the shared PostgreSQL store."""

from __future__ import annotations

import os
import subprocess
import sys

from mediator.store import ClaimState, SqliteClaimStore
from mediator.store.postgres import PostgresClaimStore
from tests.store.test_claim_store_contract import record
from tests.support.postgres import PASSWORD


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediator", "store", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_record_and_waiting_transaction_is_copied_once(tmp_path, postgres_url):
    sqlite = SqliteClaimStore(tmp_path / "claims.sqlite3")
    held = record("HELD", state=ClaimState.QUEUED, next_attempt_at=5.0, last_error="openIMIS answered 503")
    done = record("DONE", state=ClaimState.DONE, openimis_id="up-1", response_status=201, response_body="{}")
    for r in (held, done, record("QUEUE-2", state=ClaimState.AWAITING_ADJUDICATION)):
        sqlite.intake(r)
    sqlite.await_report(held.id, "tx-202")
    for i in range(1200):  # more than one batch
        sqlite.intake(record(f"OLD-{i}", state=ClaimState.DONE))
    sqlite.close()
    env = {"MEDIATOR_STATE_DIR": str(tmp_path), "CLAIM_STORE_URL": postgres_url}

    first = migrate(env)
    assert first.returncode == 0, first.stderr
    assert "1203 records copied, 0 already there, 1 OpenHIM transactions" in first.stdout
    assert PASSWORD not in first.stdout + first.stderr
    target = PostgresClaimStore(postgres_url)
    moved = target.get(held.id)
    assert moved.state == ClaimState.QUEUED and moved.last_error == "openIMIS answered 503"
    assert target.get("up-1").claim_code == "DONE"
    target.finish(held.id, None, state=ClaimState.DONE)
    assert [tx for _, tx in target.due_reports(10)] == ["tx-202"], (
        "the waiting OpenHIM transaction came along"
    )

    again = migrate(env)
    assert again.returncode == 0 and "0 records copied, 1203 already there" in again.stdout
    assert target.get(held.id).state == ClaimState.DONE, "a record the database holds is left as it is"
    target.close()


def test_without_a_postgresql_store_or_a_source_it_says_what_is_missing(tmp_path, postgres_url):
    no_url = migrate({"MEDIATOR_STATE_DIR": str(tmp_path)})
    assert no_url.returncode == 2 and "CLAIM_STORE_URL" in no_url.stderr
    no_file = migrate({"MEDIATOR_STATE_DIR": str(tmp_path / "empty"), "CLAIM_STORE_URL": postgres_url})
    assert no_file.returncode == 1 and "no SQLite claim store" in no_file.stderr
