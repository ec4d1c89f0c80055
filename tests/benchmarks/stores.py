"""The claim store families of the benchmark (`run.py --stores`): the claim path on SQLite, on
PostgreSQL, and two replicas sharing one PostgreSQL, measured beside the bare hop in one run.

The PostgreSQL server is the tests' own (`tests.support.postgres.running_postgres`), with one
difference: the tests run it with `fsync=off` (they kill processes, not the machine), which
would make every commit free of its disk flush; here it runs with `fsync=on`, as in production,
so that its commits cost what they cost the SQLite store (whose held claims are fsynced).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.benchmarks.procs import Server
from tests.support import postgres as pg_support
from tests.support.postgres import PostgresServer

#: The configurations `--stores` adds (claim family only): one mediator on PostgreSQL, and two
#: replicas of it on one database, each client's requests alternating between them.
PG, PAIR = "mediator-pg", "mediator-pg-x2"
SQLITE, BARE = "mediator", "baseline"


@contextlib.contextmanager
def durable_postgres() -> Iterator[PostgresServer]:
    """`running_postgres()` with fsync on: the tests' server otherwise, started and removed alike."""
    replaced = []

    def popen(argv: list[str], *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        if "fsync=off" in argv:
            argv = [("fsync=on" if a == "fsync=off" else a) for a in argv]
            replaced.append(True)
        return subprocess.Popen(argv, *args, **kwargs)

    shim = types.SimpleNamespace(**{**vars(subprocess), "Popen": popen})
    original = pg_support.subprocess
    with contextlib.ExitStack() as stack:
        pg_support.subprocess = shim  # type: ignore[assignment]
        try:
            server = stack.enter_context(pg_support.running_postgres())
        finally:
            pg_support.subprocess = original
        if not replaced or server_settings(server)["fsync"] != "on":
            raise RuntimeError("the benchmark's PostgreSQL did not start with fsync=on")
        yield server


def server_settings(server: PostgresServer) -> dict[str, str]:
    """What the report says of the server: version and the settings commits depend on."""
    with psycopg.connect(server.admin_url, autocommit=True) as db:
        out = {
            name: str(db.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "commit_delay")
        }
    out["filesystem"] = filesystem(server.data_dir)
    return out


def filesystem(path: Path) -> str:
    """`<type> (<device>)` of the mount holding `path`, from /proc/mounts."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    return f"{best[1]} ({best[2]})"


def as_server(server: PostgresServer) -> Server:
    """The PostgreSQL server as a benchmark `Server`, so that its CPU is counted like the upstream's."""
    return Server(
        "postgres",
        f"http://127.0.0.1:{server.port}",
        server.process,
        server.data_dir.parent / "server.log",
    )


def database_for(server: PostgresServer, label: str) -> str:
    """A fresh database for one mediator (or one pair of replicas); its URL."""
    return server.database("bench_" + re.sub(r"\W", "_", label).lower())


# --- the report -------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _per_round(raw: dict[str, list[dict[str, Any]]], mine: str, other: str) -> list[float]:
    return [
        round(x["rps"] / y["rps"], 3)
        for x, y in zip(raw.get(mine, []), raw.get(other, []), strict=False)
        if x["rps"] and y["rps"]
    ]


def comparison(throughput: dict[str, Any]) -> dict[str, Any] | None:
    """PostgreSQL/SQLite, PostgreSQL/bare hop and two replicas/one, per number of clients."""
    claim, raw = throughput["summary"].get("claim", {}), throughput["raw"].get("claim", {})
    out: dict[str, Any] = {}
    for c, cell in claim.items():
        if PG not in cell:
            continue
        by_round = raw.get(c, {})
        pg = cell[PG]
        out[c] = {
            "pg_to_sqlite": _ratio(pg["rps"], cell.get(SQLITE, {}).get("rps")),
            "pg_to_sqlite_per_round": _per_round(by_round, PG, SQLITE),
            "pg_to_bare": pg.get("ratio_to_bare"),
            "sqlite_to_bare": cell.get(SQLITE, {}).get("ratio_to_bare"),
            "pair_to_one": _ratio(cell.get(PAIR, {}).get("rps"), pg["rps"]),
            "pair_to_one_per_round": _per_round(by_round, PAIR, PG),
            "pair_to_bare": cell.get(PAIR, {}).get("ratio_to_bare"),
        }
    return out or None


def _postgres_cpu(throughput: dict[str, Any], c: str, name: str) -> float | None:
    results = throughput["raw"].get("claim", {}).get(c, {}).get(name, [])
    values = [r["other_cpu_ms_per_req"].get("postgres") for r in results if r["rps"]]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def tables(report: dict[str, Any]) -> list[str]:
    throughput = report["throughput"]
    stores = throughput.get("stores")
    if not stores:
        return []
    pg = report.get("postgres", {})
    f = _fmt
    lines = [
        "#### Claim store: SQLite, PostgreSQL, two replicas on one PostgreSQL (`POST /fhir/Claim`)",
        "",
        f"PostgreSQL {pg.get('server_version', '?')} started by the benchmark on loopback, `fsync="
        f"{pg.get('fsync', '?')}`, `synchronous_commit={pg.get('synchronous_commit', '?')}` (server "
        f"default; the store may ask for less per transaction), `wal_sync_method="
        f"{pg.get('wal_sync_method', '?')}`, data directory on {pg.get('filesystem', '?')}; one fresh "
        f"database per mediator server (per pair for `{PAIR}`). `{PAIR}`: two mediator replicas "
        "on one database, every client alternating its requests between them over a keep-alive "
        "connection to each. CPU is the mediator's (both replicas for the pair); `PostgreSQL CPU` "
        "is the database server's per claim.",
        "",
        "| clients | configuration | req/s | ratio to bare | ratio to SQLite | p50 ms | p99 ms | "
        "CPU ms/claim | PostgreSQL CPU ms/claim | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    claim = throughput["summary"]["claim"]
    for c in ("16", "1"):
        cell = claim.get(c, {})
        for name in (BARE, SQLITE, PG, PAIR):
            v = cell.get(name)
            if not v:
                continue
            lines.append(
                f"| {c} | {name} | {f(v['rps'], 0)} | {f(v['ratio_to_bare'])} | "
                f"{f(_ratio(v['rps'], cell.get(SQLITE, {}).get('rps')))} | {f(v['p50_ms'])} | "
                f"{f(v['p99_ms'])} | {f(v['cpu_ms_per_req'])} | {f(_postgres_cpu(throughput, c, name))} | "
                f"{v['failed']} |"
            )
    lines += [
        "",
        "| ratio (req/s, same run) | 16 clients | per round | 1 client | per round | goal |",
        "|---|---|---|---|---|---|",
    ]
    s16, s1 = stores.get("16", {}), stores.get("1", {})

    def row(what: str, key: str, goal: str) -> str:
        rounds = key + "_per_round"
        return (
            f"| {what} | {f(s16.get(key))} | {_range(s16.get(rounds))} | {f(s1.get(key))} | "
            f"{_range(s1.get(rounds))} | {goal} |"
        )

    met = s16.get("pg_to_sqlite")
    lines += [
        row(
            "PostgreSQL / SQLite",
            "pg_to_sqlite",
            ">= 0.8 at 16 clients: "
            + ("not measured" if met is None else "met" if met >= 0.8 else "**not met**"),
        ),
        row("PostgreSQL / bare hop", "pg_to_bare", ""),
        row("SQLite / bare hop", "sqlite_to_bare", ""),
        row(
            "two replicas / one replica (PostgreSQL)",
            "pair_to_one",
            "none: on 2 CPUs this is the cost of a second replica, not its scaling",
        ),
        "",
        f"On this {report['machine']['nproc']}-CPU machine the two replicas share the same CPUs "
        "with each other, the database, the upstream and the load generator: `two replicas / one "
        "replica` measures what running a second replica costs (two more workers, a second agent "
        "polling the store, more database connections), not how replicas scale on separate hosts.",
        "",
    ]
    return lines


def _range(values: list[float] | None) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else ""


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
