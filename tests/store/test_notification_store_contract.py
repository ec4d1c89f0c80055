"""Subscriptions and the notification outbox, on every store: the change of a claim's answer and
its notifications are one transaction; each due notification goes to one sender at a time; a
subscription that keeps failing goes to `error` and resumes when set active again."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from mediator.store import ClaimState
from mediator.store.notifications import ACTIVE, ERROR, Subscription
from tests.store.test_claim_store_contract import record


def subscription(ident="S1", facility="HF1", claim_code=None, outcome=None, end_at=None, status=ACTIVE):
    return Subscription(
        id=ident,
        status=status,
        endpoint="https://facility.example.org/hook",
        with_payload=True,
        headers=["Authorization: Bearer facility-secret"],
        resource={"resourceType": "Subscription"},
        created_at=1.0,
        updated_at=1.0,
        facility=facility,
        claim_code=claim_code,
        outcome=outcome,
        end_at=end_at,
    )


def held_claim(store, code="C1", facility="HF1"):
    claim = record(code, facility=facility, state=ClaimState.QUEUED)
    store.intake(claim)
    return claim


def test_a_change_writes_one_notification_per_matching_subscription_with_the_claims_version(store):
    tables = store.notifications
    tables.save_subscription(subscription("BY-FACILITY", facility="hf1"))  # facility codes: any case
    tables.save_subscription(subscription("BY-CODE", facility=None, claim_code="C1"))
    tables.save_subscription(subscription("NEGATIVE-ONLY", outcome="negative"))
    tables.save_subscription(subscription("OTHER-FACILITY", facility="HF2"))
    tables.save_subscription(subscription("ENDED", end_at=50.0))
    claim = held_claim(store)
    assert store.finish(
        claim.id, None, notify=True, state=ClaimState.DONE, outcome="positive", updated_at=100.0
    )
    notes = tables.notifications(None, 10)
    assert sorted(n.subscription_id for n in notes) == ["BY-CODE", "BY-FACILITY"]
    assert {n.claim_version for n in notes} == {1} and store.get(claim.id).version == 1
    store.finish(claim.id, None, state=ClaimState.DONE, response_status=201)  # no new answer: silence
    assert len(tables.notifications(None, 10)) == 2
    assert store.finish(claim.id, None, notify=True, outcome="negative", updated_at=200.0)
    assert sorted(n.subscription_id for n in tables.notifications(None, 10) if n.claim_version == 2) == [
        "BY-CODE",
        "BY-FACILITY",
        "NEGATIVE-ONLY",
    ]


def test_a_change_the_caller_may_not_record_writes_no_notification(store):
    store.notifications.save_subscription(subscription())
    claim = record("LEASED", lease_owner="forwarder-a", lease_until=10**12)
    store.intake(claim)
    assert not store.finish(claim.id, "forwarder-dead", notify=True, state=ClaimState.DONE)
    assert store.notifications.notifications(None, 10) == []


def test_each_due_notification_goes_to_one_sender(open_store):
    stores = [open_store() for _ in range(3)]
    stores[0].notifications.save_subscription(subscription())
    for i in range(20):
        claim = held_claim(stores[0], f"C{i}")
        stores[0].finish(
            claim.id, None, notify=True, state=ClaimState.DONE, outcome="positive", updated_at=10.0
        )
    barrier = threading.Barrier(3)

    def lease(i):
        barrier.wait()
        return [n.id for n in stores[i].notifications.lease_notifications(100.0, 30, f"notifier-{i}", 20)]

    with ThreadPoolExecutor(3) as pool:
        taken = [n for ids in pool.map(lease, range(3)) for n in ids]
    assert len(taken) == len(set(taken)) == 20


def test_failures_put_the_subscription_in_error_and_setting_it_active_resumes_it(store):
    tables = store.notifications
    tables.save_subscription(subscription())
    claim = held_claim(store)
    store.finish(claim.id, None, notify=True, state=ClaimState.DONE, outcome="positive", updated_at=10.0)
    for attempt in range(3):
        [note] = tables.lease_notifications(100.0 + attempt * 100, 30, "notifier", 5)
        went_to_error = tables.failed(note, "HTTP 503", 503, 0.0, max_failures=3, now=100.0)
        assert went_to_error == (attempt == 2)
    sub = tables.subscription("S1")
    assert sub.status == ERROR and sub.error == "HTTP 503" and sub.failures == 3
    another = held_claim(store, "C2")
    store.finish(another.id, None, notify=True, state=ClaimState.DONE, outcome="positive", updated_at=20.0)
    assert tables.lease_notifications(10**9, 30, "notifier", 5) == [], "nothing goes out while in error"
    assert tables.notification_stats().pending == 2, "but nothing is lost either"
    sub.status, sub.error, sub.failures = ACTIVE, None, 0
    tables.save_subscription(sub)
    due = tables.lease_notifications(1000.0, 30, "notifier", 5)
    assert len(due) == 2
    for note in due:
        tables.delivered(note, 200, 1000.0)
    stats = tables.notification_stats()
    assert (stats.pending, stats.delivered, stats.subscriptions_active) == (0, 2, 1)


def test_a_deleted_subscription_gets_nothing_more(store):
    tables = store.notifications
    tables.save_subscription(subscription())
    claim = held_claim(store)
    store.finish(claim.id, None, notify=True, state=ClaimState.DONE, outcome="positive", updated_at=10.0)
    assert tables.delete_subscription("S1") and not tables.delete_subscription("S1")
    assert tables.subscription("S1") is None and tables.notification_stats().pending == 0
    store.finish(claim.id, None, notify=True, outcome="negative", updated_at=20.0)
    assert tables.notifications(None, 10) == []


def test_subscriptions_are_listed_by_status_and_keep_their_headers(store):
    tables = store.notifications
    tables.save_subscription(subscription("A"))
    tables.save_subscription(subscription("B", status=ERROR))
    assert [s.id for s in tables.subscriptions(ACTIVE)] == ["A"]
    assert [s.id for s in tables.subscriptions()] == ["A", "B"]
    assert tables.subscription("A").headers == ["Authorization: Bearer facility-secret"]
