"""The instance's one background process: the claim forwarder, and OpenHIM registration,
heartbeat and live config.

gunicorn's master starts it once (not once per worker), so an instance heartbeats and forwards
exactly once whatever its worker count. It never takes the service down: an unreachable core
is retried with backoff, each attempt logged once. It exits on SIGTERM, and by itself if the
master that started it is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from mediator.forwarder import Forwarder
from mediator.notifications.delivery import Notifier
from mediator.openhim.api import OpenHimApi
from mediator.openhim.live_config import (
    CONSOLE_CONFIG_FILE,
    OPENHIM_STATE_FILE,
    SharedState,
    apply_console_config,
)
from mediator.openhim.orchestrations import iso_now
from mediator.openhim.registration import heartbeat, install_channels, register, registration_document
from mediator.openhim.transactions import append_orchestrations
from mediator.runtime import MediatorRuntime
from mediator.settings import Settings, SettingsError
from mediator.transactions.catalogue import CatalogueRefresher

log = logging.getLogger("mediator.agent")

REGISTRATION_BACKOFF_MAX_S = 60.0
#: Every this many heartbeats the agent asks for the console config again (`config: true`).
#: Core reads `_configModifiedTS` before it stamps `_lastHeartbeat` (openhim-core 4.0.5,
#: api/mediators.js): a console change saved while core handles a heartbeat is never sent on its
#: own, and a lost change would wait for the next restart. With 10 s beats it arrives within a minute.
CONFIG_RECHECK_BEATS = 6


class OpenHimAgent:
    def __init__(self, settings: Settings, state: SharedState, api: OpenHimApi | None = None) -> None:
        self.base_settings = settings
        self.settings = settings
        self.state = state
        self.api = api or OpenHimApi(settings)
        self._started = time.monotonic()
        self._status: dict[str, Any] = {"mode": "registering", "registered": False, "api": self.api.base}
        self._console_config: dict[str, Any] | None = None  # the last one core sent

    def run(self, stop: threading.Event) -> None:
        if not self.base_settings.openhim_verify_tls:
            log.warning("TLS verification towards OpenHIM is OFF (OPENHIM_VERIFY_TLS=false)")
        self._update()
        self._register_until_done(stop)
        beats = 0
        while not stop.is_set():
            try:
                # Replicas (a shared claim store) ask at every beat: core hands a console change
                # to the first heartbeat only, which may be another replica's.
                want_config = bool(self.base_settings.claim_store_url) or beats % CONFIG_RECHECK_BEATS == 0
                config = heartbeat(self.api, self.settings.mediator_urn, self.uptime(), want_config)
                beats += 1
                self._update(last_heartbeat=iso_now(), heartbeat_error=None)
                if config is not None:
                    self.receive_console_config(config)
            except Exception as exc:
                if self._status.get("heartbeat_error") != str(exc):
                    log.warning("OpenHIM heartbeat failed", extra={"error": str(exc)})
                self._update(heartbeat_error=str(exc))
            stop.wait(self.settings.openhim_heartbeat_interval)

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def _register_until_done(self, stop: threading.Event) -> None:
        document = registration_document(self.base_settings)
        backoff, attempt = 1.0, 0
        while not stop.is_set():
            attempt += 1
            try:
                register(self.api, document)
                installed = None
                if self.base_settings.openhim_install_channels:
                    installed = install_channels(self.api, document["urn"])
                log.info(
                    "registered with OpenHIM",
                    extra={
                        "urn": document["urn"],
                        "version": document["version"],
                        "auth": self.api.scheme,
                        # The names installed now; [] when core had them all (left as they are).
                        "channels_installed": installed,
                    },
                )
                self._update(mode="registered", registered=True, registered_at=iso_now(), error=None)
                return
            except Exception as exc:
                log.warning(
                    "OpenHIM registration failed; will retry",
                    extra={"attempt": attempt, "retry_in_s": backoff, "error": str(exc)},
                )
                self._update(error=str(exc), attempts=attempt)
                stop.wait(backoff)
                backoff = min(backoff * 2, REGISTRATION_BACKOFF_MAX_S)

    def receive_console_config(self, config: dict[str, Any]) -> None:
        """Validate a console config; only a valid one reaches the workers."""
        if config == self._console_config:
            return  # sent again because asked again (CONFIG_RECHECK_BEATS): nothing changed
        self._console_config = config
        try:
            new_settings = apply_console_config(self.base_settings, config)
        except SettingsError as exc:
            log.warning(
                "console configuration refused; the previous one stays in force", extra={"reason": str(exc)}
            )
            self._update(config_error=str(exc))
            return
        changed = sorted(
            param
            for param, field in self.settings.console_params().items()
            if getattr(new_settings, field) != getattr(self.settings, field)
        )
        self.settings = new_settings
        self.state.write(CONSOLE_CONFIG_FILE, {"config": config, "received_at": iso_now()})
        self._update(config_error=None, config_received_at=iso_now())
        if changed:
            log.info("console configuration in force", extra={"changed": changed})

    def _update(self, **changes: Any) -> None:
        self._status.update(changes)
        try:
            self.state.write(OPENHIM_STATE_FILE, self._status)
        except OSError as exc:  # /ready loses a detail; the heartbeat goes on
            log.warning("OpenHIM state not written", extra={"error": str(exc)})


def run_agent(settings: Settings) -> int:
    """Entry point of `python -m mediator agent`."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("the gunicorn master is gone; the agent stops")
                stop.set()

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    state = SharedState(settings.mediator_state_dir)
    state.remove(CONSOLE_CONFIG_FILE)  # a new instance starts from its own settings
    api = OpenHimApi(settings) if settings.registers_with_openhim else None
    runtime = MediatorRuntime(settings)
    forwarder = Forwarder(runtime, api)
    forwarding = threading.Thread(target=forwarder.run, args=(stop,), name="forwarder", daemon=True)
    forwarding.start()
    report = (
        None if api is None else (lambda tx, orchestration: append_orchestrations(api, tx, [orchestration]))
    )
    notifier = Notifier(runtime, report)
    threading.Thread(target=notifier.run, args=(stop,), name="notifier", daemon=True).start()
    refresher = CatalogueRefresher(lambda: runtime.settings, lambda: runtime.openimis, state)
    threading.Thread(target=refresher.run, args=(stop,), name="catalogue", daemon=True).start()
    if api is not None:
        OpenHimAgent(settings, state, api).run(stop)
    else:
        stop.wait()
    forwarding.join(30)
    return 0
