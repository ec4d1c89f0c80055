"""Liveness and readiness, for orchestrators and operators (JSON, never FHIR)."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify

from mediator import __version__, metrics

operations = Blueprint("operations", __name__)


@operations.get("/health")
def health() -> Response:
    return jsonify(status="up", version=__version__)


@operations.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus's text format: this instance's counters, the (shared) claim queue."""
    body, content_type = metrics.exposition(current_app.extensions["mediator"].queue_status)
    return Response(body, content_type=content_type)


@operations.get("/ready")
def ready() -> tuple[Response, int]:
    rt = current_app.extensions["mediator"]
    openimis = rt.openimis_status()
    settings = rt.settings
    body = {
        "status": "ready" if openimis["ready"] else "not ready",
        "version": __version__,
        "worker": os.getpid(),
        "openimis": openimis,
        "openhim": rt.openhim_status(),
        "claims": rt.queue_status(),
        # What an operator can change in the console, as this worker has it in force.
        "config": {
            param: _without_userinfo(getattr(settings, name))
            for param, name in settings.console_params().items()
            if not name.endswith("_password")
        },
    }
    if rt.config_error:
        body["config_error"] = rt.config_error
    ok = openimis["ready"] and body["claims"].get("store") != "unreachable"
    body["status"] = "ready" if ok else "not ready"
    return jsonify(body), 200 if ok else 503


def _without_userinfo(value: object) -> object:
    """A URL with `user:password@` in it shows neither."""
    if isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}" if "@" in rest.split("/", 1)[0] else value
    return value
