"""OpenHIE transaction 7: Claim submit, durable and idempotent.

request -> validate -> normalise -> record (durable, keyed on claim code + facility) -> send
upstream (recorded as orchestrations) -> classify -> answer. A claim is recorded before it is
sent, so that it is either accepted upstream exactly once or held and reported as queued:
- the same claim again (client retry, OpenHIM re-run) gets the recorded answer, never a second
  submission; the same key with other content is a 409;
- openIMIS unavailable (unreachable, slow, 5xx, 429, login refused) -> held, 202 queued; the
  forwarder delivers it later with backoff;
- a claim that may have reached openIMIS (a timeout, a crash mid-call) is looked up there by
  its code before it is sent again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediator.fhir.outcome import FhirError, Issue, operation_outcome
from mediator.ids import RandomIds
from mediator.jsontext import compact_json, compact_json_bytes
from mediator.openhim.envelope import TransactionStatus
from mediator.openhim.orchestrations import OrchestrationRecorder, iso_now
from mediator.openimis.client import OpenImisClient, UpstreamResponse
from mediator.openimis.errors import OpenImisBroken, OpenImisError, OpenImisRateLimited
from mediator.openimis.identifiers import openimis_uuid
from mediator.openimis.insuree_numbers import InsureeNumbers
from mediator.openimis.reads import read_resource
from mediator.openimis.refusals import refusals
from mediator.settings import Settings
from mediator.store import ClaimRecord, ClaimState, ClaimStore
from mediator.transactions.claims.classification import (
    HTTP_STATUS,
    OPENHIM_STATUS,
    OUTCOME_TAG_SYSTEM,
    VALUATED,
    ClaimOutcome,
    ClassifiedResponse,
    classify,
)
from mediator.transactions.claims.known_elements import CanonicalClaim, KnownElements, canonical_claim
from mediator.transactions.claims.normalise import (
    ItemRef,
    NormalisedClaim,
    normalise_claim,
    with_patient_uuid,
)
from mediator.transactions.claims.validation import claim_key, parse_claim, validate_claim

log = logging.getLogger("mediator.claims")

UNSUPPORTED_USES = ("preauthorization", "predetermination")
#: A duplicate submission arriving while the first is in flight waits this long for its answer.
IN_FLIGHT_WAIT_S = 5.0
#: openIMIS 500 messages that say openIMIS itself is broken, not the claim.
_BROKEN_MARKERS = (
    "internal server error",
    "operationalerror",
    "programmingerror",
    "interfaceerror",
    "database",
    "could not connect",
    "connection",
    "stored procedure",
    "deadlock",
    "timeout",
    "temporarily",
)


@dataclass
class ClaimAnswer:
    """What the facility is told, and what the OpenHIM transaction records."""

    http_status: int
    body: dict[str, Any]
    transaction_status: TransactionStatus
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    #: `body` as recorded in the store, when it was: answered as is, not encoded again.
    encoded: str | None = None


def content_hash(canon: CanonicalClaim) -> str:
    """SHA-256 of the claim's canonical JSON: what tells a resend from a new claim under one code."""
    return hashlib.sha256(canon.text.encode()).hexdigest()


