"""Services and items answered from the mediator's copy: fast, fresh-dated, and up while openIMIS is down."""

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.support.services import running_mediator
from tests.support.waiting import wait_until

FHIR = {"Accept": "application/fhir+json"}


@pytest.fixture
def cached_mediator(clean_sandbox):
    env = {"OPENIMIS_URL": clean_sandbox.url, "MASTER_DATA_CACHE_ENABLED": "true"}
    with running_mediator(env) as mediator:
        wait_until(lambda: "services/items cache refreshed" in mediator.log())
        yield mediator


def envelope(mediator, path):
    answer = requests.get(
        mediator.url + path, headers={**FHIR, "X-OpenHIM-TransactionID": "tx-cache"}, timeout=10
    )
    return answer.json()


def test_answers_from_the_copy_say_so_and_how_fresh(cached_mediator):
    result = wait_until(lambda: (e := envelope(cached_mediator, "/fhir/Medication?_count=4"))["properties"].get(
        "master_data_source") == "cache" and e)  # fmt: skip
    assert result["orchestrations"] == [], "no call to openIMIS for a cached answer"
    assert result["properties"]["cache_refreshed_at"].endswith("+00:00")
    bundle = json.loads(result["response"]["body"])
    assert bundle["meta"]["lastUpdated"] == result["properties"]["cache_refreshed_at"]
    assert bundle["total"] == 9 and len(bundle["entry"]) == 4
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]

    read = envelope(cached_mediator, "/fhir/ActivityDefinition/A1")
    assert json.loads(read["response"]["body"])["name"] == "A1"
    assert read["properties"]["master_data_source"] == "cache"


def test_paging_the_copy_gives_every_item_once(cached_mediator):
    url, seen = f"{cached_mediator.url}/fhir/ActivityDefinition?_count=4", []
    while url:
        bundle = requests.get(url, headers=FHIR, timeout=10).json()
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if url:
            url = url.replace("http://localhost:" + cached_mediator.env["MEDIATOR_PORT"], cached_mediator.url)
    assert len(seen) == len(set(seen)) == bundle["total"]


def test_lists_keep_working_while_openimis_is_down(cached_mediator, clean_sandbox):
    requests.post(
        clean_sandbox.url + "/_sandbox/faults", json={"fail_next": 1000, "fail_status": 503}, timeout=5
    )
    answer = requests.get(cached_mediator.url + "/fhir/Medication?identifier=0004", headers=FHIR, timeout=10)
    assert answer.status_code == 200 and answer.json()["total"] == 1
    assert (
        requests.get(cached_mediator.url + "/fhir/Medication/0004", headers=FHIR, timeout=10).status_code
        == 200
    )
    # _lastUpdated searches are openIMIS's to answer: they fail like any upstream call.
    down = requests.get(
        cached_mediator.url + "/fhir/Medication?_lastUpdated=gt2020-01-01", headers=FHIR, timeout=10
    )
    assert down.status_code == 502


def test_cache_cli_reports_and_requests_a_refresh(cached_mediator):
    env = {**os.environ, **cached_mediator.env}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mediator", "cache", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    assert "Medication: 9" in cli("status").stdout
    before = cached_mediator.log().count("services/items cache refreshed")
    assert cli("refresh").returncode == 0
    wait_until(lambda: cached_mediator.log().count("services/items cache refreshed") > before)
