"""OpenHIE steps 1 and 4: the medical services (ActivityDefinition) and items (Medication) lists.

Facilities page through the price lists or look one service/item up by id or code. openIMIS
answers `?identifier=` with a bare resource and builds links to itself; both are absorbed here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from mediator.fhir.elements import is_fhir_id
from mediator.fhir.outcome import FhirError, Issue
from mediator.fhir.search import matches_all, token_values, unique
from mediator.openhim.orchestrations import OrchestrationRecorder
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken
from mediator.openimis.quirks import bundle_urls, rewrite_bundle, rewritten_text, searchset
from mediator.openimis.reads import find_by_identifier, read_resource
from mediator.transactions.catalogue import Catalogue, identifying_keys

SEARCH_PARAMS = ("identifier", "_lastUpdated", "_count", "page-offset")
#: A facility may ask for big pages, but one request must not pull the whole catalogue at once.
MAX_PAGE_SIZE = 500
#: openIMIS's page size when a search gives no `_count`.
DEFAULT_PAGE_SIZE = 10
_LAST_UPDATED = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)?\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?)?$")


class MasterData(StrEnum):
    """The two catalogues of openIMIS a facility claims against."""

    SERVICES = "ActivityDefinition"
    ITEMS = "Medication"

    @property
    def label(self) -> str:
        return "medical services" if self is MasterData.SERVICES else "medical items"


@dataclass(frozen=True)
class SearchAnswer:
    bundle: dict[str, Any]
    #: `bundle` as text when it is openIMIS's own page with its links rewritten: answered as is.
    encoded: str | None = None


@dataclass(frozen=True)
class SearchRequest:
    #: `identifier` values: ANDed groups of ORed values (empty: no identifier search).
    identifiers: list[list[str]]
    upstream_params: dict[str, str]
    self_query: str


def parse_search(params: Sequence[tuple[str, str]]) -> SearchRequest:
    """Validate the search parameters a facility sent; unknown ones are ignored (FHIR lenient)."""
    errors = []
    upstream: dict[str, str] = {}
    identifiers = token_values(params, "identifier")
    for name, value in params:
        if name == "_count" or name == "page-offset":
            if not value.isdigit() or int(value) < (0 if name == "_count" else 1):
                errors.append(
                    (
                        name,
                        f"{name} must be a {'non-negative' if name == '_count' else 'positive'} integer",
                    )
                )
            else:
                upstream[name] = str(min(int(value), MAX_PAGE_SIZE)) if name == "_count" else value
        elif name == "_lastUpdated":
            if not _LAST_UPDATED.match(value):
                errors.append((name, "_lastUpdated must be [prefix]YYYY-MM-DD[THH:MM[:SS]]"))
            else:
                upstream[name] = value
    if errors:
        raise FhirError(
            400,
            [Issue("invalid", diag, [name]) for name, diag in errors],
        )
    applied = [(k, v) for k, v in params if k in SEARCH_PARAMS]
    return SearchRequest(identifiers, upstream, urlencode(applied))


def search(
    client: OpenImisClient,
    kind: MasterData,
    params: Sequence[tuple[str, str]],
    recorder: OrchestrationRecorder,
    public_base: str,
    catalogue: Catalogue | None = None,
) -> SearchAnswer:
    """Search a catalogue: from the cached copy when there is one, else from openIMIS.

    `_lastUpdated` searches always go to openIMIS: the copy does not know when openIMIS
    changed each resource.
    """
    request = parse_search(params)
    self_link = f"{public_base}/{kind}" + (f"?{request.self_query}" if request.self_query else "")
    if catalogue is not None and "_lastUpdated" not in request.upstream_params:
        return SearchAnswer(_search_cached(catalogue, kind, request, public_base, self_link))
    if request.identifiers:
        groups = request.identifiers
        candidates = unique(_find_by_identifier(client, kind, value, recorder) for value in groups[0])
        found = [r for r in candidates if matches_all(identifying_keys(r), groups[1:])]
        return SearchAnswer(searchset(found, public_base, self_link))
    response = client.get(f"{kind}/", recorder, f"openIMIS {kind.label} list", params=request.upstream_params)
    page = int(request.upstream_params.get("page-offset", 1))
    if response.status == 404 and page > 1:
        # openIMIS has no page past the end ("Invalid page."): the page is empty, as FHIR has it.
        return SearchAnswer(_past_the_end(client, kind, request, recorder, public_base, self_link))
    if not response.ok:
        raise OpenImisBroken(f"openIMIS {kind} list answered {response.status}")
    bundle = response.json()
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise OpenImisBroken(f"openIMIS {kind} list is not a Bundle")
    upstream_urls = bundle_urls(bundle)
    rewrite_bundle(bundle, public_base, SEARCH_PARAMS)
    text = response.text()
    return SearchAnswer(bundle, rewritten_text(text, upstream_urls, bundle, public_base) if text else None)


def read(
    client: OpenImisClient,
    kind: MasterData,
    ident: str,
    recorder: OrchestrationRecorder,
    catalogue: Catalogue | None = None,
) -> dict[str, Any]:
    """Read by openIMIS UUID or by code (openIMIS tries both, in that order)."""
    if not is_fhir_id(ident):
        raise FhirError.of(400, "invalid", f"{ident!r} is not a valid FHIR id or code", ["id"])
    if catalogue is not None:
        resource = catalogue.find(kind, ident)
    else:
        resource = read_resource(client, kind, ident, recorder, f"openIMIS {kind.label} read")
    if resource is None:
        raise FhirError.of(404, "not-found", f"{kind}/{ident} is not known to openIMIS")
    return resource


def _search_cached(
    catalogue: Catalogue, kind: MasterData, request: SearchRequest, public_base: str, self_link: str
) -> dict[str, Any]:
    if request.identifiers:
        bundle = searchset(catalogue.search_identifiers(kind, request.identifiers), public_base, self_link)
    else:
        count = int(request.upstream_params.get("_count", DEFAULT_PAGE_SIZE))
        page = int(request.upstream_params.get("page-offset", 1))
        resources, total = catalogue.page(kind, count, page)
        bundle = _page(resources, total, count, page, kind, public_base, self_link)
    bundle["meta"]["lastUpdated"] = catalogue.last_updated
    return bundle


def _page(
    resources: list[dict[str, Any]],
    total: int,
    count: int,
    page: int,
    kind: MasterData,
    public_base: str,
    self_link: str,
    filters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One page of a list with its `next` and `previous` links; a page past the end has none
    of the resources but a `previous` link to the last page, so that a client can go back."""
    bundle = searchset(resources, public_base, self_link)
    bundle["total"] = total
    if not count:
        return bundle
    last = max(1, -(-total // count))
    for relation, target in (("next", page + 1), ("previous", min(page - 1, last))):
        if 1 <= target <= last:
            query = urlencode({**(filters or {}), "_count": count, "page-offset": target})
            bundle["link"].append({"relation": relation, "url": f"{public_base}/{kind}?{query}"})
    return bundle


def _past_the_end(
    client: OpenImisClient,
    kind: MasterData,
    request: SearchRequest,
    recorder: OrchestrationRecorder,
    public_base: str,
    self_link: str,
) -> dict[str, Any]:
    """The empty page past the end of openIMIS's list: its first page says where the end is."""
    first = {**request.upstream_params, "page-offset": "1"}
    response = client.get(f"{kind}/", recorder, f"openIMIS {kind.label} list (first page)", params=first)
    bundle = response.json() if response.ok else None
    if not isinstance(bundle, dict) or not isinstance(bundle.get("total"), int):
        raise OpenImisBroken(f"openIMIS {kind} list answered {response.status}")
    count = int(request.upstream_params.get("_count", DEFAULT_PAGE_SIZE)) or DEFAULT_PAGE_SIZE
    page = int(request.upstream_params["page-offset"])
    filters = {k: v for k, v in request.upstream_params.items() if k not in ("_count", "page-offset")}
    return _page([], bundle["total"], count, page, kind, public_base, self_link, filters)


def _find_by_identifier(
    client: OpenImisClient, kind: MasterData, identifier: str, recorder: OrchestrationRecorder
) -> dict[str, Any] | None:
    if kind is MasterData.ITEMS:
        return find_by_identifier(
            client, kind, identifier, recorder, f"openIMIS {kind.label} search by identifier"
        )
    # ActivityDefinition has no identifier search in openIMIS: read by UUID-or-code instead.
    if not is_fhir_id(identifier):
        return None
    return read_resource(client, kind, identifier, recorder, f"openIMIS {kind.label} read by identifier")
