"""Insuree (Patient) lookup: a facility checks that an insuree number is known to openIMIS.

openIMIS answers `Patient?identifier=` with one bare Patient, and an unknown number with a 404
OperationOutcome; facilities get a searchset Bundle instead. Listing all
insurees is not offered: the mediator is a point-of-care gateway, not a population export.

A read by insuree number goes through the identifier search, because openIMIS resolves a
number in a reference/read to the *first* database row with it, which can be a historical row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from mediator.fhir.elements import is_fhir_id
from mediator.fhir.outcome import FhirError
from mediator.fhir.search import matches_all, token_values, unique
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.quirks import searchset
from mediator.openimis.reads import find_by_identifier, read_resource

#: Insuree numbers (CHF ids) and UUIDs: what may go into an openIMIS path or query.
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
#: openIMIS types the insuree number identifier "Code" (and the UUID identifier "UUID").
INSUREE_NUMBER_TYPE = "Code"


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


def is_valid_id(value: str) -> bool:
    """Safe to put into an openIMIS path: a UUID or an insuree number."""
    return bool(is_fhir_id(value))


def insuree_number(patient: dict[str, Any]) -> str | None:
    """The insuree number (CHF id) of an openIMIS Patient: its identifier typed `Code`."""
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        codings = (ident.get("type") or {}).get("coding") or []
        if any(isinstance(c, dict) and c.get("code") == INSUREE_NUMBER_TYPE for c in codings):
            value = ident.get("value")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def find(
    client: OpenImisClient, number: str, recorder: OrchestrationRecorder, name: str
) -> dict[str, Any] | None:
    """The *current* insuree row with this number, or None (openIMIS answers 404)."""
    if not is_valid_id(number):
        return None
    return find_by_identifier(client, "Patient", number, recorder, name)


def search(
    client: OpenImisClient,
    params: Sequence[tuple[str, str]],
    recorder: OrchestrationRecorder,
    public_base: str,
) -> tuple[dict[str, Any], str]:
    """`Patient?identifier=[system|]<insuree number>` -> (searchset Bundle, insuree numbers).

    FHIR token semantics: `identifier=A,B` finds either insuree, `identifier=A&identifier=B`
    an insuree with both identifiers (its number and its UUID); one lookup per ORed number.
    """
    groups = token_values(params, "identifier")
    if not groups:
        raise FhirError.of(
            400,
            "invalid",
            "Search insurees by identifier (the insuree number); listing all insurees is not offered",
            ["identifier"],
        )
    query = [("identifier", ",".join(v.replace(",", "\\,") for v in group)) for group in groups]
    self_link = f"{public_base}/Patient?" + urlencode(query)
    name = "openIMIS insuree search by insuree number"
    candidates = unique(find(client, number, recorder, name) for number in groups[0])
    found = [p for p in candidates if matches_all(_identifying_keys(p), groups[1:])]
    return searchset(found, public_base, self_link), ",".join(groups[0])


def _identifying_keys(patient: dict[str, Any]) -> list[str]:
    values = [i.get("value") for i in patient.get("identifier") or [] if isinstance(i, dict)]
    return [str(v) for v in [patient.get("id"), *values] if v]


def read(client: OpenImisClient, ident: str, recorder: OrchestrationRecorder) -> dict[str, Any]:
    """`Patient/<uuid>` or `Patient/<insuree number>` (the current row for a number)."""
    if not is_valid_id(ident):
        raise FhirError.of(400, "invalid", f"{ident!r} is not a valid FHIR id or insuree number", ["id"])
    if is_uuid(ident):
        patient = read_resource(client, "Patient", ident, recorder, "openIMIS insuree read by UUID")
    else:
        patient = find(client, ident, recorder, "openIMIS insuree read by insuree number")
    if patient is None:
        raise FhirError.of(404, "not-found", f"Patient/{ident} is not known to openIMIS")
    return patient
