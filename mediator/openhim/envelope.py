"""The `application/json+openhim` mediator response.

Core stores `status` as sent, shows `response` to the client, and keeps `orchestrations` and
`properties` for auditors. `response.body` must be a string and `response.headers` must exist,
or core loses data (see the contract note).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from mediator.jsontext import compact_json
from mediator.openhim.orchestrations import iso_now

OPENHIM_CONTENT_TYPE = "application/json+openhim"
TRANSACTION_HEADER = "X-OpenHIM-TransactionID"


class TransactionStatus(StrEnum):
    SUCCESSFUL = "Successful"
    COMPLETED = "Completed"
    COMPLETED_WITH_ERRORS = "Completed with error(s)"
    FAILED = "Failed"
    PROCESSING = "Processing"


def status_for_http(status: int) -> TransactionStatus:
    """Core's own rule, for answers whose outcome is only an HTTP status."""
    if status >= 500:
        return TransactionStatus.FAILED
    if status >= 400:
        return TransactionStatus.COMPLETED
    if status == 202:
        return TransactionStatus.PROCESSING
    return TransactionStatus.SUCCESSFUL


def build_envelope(
    *,
    urn: str,
    status: TransactionStatus,
    http_status: int,
    headers: Mapping[str, str],
    body: str,
    orchestrations: list[dict[str, Any]],
    properties: Mapping[str, Any],
    error: str | None = None,
) -> str:
    envelope: dict[str, Any] = {
        "x-mediator-urn": urn,
        "status": str(status),
        "response": {
            "status": http_status,
            "headers": dict(headers),
            "body": body,
            "timestamp": iso_now(),
        },
        "orchestrations": orchestrations,
        "properties": {k: v if isinstance(v, str) else compact_json(v) for k, v in properties.items()},
    }
    if error:
        envelope["error"] = {"message": error}
    return compact_json(envelope)
