"""FHIR endpoints for Subscriptions: routing only (see mediator.notifications.subscriptions)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from mediator.fhir.outcome import FhirError
from mediator.notifications import subscriptions
from mediator.openimis.quirks import searchset
from mediator.web.transaction import current, fhir_answer, runtime

subscription_routes = Blueprint("subscriptions", __name__, url_prefix="/fhir")


def _found(ident: str) -> subscriptions.Subscription:
    found = runtime().store.notifications.subscription(ident)
    if found is None:
        raise FhirError.of(404, "not-found", f"Subscription/{ident} is not known")
    return found


def _answer(sub: subscriptions.Subscription, status: int, transaction: str) -> Response:
    rt, ctx = runtime(), current()
    ctx.properties.update(
        {"transaction": transaction, "subscription": sub.id, "endpoint_host": urlsplit(sub.endpoint).hostname}
    )
    location = f"{rt.settings.public_base_url}/Subscription/{sub.id}"
    return fhir_answer(subscriptions.render(sub, rt.settings.public_base_url), status, {"Location": location})


@subscription_routes.post("/Subscription")
def create_subscription() -> Response:
    rt = runtime()
    sub = subscriptions.parse(request.get_data(), rt.settings)
    rt.store.notifications.save_subscription(sub)
    return _answer(sub, 201, "subscription create")


@subscription_routes.put("/Subscription/<ident>")
def update_subscription(ident: str) -> Response:
    """Change it, or resume one in error by setting `status: active` (its waiting notifications go)."""
    rt = runtime()
    existing = _found(ident)
    sub = subscriptions.parse(request.get_data(), rt.settings, ident=ident, existing=existing)
    rt.store.notifications.save_subscription(sub)
    return _answer(sub, 200, "subscription update")


@subscription_routes.get("/Subscription/<ident>")
def read_subscription(ident: str) -> Response:
    return _answer(_found(ident), 200, "subscription read")


@subscription_routes.get("/Subscription")
def search_subscriptions() -> Response:
    rt, ctx = runtime(), current()
    status = request.args.get("status")
    unknown = sorted(set(request.args) - {"status", "_format"})
    if unknown:
        raise FhirError.of(400, "not-supported", f"unsupported search parameter {unknown[0]!r}", [unknown[0]])
    found = rt.store.notifications.subscriptions(status)
    base = rt.settings.public_base_url
    bundle = searchset(
        [subscriptions.render(s, base) for s in found],
        base,
        f"{base}/Subscription" + (f"?status={status}" if status else ""),
    )
    ctx.properties.update({"transaction": "subscription search", "total": len(found)})
    return fhir_answer(bundle)


@subscription_routes.delete("/Subscription/<ident>")
def delete_subscription(ident: str) -> Response:
    rt, ctx = runtime(), current()
    if not rt.store.notifications.delete_subscription(ident):
        raise FhirError.of(404, "not-found", f"Subscription/{ident} is not known")
    ctx.properties.update({"transaction": "subscription delete", "subscription": ident})
    return Response(status=204)
