"""Deliver the outbox: each notification POSTed to its facility's endpoint, at least once.

trigger (a claim's answer changed: `store.finish(notify=True)` wrote the outbox row in the same
transaction) -> outbox (leased here, one sender at a time, across replicas too) -> deliver
(recorded: a JSON log line, and an orchestration on the claim's OpenHIM transaction when known).

A notification carries a stable id (`X-Notification-Id`) and the claim's version (the
ClaimResponse's `meta.versionId`, also `X-Claim-Version`): a receiver drops what it has seen.
The body is the claim's current ClaimResponse (or nothing: an R4 "ping" without payload).
A refused delivery is retried with backoff and jitter; after `NOTIFICATION_MAX_FAILURES` in a
row the subscription goes to `status: error` with the last error, and its notifications wait
until the facility sets it active again. Redirects are not followed; TLS is verified.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from mediator import metrics
from mediator.openhim.orchestrations import iso_from_epoch
from mediator.redaction import REDACTED
from mediator.runtime import MediatorRuntime
from mediator.store import ClaimState
from mediator.store.notifications import Notification, Subscription
from mediator.transactions.claims.responses import invalid_claim_response

log = logging.getLogger("mediator.notifications")

BATCH = 50
JITTER = 0.2

#: Where a delivery's orchestration goes: (OpenHIM transaction id, orchestration).
Report = Callable[[str, dict[str, Any]], None]


class Notifier:
    def __init__(
        self,
        runtime: MediatorRuntime,
        report: Report | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.runtime = runtime
        self.report = report
        self.session = session or requests.Session()
        self.owner = f"{runtime.settings.replica_name}/notifier-{uuid.uuid4().hex[:8]}"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must outlive any single failure
                log.exception("notification round failed")
            stop.wait(self.runtime.settings.forward_poll_interval)

    def run_once(self) -> int:
        settings = self.runtime.settings
        lease_s = 2 * settings.notification_timeout + 5
        notes = self.runtime.store.notifications.lease_notifications(time.time(), lease_s, self.owner, BATCH)
        for note in notes:
            try:
                self.deliver(note)
            except Exception:
                log.exception("delivering a notification failed", extra={"notification": note.id})
        return len(notes)

    def deliver(self, note: Notification) -> bool:
        tables, store = self.runtime.store.notifications, self.runtime.store
        subscription, claim = tables.subscription(note.subscription_id), store.get(note.claim_id)
        if subscription is None or claim is None or not claim.response_body:
            tables.delivered(note, 0, time.time())  # nobody to tell, or nothing left to tell
            return True
        body = json.loads(claim.response_body)
        if claim.state == ClaimState.INVALID:  # refused by openIMIS once delivered: a negative answer
            body = invalid_claim_response(claim, body)
        body.setdefault("meta", {})["versionId"] = str(claim.version)
        payload = json.dumps(body).encode() if subscription.with_payload else b""
        headers = {
            "X-Notification-Id": note.id,
            "X-Claim-Version": str(claim.version),
            "X-Subscription-Id": subscription.id,
            **_headers(subscription),
        }
        if payload:
            headers["Content-Type"] = "application/fhir+json"
        started = time.time()
        status, error = None, None
        try:
            answer = self.session.post(
                subscription.endpoint,
                data=payload,
                headers=headers,
                timeout=self.runtime.settings.notification_timeout,
                allow_redirects=False,
            )
            status = answer.status_code
            if not 200 <= status < 300:
                error = f"the endpoint answered {status}"
        except requests.RequestException as exc:
            error = f"the endpoint could not be reached ({type(exc).__name__})"
        ended = time.time()
        self._record(note, subscription, claim.claim_code, claim.openhim_tx_id, status, error, started, ended)
        return error is None

    def _record(
        self,
        note: Notification,
        sub: Subscription,
        claim_code: str,
        transaction_id: str | None,
        status: int | None,
        error: str | None,
        started: float,
        ended: float,
    ) -> None:
        tables, settings = self.runtime.store.notifications, self.runtime.settings
        facts = {
            "notification": note.id,
            "subscription": sub.id,
            "claim_code": claim_code,
            "endpoint_status": status,
            "attempt": note.attempts + 1,
            "ms": round((ended - started) * 1000, 1),
        }
        if error is None:
            tables.delivered(note, status or 0, ended)
            metrics.NOTIFICATIONS.labels("delivered").inc()
            log.info("notification delivered", extra=facts)
        else:
            delay = min(
                settings.notification_backoff_initial * 2**note.attempts, settings.notification_backoff_max
            )
            delay *= 1 + random.uniform(-JITTER, JITTER)
            to_error = tables.failed(
                note, error, status, ended + delay, settings.notification_max_failures, ended
            )
            metrics.NOTIFICATIONS.labels("failed").inc()
            log.warning("notification failed", extra={**facts, "error": error, "retry_in_s": round(delay, 1)})
            if to_error:
                log.error(
                    "subscription set to error after failed deliveries; the facility sets it active to resume",
                    extra={"subscription": sub.id, "error": error},
                )
        if transaction_id and self.report is not None:
            try:
                self.report(transaction_id, _orchestration(sub, note, status, error, started, ended))
            except Exception as exc:  # the notification's fate is recorded; the audit trail may lag
                log.warning("notification not added to the OpenHIM transaction", extra={"error": str(exc)})


def _headers(sub: Subscription) -> dict[str, str]:
    pairs = (h.split(":", 1) for h in sub.headers)
    return {name.strip(): value.strip() for name, value in pairs}


def _orchestration(
    sub: Subscription, note: Notification, status: int | None, error: str | None, started: float, ended: float
) -> dict[str, Any]:
    """What an auditor sees of a delivery: where, when, the answer; never the facility's headers."""
    url = requests.utils.urlparse(sub.endpoint)
    orchestration: dict[str, Any] = {
        "name": f"notification to the facility (subscription {sub.id})",
        "group": "facility notification",
        "request": {
            "host": url.hostname or "",
            "port": str(url.port or (443 if url.scheme == "https" else 80)),
            "path": url.path,
            "querystring": url.query,
            "method": "POST",
            "headers": {
                "X-Notification-Id": note.id,
                **{h.split(":", 1)[0].strip(): REDACTED for h in sub.headers},
            },
            "body": "",
            "timestamp": iso_from_epoch(started),
        },
    }
    if status is not None:
        orchestration["response"] = {
            "status": status,
            "headers": {},
            "body": "",
            "timestamp": iso_from_epoch(ended),
        }
    if error is not None:
        orchestration["error"] = {"message": error, "stack": ""}
    return orchestration