class ClaimSubmission:
    """Submits claims and delivers held ones; shared by the workers and the forwarder."""

    def __init__(
        self,
        store: ClaimStore,
        client: Callable[[], OpenImisClient],
        settings: Callable[[], Settings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._client = client
        self._settings = settings
        self._clock = clock
        self._insurees = InsureeNumbers()
        self._known_elements = KnownElements()
        self._ids = RandomIds()

    # -- the facility's submission ---------------------------------------------------------

    def submit(self, body: bytes, recorder: OrchestrationRecorder, openhim_tx_id: str | None) -> ClaimAnswer:
        claim = parse_claim(body)
        canon = canonical_claim(claim)
        issues = validate_claim(claim, self._known_elements, canon)
        if issues:
            raise FhirError(422, issues, outcome="invalid-claim")
        use = claim.get("use", "claim")
        if use in UNSUPPORTED_USES:
            raise FhirError.of(
                422,
                "not-supported",
                f"use '{use}' is not supported: openIMIS only adjudicates claims (use 'claim')",
                ["Claim.use"],
                outcome="not-supported",
            )
        normalised = normalise_claim(claim)
        code, facility = claim_key(claim)
        now = self._clock()
        record_id = self._ids()
        record = ClaimRecord(
            id=record_id,
            claim_code=code,
            facility=facility,
            content_hash=content_hash(canon),
            state=ClaimState.SENDING,
            payload={
                "claim": normalised.claim,
                "patient_chfid": normalised.patient_chfid,
                "item_refs": [ref.__dict__ for ref in normalised.item_refs],
            },
            created_at=now,
            updated_at=now,
            # Recorded with the intake itself: from here on the claim may reach openIMIS, so a
            # crash leaves it "in doubt" and it is looked up upstream before any resend.
            attempts=1,
            lease_until=now + self._settings().claim_lease_s,
            # One intake, one lease: the record's id makes it unique; the replica says where it is.
            lease_owner=f"{self._settings().replica_name}/worker-{record_id}",
            openhim_tx_id=openhim_tx_id,
        )
        stored, is_new = self.store.intake(record)
        if not is_new:
            if stored.content_hash != record.content_hash:
                raise FhirError.of(
                    409,
                    "conflict",
                    f"claim code '{code}' of facility '{facility}' was already submitted with other content;"
                    " use a new claim code for a new claim",
                    ["Claim.identifier"],
                    outcome="conflict",
                )
            answer = self._replay(stored)
        else:
            answer = self.deliver(record, recorder, first_attempt=True)
        if openhim_tx_id and answer.http_status == 202:
            # This transaction stays "Processing" until the forwarder writes the final result to it
            # (a console re-run or a retry through OpenHIM is a transaction of its own).
            self.store.await_report(stored.id, openhim_tx_id)
        return answer

    def _replay(self, record: ClaimRecord) -> ClaimAnswer:
        """The recorded answer of a claim already received (waiting briefly if it is in flight)."""
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while record.state == ClaimState.SENDING and time.monotonic() < deadline:
            time.sleep(0.05)
            record = self.store.get(record.id) or record
        answer = self.recorded_answer(record)
        answer.properties["replayed"] = "true"
        answer.outcome = f"replayed-{answer.outcome}"
        return answer

    # -- delivery (first attempt, and the forwarder's later ones) ---------------------------

    def deliver(
        self, record: ClaimRecord, recorder: OrchestrationRecorder, first_attempt: bool = False
    ) -> ClaimAnswer:
        """Get a claim the caller holds the lease of into openIMIS, and record the answer."""
        client = self._client()
        try:
            if record.state == ClaimState.UNCONFIRMED:
                # Never submitted again: only looked up, until it shows as this facility's.
                found = self._look_up_upstream(client, record, recorder)
                return (
                    self._record_classified(record, found, notify=not first_attempt)
                    if found
                    else self._hold_unconfirmed(record)
                )
            if not first_attempt and record.attempts > 0:
                found = self._look_up_upstream(client, record, recorder)
                if found is not None:
                    return self._record_classified(record, found, notify=not first_attempt)
            payload = record.payload
            claim = payload["claim"]
            if payload.get("patient_chfid"):
                patient_uuid = self._insurees.current_uuid(client, payload["patient_chfid"], recorder)
                if patient_uuid is None:
                    return self._record_invalid(
                        record,
                        [
                            Issue(
                                "not-found",
                                f"insuree '{payload['patient_chfid']}' is not known to openIMIS",
                                ["Claim.patient"],
                            )
                        ],
                        notify=not first_attempt,
                    )
                claim = with_patient_uuid(_normalised(payload), patient_uuid)
            if not first_attempt and not self._settle(
                record, record.lease_owner, attempts=record.attempts + 1, last_error=None
            ):
                # Another sender took the claim over (its lease had expired): it is theirs now.
                current = self.store.get(record.id) or record
                return self.recorded_answer(current)
            response = client.post("Claim/", compact_json_bytes(claim), recorder, "openIMIS claim submit")
            if response.ok:
                return self._record_classified(
                    record, self._claim_response(response), notify=not first_attempt
                )
            return self._upstream_refusal(client, record, response, recorder, notify=not first_attempt)
        except OpenImisError as exc:
            retry_after = exc.retry_after if isinstance(exc, OpenImisRateLimited) else None
            return self._hold(record, f"{exc.public_message}: {exc}", retry_after)
        except Exception:
            # An answer this code did not expect: the claim may have arrived, so it is held (and
            # looked up before any resend) rather than left without an answer.
            log.exception(
                "unexpected failure while delivering a claim", extra={"claim_code": record.claim_code}
            )
            return self._hold(record, "unexpected answer from openIMIS (see the mediator's log)")

    def _upstream_refusal(
        self,
        client: OpenImisClient,
        record: ClaimRecord,
        response: UpstreamResponse,
        recorder: OrchestrationRecorder,
        notify: bool = False,
    ) -> ClaimAnswer:
        messages = response.outcome_messages()
        text = " ".join(messages)
        if messages and "already exists" in text.lower():
            # Ours from an earlier attempt whose answer was lost, most likely: read it back.
            found = self._look_up_upstream(client, record, recorder)
            if found is not None:
                return self._record_classified(record, found, notify=notify)
            return self._hold_unconfirmed(record)
        is_claim_error = (
            messages
            and response.status in (400, 422, 500)
            and not any(m in text.lower() for m in _BROKEN_MARKERS)
        )
        if is_claim_error:
            log.warning(
                "openIMIS refused a claim",
                extra={"claim_code": record.claim_code, "upstream_status": response.status, "reason": text},
            )
            issues = [
                Issue("business-rule", f"openIMIS refused the claim: {r.text}", [r.expression])
                for r in refusals(messages)
            ]
            return self._record_invalid(record, issues, notify=notify)
        return self._hold(record, f"openIMIS answered {response.status}")

    def _look_up_upstream(
        self, client: OpenImisClient, record: ClaimRecord, recorder: OrchestrationRecorder
    ) -> dict[str, Any] | None:
        """`ClaimResponse/<claim code>/`: the one way to see whether a claim reached openIMIS
        (`Claim?identifier=` fails with 500 on real releases).

        Claim codes are unique per facility only, and openIMIS answers the first claim with that
        code: the claim it points to must be this facility's, or it is not ours.
        """
        found = read_resource(
            client,
            "ClaimResponse",
            record.claim_code,
            recorder,
            "openIMIS claim lookup (did an earlier attempt arrive?)",
        )
        if found is None:
            return None
        claim_uuid = openimis_uuid(found)
        claim = (
            read_resource(
                client, "Claim", claim_uuid, recorder, "openIMIS claim read (which facility's claim?)"
            )
            if claim_uuid
            else None
        )
        if claim is None or not _same_facility(claim.get("provider"), record.facility):
            log.warning(
                "a claim with this code in openIMIS is not this facility's",
                extra={"claim_code": record.claim_code, "facility": record.facility},
            )
            return None
        return found

    def _claim_response(self, response: UpstreamResponse) -> dict[str, Any]:
        body = response.json()
        if not isinstance(body, dict) or body.get("resourceType") != "ClaimResponse":
            raise OpenImisBroken("openIMIS accepted the claim but did not answer a ClaimResponse")
        return body

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
        classified = classify(upstream, _item_refs(record.payload))
        body = classified.claim_response
        body["id"] = record.public_id
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
        classified = classify(claim_response, _item_refs(record.payload))
        openimis_id = openimis_uuid(claim_response) or record.openimis_id
        body = classified.claim_response
        body["id"] = record.public_id
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
        body = held_claim_response(record, reason)
        self._settle(
            record,
            record.lease_owner,
            state=ClaimState.QUEUED,
            outcome="queued",
            response_status=202,
            response_body=compact_json(body),
            next_attempt_at=self._clock() + delay,
            lease_until=0,
            last_error=reason,
        )
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
        body = held_claim_response(record, reason)
        self._settle(
            record,
            record.lease_owner,
            state=ClaimState.UNCONFIRMED,
            outcome="queued",
            response_status=202,
            response_body=compact_json(body),
            next_attempt_at=self._clock() + self._settings().forward_backoff_max,
            lease_until=0,
            last_error=reason,
        )
        log.error("claim held for an operator", extra={"claim_code": record.claim_code, "reason": reason})
        return self.recorded_answer(record)

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

    # -- answers ---------------------------------------------------------------------------

    def recorded_answer(self, record: ClaimRecord) -> ClaimAnswer:
        """The answer a record stands for now (also what a replay gets)."""
        if record.state == ClaimState.SENDING or not record.response_body:
            body = held_claim_response(record, "the claim is being delivered to openIMIS")
            return self._held_answer(record, body)
        body = json.loads(record.response_body)
        if record.state == ClaimState.INVALID:
            return ClaimAnswer(
                422,
                body,
                TransactionStatus.COMPLETED,
                "invalid",
                properties=_properties(record, None),
                encoded=record.response_body,
            )
        if record.state in (ClaimState.QUEUED, ClaimState.UNCONFIRMED):
            return self._held_answer(record, body, record.response_body)
        outcome = ClaimOutcome(record.outcome)
        return ClaimAnswer(
            HTTP_STATUS[outcome],
            body,
            TransactionStatus(OPENHIM_STATUS[outcome]),
            str(outcome),
            headers=self._location(record),
            properties=_properties(record, body),
            encoded=record.response_body,
        )

    def _held_answer(
        self, record: ClaimRecord, body: dict[str, Any], encoded: str | None = None
    ) -> ClaimAnswer:
        return ClaimAnswer(
            202,
            body,
            TransactionStatus.PROCESSING,
            "held",
            headers=self._location(record),
            properties=_properties(record, body),
            encoded=encoded,
        )

    def _answer(
        self, record: ClaimRecord, body: dict[str, Any], classified: ClassifiedResponse
    ) -> ClaimAnswer:
        properties = _properties(record, body)
        properties.update(
            {
                "openimis_status": str(classified.openimis_status),
                "total_claimed": classified.total_claimed,
                "total_approved": classified.total_approved,
                "currency": classified.currency,
            }
        )
        return ClaimAnswer(
            HTTP_STATUS[classified.outcome],
            body,
            TransactionStatus(OPENHIM_STATUS[classified.outcome]),
            str(classified.outcome),
            headers=self._location(record),
            properties={k: v for k, v in properties.items() if v is not None},
            encoded=record.response_body,
        )

    def _location(self, record: ClaimRecord) -> dict[str, str]:
        return {"Location": f"{self._settings().public_base_url}/ClaimResponse/{record.public_id}"}


def held_claim_response(record: ClaimRecord, reason: str) -> dict[str, Any]:
    """A ClaimResponse for a claim the mediator holds: queued, with an id the facility can poll."""
    claim = record.payload["claim"]
    return {
        "resourceType": "ClaimResponse",
        "id": record.public_id,
        "meta": {
            "tag": [
                {"system": OUTCOME_TAG_SYSTEM, "code": "queued", "display": "Queued: held by the mediator"}
            ]
        },
        "identifier": [i for i in claim.get("identifier", []) if isinstance(i, dict)][:1],
        "status": "active",
        "type": claim.get("type"),
        "use": "claim",
        "patient": claim.get("patient"),
        "created": iso_now()[:10],
        "insurer": {"reference": "openIMIS"},
        "requestor": claim.get("enterer") or claim.get("provider"),
        "outcome": "queued",
        "disposition": (
            "Claim received and held by the mediator; it will be forwarded to openIMIS automatically "
            f"({reason}). Poll this ClaimResponse for the result."
        ),
    }


def _properties(record: ClaimRecord, body: dict[str, Any] | None) -> dict[str, Any]:
    claim = record.payload.get("claim", {})
    patient = record.payload.get("patient_chfid") or (claim.get("patient") or {}).get("reference", "")
    return {
        "claim_code": record.claim_code,
        "facility": record.facility,
        "insuree": patient.removeprefix("Patient/"),
        "outcome": record.outcome or "queued",
        "claim_response_id": record.public_id,
        **({"disposition": body.get("disposition")} if body and body.get("disposition") else {}),
    }


def _status_of(record: ClaimRecord) -> int | None:
    """The openIMIS claim status of the recorded answer (its highest claim-status adjudication)."""
    if not record.response_body:
        return None
    try:
        return classify(json.loads(record.response_body)).openimis_status
    except (ValueError, KeyError, TypeError):
        return None


def _normalised(payload: dict[str, Any]) -> NormalisedClaim:
    return NormalisedClaim(payload["claim"], payload.get("patient_chfid"), _item_refs(payload))


def _item_refs(payload: dict[str, Any]) -> list[ItemRef]:
    return [ItemRef(**{**ref, "keys": tuple(ref.get("keys") or ())}) for ref in payload.get("item_refs", [])]


def _same_facility(provider: Any, facility: str) -> bool:
    """Whether a reference openIMIS gives names the facility (by UUID or by code)."""
    if not isinstance(provider, dict) or not facility:
        return False
    names = {
        str(provider.get("reference") or "").removeprefix("Organization/"),
        str((provider.get("identifier") or {}).get("value") or ""),
        str(provider.get("display") or ""),
    }
    return facility.lower() in {n.lower() for n in names if n}
