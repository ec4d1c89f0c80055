"""HTTP client for the openIMIS FHIR R4 API.

One instance per worker process: a pooled `requests.Session`, a cached JWT shared by the
worker's threads, and a login guard. openIMIS locks an account after five failed logins, so a
failed login suspends further attempts for `openimis_login_retry_after` seconds instead of
retrying; a 401 on a resource call refreshes the token once, never more.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mediator import metrics
from mediator.jsontext import parse_json
from mediator.openhim.orchestrations import OrchestrationRecorder, UpstreamCall
from mediator.openimis.errors import (
    OpenImisBroken,
    OpenImisLoginRefused,
    OpenImisRateLimited,
    OpenImisTimeout,
    OpenImisUnreachable,
)
from mediator.openimis.login_guard import LoginGuard
from mediator.openimis.transport import OpenImisAdapter
from mediator.settings import Settings

log = logging.getLogger("mediator.openimis")

JSON = "application/json"
#: Renew the token this long before openIMIS says it expires (clock skew, long requests).
TOKEN_RENEW_MARGIN_S = 60.0


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Parsed body; UTF-8 decoded directly (requests' charset sniffing is slow)."""
        try:
            return parse_json(self.content)
        except ValueError:
            raise OpenImisBroken(f"openIMIS answered {self.status} with a body that is not JSON") from None

    def text(self) -> str | None:
        """The body as UTF-8 text, None if it is not."""
        try:
            return self.content.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def outcome_messages(self) -> list[str]:
        """The messages of an OperationOutcome body, or [] if the body is not one."""
        try:
            body = parse_json(self.content)
        except ValueError:
            return []
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            return []
        messages = []
        for issue in body.get("issue") or []:
            text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or ""
            if text:
                messages.append(str(text))
        return messages


