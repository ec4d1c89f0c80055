"""Installing the default channels: only those core does not have, so that a restart works."""

import json

import pytest
import responses

from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.openhim.registration import install_channels

BASE = "https://openhim.example.org:8080"
URN = "urn:mediator:openimis-fhir-r4"
MEDIATOR = BASE + "/mediators/urn%3Amediator%3Aopenimis-fhir-r4"
DEFAULTS = ["openIMIS claims", "openIMIS claim responses", "openIMIS patient lookup"]
DUPLICATE = "Could not load mediator default channel config: E11000 duplicate key error index: name_1"


@pytest.fixture
def api(settings):
    return OpenHimApi(
        settings.with_overrides(
            {"openhim_api_url": BASE, "openhim_password": "him-secret", "openhim_auth": "basic"}
        )
    )


def core_with(*existing: str) -> None:
    responses.get(MEDIATOR, json={"urn": URN, "defaultChannelConfig": [{"name": n} for n in DEFAULTS]})
    responses.get(BASE + "/channels", json=[{"name": n, "status": "enabled"} for n in existing])


def installs() -> list:
    return [json.loads(c.request.body) for c in responses.calls if c.request.method == "POST"]


@responses.activate
def test_a_first_start_installs_every_default_channel_by_name(api):
    core_with("a channel of the operator's")
    responses.post(MEDIATOR + "/channels", status=201)
    assert install_channels(api, URN) == DEFAULTS
    assert installs() == [DEFAULTS]


@responses.activate
def test_a_restart_installs_nothing_when_core_has_them_all(api):
    core_with(*DEFAULTS)
    assert install_channels(api, URN) == []
    assert installs() == [], "core would answer 500 E11000 for each of them"


@responses.activate
def test_only_the_missing_ones_are_installed_the_others_left_as_they_are(api):
    core_with("openIMIS claims", "openIMIS patient lookup")
    responses.post(MEDIATOR + "/channels", status=201)
    assert install_channels(api, URN) == ["openIMIS claim responses"]
    assert installs() == [["openIMIS claim responses"]]


@responses.activate
def test_a_duplicate_made_meanwhile_counts_as_installed(api):
    """Another instance installed them between our list and our POST."""
    responses.get(MEDIATOR, json={"defaultChannelConfig": [{"name": n} for n in DEFAULTS]})
    responses.get(BASE + "/channels", json=[])
    responses.post(MEDIATOR + "/channels", status=500, body=DUPLICATE)
    responses.get(BASE + "/channels", json=[{"name": n} for n in DEFAULTS])
    assert install_channels(api, URN) == DEFAULTS


@responses.activate
def test_a_channel_still_missing_after_a_failure_fails_the_registration(api):
    core_with()
    responses.post(MEDIATOR + "/channels", status=500, body="Could not load mediator default channel config")
    with pytest.raises(OpenHimError, match=r"answered 500.*missing: openIMIS claims"):
        install_channels(api, URN)


@responses.activate
def test_an_unreadable_channel_list_is_an_openhim_error(api):
    responses.get(MEDIATOR, json={"defaultChannelConfig": [{"name": n} for n in DEFAULTS]})
    responses.get(BASE + "/channels", body="<html>proxy error</html>")
    with pytest.raises(OpenHimError, match="not JSON"):
        install_channels(api, URN)
