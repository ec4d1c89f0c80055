"""Shared fixtures. Integration fixtures live in tests/support."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mediator.settings import Settings, load_settings

FIXTURES = Path(__file__).parent / "fixtures"
#: Answers of a real openIMIS 24.04 backend (README inside): where they and a belief differ, they win.
REAL_OPENIMIS = FIXTURES / "openimis" / "real-24.04"


def real_capture(name: str) -> Any:
    """A fresh copy of one real openIMIS answer, e.g. `real_capture("Patient_search_identifier_070707070")`."""
    return json.loads((REAL_OPENIMIS / f"{name}.json").read_text(encoding="utf-8"))


pytest_plugins = ["tests.support.openhim_fixtures", "tests.support.postgres_fixtures"]


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings as an operator would set them for a remote openIMIS."""
    return load_settings(
        {
            "MEDIATOR_STATE_DIR": str(tmp_path / "state"),
            "OPENIMIS_URL": "https://imis.example.org",
            "OPENIMIS_USERNAME": "Admin",
            "OPENIMIS_PASSWORD": "s3cret-pass",
            "MEDIATOR_PUBLIC_URL": "https://hie.example.org/openimis",
            "OPENIMIS_LOGIN_RETRY_AFTER": "60",
        }
    )
