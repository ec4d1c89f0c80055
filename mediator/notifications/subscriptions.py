"""FHIR R4 Subscriptions of facilities to their claims' results (rest-hook).

A facility registers where to be told (channel.endpoint), what about (criteria on ClaimResponse:
its facility, optionally an outcome, or one claim), whether with the ClaimResponse in the body
(channel.payload) or as an empty ping, and with which headers (e.g. its API's Authorization).
The operator decides where the mediator may call (`SUBSCRIPTION_ENDPOINT_ALLOWLIST`). Header
values are secrets: stored, sent, never shown back nor logged.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir.resources.R4B.subscription import Subscription as FhirSubscription
from pydantic import ValidationError

from mediator.fhir.elements import arr, obj, split_reference, text
from mediator.fhir.outcome import FhirError, Issue
from mediator.fhir.parsing import fhirpath, parse_resource
from mediator.settings import Settings
from mediator.store.notifications import ACTIVE, ERROR, OFF, Subscription

ROOT = "Subscription"
PAYLOADS = ("application/fhir+json", "application/json")
OUTCOMES = ("positive", "negative", "queued")
MASK = "***"


def parse(
    body: bytes, settings: Settings, ident: str | None = None, existing: Subscription | None = None
) -> Subscription:
    """A facility's Subscription, checked (every problem at once, 422 naming the field)."""
    resource = parse_resource(body, ROOT)
    issues = _structure(resource)
    channel = obj(resource.get("channel"))
    criteria, criteria_issues = _criteria(resource.get("criteria"))
    issues += criteria_issues
    if text(channel.get("type")) not in (None, "rest-hook"):
        issues.append(
            Issue("not-supported", "only channel.type rest-hook is supported", [f"{ROOT}.channel.type"])
        )
    endpoint = text(channel.get("endpoint"))
    if endpoint is None:
        issues.append(
            Issue(
                "required", "channel.endpoint (the facility's URL) is required", [f"{ROOT}.channel.endpoint"]
            )
        )
    elif (why := endpoint_refused(endpoint, settings.subscription_endpoint_allowlist)) is not None:
        issues.append(Issue("security", why, [f"{ROOT}.channel.endpoint"]))
    payload = text(channel.get("payload"))
    if payload is not None and payload not in PAYLOADS:
        issues.append(
            Issue(
                "not-supported",
                "channel.payload must be application/fhir+json or absent",
                [f"{ROOT}.channel.payload"],
            )
        )
    headers = [h for h in arr(channel.get("header")) if isinstance(h, str)]
    if existing is not None:  # a header shown masked and sent back keeps its stored value
        stored = {_header_name(h): h for h in existing.headers}
        headers = [stored.get(_header_name(h), h) if h.endswith(": " + MASK) else h for h in headers]
    for i, header in enumerate(headers):
        if ":" not in header or not _header_name(header) or "\n" in header or "\r" in header:
            issues.append(
                Issue("value", "a header is one line: 'Name: value'", [f"{ROOT}.channel.header[{i}]"])
            )
    end_at, end_issue = _end(resource.get("end"))
    issues += end_issue
    status = text(resource.get("status")) or "requested"
    if status not in ("requested", ACTIVE, OFF, ERROR):
        issues.append(Issue("value", f"unknown status {status!r}", [f"{ROOT}.status"]))
    if issues:
        raise FhirError(422, _first_per_field(issues))
    now = time.time()
    kept = {k: v for k, v in resource.items() if k not in ("id", "meta", "error")}
    kept["channel"] = {k: v for k, v in channel.items() if k != "header"}
    return Subscription(
        id=ident or str(uuid.uuid4()),
        status=OFF if status == OFF else ACTIVE,  # requested, active or error (set active again)
        endpoint=endpoint or "",
        with_payload=payload is not None,
        headers=headers,
        resource=kept,
        created_at=existing.created_at if existing else now,
        updated_at=now,
        end_at=end_at,
        failures=0,
        error=None,
        **criteria,
    )


