"""Claim elements that already passed structural validation, so that they are not validated again.

fhir.resources validates a claim element by element, each one a round trip through Python
(~7 µs per element, 300 µs for a two-line claim, a quarter of a claim's CPU under load). Most
of a claim repeats what the same facility sent before: its provider and enterer, the visit
type, the items and services of the catalogue with their prices, the common diagnoses. An
element's validity depends only on its content and its place in the Claim (which fixes its
type), so an element seen valid before is handed to the validator as the validated model it
became (pydantic accepts a model instance as it is) and only the rest is validated. The
outcome is the same as a full validation, issue for issue: a remembered element is valid, and
the others are validated exactly as before.

Remembered are the Claim's top-level elements (each entry of a list), and, of an element that
was not known, its own elements (an item's reference, an identifier's type...). Keys are the
elements' canonical JSON, which the claim's content hash is made of anyway (`CanonicalClaim`).
The memory is bounded (oldest out first) and per worker.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mediator.jsontext import compact_json

#: Elements remembered per worker (a few KB each at most).
CAPACITY = 4096
#: Larger elements (a big contained resource) are not remembered.
MAX_ELEMENT_TEXT = 4096


@dataclass(frozen=True)
class CanonicalClaim:
    """The claim's canonical JSON (sorted keys, compact), and that of each top-level element."""

    text: str
    #: top-level key -> canonical JSON of its value, or of each entry when the value is a list
    fields: dict[str, str | list[str]]


def canonical_claim(claim: dict[str, Any]) -> CanonicalClaim:
    """Byte for byte `compact_json(claim, sort_keys=True)`, built from its elements' texts."""
    fields: dict[str, str | list[str]] = {}
    parts = []
    for key in sorted(claim):
        value = claim[key]
        if isinstance(value, list):
            entries = [compact_json(v, sort_keys=True) for v in value]
            fields[key] = entries
            text = "[" + ",".join(entries) + "]"
        else:
            text = fields[key] = compact_json(value, sort_keys=True)
        parts.append(compact_json(key) + ":" + text)
    return CanonicalClaim("{" + ",".join(parts) + "}", fields)


#: Where an element is remembered: (its place in the Claim, its key within a top-level element
#: or None, its canonical text). A place is a top-level key, `key[]` for the entries of a list.
_Key = tuple[str, str | None, str]
#: An element to remember once the claim validates: (top-level key, entry index or None, its key).
_Unknown = tuple[str, int | None, _Key]


class KnownElements:
    """Validated claim elements of one worker, by place in the Claim and content."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._known: dict[_Key, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._known)

    def substitute(
        self, claim: dict[str, Any], canon: CanonicalClaim
    ) -> tuple[dict[str, Any], list[_Unknown]]:
        """The claim with its known elements replaced by their validated models, and what to
        remember once the claim validates."""
        candidate = dict(claim)
        unknown: list[_Unknown] = []
        for key, text in canon.fields.items():
            value = claim[key]
            if isinstance(text, list):
                entries = list(value)
                for i, (entry, entry_text) in enumerate(zip(value, text, strict=True)):
                    if isinstance(entry, dict):
                        entries[i] = self._element(key, i, entry, entry_text, unknown)
                candidate[key] = entries
            elif isinstance(value, dict):
                candidate[key] = self._element(key, None, value, text, unknown)
        return candidate, unknown

    def _element(
        self, key: str, index: int | None, element: dict[str, Any], text: str, unknown: list[_Unknown]
    ) -> Any:
        place = key if index is None else key + "[]"
        known = self._known.get((place, None, text))
        if known is not None:
            return known
        if len(text) <= MAX_ELEMENT_TEXT:
            unknown.append((key, index, (place, None, text)))
        partly = dict(element)
        for name, value in element.items():
            if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
                inner = compact_json(value, sort_keys=True)
                known = self._known.get((place, name, inner))
                if known is not None:
                    partly[name] = known
                elif len(inner) <= MAX_ELEMENT_TEXT:
                    unknown.append((key, index, (place, name, inner)))
        return partly

    def remember(self, validated: BaseModel, unknown: list[_Unknown]) -> None:
        """Keep the validated models of the elements that were not known yet."""
        found = []
        for key, index, entry in unknown:
            element = _child(validated, key)
            if index is not None:
                element = element[index] if isinstance(element, list) and index < len(element) else None
            name = entry[1]
            if name is not None and element is not None:
                element = _child(element, name)
            if element is not None:
                found.append((entry, element))
        if not found:
            return
        with self._lock:
            for entry, element in found:
                self._known[entry] = element
            while len(self._known) > self._capacity:
                del self._known[next(iter(self._known))]


def _child(model: Any, json_name: str) -> Any:
    attribute = _attributes(type(model)).get(json_name) if isinstance(model, BaseModel) else None
    return getattr(model, attribute) if attribute is not None else None


@functools.cache
def _attributes(model_class: type[BaseModel]) -> dict[str, str]:
    """JSON name -> attribute name of a FHIR model's elements (`_status` is `status__ext`)."""
    return {(field.alias or name): name for name, field in model_class.model_fields.items()}
