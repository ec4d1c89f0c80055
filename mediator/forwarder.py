"""The forwarder: delivers held claims, follows entered ones, and reports late results.

It runs in the instance's agent process (one per instance, whatever the worker count). Each
round it leases what is due from the claim store — claims held while openIMIS was unavailable,
claims left in flight by a crashed worker (their lease expired), claims openIMIS left entered —
and works on them with the same code path as a facility's submission, so that a claim is never
sent twice. A result that arrives after the facility was answered 202 is written to the
original OpenHIM transaction when the mediator is registered.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from mediator import metrics
from mediator.jsontext import compact_json
from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openhim.transactions import update_transaction
from mediator.runtime import MediatorRuntime
from mediator.store import ClaimRecord, ClaimState, StoreUnavailable

log = logging.getLogger("mediator.forwarder")

BATCH = 20
PURGE_EVERY_S = 3600.0


class Forwarder:
    def __init__(self, runtime: MediatorRuntime, openhim: OpenHimApi | None) -> None:
        self.runtime = runtime
        self.openhim = openhim
        self.owner = f"{runtime.settings.replica_name}/forwarder-{uuid.uuid4().hex[:8]}"
        self._next_purge = 0.0
        self._orchestrations: dict[str, OrchestrationRecorder] = {}

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
        for record, transaction_id in self.runtime.store.due_reports(BATCH):
            self._report(record, transaction_id, self._orchestrations.get(record.id))
        self._orchestrations.clear()
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
        if record.state == ClaimState.AWAITING_ADJUDICATION:
            self._follow_adjudication(record, recorder)
        else:
            answer = self.runtime.claims.deliver(record, recorder)
            log.info(
                "claim forwarded",
                extra={
                    "claim_code": record.claim_code,
                    "outcome": answer.outcome,
                    "attempts": record.attempts,
                    "upstream": recorder.summary(),
                },
            )
        # Kept for this round's reports: the transaction shows the calls that settled the claim.
        self._orchestrations[record.id] = recorder

    def _follow_adjudication(self, record: ClaimRecord, recorder: OrchestrationRecorder) -> None:
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

    def _report(
        self, record: ClaimRecord, transaction_id: str, recorder: OrchestrationRecorder | None
    ) -> None:
        """Write a final result to an OpenHIM transaction that was answered 202 (once)."""
        if self.openhim is None:  # not registered: nobody to tell
            self.runtime.store.reported(record.id, transaction_id)
            return
        answer = self.runtime.claims.recorded_answer(record)
        try:
            update_transaction(
                self.openhim,
                transaction_id,
                answer.transaction_status,
                answer.http_status,
                {"Content-Type": "application/fhir+json; charset=utf-8", **answer.headers},
                answer.encoded or compact_json(answer.body),
                recorder.orchestrations() if recorder else [],
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
            return
        self.runtime.store.reported(record.id, transaction_id)
        log.info(
            "OpenHIM transaction updated",
            extra={"claim_code": record.claim_code, "openhim_transaction": transaction_id},
        )
