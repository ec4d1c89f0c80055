"""Media types the mediator speaks with facilities (openIMIS itself only takes application/json)."""

from __future__ import annotations

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_FORMAT_ALIASES = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})


def _media_ranges(header: str) -> list[tuple[str, float]]:
    ranges = []
    for part in header.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        ranges.append((media, quality))
    return ranges


def accepts_fhir_json(accept: str | None, format_param: str | None = None) -> bool:
    """True if the client can read FHIR JSON (Accept header or the `_format` parameter)."""
    if format_param:
        return format_param.strip().lower() in _FORMAT_ALIASES
    if not accept:
        return True
    for media, quality in _media_ranges(accept):
        if quality > 0 and (media in JSON_TYPES or media in ("*/*", "application/*")):
            return True
    return False


def is_fhir_json_body(content_type: str | None) -> bool:
    if not content_type:
        return False
    return content_type.split(";")[0].strip().lower() in JSON_TYPES
