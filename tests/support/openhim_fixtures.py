"""Pytest fixtures for a real OpenHIM core 4.0.5 (load with
``pytest_plugins = ["tests.support.openhim_fixtures"]``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.openhim_core import OpenHimCore, running_openhim_core


@pytest.fixture(scope="session")
def openhim_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenHimCore]:
    """One core per test session (start-up takes seconds); its config and logs stay in a
    pytest temp dir for post-mortems."""
    with running_openhim_core(tmp_path_factory.mktemp("openhim-core")) as core:
        yield core
