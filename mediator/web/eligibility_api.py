"""Insuree lookup and coverage eligibility under /fhir: routing only; the work is in
`mediator.transactions.insurees` and `mediator.transactions.eligibility`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from mediator.openhim.envelope import TransactionStatus
from mediator.transactions import eligibility as eligibility_tx
from mediator.transactions import insurees
from mediator.web.transaction import current, fhir_answer, runtime

eligibility = Blueprint("eligibility", __name__, url_prefix="/fhir")


@eligibility.get("/Patient")
def search_patients() -> Response:
    rt, ctx = runtime(), current()
    ctx.properties["transaction"] = "insuree search"
    bundle, number = insurees.search(
        rt.openimis, list(request.args.items(multi=True)), ctx.recorder, rt.settings.public_base_url
    )
    ctx.properties.update({"insuree_number": number, "total": bundle.get("total")})
    return fhir_answer(bundle)


@eligibility.get("/Patient/<ident>")
def read_patient(ident: str) -> Response:
    rt, ctx = runtime(), current()
    ctx.properties.update({"transaction": "insuree read", "id": ident})
    patient = insurees.read(rt.openimis, ident, ctx.recorder)
    number = insurees.insuree_number(patient)
    if number:
        ctx.properties["insuree_number"] = number
    return fhir_answer(patient)


@eligibility.post("/CoverageEligibilityRequest")
def check_eligibility() -> Response:
    rt, ctx = runtime(), current()
    answer = eligibility_tx.check(rt.openimis, request.get_data(), ctx.recorder, ctx.properties)
    if answer.source == eligibility_tx.SOURCE_FALLBACK:
        # A correct answer, but an upstream step failed and benefit limits are missing: auditors
        # filter OpenHIM transactions on this status to see how often the fallback carries the load.
        ctx.status = TransactionStatus.COMPLETED_WITH_ERRORS
        ctx.outcome = "coverage-fallback"
    return fhir_answer(answer.resource)
