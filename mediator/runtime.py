"""What the application factory builds for one worker process.

The settings in force can change while the worker runs (the OpenHIM console); whatever
depends on them (the openIMIS client, the log level) is rebuilt here, and only here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from mediator.openhim.live_config import (
    CONSOLE_CONFIG_FILE,
    OPENHIM_STATE_FILE,
    SharedState,
    apply_console_config,
)
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisError
from mediator.settings import Settings, SettingsError
from mediator.store import ClaimStore, StoreUnavailable, open_claim_store
from mediator.transactions.catalogue import Catalogue, CatalogueView
from mediator.transactions.claims.submission import ClaimSubmission

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
#: How often a worker looks for a new console config (the agent beats every 10 s).
LIVE_CONFIG_CHECK_S = 1.0


class MediatorRuntime:
    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[Settings], OpenImisClient] = OpenImisClient,
    ) -> None:
        self.store: ClaimStore = open_claim_store(settings)
        shared_guard = getattr(self.store, "login_guard", None)  # replicas share failed logins
        self._client_factory: Callable[[Settings], OpenImisClient] = (
            client_factory if shared_guard is None else partial(client_factory, login_guard=shared_guard)
        )
        self._lock = threading.Lock()
        self._base_settings = settings
        self._settings = settings
        self._openimis = self._client_factory(settings)
        self._shared = SharedState(settings.mediator_state_dir)
        self._console_config_version: int | None = None
        self._next_config_check = 0.0
        self._ready_cache: tuple[float, dict[str, Any]] | None = None
        self.claims = ClaimSubmission(self.store, lambda: self._openimis, lambda: self._settings)
        self._catalogue = CatalogueView(self._shared)
        self.config_error: str | None = None
        if not settings.openimis_verify_tls:
            log.warning("TLS verification towards openIMIS is OFF (OPENIMIS_VERIFY_TLS=false)")

    @property
    def store_kind(self) -> str:
        return "postgresql" if self._base_settings.claim_store_url else "sqlite"

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

    def refresh_live_config(self) -> None:
        """Put a console config written by the agent in force (checked at most once a second)."""
        if not self._base_settings.registers_with_openhim:
            return
        now = time.monotonic()
        if now < self._next_config_check:
            return
        self._next_config_check = now + LIVE_CONFIG_CHECK_S
        version = self._shared.mtime(CONSOLE_CONFIG_FILE)
        if version is None or version == self._console_config_version:
            return
        self._console_config_version = version
        document = self._shared.read(CONSOLE_CONFIG_FILE)
        try:
            self.apply(apply_console_config(self._base_settings, (document or {})["config"]))
        except (SettingsError, KeyError, TypeError) as exc:
            self.config_error = str(exc)
            log.warning("console configuration not applied", extra={"reason": str(exc)})

    def catalogue(self) -> Catalogue | None:
        """The services/items copy to answer from, or None to ask openIMIS."""
        return self._catalogue.current(self._settings.master_data_cache_enabled)

    def queue_status(self) -> dict[str, Any]:
        try:
            stats = self.store.stats(time.time())
            notes = self.store.notifications.notification_stats()
        except StoreUnavailable as exc:
            return {"store": "unreachable", "error": str(exc)}
        return {
            "store": self.store_kind,
            "queue_depth": stats.depth,
            "oldest_queued_age_s": stats.oldest_queued_age_s,
            "last_forwarding_error": stats.last_error,
            "awaiting_adjudication": stats.awaiting_adjudication,
            "unconfirmed_for_an_operator": stats.unconfirmed,
            "notifications_pending": notes.pending,
            "notifications_delivered": notes.delivered,
            "subscriptions_active": notes.subscriptions_active,
            "subscriptions_in_error": notes.subscriptions_in_error,
            "finished_records": stats.finished,
        }

    def openhim_status(self) -> dict[str, Any]:
        if not self._base_settings.registers_with_openhim:
            return {"mode": "standalone"}
        return self._shared.read(OPENHIM_STATE_FILE) or {"mode": "starting", "registered": False}

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
