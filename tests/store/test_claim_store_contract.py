"""What every claim store promises, SQLite and PostgreSQL alike: one record per (claim code,
facility), leases that give a claim to one sender at a time, results only from the lease's
holder, reports to OpenHIM, retention. Concurrency is real: threads and several store objects
(as several workers or replicas) on one file or database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mediator.store import ClaimRecord, ClaimState


def record(code="C1", facility="HF1", content="h1", state=ClaimState.SENDING, **fields):
    return ClaimRecord(
        id=f"id-{code}-{facility}-{content}",
        claim_code=code,
        facility=facility,
        content_hash=content,
        state=state,
        payload={"claim": {"resourceType": "Claim", "note": "ünïcode"}},
        **{"created_at": 100.0, "updated_at": 100.0, **fields},
    )


def test_intake_keeps_the_first_record_of_a_key(store):
    first, is_new = store.intake(record())
    assert is_new
    again, is_new = store.intake(record(content="h2"))
    assert not is_new and again.id == first.id and again.content_hash == "h1"
    assert store.intake(record(facility="HF2"))[1], "claim codes are unique per facility only"
    assert store.get(first.id).payload == {"claim": {"resourceType": "Claim", "note": "ünïcode"}}


def test_an_invalid_claim_may_be_corrected_under_the_same_code(store):
    first, _ = store.intake(record())
    store.finish(first.id, None, state=ClaimState.INVALID)
    _, is_new = store.intake(record())
    assert not is_new, "the same content gets the recorded refusal"
    corrected, is_new = store.intake(record(content="fixed"))
    assert is_new and corrected.content_hash == "fixed"
    assert [r.id for r in store.by_claim_code("C1")] == [corrected.id]


def test_a_correction_that_cannot_be_stored_leaves_the_refused_claim_in_place(store):
    first, _ = store.intake(record())
    store.finish(first.id, None, state=ClaimState.INVALID)
    other, _ = store.intake(record(code="C2"))
    clash = record(content="fixed")
    clash.id = other.id  # its insert fails after the refused record was deleted
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.intake(clash)
    kept = store.by_key("C1", "HF1")
    assert kept is not None and kept.id == first.id and kept.state == ClaimState.INVALID


def test_concurrent_intake_of_one_key_admits_one_across_store_objects(open_store):
    stores = [open_store() for _ in range(4)]  # as workers, or replicas on one database
    barrier = threading.Barrier(16)

    def intake(i):
        barrier.wait()
        return stores[i % 4].intake(record(content="same"))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(intake, range(16)))
    assert [is_new for _, is_new in results].count(True) == 1
    assert len({r.id for r, _ in results}) == 1


def test_many_writers_at_once_lose_nothing(open_store):
    stores = [open_store() for _ in range(3)]

    def write(i):
        store = stores[i % 3]
        rec, _ = store.intake(record(code=f"W{i}"))
        assert store.finish(rec.id, None, state=ClaimState.DONE, response_status=201)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(write, range(120)))
    assert stores[0].stats(now=200.0).finished == 120


def test_leases_give_stale_and_due_records_to_one_owner(store):
    live = record("LIVE", lease_until=1000.0, lease_owner="worker-a")
    stale = record("STALE", lease_until=50.0, lease_owner="worker-dead")
    queued_due = record("DUE", state=ClaimState.QUEUED, next_attempt_at=90.0)
    queued_later = record("LATER", state=ClaimState.QUEUED, next_attempt_at=500.0)
    unconfirmed = record("UNC", state=ClaimState.UNCONFIRMED, next_attempt_at=95.0)
    done = record("DONE", state=ClaimState.DONE)
    for r in (live, stale, queued_due, queued_later, unconfirmed, done):
        store.intake(r)
    taken = {r.claim_code for r in store.lease_due(now=100.0, lease_s=30, owner="forwarder", limit=10)}
    assert taken == {"STALE", "DUE", "UNC"}
    assert store.lease_due(now=101.0, lease_s=30, owner="other", limit=10) == [], (
        "leased records are not taken twice"
    )
    assert not store.finish(stale.id, "worker-dead", state=ClaimState.DONE), (
        "a lost lease cannot record an answer"
    )
    assert store.finish(stale.id, "forwarder", state=ClaimState.DONE)
    assert {r.claim_code for r in store.lease_due(now=200.0, lease_s=30, owner="other", limit=10)} == {
        "DUE",
        "UNC",
    }, "an expired lease is taken over"


def test_forwarders_racing_for_due_claims_take_each_once(open_store):
    stores = [open_store() for _ in range(4)]
    for i in range(40):
        stores[0].intake(record(f"Q{i}", state=ClaimState.QUEUED, next_attempt_at=10.0))
    barrier = threading.Barrier(4)

    def lease(i):
        barrier.wait()
        return [r.claim_code for r in stores[i].lease_due(now=100.0, lease_s=60, owner=f"f{i}", limit=15)]

    with ThreadPoolExecutor(4) as pool:
        taken = [code for codes in pool.map(lease, range(4)) for code in codes]
    assert sorted(taken) == sorted(f"Q{i}" for i in range(40)), "each due claim to exactly one forwarder"


def test_stats_and_retention(store):
    store.intake(record("Q1", state=ClaimState.QUEUED, last_error="openIMIS answered 503"))
    store.intake(record("U1", state=ClaimState.UNCONFIRMED))
    store.intake(record("D1", state=ClaimState.DONE))
    unsynced = record("D2", state=ClaimState.DONE)
    store.intake(unsynced)
    store.await_report(unsynced.id, "tx-answered-202")
    stats = store.stats(now=160.0)
    assert (stats.depth, stats.unconfirmed, stats.finished, stats.oldest_queued_age_s) == (1, 1, 2, 60.0)
    assert stats.last_error == "openIMIS answered 503"
    assert store.purge_finished(before=200.0) == 1, "a result not yet reported to OpenHIM is kept"
    assert store.get(unsynced.id) is not None
    assert [r.claim_code for r in store.listing((ClaimState.QUEUED, ClaimState.UNCONFIRMED), 10)] == [
        "Q1",
        "U1",
    ]


def test_found_by_openimis_id_and_retried_by_any_name(store):
    held = record("R1", state=ClaimState.QUEUED, next_attempt_at=10**12, openimis_id="up-1")
    store.intake(held)
    assert store.get("up-1").id == held.id
    assert store.retry_now("R1")
    assert store.get(held.id).next_attempt_at == 0


def test_retry_leaves_a_claim_in_flight_to_its_sender(store):
    in_flight = record("LIVE", lease_until=10**12, lease_owner="worker-a")
    store.intake(in_flight)
    assert not store.retry_now("LIVE")
    assert store.get(in_flight.id).lease_owner == "worker-a"


def test_every_transaction_answered_202_is_reported_once_the_claim_is_final(store):
    held = record("H1", state=ClaimState.QUEUED)
    store.intake(held)
    store.await_report(held.id, "tx-first")
    store.await_report(held.id, "tx-rerun")
    store.await_report(held.id, "tx-rerun")
    assert store.due_reports(10) == [], "nothing to report while the claim is not final"
    store.finish(held.id, None, state=ClaimState.DONE)
    assert sorted(tx for _, tx in store.due_reports(10)) == ["tx-first", "tx-rerun"]
    store.reported(held.id, "tx-first")
    assert [tx for _, tx in store.due_reports(10)] == ["tx-rerun"]


def test_records_survive_reopening(open_store):
    open_store().intake(record(openimis_id="up-1"))
    reopened = open_store()
    assert reopened.get("up-1").claim_code == "C1"


def test_a_positive_answer_still_followed_is_reported_a_queued_one_is_not(store):
    followed = record("F1", state=ClaimState.QUEUED)
    store.intake(followed)
    store.await_report(followed.id, "tx-f1")
    store.finish(followed.id, None, state=ClaimState.AWAITING_ADJUDICATION, outcome="queued")
    assert store.due_reports(10) == [], "entered: still Processing for OpenHIM"
    store.finish(followed.id, None, outcome="positive")  # checked: followed until valuated
    assert [tx for _, tx in store.due_reports(10)] == ["tx-f1"]
