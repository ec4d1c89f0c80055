"""The master-data cache: openIMIS's medical services and items, kept fresh by the agent.

Every facility fetches these lists and they change rarely, so the instance's agent keeps a
complete copy (full reload every `master_data_full_refresh_interval`, `_lastUpdated` increments
in between) in a snapshot file of the state directory; workers load it when it changes and
answer searches and reads from memory, without waiting on openIMIS and while it is down. The
copy is authoritative as of its refresh time, which every answer states (`meta.lastUpdated`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mediator.fhir.search import matches_all, unique
from mediator.openhim.live_config import SharedState
from mediator.openhim.orchestrations import OrchestrationRecorder, iso_from_epoch
from mediator.openimis.client import OpenImisClient
from mediator.openimis.errors import OpenImisBroken, OpenImisError
from mediator.settings import Settings

log = logging.getLogger("mediator.catalogue")

CATALOGUE_FILE = "catalogue.json"
REFRESH_REQUEST_FILE = "catalogue-refresh-requested"
RESOURCE_TYPES = ("ActivityDefinition", "Medication")
PAGE_SIZE = 500
MAX_PAGES = 1000
#: Incremental refreshes look back this much further than the last one (clock skew, slow commits).
OVERLAP_S = 300.0
#: A worker looks for a new snapshot at most this often.
RELOAD_CHECK_S = 1.0


@dataclass
class Catalogue:
    refreshed_at: float
    full_refreshed_at: float
    resources: dict[str, list[dict[str, Any]]]
    _index: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for resource_type, resources in self.resources.items():
            index: dict[str, dict[str, Any]] = {}
            for resource in resources:
                for key in identifying_keys(resource):
                    index.setdefault(key, resource)
            self._index[resource_type] = index

    @property
    def last_updated(self) -> str:
        return iso_from_epoch(self.refreshed_at)

    def find(self, resource_type: str, ident: str) -> dict[str, Any] | None:
        """By UUID or code, like openIMIS's own reads."""
        return self._index.get(resource_type, {}).get(ident)

    def search_identifiers(self, resource_type: str, groups: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """`identifier` search (FHIR token semantics, mediator.fhir.search.token_values)."""
        candidates = unique(self.find(resource_type, value) for value in groups[0])
        return [r for r in candidates if matches_all(identifying_keys(r), groups[1:])]

    def page(self, resource_type: str, count: int, page: int) -> tuple[list[dict[str, Any]], int]:
        resources = self.resources.get(resource_type, [])
        start = (page - 1) * count
        return resources[start : start + count], len(resources)

    def to_document(self) -> dict[str, Any]:
        return {
            "refreshed_at": self.refreshed_at,
            "full_refreshed_at": self.full_refreshed_at,
            "resources": self.resources,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Catalogue:
        return cls(document["refreshed_at"], document["full_refreshed_at"], document["resources"])


def identifying_keys(resource: dict[str, Any]) -> list[str]:
    """What a service or item is found by, as openIMIS finds it: UUID, identifier values, and a
    service's code (`name`)."""
    keys = [resource.get("id")]
    keys += [i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict)]
    if resource.get("resourceType") == "ActivityDefinition":
        keys.append(resource.get("name"))
    return [str(k) for k in keys if k]


# -- the worker's view -------------------------------------------------------------------------


class CatalogueView:
    """A worker's copy of the snapshot, reloaded when the agent writes a new one."""

    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._catalogue: Catalogue | None = None
        self._version: int | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()

    def current(self, enabled: bool) -> Catalogue | None:
        if not enabled:
            return None
        now = time.monotonic()
        if now >= self._next_check:
            with self._lock:
                if now >= self._next_check:
                    self._next_check = now + RELOAD_CHECK_S
                    self._reload()
        return self._catalogue

    def _reload(self) -> None:
        version = self._state.mtime(CATALOGUE_FILE)
        if version == self._version:
            return
        self._version = version
        document = self._state.read(CATALOGUE_FILE)
        try:
            self._catalogue = Catalogue.from_document(document) if document else None
        except (KeyError, TypeError):
            self._catalogue = None


# -- the agent's refresher ----------------------------------------------------------------------


def fetch_all(
    client: OpenImisClient, resource_type: str, recorder: OrchestrationRecorder, since: str | None = None
) -> list[dict[str, Any]]:
    """Every resource of a list, page by page (openIMIS's `page-offset` is 1-based)."""
    resources: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        params = {"_count": str(PAGE_SIZE), "page-offset": str(page)}
        if since:
            params["_lastUpdated"] = f"ge{since}"
        response = client.get(
            f"{resource_type}/", recorder, f"openIMIS {resource_type} list (cache refresh)", params
        )
        if not response.ok:
            raise OpenImisBroken(f"openIMIS {resource_type} list answered {response.status}")
        bundle = response.json()
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise OpenImisBroken(f"openIMIS {resource_type} list is not a Bundle")
        entries = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
        resources += [r for r in entries if isinstance(r, dict) and r.get("resourceType") == resource_type]
        has_next = any(link.get("relation") == "next" for link in bundle.get("link") or [])
        if len(entries) < PAGE_SIZE or not has_next:
            return resources
    raise OpenImisBroken(f"openIMIS {resource_type} list has more than {MAX_PAGES} pages")


def refresh(client: OpenImisClient, previous: Catalogue | None, full: bool, now: float) -> Catalogue:
    recorder = OrchestrationRecorder()
    if full or previous is None:
        resources = {t: fetch_all(client, t, recorder) for t in RESOURCE_TYPES}
        return Catalogue(now, now, resources)
    since = datetime.fromtimestamp(previous.refreshed_at, UTC) - timedelta(seconds=OVERLAP_S)
    since_text = since.strftime("%Y-%m-%dT%H:%M:%S")
    resources = {}
    for resource_type in RESOURCE_TYPES:
        merged = list(previous.resources.get(resource_type, []))
        position = {r.get("id"): i for i, r in enumerate(merged)}
        for changed in fetch_all(client, resource_type, recorder, since_text):
            if changed.get("id") in position:
                merged[position[changed["id"]]] = changed
            else:
                position[changed.get("id")] = len(merged)
                merged.append(changed)
        resources[resource_type] = merged
    return Catalogue(now, previous.full_refreshed_at, resources)


class CatalogueRefresher:
    """Runs in the agent: keeps the snapshot fresh; a failed refresh keeps the old copy in use."""

    def __init__(
        self, settings: Callable[[], Settings], client: Callable[[], OpenImisClient], state: SharedState
    ) -> None:
        self._settings = settings
        self._client = client
        self._state = state
        self._catalogue: Catalogue | None = None
        self._last_error: str | None = None
        self._next_attempt = 0.0

    def run(self, stop: threading.Event) -> None:
        document = self._state.read(CATALOGUE_FILE)
        if document:
            try:
                self._catalogue = Catalogue.from_document(document)
            except (KeyError, TypeError):
                self._catalogue = None
        while not stop.is_set():
            try:
                self.run_once(time.time())
            except Exception:  # the loop must outlive any single failure
                log.exception("catalogue refresh round failed")
            stop.wait(1.0)

    def run_once(self, now: float) -> bool:
        """Refresh if due; True if a new snapshot was written."""
        settings = self._settings()
        if not settings.master_data_cache_enabled:
            return False
        requested = self._state.mtime(REFRESH_REQUEST_FILE) is not None
        catalogue = self._catalogue
        full_due = (
            catalogue is None
            or requested
            or now - catalogue.full_refreshed_at >= settings.master_data_full_refresh_interval
        )
        due = full_due or now - catalogue.refreshed_at >= settings.master_data_refresh_interval
        if not due or (now < self._next_attempt and not requested):
            return False
        try:
            fresh = refresh(self._client(), catalogue, full_due, now)
        except OpenImisError as exc:
            self._next_attempt = now + min(30.0, settings.master_data_refresh_interval)
            if str(exc) != self._last_error:
                log.warning(
                    "services/items cache not refreshed; the previous copy stays in use",
                    extra={"error": str(exc)},
                )
            self._last_error = str(exc)
            return False
        self._catalogue, self._last_error = fresh, None
        self._state.write(CATALOGUE_FILE, fresh.to_document())
        if requested:
            self._state.remove(REFRESH_REQUEST_FILE)
        log.info(
            "services/items cache refreshed",
            extra={"full": full_due, **{t: len(fresh.resources.get(t, [])) for t in RESOURCE_TYPES}},
        )
        return True


def request_refresh(state: SharedState) -> None:
    """Ask the agent for a full reload at its next round (the CLI's `cache refresh`)."""
    state.write(REFRESH_REQUEST_FILE, {"requested_at": time.time()})
