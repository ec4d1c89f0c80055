"""The application factory: everything a worker needs is built here, nothing global."""

from __future__ import annotations

from flask import Flask

from mediator.logs import configure_logging
from mediator.runtime import MediatorRuntime
from mediator.settings import Settings, load_settings
from mediator.web import transaction
from mediator.web.bodies import BoundedRequest
from mediator.web.claims_api import claims
from mediator.web.eligibility_api import eligibility
from mediator.web.fhir_api import fhir
from mediator.web.operations import operations
from mediator.web.subscriptions_api import subscription_routes


def create_app(settings: Settings | None = None, runtime: MediatorRuntime | None = None) -> Flask:
    settings = settings or (runtime.settings if runtime else load_settings())
    configure_logging(settings.log_level)
    app = Flask("mediator")
    app.request_class = BoundedRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.mediator_max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # `/fhir//Claim` would be redirected (308, an HTML page, to a URL built from the Host header
    # OpenHIM sent): an empty path segment is a 404 OperationOutcome instead.
    app.url_map.merge_slashes = False
    rt = runtime or MediatorRuntime(settings)
    app.extensions["mediator"] = rt
    transaction.install(app, lambda: rt.settings.mediator_urn)
    app.before_request(rt.refresh_live_config)
    app.register_blueprint(operations)
    app.register_blueprint(fhir)
    app.register_blueprint(claims)
    app.register_blueprint(eligibility)
    app.register_blueprint(subscription_routes)
    return app
