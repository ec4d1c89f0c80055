"""Reading a FHIR resource from a request body: anything unreadable is a 400, never a 500."""

from __future__ import annotations

from typing import Any

from mediator.fhir.outcome import FhirError
from mediator.jsontext import parse_json


def parse_resource(body: bytes, resource_type: str) -> dict[str, Any]:
    """The body as a JSON object of `resource_type` (a wrong or missing type is a 400 too)."""
    try:
        resource = parse_json(body, allow_nan=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirError.of(400, "invalid", f"The request body is not readable JSON: {exc}") from None
    except RecursionError:
        raise FhirError.of(400, "invalid", "The request body is nested too deeply") from None
    if not isinstance(resource, dict):
        raise FhirError.of(
            400,
            "invalid",
            f"The request body must be a FHIR {resource_type} (a JSON object)",
            [resource_type],
        )
    if resource.get("resourceType") != resource_type:
        got = resource.get("resourceType")
        raise FhirError.of(
            400,
            "invalid",
            f"Expected resourceType {resource_type!r}, got {got!r}"
            if got is not None
            else "resourceType is missing",
            ["resourceType"],
        )
    return resource


def fhirpath(root: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the FHIRPath a facility reads (`Claim.item[0].quantity`)."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path
