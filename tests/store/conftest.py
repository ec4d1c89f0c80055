"""The claim store contract runs against every backend: SQLite (a file) and a real PostgreSQL."""

from __future__ import annotations

import pytest

from mediator.store import ClaimStore, SqliteClaimStore
from mediator.store.postgres import PostgresClaimStore


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_store(backend: str, tmp_path, request: pytest.FixtureRequest):
    """Opens stores of the backend on one shared location (a file, a database)."""
    location = tmp_path / "claims.sqlite3" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    opened: list[ClaimStore] = []

    def open_() -> ClaimStore:
        store = SqliteClaimStore(location) if backend == "sqlite" else PostgresClaimStore(location)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> ClaimStore:
    return open_store()
