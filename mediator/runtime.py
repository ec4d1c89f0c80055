"""What the application factory builds for one worker process.

The settings in force can change while the worker runs (the OpenHIM console); whatever
depends on them (the openIMIS client, the log level) is rebuilt here, and only here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisError
from mediator.settings import Settings

log = logging.getLogger("mediator.runtime")

_OPENIMIS_FIELDS = (
    "openimis_url",
    "openimis_fhir_path",
    "openimis_username",
    "openimis_password",
    "openimis_verify_tls",
    "openimis_ca_bundle",
    "openimis_connect_timeout",
    "openimis_read_timeout",
    "openimis_login_retry_after",
    "openimis_pool_size",
)
#: Readiness probes hit /ready every few seconds; openIMIS allows 150 requests a minute.
READY_CACHE_S = 5.0


class MediatorRuntime:
    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[Settings], OpenImisClient] = OpenImisClient,
    ) -> None:
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._settings = settings
        self._openimis = client_factory(settings)
        self._ready_cache: tuple[float, dict[str, Any]] | None = None
        self.config_error: str | None = None
        if not settings.openimis_verify_tls:
            log.warning("TLS verification towards openIMIS is OFF (OPENIMIS_VERIFY_TLS=false)")

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def openimis(self) -> OpenImisClient:
        return self._openimis

    def apply(self, settings: Settings) -> None:
        """Put new settings in force; rebuild the openIMIS client only if its settings changed."""
        with self._lock:
            old = self._settings
            if any(getattr(old, f) != getattr(settings, f) for f in _OPENIMIS_FIELDS):
                self._openimis = self._client_factory(settings)
                self._ready_cache = None
            self._settings = settings
            self.config_error = None
        if old.log_level != settings.log_level:
            logging.getLogger().setLevel(settings.log_level.upper())

    def openimis_status(self) -> dict[str, Any]:
        """Can openIMIS be reached and logged in to? Cached briefly to spare its rate limit."""
        cached = self._ready_cache
        now = time.monotonic()
        if cached and now - cached[0] < READY_CACHE_S:
            return cached[1]
        recorder = OrchestrationRecorder()
        status: dict[str, Any] = {"url": self._settings.openimis_fhir_base}
        try:
            self._openimis.ensure_login(recorder)
            response = self._openimis.get(
                "ActivityDefinition/", recorder, "openIMIS readiness probe", params={"_count": "1"}
            )
            status["ready"] = response.ok
            if not response.ok:
                status["error"] = f"openIMIS answered {response.status}"
        except OpenImisError as exc:
            status["ready"] = False
            status["error"] = exc.public_message
            status["detail"] = str(exc)
        self._ready_cache = (now, status)
        return status