class OpenImisClient:
    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        login_guard: Callable[[float, str], LoginGuard] | None = None,
    ) -> None:
        """`login_guard(base_delay, credentials)` makes the guard failed logins are shared in
        (default: a file of the instance's state directory)."""
        self.base = settings.openimis_fhir_base
        self._username = settings.openimis_username
        self._password = settings.openimis_password
        self._timeout = (settings.openimis_connect_timeout, settings.openimis_read_timeout)
        credentials = f"{self.base}\n{settings.openimis_username}\n{settings.openimis_password.reveal()}"
        if login_guard is None:
            path = Path(settings.mediator_state_dir) / "openimis-login-guard.json"
            self._login_guard = LoginGuard(path, settings.openimis_login_retry_after, credentials)
        else:
            self._login_guard = login_guard(settings.openimis_login_retry_after, credentials)
        self._clock = clock
        self._session = session or requests.Session()
        adapter = OpenImisAdapter(pool_connections=2, pool_maxsize=settings.openimis_pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # Calls go straight to the session's pooled adapter: openIMIS is called with a bearer
        # token, never redirects us, and sets no cookie we need, so the session's per-call merging
        # of settings, cookie jar and hooks (a fifth of the client's CPU) buys nothing.
        self._adapter = self._session.get_adapter(self.base)
        # The environment (proxies, REQUESTS_CA_BUNDLE) is read once here, not on every call as
        # requests does by default (a scan of os.environ that cost 12 % of a claim).
        self._session.trust_env = False
        self._proxies = requests.utils.get_environ_proxies(self.base)
        self._verify = _verify(settings.tls_verify)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_renew_at = 0.0

    def close(self) -> None:
        self._session.close()

    # -- public API ------------------------------------------------------------------------

    def get(
        self,
        path: str,
        recorder: OrchestrationRecorder,
        name: str,
        params: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        return self.request("GET", path, recorder, name, params=params)

    def post(self, path: str, body: bytes, recorder: OrchestrationRecorder, name: str) -> UpstreamResponse:
        return self.request("POST", path, recorder, name, body=body)

    def request(
        self,
        method: str,
        path: str,
        recorder: OrchestrationRecorder,
        name: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> UpstreamResponse:
        """Call `path` (relative to the FHIR base) with a valid token, refreshing it once on 401."""
        token = self._valid_token(recorder)
        response = self._send(method, path, recorder, name, token, params, body)
        if response.status == 401:
            self._forget_token(token)
            token = self._valid_token(recorder)
            response = self._send(
                method, path, recorder, f"{name} (after token refresh)", token, params, body
            )
            if response.status == 401:
                raise OpenImisLoginRefused("openIMIS refused a freshly issued token")
        if response.status == 429:
            raise OpenImisRateLimited("openIMIS answered 429", _retry_after(response.headers))
        return response

    def ensure_login(self, recorder: OrchestrationRecorder) -> None:
        """Log in unless a valid token is cached (used by readiness checks)."""
        self._valid_token(recorder)

    # -- token handling --------------------------------------------------------------------

    def _valid_token(self, recorder: OrchestrationRecorder) -> str:
        now = self._clock()
        token = self._token
        if token is not None and now < self._token_renew_at:
            return token
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._token_renew_at:
                return self._token
            with self._login_guard.attempt():
                wait = self._login_guard.suspended_for(now)
                if wait > 0:
                    raise OpenImisLoginRefused(
                        f"openIMIS login suspended after a failure; next attempt in {wait:.0f} s"
                    )
                return self._login(recorder)

    def _login(self, recorder: OrchestrationRecorder) -> str:
        credentials = {"username": self._username, "password": self._password.reveal()}
        body = json.dumps(credentials).encode()
        response = self._send("POST", "login/", recorder, "openIMIS login", None, None, body)
        if response.status == 429:
            raise OpenImisRateLimited("openIMIS answered 429 to the login", _retry_after(response.headers))
        if response.status != 200:
            delay = self._login_guard.failed(self._clock())
            log.error(
                "openIMIS login failed", extra={"upstream_status": response.status, "retry_in_s": delay}
            )
            if response.status >= 500:
                raise OpenImisBroken(f"openIMIS login answered {response.status}")
            raise OpenImisLoginRefused(f"openIMIS login answered {response.status}")
        try:
            answer = json.loads(response.content)
            token = str(answer["token"])
            exp = float(answer.get("exp") or 0)
        except (ValueError, KeyError, TypeError):
            self._login_guard.failed(self._clock())
            raise OpenImisBroken("openIMIS login answered without a token") from None
        self._login_guard.succeeded()
        now = self._clock()
        lifetime = exp - now if exp else 3600.0
        self._token = token
        self._token_renew_at = now + max(lifetime - min(TOKEN_RENEW_MARGIN_S, lifetime / 10), 0)
        return token

    def _forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    # -- transport -------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        recorder: OrchestrationRecorder,
        name: str,
        token: str | None,
        params: Mapping[str, str] | None,
        body: bytes | None,
    ) -> UpstreamResponse:
        url = self.base + path.lstrip("/")
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = JSON
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        started = time.time()
        call = UpstreamCall(name, method, url, headers, body, started, started)
        try:
            prepared = _prepare(method, url, headers, body, params)
            r = self._adapter.send(
                prepared, timeout=self._timeout, verify=self._verify, proxies=self._proxies
            )
        except requests.Timeout as exc:
            call.ended, call.error = time.time(), f"timeout: {type(exc).__name__}"
            recorder.record(call)
            metrics.upstream_call(method, path, "timeout", call.ended - started)
            raise OpenImisTimeout(f"{name}: no answer within {self._timeout[1]} s") from None
        except requests.RequestException as exc:
            call.ended, call.error = time.time(), f"unreachable: {type(exc).__name__}"
            recorder.record(call)
            metrics.upstream_call(method, path, "unreachable", call.ended - started)
            raise OpenImisUnreachable(f"{name}: {type(exc).__name__}") from None
        call.ended = time.time()
        call.url = r.url
        call.status = r.status_code
        call.response_headers = dict(r.headers)
        call.response_body = r.content
        recorder.record(call)
        metrics.upstream_call(
            method, path, "ok" if r.status_code < 400 else str(r.status_code), call.ended - started
        )
        return UpstreamResponse(r.status_code, r.headers, r.content)


def _prepare(
    method: str, url: str, headers: dict[str, str], body: bytes | None, params: Mapping[str, str] | None
) -> requests.PreparedRequest:
    """What `requests.Request(...).prepare()` builds for these calls, with the URL prepared once
    per distinct URL (parsing, IDNA and quoting: a tenth of a call's CPU)."""
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = _prepared_url(url, tuple(params.items()) if params else ())
    prepared.prepare_headers(headers)
    if body is not None:
        prepared.body = body
        prepared.headers["Content-Length"] = str(len(body))
    elif method not in ("GET", "HEAD"):
        prepared.headers["Content-Length"] = "0"
    return prepared


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str, query: tuple[tuple[str, str], ...]) -> str:
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, list(query))
    return str(prepared.url)


def _verify(setting: bool | str) -> bool | str:
    """TLS verification as requests would resolve it from the environment, once."""
    if setting is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return setting


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
