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
import logging
import time
from collections.abc import Callable
from typing import Any

from mediator.fhir.outcome import FhirError, Issue
from mediator.ids import RandomIds
from mediator.jsontext import compact_json_bytes
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient, UpstreamResponse
from mediator.openimis.errors import OpenImisBroken, OpenImisError, OpenImisRateLimited
from mediator.openimis.identifiers import openimis_uuid
from mediator.openimis.insuree_numbers import InsureeNumbers
from mediator.openimis.reads import read_resource
from mediator.openimis.refusals import refusals
from mediator.settings import Settings
from mediator.store import ClaimRecord, ClaimState, ClaimStore
from mediator.transactions.claims.answers import ClaimAnswer
from mediator.transactions.claims.known_elements import CanonicalClaim, KnownElements, canonical_claim
from mediator.transactions.claims.normalise import (
    NormalisedClaim,
    normalise_claim,
    with_patient_uuid,
)
from mediator.transactions.claims.recording import OutcomeRecording, item_refs
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


def content_hash(canon: CanonicalClaim) -> str:
    """SHA-256 of the claim's canonical JSON: what tells a resend from a new claim under one code."""
    return hashlib.sha256(canon.text.encode()).hexdigest()


class ClaimSubmission(OutcomeRecording):
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
            raise FhirError(422, issues)
        use = claim.get("use", "claim")
        if use in UNSUPPORTED_USES:
            raise FhirError.of(
                422,
                "not-supported",
                f"use '{use}' is not supported: openIMIS only adjudicates claims (use 'claim')",
                ["Claim.use"],
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
                "received": claim,  # answered as it came by GET /fhir/Claim/<id>
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


def _normalised(payload: dict[str, Any]) -> NormalisedClaim:
    return NormalisedClaim(payload["claim"], payload.get("patient_chfid"), item_refs(payload))


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
