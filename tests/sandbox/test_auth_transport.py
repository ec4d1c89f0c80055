"""Login, lockout, token checks, media types, trailing slashes."""

from __future__ import annotations

import base64
import time

import pytest

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE

GOOD = {"username": "Admin", "password": "admin123"}
BAD = {"username": "Admin", "password": "wrong"}


def test_login_returns_token_and_exp(client):
    resp = client.post(BASE + "login/", json=GOOD)
    assert resp.status_code == 200
    assert resp.json["token"].count(".") == 2
    assert resp.json["exp"] > time.time() + 86000


def test_login_missing_field_is_400(client):
    assert client.post(BASE + "login/", json={"username": "Admin"}).status_code == 400


def test_login_bad_credentials(client):
    resp = client.post(BASE + "login/", json=BAD)
    assert resp.status_code == 401
    assert resp.json == "INCORRECT_CREDENTIALS"


def test_account_locked_after_five_failures(client, app):
    for _ in range(5):
        assert client.post(BASE + "login/", json=BAD).status_code == 401
    assert client.post(BASE + "login/", json=GOOD).status_code == 401  # locked
    stats = client.get("/_sandbox/stats").json
    assert stats["logins"]["locked"] is True
    app.extensions["openimis_sandbox"].store.locked_until = time.time() - 1  # 5 min later
    assert client.post(BASE + "login/", json=GOOD).status_code == 200


def test_four_failures_do_not_lock(client):
    for _ in range(4):
        client.post(BASE + "login/", json=BAD)
    assert client.post(BASE + "login/", json=GOOD).status_code == 200


def test_token_required(client):
    resp = client.get(BASE + "Medication/")
    assert resp.status_code == 401
    assert "detail" in resp.json


@pytest.mark.parametrize("token", ["garbage", "a.b.c"])
def test_invalid_token(client, token):
    resp = client.get(BASE + "Medication/", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_tampered_token(client, headers):
    token = headers["Authorization"].split()[1]
    resp = client.get(BASE + "Medication/", headers={"Authorization": f"Bearer {token}x"})
    assert resp.status_code == 401


def test_expired_token():
    client = create_sandbox_app(SandboxConfig(token_lifetime_s=-10)).test_client()
    token = client.post(BASE + "login/", json=GOOD).json["token"]
    resp = client.get(BASE + "Medication/", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401
    assert resp.json["detail"] == "Signature has expired."


def test_basic_auth(client):
    good = base64.b64encode(b"Admin:admin123").decode()
    bad = base64.b64encode(b"Admin:nope").decode()
    assert client.get(BASE + "Medication/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    assert client.get(BASE + "Medication/", headers={"Authorization": f"Basic {bad}"}).status_code == 401


def test_fhir_json_content_type_is_415(client, headers):
    resp = client.post(BASE + "Claim/", headers=headers, data="{}", content_type="application/fhir+json")
    assert resp.status_code == 415
    assert resp.json["resourceType"] == "OperationOutcome"


def test_fhir_json_accept_alone_is_406(client, headers):
    h = {**headers, "Accept": "application/fhir+json"}
    assert client.get(BASE + "Medication/", headers=h).status_code == 406
    h["Accept"] = "application/fhir+json, application/json;q=0.9"
    assert client.get(BASE + "Medication/", headers=h).status_code == 200
    h["Accept"] = "*/*"
    assert client.get(BASE + "Medication/", headers=h).status_code == 200


def test_missing_trailing_slash(client, headers):
    resp = client.get(BASE + "Medication?_count=2", headers=headers)
    assert resp.status_code == 301
    assert resp.headers["Location"].endswith("/api/api_fhir_r4/Medication/?_count=2")
    assert client.post(BASE + "Claim", headers=headers, json={}).status_code == 404


def test_unknown_route_is_404(client, headers):
    assert client.get(BASE + "Nonsense/", headers=headers).status_code == 404
