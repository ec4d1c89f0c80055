"""FHIR REST endpoints under /fhir: routing only; the work is in `mediator.transactions`."""

from __future__ import annotations

from flask import Blueprint, Response, request

from mediator import __version__
from mediator.fhir.capability import capability_statement
from mediator.transactions import medical_services
from mediator.transactions.catalogue import Catalogue
from mediator.transactions.medical_services import MasterData
from mediator.web.transaction import current, fhir_answer, runtime

fhir = Blueprint("fhir", __name__, url_prefix="/fhir")


@fhir.get("/metadata")
def metadata() -> Response:
    return fhir_answer(capability_statement(runtime().settings.public_base_url, __version__))


@fhir.get("/<any(ActivityDefinition, Medication):resource_type>")
def search_master_data(resource_type: str) -> Response:
    rt, ctx = runtime(), current()
    kind = MasterData(resource_type)
    catalogue = rt.catalogue()
    params = list(request.args.items(multi=True))
    answer = medical_services.search(
        rt.openimis, kind, params, ctx.recorder, rt.settings.public_base_url, catalogue
    )
    ctx.properties.update({"transaction": f"{kind.label} search", "total": answer.bundle.get("total")})
    _note_source(ctx.properties, catalogue, answered_from_cache=not ctx.recorder.calls)
    return fhir_answer(answer.encoded or answer.bundle)


@fhir.get("/<any(ActivityDefinition, Medication):resource_type>/<ident>")
def read_master_data(resource_type: str, ident: str) -> Response:
    rt, ctx = runtime(), current()
    kind = MasterData(resource_type)
    catalogue = rt.catalogue()
    resource = medical_services.read(rt.openimis, kind, ident, ctx.recorder, catalogue)
    ctx.properties.update({"transaction": f"{kind.label} read", "id": ident})
    _note_source(ctx.properties, catalogue, answered_from_cache=not ctx.recorder.calls)
    return fhir_answer(resource)


def _note_source(properties: dict, catalogue: Catalogue | None, answered_from_cache: bool) -> None:
    """Auditors must see that an answer came from the mediator's copy, and how fresh it was."""
    if catalogue is not None and answered_from_cache:
        properties.update({"master_data_source": "cache", "cache_refreshed_at": catalogue.last_updated})
    else:
        properties["master_data_source"] = "openIMIS"
