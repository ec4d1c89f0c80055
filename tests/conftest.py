"""Shared fixtures. Integration fixtures live in tests/support."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediator.settings import Settings, load_settings

FIXTURES = Path(__file__).parent / "fixtures"

pytest_plugins = ["tests.support.openhim_fixtures"]


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
