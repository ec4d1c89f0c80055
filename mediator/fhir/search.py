"""FHIR search conventions the mediator follows wherever it offers a search."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mediator.fhir.outcome import FhirError

#: Values of one token parameter a search may give in all (each may cost an openIMIS call).
MAX_TOKEN_VALUES = 20
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def token_values(params: Sequence[tuple[str, str]], name: str) -> list[list[str]]:
    """The values of token parameter `name` as FHIR combines them: repetitions are ANDed
    (`identifier=A&identifier=B`: a resource with both), the comma-separated values of one are
    ORed (`identifier=A,B`: either); `\\,` is a comma inside a value, `system|value` is matched
    on its value. An empty value, or more than MAX_TOKEN_VALUES in all, is a 400 naming `name`."""
    groups = []
    for given, value in params:
        if given != name:
            continue
        values = [v.replace("\\,", ",").rsplit("|", 1)[-1].strip() for v in _UNESCAPED_COMMA.split(value)]
        if not all(values):
            raise FhirError.of(400, "invalid", f"{name} must not be empty (nor hold an empty value)", [name])
        groups.append(values)
    if sum(len(g) for g in groups) > MAX_TOKEN_VALUES:
        raise FhirError.of(
            400, "too-costly", f"at most {MAX_TOKEN_VALUES} {name} values in one search", [name]
        )
    return groups


def matches_all(keys: Iterable[str], groups: Sequence[Sequence[str]]) -> bool:
    """A resource known by `keys` (its id, identifier values...) matches one value of each group."""
    known = set(keys)
    return all(any(value in known for value in group) for group in groups)


def unique(resources: Iterable[dict | None]) -> list[dict]:
    """Resources found by several values of a search, each once, in the order found."""
    seen, found = set(), []
    for resource in resources:
        if resource is not None and resource.get("id") not in seen:
            seen.add(resource.get("id"))
            found.append(resource)
    return found
