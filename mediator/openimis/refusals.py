"""openIMIS's refusal of a claim, as a reason a person at the clinic can act on.

openIMIS explains a refused claim in one OperationOutcome text: its converters' messages joined
after "The request cannot be processed due to the following issues:", some with a dump of the
FHIR object at fault (`(HealthFacilityOrganisationConverter): resource_type='Reference'
fhir_comments=None ... reference='Organization/XX'`) or a Python error (`'NoneType' object has no
attribute 'code'`). The clinic gets each message cut to what it says and the claim field at
fault; the full text stays in the mediator's log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 300

_PREFIX = re.compile(r"^\s*The request cannot be processed due to the following issues:\s*", re.I)
_SEPARATOR = re.compile(r",?\s*\n\s*")
#: A pydantic model's repr: `field=value` pairs from `resource_type=` or `fhir_comments=` on.
_DUMP = re.compile(r"\s*\b(?:resource_type|fhir_comments)=.*$")
_DUMPED_REFERENCE = re.compile(r"\breference='([^']+)'")
_CONVERTER = re.compile(r"\s*\(?\b([A-Z][A-Za-z]*?)Converter\b\)?\s*:?")
_NAMED_FIELD = re.compile(r"[`'](\w+(?: \w+)?)[`']")

#: The claim field each openIMIS converter reads.
_CONVERTER_FIELDS = {
    "HealthFacilityOrganisation": "Claim.provider",
    "ClaimAdminPractitioner": "Claim.enterer",
    "Patient": "Claim.patient",
    "Group": "Claim.patient",
    "Medication": "Claim.item",
    "ActivityDefinition": "Claim.item",
}
#: Field names as openIMIS's messages quote them (`Missing or invalid `provider` reference`).
_QUOTED_FIELDS = {
    "provider": "Claim.provider",
    "patient": "Claim.patient",
    "enterer": "Claim.enterer",
    "identifier": "Claim.identifier",
    "diagnosis": "Claim.diagnosis",
    "billable_period": "Claim.billablePeriod",
    "total": "Claim.total",
    "type": "Claim.type",
    "created": "Claim.created",
}
#: Messages that are Python or database errors, and what they mean for a claim.
_KNOWN = (
    (
        re.compile(r"object has no attribute 'code'", re.I),
        "an item or service the claim references is not known to openIMIS",
        "Claim.item",
    ),
    (
        re.compile(r"object is not subscriptable", re.I),
        "a claim line has no item or service reference (extension claim-item-reference)",
        "Claim.item",
    ),
    (
        re.compile(r"^Diagnosis matching query does not exist", re.I),
        "a diagnosis code is not known to openIMIS",
        "Claim.diagnosis",
    ),
    (re.compile(r"supporting info category", re.I), None, "Claim.supportingInfo"),
    (re.compile(r"item category", re.I), None, "Claim.item"),
    (re.compile(r'null value in column "QtyProvided"', re.I), "a claim line has no quantity", "Claim.item"),
    (re.compile(r'null value in column "PriceAsked"', re.I), "a claim line has no unit price", "Claim.item"),
)


@dataclass(frozen=True)
class Refusal:
    """One reason openIMIS gave, readable, and the claim field it is about."""

    text: str
    expression: str


def refusals(messages: list[str]) -> list[Refusal]:
    """openIMIS's OperationOutcome texts -> one readable reason per message it joined."""
    found: list[Refusal] = []
    for message in messages:
        for part in _SEPARATOR.split(_PREFIX.sub("", message.strip())):
            if part.strip():
                found.append(_readable(part.strip()))
    return list(dict.fromkeys(found))


def _readable(message: str) -> Refusal:
    for pattern, meaning, expression in _KNOWN:
        if pattern.search(message):
            return Refusal(_cut(meaning or message), expression)
    expression = "Claim"
    converter = _CONVERTER.search(message)
    if converter is not None:
        expression = _CONVERTER_FIELDS.get(converter.group(1), expression)
    named = _NAMED_FIELD.search(message)
    if named is not None and named.group(1) in _QUOTED_FIELDS:
        expression = _QUOTED_FIELDS[named.group(1)]
    text = message
    dumped = _DUMPED_REFERENCE.search(text)
    text = _DUMP.sub("", text)
    text = _CONVERTER.sub("", text).strip(" :")
    if dumped is not None:
        text = f"{text or 'invalid reference'}: {dumped.group(1)}"
    return Refusal(_cut(text or "openIMIS gave no reason"), expression)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 1].rstrip() + "…"