def render(sub: Subscription, public_base: str) -> dict[str, Any]:
    """The Subscription as stored, its header values masked and its status and error current."""
    resource = {**sub.resource, "resourceType": ROOT, "id": sub.id, "status": sub.status}
    resource["meta"] = {"lastUpdated": datetime.fromtimestamp(sub.updated_at).astimezone().isoformat()}
    channel = dict(obj(resource.get("channel")))
    if sub.headers:
        channel["header"] = [f"{_header_name(h)}: {MASK}" for h in sub.headers]
    resource["channel"] = channel
    if sub.error:
        resource["error"] = sub.error
    else:
        resource.pop("error", None)
    return resource


def endpoint_refused(endpoint: str, allowlist: str) -> str | None:
    """Why the mediator may not call this URL, or None. Empty allow-list: any https:// URL."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"channel.endpoint {endpoint!r} is not an absolute http(s) URL"
    prefixes = [p.strip() for p in allowlist.split(",") if p.strip()]
    if not prefixes:
        return None if parts.scheme == "https" else "channel.endpoint must be an https:// URL"
    if not any(endpoint.startswith(prefix) for prefix in prefixes):
        return "channel.endpoint is not among the endpoints the operator allows (SUBSCRIPTION_ENDPOINT_ALLOWLIST)"
    return None


def _criteria(value: Any) -> tuple[dict[str, str | None], list[Issue]]:
    where = [f"{ROOT}.criteria"]
    expected = "ClaimResponse?requestor=Organization/<facility code>[&outcome=...] or ClaimResponse?identifier=<claim code>"
    criteria = text(value)
    if criteria is None or not criteria.startswith("ClaimResponse?"):
        return {}, [Issue("value", f"criteria must be {expected}", where)]
    found: dict[str, str | None] = {"facility": None, "claim_code": None, "outcome": None}
    for name, param in parse_qsl(criteria.split("?", 1)[1], keep_blank_values=True):
        if name == "requestor":
            rtype, rid = split_reference(param)
            if rtype not in (None, "Organization") or not rid:
                return {}, [Issue("value", "requestor must be Organization/<facility code>", where)]
            found["facility"] = rid
        elif name == "identifier":
            found["claim_code"] = param.rsplit("|", 1)[-1] or None
        elif name == "outcome":
            if param not in OUTCOMES:
                return {}, [Issue("value", f"outcome must be one of {', '.join(OUTCOMES)}", where)]
            found["outcome"] = param
        else:
            return {}, [
                Issue("not-supported", f"criteria parameter {name!r} is not supported: {expected}", where)
            ]
    if not (found["facility"] or found["claim_code"]):
        return {}, [Issue("value", f"criteria must name a facility or a claim: {expected}", where)]
    return found, []


def _end(value: Any) -> tuple[float | None, list[Issue]]:
    if value is None:
        return None, []
    try:
        end = datetime.fromisoformat(str(value))
    except ValueError:
        return None, [Issue("value", "end must be a FHIR instant", [f"{ROOT}.end"])]
    end = end if end.tzinfo else end.astimezone()
    if end.timestamp() <= time.time():
        return None, [Issue("value", "end is in the past", [f"{ROOT}.end"])]
    return end.timestamp(), []


def _structure(resource: dict[str, Any]) -> list[Issue]:
    try:
        FhirSubscription.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            if tuple(err.get("loc", ())) == ("reason",) and err.get("type") == "missing":
                continue  # required by FHIR, read by nobody: a missing reason is no reason to refuse
            path = fhirpath(ROOT, tuple(err.get("loc", ())))
            msg = "Unknown element" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
            issues.append(Issue("structure", f"{path}: {msg.removeprefix('Value error, ')}", [path]))
        return issues
    return []


def _first_per_field(issues: list[Issue]) -> list[Issue]:
    seen: set[str] = set()
    kept = []
    for issue in issues:
        key = issue.expression[0] if issue.expression else ""
        if key not in seen:
            seen.add(key)
            kept.append(issue)
    return kept


def _header_name(header: str) -> str:
    return header.split(":", 1)[0].strip()
