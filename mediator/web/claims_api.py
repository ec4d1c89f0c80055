"""FHIR endpoints for claims and claim responses: routing only (see mediator.transactions.claims)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from mediator.fhir.elements import is_fhir_id
from mediator.fhir.outcome import FhirError
from mediator.transactions.claims import responses
from mediator.web.transaction import current, fhir_answer, runtime

claims = Blueprint("claims", __name__, url_prefix="/fhir")


@claims.post("/Claim")
def submit_claim() -> Response:
    rt, ctx = runtime(), current()
    answer = rt.claims.submit(request.get_data(), ctx.recorder, ctx.id if ctx.via_openhim else None)
    ctx.status, ctx.outcome = answer.transaction_status, answer.outcome
    ctx.properties.update({"transaction": "claim submit", **answer.properties})
    return fhir_answer(answer.encoded or answer.body, answer.http_status, answer.headers)


@claims.get("/Claim/<ident>")
def read_claim(ident: str) -> Response:
    """The claim as the facility sent it (what every ClaimResponse's `request` points at)."""
    rt, ctx = runtime(), current()
    record = rt.store.get(ident) if is_fhir_id(ident) else None
    if record is None:
        raise FhirError.of(404, "not-found", f"Claim/{ident} is not known to the mediator")
    claim = {**(record.payload.get("received") or record.payload["claim"]), "id": record.public_id}
    ctx.properties.update({"transaction": "claim read", "claim_code": record.claim_code})
    return fhir_answer(claim)


@claims.get("/ClaimResponse/<ident>")
def read_claim_response(ident: str) -> Response:
    rt, ctx = runtime(), current()
    body = responses.read(rt.claims, rt.openimis, ident, ctx.recorder)
    ctx.properties.update({"transaction": "claim response read", "id": ident, "outcome": body.get("outcome")})
    return fhir_answer(body)


@claims.get("/ClaimResponse")
def search_claim_responses() -> Response:
    rt, ctx = runtime(), current()
    bundle = responses.search(
        rt.claims,
        rt.openimis,
        list(request.args.items(multi=True)),
        ctx.recorder,
        rt.settings.public_base_url,
    )
    ctx.properties.update({"transaction": "claim response search", "total": bundle.get("total")})
    return fhir_answer(bundle)
