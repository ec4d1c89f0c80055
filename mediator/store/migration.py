"""Moving an instance's claims from its SQLite store to the PostgreSQL store replicas share.

Run once per instance while it is stopped (`openimis-mediator store migrate`): every record and
every OpenHIM transaction still waiting for its result is copied as it is, held claims included,
so that the replicas deliver them. A record whose key the database already holds is left as the
database has it: running the command again copies nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mediator.store.postgres import PostgresClaimStore
from mediator.store.sqlite import SqliteClaimStore


@dataclass(frozen=True)
class MigrationReport:
    copied: int
    already_there: int
    reports: int


def migrate_sqlite_to_postgres(source: Path, target: PostgresClaimStore, batch: int = 500) -> MigrationReport:
    if not source.is_file():
        raise FileNotFoundError(f"no SQLite claim store at {source}")
    sqlite = SqliteClaimStore(source)
    try:
        copied = seen = 0
        for records in sqlite.every_record(batch):
            copied += target.import_records(records)
            seen += len(records)
        pending = sqlite.pending_reports()
        for claim_id, transaction_id in pending:
            target.await_report(claim_id, transaction_id)
    finally:
        sqlite.close()
    return MigrationReport(copied, seen - copied, len(pending))
