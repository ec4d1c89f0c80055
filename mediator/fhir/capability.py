"""The CapabilityStatement: exactly what the mediator serves, built from one declaration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mediator.openhim.orchestrations import iso_now


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str
    documentation: str


@dataclass(frozen=True)
class ResourceSupport:
    type: str
    interactions: tuple[str, ...]
    search_params: tuple[SearchParam, ...] = ()
    documentation: str = ""


_PAGING = (
    SearchParam("_count", "number", "Page size (capped at 500)."),
    SearchParam("page-offset", "number", "1-based page number, as in the Bundle's next/previous links."),
    SearchParam("_lastUpdated", "date", "Changed since/before, with prefixes eq|gt|lt|ge|le..."),
    SearchParam(
        "identifier",
        "token",
        "The openIMIS code or UUID; A,B is either, a repeated identifier is both (at most 20 values).",
    ),
)

SUPPORTED: tuple[ResourceSupport, ...] = (
    ResourceSupport(
        "ActivityDefinition",
        ("read", "search-type"),
        _PAGING,
        "openIMIS medical services with their prices (OpenHIE step 1/4). Read by UUID or service code.",
    ),
    ResourceSupport(
        "Medication",
        ("read", "search-type"),
        _PAGING,
        "openIMIS medical items with their prices (OpenHIE step 1/4). Read by UUID or item code.",
    ),
    ResourceSupport(
        "Claim",
        ("create", "read"),
        (),
        "Claim submit (OpenHIE step 7), use = claim: validated, normalised for openIMIS, recorded durably, "
        "idempotent on claim code + facility (a retry returns the recorded answer; other content: 409). "
        "Answers a ClaimResponse: positive 201, negative 200, queued 202 with Location. "
        "preauthorization and predetermination: 422 not-supported. "
        "Read: the claim as the facility sent it, under the id of its ClaimResponse (its `request`).",
    ),
    ResourceSupport(
        "ClaimResponse",
        ("read", "search-type"),
        (
            SearchParam("identifier", "token", "The claim code."),
            SearchParam("request", "reference", "Claim/<id> (the mediator's id, or openIMIS's claim UUID)."),
        ),
        "The answer to a claim (OpenHIE steps 11/13/15); poll a queued one until it is final, or subscribe.",
    ),
    ResourceSupport(
        "Subscription",
        ("create", "read", "update", "delete", "search-type"),
        (SearchParam("status", "token", "active | error | off."),),
        "Push of claim results (OpenHIE: return queued status notification). criteria: "
        "ClaimResponse?requestor=Organization/<facility code>[&outcome=positive|negative|queued] or "
        "ClaimResponse?identifier=<claim code>; channel.type rest-hook; channel.endpoint an https URL (or one the "
        "operator allows); channel.payload application/fhir+json (the ClaimResponse) or absent (an empty ping); "
        "channel.header sent with each notification, never shown back. Sent when a claim's answer changes after "
        "the facility was answered (delivered, adjudicated, valuated, rejected), at least once, with "
        "X-Notification-Id and the claim's version (meta.versionId). After repeated failures: status error; "
        "PUT it with status active to resume.",
    ),
    ResourceSupport(
        "Patient",
        ("read", "search-type"),
        (
            SearchParam(
                "identifier",
                "token",
                "The insuree number ([system|]value); A,B is either, a repeated identifier is both. "
                "Required: insurees are not listed.",
            ),
        ),
        "openIMIS insurees. Read by UUID or insuree number (the current insuree row).",
    ),
    ResourceSupport(
        "CoverageEligibilityRequest",
        ("create",),
        (),
        "Coverage eligibility (answered with a CoverageEligibilityResponse). Patient as Patient/<insuree number>, "
        "Patient/<UUID> or an identifier; at most one item and one service. If openIMIS's eligibility service "
        "fails, the answer comes from the insuree's Coverage (meta.tag urn:openimis-mediator:eligibility-source|"
        "coverage-fallback, no benefit limits) or is a 502; it is never reported as 'not covered'.",
    ),
)


def capability_statement(public_base: str, version: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": iso_now(),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "software": {"name": "openIMIS OpenHIM mediator", "version": version},
        "implementation": {
            "description": "OpenHIM mediator in front of openIMIS",
            "url": public_base,
        },
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": r.type,
                        "documentation": r.documentation,
                        "interaction": [{"code": code} for code in r.interactions],
                        "searchParam": [
                            {"name": p.name, "type": p.type, "documentation": p.documentation}
                            for p in r.search_params
                        ],
                    }
                    for r in SUPPORTED
                ],
            }
        ],
    }
