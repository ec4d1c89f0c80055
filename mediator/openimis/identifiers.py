"""Which of an openIMIS resource's identifiers is its UUID, and which its business code.

A real openIMIS (24.04) does not keep a resource's UUID in `id`: a Patient's `id` is the
insuree number, a ClaimResponse's the claim code, and a Coverage has no `id` at all. The UUID
is only in the identifier typed `UUID`, the business code in the one typed `Code`. Reading
`id` as the UUID is how claims by insuree number came to be rejected on a real backend.
"""

from __future__ import annotations

from typing import Any

from mediator.fhir.elements import arr, codes, is_uuid, text

UUID_TYPE = "UUID"
CODE_TYPE = "Code"


def typed_identifier(resource: dict[str, Any], type_code: str) -> str | None:
    """The value of the resource's first identifier whose type has this code."""
    for ident in arr(resource.get("identifier")):
        if isinstance(ident, dict) and type_code in codes(ident.get("type")):
            value = text(ident.get("value"))
            if value:
                return value
    return None


def openimis_uuid(resource: dict[str, Any]) -> str | None:
    """The resource's openIMIS UUID: its `UUID` identifier, else an `id` that is one."""
    found = typed_identifier(resource, UUID_TYPE)
    if found is not None and is_uuid(found):
        return found
    rid = text(resource.get("id"))
    return rid if rid is not None and is_uuid(rid) else None
