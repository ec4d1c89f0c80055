"""What only the SQLite claim store does: one file per instance, WAL, private files, its layouts.

The promises every store keeps are in tests/store/test_claim_store_contract.py."""

import multiprocessing
import os
import sqlite3
import stat
import threading

import pytest

from mediator.store import ClaimRecord, ClaimState, SqliteClaimStore


@pytest.fixture
def store(tmp_path):
    return SqliteClaimStore(tmp_path / "claims.sqlite3")


def record(code="C1", facility="HF1", content="h1", state=ClaimState.SENDING, **fields):
    return ClaimRecord(
        id=f"id-{code}-{facility}-{content}",
        claim_code=code,
        facility=facility,
        content_hash=content,
        state=state,
        payload={"claim": {"resourceType": "Claim"}},
        **{"created_at": 100.0, "updated_at": 100.0, **fields},
    )


def _write_claims(path, worker, errors):
    store = SqliteClaimStore(path)

    def thread(t):
        try:
            for i in range(40):
                stored, is_new = store.intake(record(code=f"W{worker}-T{t}-{i}"))
                assert is_new and store.finish(stored.id, None, state=ClaimState.DONE, outcome="positive")
        except Exception as exc:  # reported to the parent: a lost write, or "database is locked"
            errors.put(repr(exc))

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_workers_writing_at_once_lose_nothing(tmp_path):
    """Two worker processes of 8 threads each, writing as fast as they can: SQLite's lock
    between the processes, group commit within each."""
    path = tmp_path / "claims.sqlite3"
    SqliteClaimStore(path)
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    workers = [ctx.Process(target=_write_claims, args=(path, w, errors)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert all(w.exitcode == 0 for w in workers)
    assert errors.empty(), errors.get()
    store = SqliteClaimStore(path)
    stats = store.stats(now=200.0)
    assert stats.finished == 2 * 8 * 40 and stats.depth == 0


def _open_store(path, barrier, errors):
    try:
        barrier.wait(timeout=30)
        SqliteClaimStore(path)
    except Exception as exc:  # reported to the parent
        errors.put(repr(exc))


def test_processes_starting_together_all_open_a_new_store(tmp_path):
    """The workers and the agent of an instance start together on a new file; an agent that
    could not open the store died with "database is locked" and forwarded nothing."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for attempt in range(10):
        path = tmp_path / f"start-{attempt}" / "claims.sqlite3"
        barrier = ctx.Barrier(4)
        starting = [ctx.Process(target=_open_store, args=(path, barrier, errors)) for _ in range(4)]
        for p in starting:
            p.start()
        for p in starting:
            p.join(timeout=60)
        assert errors.empty(), f"start {attempt}: {errors.get()}"
        assert all(p.exitcode == 0 for p in starting)
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()


def test_records_survive_reopening(tmp_path):
    path = tmp_path / "claims.sqlite3"
    SqliteClaimStore(path).intake(record(openimis_id="up-1"))
    reopened = SqliteClaimStore(path)
    assert reopened.get("up-1").claim_code == "C1"
    assert reopened.by_claim_code("C1")[0].payload == {"claim": {"resourceType": "Claim"}}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_store_directory_is_private(tmp_path):
    SqliteClaimStore(tmp_path / "state" / "claims.sqlite3").intake(record())
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700", "the -wal file holds claims too"


def test_requests_leave_checkpoints_to_the_agent(store):
    """A commit never copies the WAL into the database file itself (a stall of milliseconds,
    with an fsync, under the write lock); the agent's `checkpoint` does, without blocking."""
    db_file = store.path
    size_before = db_file.stat().st_size
    for i in range(300):  # ~3,000 WAL pages: SQLite's default would have checkpointed twice
        claim, _ = store.intake(record(code=f"C{i}", content="x" * 2000))
        store.finish(claim.id, None, state=ClaimState.DONE, response_body="y" * 4000)
    assert db_file.stat().st_size == size_before, "a request-path commit checkpointed"
    store.checkpoint()
    assert db_file.stat().st_size > size_before + 300 * 2000
    assert store.get("id-C299-HF1-" + "x" * 2000).state == ClaimState.DONE


def _sqlite_work(store, call) -> int:
    """SQLite's work for `call` (hundreds of VM steps): what grows if a query scans the store."""
    db = store._connection()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 100)
    try:
        call()
    finally:
        db.set_progress_handler(None, 100)
    return steps


def _fill_finished(store, n: int, updated_at: float) -> None:
    for i in range(n):
        store.intake(record(f"F{updated_at}-{i}", state=ClaimState.DONE, updated_at=updated_at))


def test_the_agents_rounds_do_not_grow_with_the_finished_claims_kept(store):
    """The agent looks for results to report every second and purges hourly: with months of
    finished claims kept (retention), neither may walk through them."""
    held = record("H1", state=ClaimState.QUEUED)
    store.intake(held)
    store.await_report(held.id, "tx-answered-202")
    store.finish(held.id, None, state=ClaimState.DONE)
    _fill_finished(store, 3, updated_at=50.0)
    reports_alone = _sqlite_work(store, lambda: store.due_reports(10))
    purge_alone = _sqlite_work(store, lambda: store.purge_finished(before=0.0))

    _fill_finished(store, 3000, updated_at=500.0)
    assert _sqlite_work(store, lambda: store.due_reports(10)) <= reports_alone + 2
    assert _sqlite_work(store, lambda: store.purge_finished(before=0.0)) <= purge_alone + 2
    assert [tx for _, tx in store.due_reports(10)] == ["tx-answered-202"]
    assert store.purge_finished(before=100.0) == 3, "the old ones only, and not the one to report"


def test_the_forwarders_and_the_health_checks_rounds_do_not_grow_with_the_finished_claims_kept(store):
    """Due claims are looked for every second and the queue is counted by every /ready: both
    through the index of open claims, which finished claims leave."""
    store.intake(record("Q1", state=ClaimState.QUEUED, next_attempt_at=0.0))
    _fill_finished(store, 3, updated_at=50.0)
    lease_alone = _sqlite_work(store, lambda: store.lease_due(10**6, 60, "probe", 10))
    listing_alone = _sqlite_work(store, lambda: store.listing((ClaimState.QUEUED, ClaimState.SENDING), 100))

    _fill_finished(store, 3000, updated_at=500.0)
    assert _sqlite_work(store, lambda: store.lease_due(10**6, 60, "probe", 10)) <= lease_alone + 2
    assert _sqlite_work(store, lambda: store.listing((ClaimState.QUEUED,), 100)) <= listing_alone + 2
    stats = store.stats(1000.0)
    assert (stats.depth, stats.finished) == (1, 3003)


# The store's layout before its indexes became partial (2026-11): what an upgraded mediator finds.
_PREVIOUS_LAYOUT = """
CREATE TABLE claims (
    id TEXT PRIMARY KEY, claim_code TEXT NOT NULL, facility TEXT NOT NULL, content_hash TEXT NOT NULL,
    state TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0, lease_owner TEXT, openimis_id TEXT, outcome TEXT,
    response_status INTEGER, response_body TEXT, last_error TEXT, openhim_tx_id TEXT,
    UNIQUE (claim_code, facility)
);
CREATE TABLE pending_reports (
    claim_id TEXT NOT NULL, transaction_id TEXT NOT NULL, PRIMARY KEY (claim_id, transaction_id)
);
CREATE INDEX claims_due ON claims (state, next_attempt_at);
CREATE INDEX claims_openimis_id ON claims (openimis_id);
CREATE INDEX claims_updated ON claims (updated_at);
INSERT INTO claims (id, claim_code, facility, content_hash, state, payload, created_at, updated_at,
                    openimis_id, response_body)
VALUES ('r1', 'C1', 'HF1', 'h', 'done', '{"claim": {}}', 1.0, 1.0, 'uuid-1', '{}'),
       ('r2', 'C2', 'HF1', 'h', 'queued', '{"claim": {}}', 2.0, 2.0, NULL, NULL);
"""


def test_a_store_of_the_previous_layout_is_upgraded_in_place(tmp_path):
    path = tmp_path / "claims.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_PREVIOUS_LAYOUT)
    store = SqliteClaimStore(path)
    with sqlite3.connect(path) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not indexes & {"claims_due", "claims_openimis_id", "claims_updated", "claims_open"}
    assert {"claims_open_states", "claims_by_openimis_id", "claims_finished"} <= indexes
    assert store.get("uuid-1").id == "r1", "found by its openIMIS id"
    assert [r.id for r in store.lease_due(10.0, 60, "forwarder", 10)] == ["r2"]
    assert store.purge_finished(before=5.0) == 1
    assert (store.stats(10.0).depth, store.stats(10.0).finished) == (1, 0)


def test_every_file_with_claim_data_is_private_whatever_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        store = SqliteClaimStore(tmp_path / "state" / "claims.sqlite3")
        store.intake(record())
    finally:
        os.umask(old_umask)
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "state").iterdir()}
    assert {"claims.sqlite3", "claims.sqlite3-wal", "claims.sqlite3-shm"} <= set(files)
    assert {name: mode for name, mode in files.items() if mode & 0o077} == {}
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


def test_a_store_left_readable_by_an_older_version_is_made_private(tmp_path):
    path = tmp_path / "claims.sqlite3"
    SqliteClaimStore(path).intake(record())
    for suffix in ("", "-wal", "-shm"):
        os.chmod(f"{path}{suffix}", 0o644)
    SqliteClaimStore(path)
    for suffix in ("", "-wal", "-shm"):
        assert stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode) == 0o600, suffix
