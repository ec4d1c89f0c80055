"""Integration fixtures: the real mediator under gunicorn, the sandbox, OpenHIM core."""

from __future__ import annotations

import pytest
import requests

from tests.support.services import free_port, running_mediator, running_sandbox


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox() as service:
        yield service


@pytest.fixture
def clean_sandbox(sandbox):
    requests.post(sandbox.url + "/_sandbox/reset", timeout=5).raise_for_status()
    yield sandbox
    requests.post(sandbox.url + "/_sandbox/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def mediator(sandbox, tmp_path_factory):
    """The mediator in front of a separately started sandbox (so tests can inject faults)."""
    port = free_port()
    env = {
        "MEDIATOR_PORT": str(port),
        "MEDIATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "OPENIMIS_URL": sandbox.url,
        "OPENIMIS_READ_TIMEOUT": "2",
        "MEDIATOR_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "MEDIATOR_MAX_BODY_BYTES": "200000",
        # These tests follow every query to openIMIS; the cache has its own tests.
        "MASTER_DATA_CACHE_ENABLED": "false",
    }
    with running_mediator(env) as service:
        yield service
