"""openIMIS's refusal texts, cut to a reason a clinic can act on and the claim field at fault."""

import pytest

from mediator.openimis.refusals import MAX_LENGTH, Refusal, refusals

PREFIX = "The request cannot be processed due to the following issues:\n"
DUMP = (
    "resource_type='Reference' fhir_comments=None extension=None id=None display=None "
    "identifier=None reference='Organization/XX0001' type='Organization'"
)


def test_an_object_dump_is_cut_to_the_message_the_field_and_the_reference():
    [refusal] = refusals([f"Invalid reference (HealthFacilityOrganisationConverter): {DUMP}"])
    assert refusal == Refusal("Invalid reference: Organization/XX0001", "Claim.provider")
    assert "fhir_comments" not in refusal.text and "Converter" not in refusal.text


def test_a_dump_without_any_message_still_names_the_field_and_the_reference():
    [refusal] = refusals(
        [f"ClaimAdminPractitionerConverter): {DUMP.replace('Organization', 'Practitioner')}"]
    )
    assert refusal == Refusal("invalid reference: Practitioner/XX0001", "Claim.enterer")


def test_the_converters_joined_messages_become_one_reason_each_with_its_field():
    message = PREFIX + (
        "Missing or invalid `provider` reference,\nMissing or invalid `patient` reference,\n"
        "Missing or invalid 'billable_period' attribute,\nUnknown supporting info category: `other`"
    )
    assert refusals([message]) == [
        Refusal("Missing or invalid `provider` reference", "Claim.provider"),
        Refusal("Missing or invalid `patient` reference", "Claim.patient"),
        Refusal("Missing or invalid 'billable_period' attribute", "Claim.billablePeriod"),
        Refusal("Unknown supporting info category: `other`", "Claim.supportingInfo"),
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("'NoneType' object has no attribute 'code'", "Claim.item"),
        ("Diagnosis matching query does not exist.", "Claim.diagnosis"),
        ('null value in column "QtyProvided" violates not-null constraint', "Claim.item"),
    ],
)
def test_python_and_database_errors_are_said_in_the_claims_terms(message, expected):
    [refusal] = refusals([message])
    assert refusal.expression == expected
    assert "NoneType" not in refusal.text and "null value" not in refusal.text


def test_a_long_text_is_cut_and_an_unknown_one_is_kept_on_the_claim():
    [refusal] = refusals(["x" * 5000])
    assert len(refusal.text) == MAX_LENGTH and refusal.expression == "Claim"
