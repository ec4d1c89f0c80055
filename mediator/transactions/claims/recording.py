"""Recording what openIMIS answered for a claim, and following a claim until its answer is final.

Every result is written by the holder of the claim's lease only; a result that changes what the
facility was told before (`notify`) is written with its notifications in one transaction.
A claim openIMIS may still change (entered, or accepted but not valuated) is followed: asked
again every `ADJUDICATION_POLL_INTERVAL`, within `ADJUDICATION_FOLLOW_DAYS`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import Any

from mediator.fhir.outcome import Issue, operation_outcome
from mediator.jsontext import compact_json
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisError
from mediator.openimis.identifiers import openimis_uuid
from mediator.openimis.reads import read_resource
from mediator.settings import Settings
from mediator.store import ClaimRecord, ClaimState, ClaimStore
from mediator.transactions.claims.answers import ClaimAnswer, ClaimAnswers, as_ours, held_claim_response
from mediator.transactions.claims.classification import (
    HTTP_STATUS,
    VALUATED,
    ClaimOutcome,
    ClassifiedResponse,
    classify,
)
from mediator.transactions.claims.normalise import ItemRef

log = logging.getLogger("mediator.claims")


class OutcomeRecording(ClaimAnswers):
    """Mixed into ClaimSubmission, which sets the store, the settings and the clock."""

    store: ClaimStore
    _settings: Callable[[], Settings]
    _clock: Callable[[], float]

    # -- adjudication of claims openIMIS left entered ---------------------------------------

    def refresh_adjudication(
        self, client: OpenImisClient, record: ClaimRecord, recorder: OrchestrationRecorder
    ) -> dict[str, Any] | None:
        """Ask openIMIS for the current state of an entered claim; record it once final.

        Returns the facility-facing ClaimResponse, or None when openIMIS cannot tell right now.
        """
        try:
            upstream = read_resource(
                client,
                "ClaimResponse",
                record.openimis_id or record.claim_code,
                recorder,
                "openIMIS claim response read (adjudication)",
            )
        except OpenImisError:
            return None
        if upstream is None:
            return None
        classified = classify(upstream, item_refs(record.payload))
        body = classified.claim_response
        as_ours(body, record)
        follow = self._to_follow(record, classified)
        changed = _status_of(record) != classified.openimis_status
        if follow and not changed:
            return body  # nothing new: still entered, or still checked/processed
        self._settle(
            record,
            None,
            changed,  # a new answer: the facility was answered before, subscribers are told
            state=ClaimState.AWAITING_ADJUDICATION if follow else ClaimState.DONE,
            outcome=str(classified.outcome),
            response_status=HTTP_STATUS[classified.outcome],
            response_body=compact_json(body),
            lease_until=0,
        )
        return body

    def _to_follow(self, record: ClaimRecord, classified: ClassifiedResponse) -> bool:
        """Whether openIMIS may still change this answer and the mediator should ask again:
        entered (queued), or accepted but not valuated yet (checked, processed), within the
        follow-up horizon (`ADJUDICATION_FOLLOW_DAYS`; queued claims are followed regardless)."""
        if classified.outcome == ClaimOutcome.QUEUED:
            return True
        horizon = record.created_at + self._settings().adjudication_follow_days * 86400
        return (
            classified.outcome == ClaimOutcome.POSITIVE
            and classified.openimis_status < VALUATED
            and self._clock() < horizon
        )

    # -- recording outcomes ----------------------------------------------------------------

    def _record_classified(
        self, record: ClaimRecord, claim_response: dict[str, Any], notify: bool = False
    ) -> ClaimAnswer:
        """Record openIMIS's answer; `notify`: the facility was answered before, tell subscribers."""
        classified = classify(claim_response, item_refs(record.payload))
        openimis_id = openimis_uuid(claim_response) or record.openimis_id
        body = classified.claim_response
        as_ours(body, record)
        settings = self._settings()
        state = ClaimState.AWAITING_ADJUDICATION if self._to_follow(record, classified) else ClaimState.DONE
        self._settle(
            record,
            record.lease_owner,
            notify,
            state=state,
            openimis_id=openimis_id,
            outcome=str(classified.outcome),
            response_status=HTTP_STATUS[classified.outcome],
            response_body=compact_json(body),
            next_attempt_at=self._clock() + settings.adjudication_poll_interval,
            lease_until=0,
            last_error=None,
        )
        return self._answer(record, body, classified)

    def _record_invalid(self, record: ClaimRecord, issues: list[Issue], notify: bool = False) -> ClaimAnswer:
        outcome = operation_outcome(issues)
        self._settle(
            record,
            record.lease_owner,
            notify,
            state=ClaimState.INVALID,
            outcome="invalid",
            response_status=422,
            response_body=compact_json(outcome),
            lease_until=0,
        )
        return self.recorded_answer(record)

    def _hold(self, record: ClaimRecord, reason: str, retry_after: float | None = None) -> ClaimAnswer:
        settings = self._settings()
        delay = min(
            settings.forward_backoff_initial * 2 ** max(record.attempts - 1, 0), settings.forward_backoff_max
        )
        delay *= 1 + random.uniform(-settings.forward_backoff_jitter, settings.forward_backoff_jitter)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._keep(record, ClaimState.QUEUED, reason, self._clock() + delay)
        log.warning(
            "claim held for later delivery",
            extra={"claim_code": record.claim_code, "reason": reason, "retry_in_s": round(delay, 1)},
        )
        return self.recorded_answer(record)

    def _hold_unconfirmed(self, record: ClaimRecord) -> ClaimAnswer:
        """openIMIS has the code but shows no claim of this facility under it: resending would only
        be refused again (84 submissions in 5 minutes, once). Look again now and then; an operator
        settles it in openIMIS and nudges it with `queue retry`."""
        reason = (
            f"openIMIS already holds a claim with code {record.claim_code!r} but shows none of facility "
            f"{record.facility!r} under it (another facility's claim answers that code): not sent again; "
            "an operator settles it in openIMIS, then runs `queue retry`"
        )
        self._keep(
            record, ClaimState.UNCONFIRMED, reason, self._clock() + self._settings().forward_backoff_max
        )
        log.error("claim held for an operator", extra={"claim_code": record.claim_code, "reason": reason})
        return self.recorded_answer(record)

    def _keep(self, record: ClaimRecord, state: ClaimState, reason: str, next_attempt_at: float) -> None:
        """The claim stays with the mediator (answered 202, queued) until `next_attempt_at`."""
        self._settle(
            record,
            record.lease_owner,
            state=state,
            outcome="queued",
            response_status=202,
            response_body=compact_json(held_claim_response(record, reason)),
            next_attempt_at=next_attempt_at,
            lease_until=0,
            last_error=reason,
        )

    def _settle(
        self, record: ClaimRecord, lease_owner: str | None, notify: bool = False, **fields: Any
    ) -> bool:
        """Record a result durably, and on the record the caller goes on with; False if the
        caller's lease was lost (the record was left as another sender has it)."""
        if not self.store.finish(record.id, lease_owner, notify=notify, **fields):
            return False
        for name, value in fields.items():
            setattr(record, name, value)
        return True


def _status_of(record: ClaimRecord) -> int | None:
    """The openIMIS claim status of the recorded answer (its highest claim-status adjudication)."""
    if not record.response_body:
        return None
    try:
        return classify(json.loads(record.response_body)).openimis_status
    except (ValueError, KeyError, TypeError):
        return None


def item_refs(payload: dict[str, Any]) -> list[ItemRef]:
    return [ItemRef(**{**ref, "keys": tuple(ref.get("keys") or ())}) for ref in payload.get("item_refs", [])]
