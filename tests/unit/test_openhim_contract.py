"""OpenHIM API auth schemes, the registration document and the console config mapping."""

import hashlib
import json
from datetime import datetime

import pytest
import responses

from mediator import __version__
from mediator.openhim.api import OpenHimApi
from mediator.openhim.live_config import apply_console_config, console_overrides
from mediator.openhim.registration import MEDIATOR_JSON, registration_document
from mediator.settings import SettingsError


@pytest.fixture
def openhim_settings(settings):
    return settings.with_overrides(
        {
            "openhim_api_url": "https://openhim.example.org:8080",
            "openhim_username": "root@openhim.org",
            "openhim_password": "him-secret",
            "mediator_route_host": "mediator.internal",
            "mediator_route_port": "9000",
        }
    )


def sha512(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


@responses.activate
def test_token_scheme_headers_follow_core(openhim_settings):
    api = OpenHimApi(openhim_settings.with_overrides({"openhim_auth": "token"}))
    responses.get(
        "https://openhim.example.org:8080/authenticate/root%40openhim.org",
        json={"salt": "user-salt", "ts": "x"},
    )
    responses.get("https://openhim.example.org:8080/mediators", json=[])
    assert api.request("GET", "/mediators").status_code == 200
    sent = responses.calls[-1].request.headers
    ts = sent["auth-ts"]
    assert datetime.fromisoformat(ts).tzinfo is not None, "auth-ts must carry a zone"
    expected = sha512(sha512("user-salt" + "him-secret") + sent["auth-salt"] + ts)
    assert sent["auth-token"] == expected
    assert sent["auth-username"] == "root@openhim.org"
    assert "Authorization" not in sent


@responses.activate
def test_auto_tries_basic_first_then_token_and_remembers(openhim_settings):
    api = OpenHimApi(openhim_settings)
    base = "https://openhim.example.org:8080"
    responses.get(base + "/mediators", status=401)
    responses.get(base + "/authenticate/root%40openhim.org", json={"salt": "s", "ts": "t"})
    responses.get(base + "/mediators", json=[])
    assert api.request("GET", "/mediators").status_code == 200
    assert api.scheme == "token"
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")
    api.request("GET", "/mediators")
    assert "Authorization" not in responses.calls[-1].request.headers


@responses.activate
def test_basic_only_never_calls_authenticate(openhim_settings):
    api = OpenHimApi(openhim_settings.with_overrides({"openhim_auth": "basic"}))
    responses.get("https://openhim.example.org:8080/mediators", status=401)
    assert api.request("GET", "/mediators").status_code == 401
    assert len(responses.calls) == 1


def test_registration_document_is_complete(openhim_settings):
    doc = registration_document(openhim_settings)
    assert doc["version"] == __version__
    assert doc["urn"] == openhim_settings.mediator_urn
    assert {(e["host"], e["port"]) for e in doc["endpoints"]} == {("mediator.internal", "9000")}
    families = {c["name"] for c in doc["defaultChannelConfig"]}
    assert families == {
        "openIMIS medical services and items",
        "openIMIS claims",
        "openIMIS claim responses",
        "openIMIS coverage eligibility",
        "openIMIS patient lookup",
    }
    for channel in doc["defaultChannelConfig"]:
        assert [r["primary"] for r in channel["routes"]] == [True]
        assert {(r["host"], r["port"]) for r in channel["routes"]} == {("mediator.internal", 9000)}
        # core must not give up before the mediator does (a claim could be accepted unseen)
        assert channel["timeout"] > 1000 * openhim_settings.claim_lease_s
    assert "openimisPassword" not in doc["config"]
    assert "him-secret" not in json.dumps(doc) and "s3cret-pass" not in json.dumps(doc)


def test_every_console_setting_has_a_config_def_and_back(openhim_settings):
    defs = json.loads(MEDIATOR_JSON.read_text())["configDefs"]
    assert {d["param"] for d in defs} == set(openhim_settings.console_params())
    types = {d["param"]: d["type"] for d in defs}
    assert types["openimisPassword"] == "password"
    assert types["openimisVerifyTls"] == "bool"
    for d in defs:
        if d["type"] == "option":
            assert d["values"]


def test_console_config_is_validated_and_empty_password_kept(openhim_settings):
    applied = apply_console_config(
        openhim_settings, {"openimisReadTimeout": 12, "openimisPassword": "", "unknownParam": 1}
    )
    assert applied.openimis_read_timeout == 12.0
    assert applied.openimis_password.reveal() == "s3cret-pass"
    assert console_overrides(openhim_settings, {"logLevel": None}) == {}
    with pytest.raises(SettingsError, match="OPENIMIS_URL"):
        apply_console_config(openhim_settings, {"openimisUrl": "not a url"})
