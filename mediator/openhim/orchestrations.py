"""Record every upstream call of a transaction as an OpenHIM orchestration.

Auditors reading the OpenHIM transaction log must see exactly what the mediator did on the
client's behalf, so each call (login included) becomes one orchestration, redacted, with ISO
timestamps carrying a zone (core rejects the record otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from mediator.redaction import redact_headers, redact_text

#: Bodies kept in an orchestration are cut here: OpenHIM caps a whole transaction at 15 MB.
MAX_RECORDED_BODY = 64 * 1024


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_from_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def body_for_record(body: bytes | str | None) -> str:
    """A redacted, size-bounded string of a request or response body."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if len(text) > MAX_RECORDED_BODY:
        return redact_text(text[:MAX_RECORDED_BODY]) + "…[truncated]"
    # One pass over the text: JSON fields named password/token/secret and bearer tokens are masked
    # by pattern, which is much cheaper than parsing and re-encoding every body.
    return redact_text(text)


@dataclass
class UpstreamCall:
    """One call made on the client's behalf, as measured by the caller."""

    name: str
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes | str | None
    started: float
    ended: float
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes | str | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> float:
        return round((self.ended - self.started) * 1000, 2)


class OrchestrationRecorder:
    """Collects the upstream calls of one transaction, in order."""

    def __init__(self) -> None:
        self.calls: list[UpstreamCall] = []

    def record(self, call: UpstreamCall) -> None:
        self.calls.append(call)

    def extend(self, calls: list[UpstreamCall]) -> None:
        self.calls.extend(calls)

    def orchestrations(self) -> list[dict[str, Any]]:
        return [_orchestration(c) for c in self.calls]

    def summary(self) -> list[dict[str, Any]]:
        """Compact form for the transaction's log line."""
        return [
            {
                "name": c.name,
                "status": c.status,
                "ms": c.duration_ms,
                **({"error": c.error} if c.error else {}),
            }
            for c in self.calls
        ]


def _orchestration(call: UpstreamCall) -> dict[str, Any]:
    url = urlsplit(call.url)
    port = url.port or (443 if url.scheme == "https" else 80)
    orchestration: dict[str, Any] = {
        "name": call.name,
        "group": "openIMIS",
        "request": {
            "host": url.hostname or "",
            "port": str(port),
            "path": url.path,
            "querystring": url.query,
            "method": call.method,
            "headers": redact_headers(call.request_headers),
            "body": body_for_record(call.request_body),
            "timestamp": iso_from_epoch(call.started),
        },
    }
    if call.status is not None:
        orchestration["response"] = {
            "status": call.status,
            "headers": redact_headers(call.response_headers),
            "body": body_for_record(call.response_body),
            "timestamp": iso_from_epoch(call.ended),
        }
    if call.error:
        orchestration["error"] = {"message": redact_text(call.error), "stack": ""}
    return orchestration
