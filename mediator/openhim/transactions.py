"""Report a result that arrived later to the OpenHIM transaction that first answered 202."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.openhim.envelope import TransactionStatus
from mediator.openhim.orchestrations import iso_now


def update_transaction(
    api: OpenHimApi,
    transaction_id: str,
    status: TransactionStatus,
    http_status: int,
    headers: Mapping[str, str],
    body: str,
    orchestrations: list[dict[str, Any]],
) -> None:
    """`PUT /transactions/:id` with the final status, response and the forwarder's orchestrations."""
    update: dict[str, Any] = {
        "status": str(status),
        "response": {"status": http_status, "headers": dict(headers), "body": body, "timestamp": iso_now()},
    }
    if orchestrations:
        update["orchestrations"] = orchestrations
    response = api.request("PUT", f"/transactions/{transaction_id}", update)
    if response.status_code not in (200, 201, 204):
        raise OpenHimError(f"transaction update answered {response.status_code}: {response.text[:200]}")
