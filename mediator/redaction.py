"""Keep credentials and tokens out of everything an auditor or operator reads.

Orchestrations, log lines and error bodies all pass through here. Redaction is by key name
(headers, JSON fields) and by pattern (bearer tokens, JWTs) so that a secret that slips into a
free-text message is still caught.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "password",
        "token",
        "auth-token",
        "auth-salt",
        "access_token",
        "refresh_token",
        "secret",
        "openimispassword",
        "openhim_password",
        "openimis_password",
    }
)

_PATTERNS = (
    # Authorization schemes followed by a credential.
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # A JWT anywhere (three base64url segments, the first a JSON header).
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # "password": "..." / password=... in JSON or form text.
    re.compile(r'(?i)("?(?:password|token|secret)"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s&,}]+)'),
    # The password of a URL's user (postgresql://user:password@host/db).
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"),
)


def redact_text(text: str) -> str:
    """Mask secrets in free text, message or body.

    The patterns only run where a cheap substring test says they could match: most texts
    (FHIR bodies, log values) hold no secret, and scanning them with regexes is what costs.
    """
    if not text:
        return text
    lowered = text.lower()
    token = "token" in lowered  # both patterns look for it: one scan of the text
    if token or "bearer" in lowered or "basic" in lowered:
        text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "eyJ" in text:
        text = _PATTERNS[1].sub(REDACTED, text)
    if token or "password" in lowered or "secret" in lowered:
        text = _PATTERNS[2].sub(lambda m: f'{m.group(1)}"{REDACTED}"', text)
    if "@" in text and "://" in text:
        text = masked_url(text)
    return text


def masked_url(url: str) -> str:
    """A URL (or text) with the password of any `user:password@` masked."""
    return _PATTERNS[3].sub(lambda m: f"{m.group(1)}{REDACTED}@", url)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in SECRET_KEYS else v) for k, v in headers.items()}


def redact_json(value: Any) -> Any:
    """Mask secret-named fields at any depth of a parsed JSON document."""
    if isinstance(value, dict):
        return {k: (REDACTED if str(k).lower() in SECRET_KEYS else redact_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
