"""Minimal HS256 JWT (stdlib only) for the sandbox login, shaped like graphql_jwt tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class TokenError(Exception):
    """Token rejected; the message is what openIMIS/graphql_jwt would say."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(payload: dict[str, Any], secret: str) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing = f"{header}.{body}".encode("ascii")
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def decode(token: str, secret: str, now: float | None = None) -> dict[str, Any]:
    """Verify signature and expiry; raise TokenError otherwise."""
    try:
        header, body, sig = token.split(".")
        signing = f"{header}.{body}".encode("ascii")
        expected = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(sig)):
            raise TokenError("Error decoding signature.")
        if json.loads(_unb64(header)).get("alg") != "HS256":
            raise TokenError("Error decoding signature.")
        payload = json.loads(_unb64(body))
    except TokenError:
        raise
    except Exception as exc:  # malformed token of any kind
        raise TokenError("Error decoding signature.") from exc
    if not isinstance(payload, dict) or "exp" not in payload:
        raise TokenError("Error decoding signature.")
    if float(payload["exp"]) <= (time.time() if now is None else now):
        raise TokenError("Signature has expired.")
    return payload


def issue(username: str, secret: str, lifetime_s: int) -> tuple[str, int]:
    """A token and its expiry (unix seconds), like the openIMIS FHIR login answers."""
    now = int(time.time())
    exp = now + lifetime_s
    return encode({"username": username, "exp": exp, "origIat": now}, secret), exp
