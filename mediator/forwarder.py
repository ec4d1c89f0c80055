"""The forwarder: delivers held claims, follows entered ones, and reports late results.

It runs in the instance's agent process (one per instance, whatever the worker count). Each
round it leases what is due from the claim store — claims held while openIMIS was unavailable,
claims left in flight by a crashed worker (their lease expired), claims openIMIS left entered —
and works on them with the same code path as a facility's submission, so that a claim is never
sent twice. A result that arrives after the facility was answered 202 is written to the
original OpenHIM transaction when the mediator is registered, with every call the forwarder made
for the claim since (each retry, the delivery, the adjudication reads), appended to those the
transaction already has.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mediator import metrics
from mediator.jsontext import compact_json
from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.openhim.orchestrations import OrchestrationRecorder, UpstreamCall
from mediator.openhim.transactions import update_transaction
from mediator.runtime import MediatorRuntime
from mediator.store import ClaimRecord, ClaimState, StoreUnavailable

log = logging.getLogger("mediator.forwarder")

BATCH = 20
PURGE_EVERY_S = 3600.0


@dataclass
class _History:
    calls: list[UpstreamCall] = field(default_factory=list)
    left_out: int = 0
    #: The properties of the latest answer (openIMIS status and amounts, which a stored record lacks).
    properties: dict[str, Any] = field(default_factory=dict)


class CallJournal:
    """The calls made for each claim until its OpenHIM transactions have them.

    In memory and bounded, since a claim can be retried for days or polled for its adjudication:
    per claim the first and the latest calls are kept (the number left out becomes a property),
    and at most `max_claims` claims are followed, the oldest forgotten first (ten rounds' worth:
    the calls of a claim settled in a round are still there when that round reports it).
    """

    def __init__(self, first: int = 3, latest: int = 12, max_claims: int = 10 * BATCH) -> None:
        self.first, self.latest, self.max_claims = first, latest, max_claims
        self._claims: dict[str, _History] = {}

    def add(self, claim_id: str, calls: list[UpstreamCall], properties: dict[str, Any] | None = None) -> None:
        history = self._claims.get(claim_id)
        if history is None:
            history = self._claims[claim_id] = _History()
            while len(self._claims) > self.max_claims:
                del self._claims[next(iter(self._claims))]
        history.calls.extend(calls)
        excess = len(history.calls) - self.first - self.latest
        if excess > 0:
            del history.calls[self.first : self.first + excess]
            history.left_out += excess
        if properties is not None:
            history.properties = dict(properties)

    def get(self, claim_id: str) -> _History | None:
        return self._claims.get(claim_id)

    def forget(self, claim_id: str) -> None:
        self._claims.pop(claim_id, None)

    def __len__(self) -> int:
        return len(self._claims)


class ReadBudget:
    """At most `rate` follow-up reads of openIMIS in any minute (a sliding window)."""

    def __init__(self) -> None:
        self._reads: collections.deque[float] = collections.deque()

    def take(self, now: float, rate: int) -> bool:
        while self._reads and self._reads[0] <= now - 60:
            self._reads.popleft()
        if len(self._reads) >= rate:
            return False
        self._reads.append(now)
        return True

    def wait_s(self, now: float) -> float:
        return max(self._reads[0] + 60 - now, 0.1) if self._reads else 0.1


class Forwarder:
    def __init__(self, runtime: MediatorRuntime, openhim: OpenHimApi | None) -> None:
        self.runtime = runtime
        self.openhim = openhim
        self.owner = f"{runtime.settings.replica_name}/forwarder-{uuid.uuid4().hex[:8]}"
        self._read_budget = ReadBudget()
        self._next_purge = 0.0
        self.journal = CallJournal()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except StoreUnavailable as exc:
                log.warning("forwarding round skipped", extra={"error": str(exc)})
            except Exception:  # the loop must outlive any single failure
                log.exception("forwarding round failed")
            stop.wait(self.runtime.settings.forward_poll_interval)

    def run_once(self) -> int:
        """One round; returns how many records were worked on."""
        self.runtime.refresh_live_config()
        settings = self.runtime.settings
        now = time.time()
        records = self.runtime.store.lease_due(now, settings.claim_lease_s, self.owner, BATCH)
        for record in records:
            try:
                self._work_on(record)
            except Exception:  # one record's failure must not stop the others
                log.exception("forwarding a claim failed", extra={"claim_code": record.claim_code})
        reported, not_reported = set(), set()
        for record, transaction_id in self.runtime.store.due_reports(BATCH):
            done = self._report(record, transaction_id, self.journal.get(record.id))
            (reported if done else not_reported).add(record.id)
        for claim_id in reported - not_reported:  # kept until each transaction of the claim has them
            self.journal.forget(claim_id)
        self.runtime.store.checkpoint()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            purged = self.runtime.store.purge_finished(now - settings.claim_retention_days * 86400)
            if purged:
                log.info("finished claim records purged", extra={"purged": purged})
        return len(records)

    def _work_on(self, record: ClaimRecord) -> None:
        recorder = OrchestrationRecorder()
        if record.state == ClaimState.SENDING:  # its sender (a worker, a replica) is gone
            metrics.LEASE_TAKEOVERS.inc()
            log.warning("claim in flight taken over", extra={"claim_code": record.claim_code})
        properties = None
        try:
            if record.state == ClaimState.AWAITING_ADJUDICATION:
                self._follow_adjudication(record, recorder)
                if record.state != ClaimState.AWAITING_ADJUDICATION:
                    properties = {}  # those of the delivery (status entered) are out of date
            else:
                answer = self.runtime.claims.deliver(record, recorder)
                properties = answer.properties
                log.info(
                    "claim forwarded",
                    extra={
                        "claim_code": record.claim_code,
                        "outcome": answer.outcome,
                        "attempts": record.attempts,
                        "upstream": recorder.summary(),
                    },
                )
        finally:
            if self.openhim is not None and record.openhim_tx_id:  # it came through OpenHIM
                # For the claim's OpenHIM transactions: the calls that settled it, and those before.
                self.journal.add(record.id, recorder.calls, properties)

    def _follow_adjudication(self, record: ClaimRecord, recorder: OrchestrationRecorder) -> None:
        settings = self.runtime.settings
        now = time.time()
        if not self._read_budget.take(now, settings.adjudication_reads_per_minute):
            # openIMIS allows 150 requests a minute per client: follow-up reads wait their turn.
            self.runtime.store.finish(
                record.id, self.owner, next_attempt_at=now + self._read_budget.wait_s(now), lease_until=0
            )
            return
        claims = self.runtime.claims
        claims.refresh_adjudication(self.runtime.openimis, record, recorder)
        if record.state == ClaimState.AWAITING_ADJUDICATION:
            self.runtime.store.finish(
                record.id,
                self.owner,
                next_attempt_at=time.time() + self.runtime.settings.adjudication_poll_interval,
                lease_until=0,
            )
        else:
            log.info("claim adjudicated", extra={"claim_code": record.claim_code, "outcome": record.outcome})

    def _report(self, record: ClaimRecord, transaction_id: str, history: _History | None) -> bool:
        """Write a final result to an OpenHIM transaction that was answered 202; False: not yet."""
        if self.openhim is None:  # not registered: nobody to tell
            self.runtime.store.reported(record.id, transaction_id)
            return True
        answer = self.runtime.claims.recorded_answer(record)
        recorder = OrchestrationRecorder()
        properties = dict(answer.properties)
        if history is not None:
            recorder.extend(history.calls)
            properties = {**history.properties, **properties}
            if history.left_out:
                properties["calls_not_recorded"] = history.left_out
        try:
            update_transaction(
                self.openhim,
                transaction_id,
                answer.transaction_status,
                answer.http_status,
                {"Content-Type": "application/fhir+json; charset=utf-8", **answer.headers},
                answer.encoded or compact_json(answer.body),
                recorder.orchestrations(),
                properties,
            )
        except OpenHimError as exc:
            log.warning(
                "OpenHIM transaction not updated yet",
                extra={
                    "claim_code": record.claim_code,
                    "openhim_transaction": transaction_id,
                    "error": str(exc),
                },
            )
            return False
        self.runtime.store.reported(record.id, transaction_id)
        log.info(
            "OpenHIM transaction updated",
            extra={"claim_code": record.claim_code, "openhim_transaction": transaction_id},
        )
        return True
