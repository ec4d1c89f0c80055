"""Fixtures for the sandbox tests: a fresh app per test and a logged-in client."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE, Api


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig()


@pytest.fixture
def app(config: SandboxConfig) -> Flask:
    return create_sandbox_app(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    resp = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"})
    assert resp.status_code == 200
    return {"Authorization": f"Bearer {resp.json['token']}", "Accept": "application/json"}


@pytest.fixture
def api(client: FlaskClient, headers: dict[str, str]) -> Api:
    return Api(client, headers)
