"""Token search parameters as FHIR combines them."""

import pytest

from mediator.fhir.outcome import FhirError
from mediator.fhir.search import MAX_TOKEN_VALUES, matches_all, token_values


def test_commas_or_repetitions_and_systems_dropped():
    params = [("identifier", "A,urn:x|B"), ("_count", "2"), ("identifier", r"C\,D")]
    assert token_values(params, "identifier") == [["A", "B"], ["C,D"]]
    assert matches_all(["B", "C,D"], [["A", "B"], ["C,D"]])
    assert not matches_all(["A", "B"], [["A", "B"], ["C,D"]])


@pytest.mark.parametrize("value", ["", "A,", ",A", "urn:x|"])
def test_an_empty_value_is_refused_naming_the_parameter(value):
    with pytest.raises(FhirError) as refused:
        token_values([("identifier", value)], "identifier")
    assert refused.value.status == 400 and refused.value.issues[0].expression == ["identifier"]


def test_too_many_values_are_refused_before_any_lookup():
    many = ",".join(str(i) for i in range(MAX_TOKEN_VALUES + 1))
    with pytest.raises(FhirError) as refused:
        token_values([("identifier", many)], "identifier")
    assert refused.value.issues[0].code == "too-costly"
