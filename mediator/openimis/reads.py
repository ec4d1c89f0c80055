"""Reads and identifier searches against openIMIS, with its not-found quirks absorbed.

A missing resource comes back from openIMIS as a 404 or as a 500 whose message says so; an
identifier search answers one bare resource instead of a Bundle. Callers get the resource or
None, and an `OpenImisBroken` for any other failure.
"""

from __future__ import annotations

from typing import Any

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient, UpstreamResponse
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.quirks import means_not_found


def read_resource(
    client: OpenImisClient, resource_type: str, ident: str, recorder: OrchestrationRecorder, name: str
) -> dict[str, Any] | None:
    """`GET {type}/{uuid-or-code}/`: openIMIS tries the UUID, then the business code."""
    return _single(resource_type, client.get(f"{resource_type}/{ident}/", recorder, name))


def find_by_identifier(
    client: OpenImisClient, resource_type: str, identifier: str, recorder: OrchestrationRecorder, name: str
) -> dict[str, Any] | None:
    """`GET {type}/?identifier=`: one bare resource (or a Bundle, should openIMIS fix this)."""
    response = client.get(f"{resource_type}/", recorder, name, params={"identifier": identifier})
    return _single(resource_type, response)


def _single(resource_type: str, response: UpstreamResponse) -> dict[str, Any] | None:
    if response.ok:
        body = response.json()
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            entries = [e.get("resource") for e in body.get("entry") or []]
            body = next((r for r in entries if r), None)
            if body is None:
                return None
        return expect_resource(resource_type, body)
    if means_not_found(response.status, response.outcome_messages()):
        return None
    raise OpenImisBroken(f"openIMIS {resource_type} answered {response.status}")


def expect_resource(resource_type: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        raise OpenImisBroken(f"openIMIS answered something else than a {resource_type}")
    return body
