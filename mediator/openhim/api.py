"""Client of the OpenHIM core API, speaking both of its authentication schemes.

Cores 7.2+ take HTTP Basic; cores up to 7.x take the legacy token scheme (the only one in
4.0.5). `auto` tries Basic first, because a v8 core answers `/authenticate/:email` with 404 for
password-only users, and falls back to the token scheme on a 401, remembering what worked.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests

from mediator.settings import Settings

log = logging.getLogger("mediator.openhim")

TIMEOUT = (5.0, 20.0)


class OpenHimError(Exception):
    """OpenHIM core could not be used (unreachable, refused, or an unexpected answer)."""


class OpenHimApi:
    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.base = settings.openhim_api_url.rstrip("/")
        self._username = settings.openhim_username
        self._password = settings.openhim_password
        self._scheme = settings.openhim_auth  # basic | token | auto (resolved on first success)
        self._session = session or requests.Session()
        # Passed on every call: a session-level `verify` loses to REQUESTS_CA_BUNDLE in the env.
        self._verify = settings.openhim_tls_verify
        self._user_salt: str | None = None

    @property
    def scheme(self) -> str:
        return self._scheme

    def request(self, method: str, path: str, json_body: Any = None) -> requests.Response:
        """Call the API; a 401 in `auto` mode switches to the token scheme once."""
        if self._scheme in ("basic", "auto"):
            response = self._send(method, path, json_body, auth=(self._username, self._password.reveal()))
            if response.status_code != 401 or self._scheme == "basic":
                if self._scheme == "auto" and response.status_code != 401:
                    self._scheme = "basic"
                return response
            log.info("OpenHIM refused Basic auth; trying the legacy token scheme")
        response = self._send(method, path, json_body, headers=self._token_headers())
        if response.status_code == 401:
            self._user_salt = None  # the password may have changed: fetch the salt again next time
        elif self._scheme == "auto":
            self._scheme = "token"
        return response

    def _send(self, method: str, path: str, json_body: Any, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(
                method, self.base + path, json=json_body, timeout=TIMEOUT, verify=self._verify, **kwargs
            )
        except requests.RequestException as exc:
            raise OpenHimError(f"OpenHIM core unreachable at {self.base}: {type(exc).__name__}") from None

    def _token_headers(self) -> dict[str, str]:
        """Headers of the legacy scheme: a fresh salt and timestamp on every request."""
        if self._user_salt is None:
            answer = self._send("GET", f"/authenticate/{quote(self._username)}", None)
            if answer.status_code != 200:
                raise OpenHimError(
                    f"OpenHIM /authenticate answered {answer.status_code} for {self._username}"
                )
            self._user_salt = str(answer.json()["salt"])
        password_hash = _sha512(self._user_salt + self._password.reveal())
        request_salt = secrets.token_hex(16)
        ts = datetime.now(UTC).isoformat(timespec="milliseconds")
        return {
            "auth-username": self._username,
            "auth-ts": ts,
            "auth-salt": request_salt,
            "auth-token": _sha512(password_hash + request_salt + ts),
        }


def _sha512(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()
