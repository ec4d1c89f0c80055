"""FHIR endpoints for claims and claim responses: routing only (see mediator.transactions.claims)."""

from __future__ import annotations

from flask import Blueprint, Response, request

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
