"""Report a result that arrived later to the OpenHIM transaction that first answered 202.

Core's `PUT /transactions/:id` is a MongoDB update of the stored document (core 4.0.5 to 8.x:
`findByIdAndUpdate(id, body)`): a field sent replaces the stored one. Sending `orchestrations`
would wipe what auditors already have (the first attempt's calls, core's own record of its route
to the mediator), so new orchestrations are appended with `$push`, and the properties of the
first answer are kept with the final ones over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mediator.jsontext import compact_json
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
    properties: Mapping[str, Any] | None = None,
) -> None:
    """Write the final status, response and properties; append the orchestrations core lacks.

    Safe to repeat (an answer lost on the way back): an orchestration already stored (same name
    and start) is not appended again.
    """
    stored = _stored_transaction(api, transaction_id)
    if not stored.get("response"):
        # Core stores the 202 after it answered the clinic: an update before would be overwritten.
        raise OpenHimError(f"transaction {transaction_id} not stored by core yet")
    update: dict[str, Any] = {
        "status": str(status),
        "response": {"status": http_status, "headers": dict(headers), "body": body, "timestamp": iso_now()},
    }
    if properties:
        kept = stored.get("properties")
        update["properties"] = {
            **(kept if isinstance(kept, dict) else {}),
            **{k: v if isinstance(v, str) else compact_json(v) for k, v in properties.items()},
        }
    known = {_key(o) for o in stored.get("orchestrations") or [] if isinstance(o, dict)}
    new = [o for o in orchestrations if _key(o) not in known]
    if new:
        update["$push"] = {"orchestrations": {"$each": new}}
    response = api.request("PUT", f"/transactions/{transaction_id}", update)
    if response.status_code not in (200, 201, 204):
        raise OpenHimError(f"transaction update answered {response.status_code}: {response.text[:200]}")


def append_orchestrations(api: OpenHimApi, transaction_id: str, orchestrations: list[dict[str, Any]]) -> None:
    """Add orchestrations to a transaction, status and response untouched (a notification sent
    for its claim, for auditors); one already stored (same name and start) is not added again."""
    stored = _stored_transaction(api, transaction_id)
    known = {_key(o) for o in stored.get("orchestrations") or [] if isinstance(o, dict)}
    new = [o for o in orchestrations if _key(o) not in known]
    if not new:
        return
    response = api.request(
        "PUT", f"/transactions/{transaction_id}", {"$push": {"orchestrations": {"$each": new}}}
    )
    if response.status_code not in (200, 201, 204):
        raise OpenHimError(f"transaction update answered {response.status_code}: {response.text[:200]}")


def _stored_transaction(api: OpenHimApi, transaction_id: str) -> dict[str, Any]:
    """The transaction without its bodies (`simpledetails`): up to 15 MB need not come back."""
    response = api.request("GET", f"/transactions/{transaction_id}?filterRepresentation=simpledetails")
    if response.status_code != 200:
        raise OpenHimError(f"transaction read answered {response.status_code}: {response.text[:200]}")
    try:
        stored = response.json()
    except ValueError:
        raise OpenHimError("transaction read answered a body that is not JSON") from None
    if not isinstance(stored, dict):
        raise OpenHimError("transaction read answered something else than a transaction")
    return stored


def _key(orchestration: Mapping[str, Any]) -> tuple[str, datetime | str | None]:
    """Name and start: core gives timestamps back as its own ISO form (`...Z`), so compare instants."""
    started = (orchestration.get("request") or {}).get("timestamp")
    try:
        return str(orchestration.get("name")), datetime.fromisoformat(str(started))
    except ValueError:
        return str(orchestration.get("name")), started
