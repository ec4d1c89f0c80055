"""The services/items copy: complete reloads, increments, paging, and keeping the old copy."""

import responses

from mediator.openhim.live_config import SharedState
from mediator.openimis.client import OpenImisClient
from mediator.transactions.catalogue import (
    CATALOGUE_FILE,
    Catalogue,
    CatalogueRefresher,
    CatalogueView,
    request_refresh,
)

BASE = "https://imis.example.org/api/api_fhir_r4/"


def medication(ident, code, name="x"):
    return {
        "resourceType": "Medication",
        "id": ident,
        "identifier": [{"type": {"coding": [{"code": "Code"}]}, "value": code}],
        "code": {"text": name},
    }


def bundle(resources, has_next=False):
    links = [{"relation": "self", "url": "x"}] + ([{"relation": "next", "url": "y"}] if has_next else [])
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources), "link": links,
            "entry": [{"resource": r} for r in resources]}  # fmt: skip


def mock_openimis(medications, services=()):
    responses.post(BASE + "login/", json={"token": "eyJ.a.b", "exp": 4_000_000_000})
    responses.get(BASE + "Medication/", json=bundle(medications))
    responses.get(BASE + "ActivityDefinition/", json=bundle(list(services)))


def test_catalogue_finds_by_uuid_and_code_and_pages():
    meds = [medication(f"uuid-{i}", f"{i:04d}") for i in range(25)]
    catalogue = Catalogue(1000.0, 1000.0, {"Medication": meds, "ActivityDefinition": []})
    assert catalogue.find("Medication", "uuid-3")["id"] == "uuid-3"
    assert catalogue.find("Medication", "0007")["id"] == "uuid-7"
    assert catalogue.find("Medication", "nope") is None
    page, total = catalogue.page("Medication", 10, 3)
    assert total == 25 and [m["id"] for m in page] == [f"uuid-{i}" for i in range(20, 25)]


@responses.activate
def test_refresher_writes_a_snapshot_workers_load(settings, tmp_path):
    mock_openimis([medication("u1", "0001"), medication("u2", "0002")])
    state = SharedState(tmp_path)
    refresher = CatalogueRefresher(lambda: settings, lambda: OpenImisClient(settings), state)
    assert refresher.run_once(now=5000.0) is True
    view = CatalogueView(state)
    assert view.current(enabled=True).find("Medication", "0002")["id"] == "u2"
    assert view.current(enabled=False) is None
    assert refresher.run_once(now=5010.0) is False, "not due before the refresh interval"


@responses.activate
def test_incremental_refresh_merges_changes_since_the_last_one(settings, tmp_path):
    mock_openimis([medication("u1", "0001", "old"), medication("u2", "0002")])
    state = SharedState(tmp_path)
    refresher = CatalogueRefresher(lambda: settings, lambda: OpenImisClient(settings), state)
    refresher.run_once(now=5000.0)
    responses.replace(
        responses.GET,
        BASE + "Medication/",
        json=bundle([medication("u1", "0001", "new"), medication("u3", "0003")]),
    )
    assert refresher.run_once(now=5000.0 + settings.master_data_refresh_interval) is True
    last = responses.calls[-2].request.url
    assert "_lastUpdated=ge" in last
    resources = state.read(CATALOGUE_FILE)["resources"]["Medication"]
    assert [(m["id"], m["code"]["text"]) for m in resources] == [("u1", "new"), ("u2", "x"), ("u3", "x")]


@responses.activate
def test_failed_refresh_keeps_the_previous_copy_and_a_requested_refresh_is_full(settings, tmp_path):
    mock_openimis([medication("u1", "0001")])
    state = SharedState(tmp_path)
    refresher = CatalogueRefresher(lambda: settings, lambda: OpenImisClient(settings), state)
    refresher.run_once(now=5000.0)
    responses.replace(responses.GET, BASE + "Medication/", status=502, body="<html>bad gateway</html>")
    assert refresher.run_once(now=5000.0 + settings.master_data_refresh_interval) is False
    assert state.read(CATALOGUE_FILE)["resources"]["Medication"][0]["id"] == "u1"

    responses.replace(responses.GET, BASE + "Medication/", json=bundle([medication("u9", "0009")]))
    request_refresh(state)
    assert refresher.run_once(now=5001.0 + settings.master_data_refresh_interval) is True
    assert "_lastUpdated" not in responses.calls[-2].request.url, "a requested refresh reloads everything"
    assert [m["id"] for m in state.read(CATALOGUE_FILE)["resources"]["Medication"]] == ["u9"]
