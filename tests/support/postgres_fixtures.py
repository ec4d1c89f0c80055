"""pytest fixtures: one real PostgreSQL server per test session, a new database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new, empty database on the session's server (URL with the mediator role's password)."""
    return postgres.database(f"claims_{next(_databases)}")
