"""Benchmark of the mediator against a bare Python hop, measured in the same run.

    .venv/bin/python tests/benchmarks/run.py [--smoke] [--scale] [--stores] [--duration S] [--rounds N]
                                             [--instances N] [--out DIR] [--update-benchmarks-md]

Starts on free loopback ports, each under gunicorn (gthread, 2 workers x 8 threads, as in
production): a minimal openIMIS stand-in answering fixed bodies (`upstream.py`), a bare
pass-through (`passthrough.py`: Flask + pooled requests.Session), the same pass-through with its
workers bound to CPUs as the mediator binds its own (`bound_workers.py`), the mediator (`python -m
mediator`, INFO logs to a file) and, when the mediator knows MASTER_DATA_CACHE_ENABLED, a second
mediator with the master-data cache on. It drives each with the same closed-loop load
(`loadgen.py`), interleaving the configurations round by round, for four transaction families
at 1 and 16 concurrent clients, and writes JSON (raw figures) and Markdown into `--out`. Each
configuration but the upstream runs as `--instances` servers (default 2), measured in turn round
by round: a server's req/s is off by up to 5 % for its whole life, the same for all its rounds.

- `--smoke`: a few seconds; asserts only that every configuration answers every family correctly.
- `--stores`: also the claim family on the PostgreSQL store (`stores.py`): one mediator per fresh
  database of a PostgreSQL server the benchmark starts, and two replicas sharing one database
  with the load alternating between them; reported as PostgreSQL/SQLite, PostgreSQL/bare hop and
  two replicas/one (`--stores --families claim` measures the claim path alone).
- `--scale`: memory after 10,000 claims, and the claim path with 0 / 10,000 / 100,000 finished
  records in the durable store (instead of the throughput matrix; `--all` runs both).

Figures on a shared 2-core machine drift by tens of percent between runs: compare configurations
of the same run (the ratios), not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `tests.benchmarks` and `mediator` importable
    sys.path.insert(0, str(ROOT))

from tests.benchmarks import fixtures as fixtures_mod  # noqa: E402
from tests.benchmarks import stores as stores_mod  # noqa: E402
from tests.benchmarks.loadgen import Plan, run_load  # noqa: E402
from tests.benchmarks.procs import (  # noqa: E402
    CPU_BINDING,
    THREADS,
    WORKERS,
    Server,
    ServerGroup,
    gunicorn_argv,
    spawn,
    wait_ready,
)
from tests.support.services import free_port  # noqa: E402

UPSTREAM_BASE = "/api/api_fhir_r4/"
FAMILIES = ("search", "claim", "claim-openhim", "eligibility")
FAMILY_TITLES = {
    "search": "Medication search (`GET /fhir/Medication?_count=10`)",
    "claim": "Claim submit, positive (`POST /fhir/Claim`)",
    "claim-openhim": "Claim submit with `X-OpenHIM-TransactionID` (envelope)",
    "eligibility": "Eligibility (`POST /fhir/CoverageEligibilityRequest`, insuree 070707070)",
}
CONCURRENCIES = (1, 16)
CACHE_SETTING = "MASTER_DATA_CACHE_ENABLED"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- BEGIN FIGURES (written by tests/benchmarks/run.py) -->", "<!-- END FIGURES -->"


@dataclass
class Config:
    """One server under test and the families it is measured on."""

    name: str
    server: Server | ServerGroup
    kind: str  # "upstream" (direct), "hop" (baseline), "mediator"
    families: tuple[str, ...]
    #: Further instances of the same configuration, measured in turn round by round: two servers
    #: of the same code differ by up to 5 % in req/s for their whole life (BENCHMARKS.md).
    replicas: list[Server | ServerGroup] = field(default_factory=list)

    def instance(self, round_index: int) -> Config:
        """This configuration as measured in round `round_index`."""
        servers = [self.server, *self.replicas]
        return replace(self, server=servers[round_index % len(servers)], replicas=[])

    def each_instance(self) -> list[Config]:
        """Every server of this configuration, each under its own name (for checks and warm-up)."""
        return [
            replace(self.instance(i), name=instance_name(self.name, i)) for i in range(1 + len(self.replicas))
        ]


def instance_name(name: str, copy: int) -> str:
    """The name of a configuration's `copy`-th server (its logs are named after it)."""
    return name if copy == 0 else f"{name}#{copy + 1}"


def plan_for(family: str, config: Config, fx: dict[str, Any]) -> Plan:
    host, port = "127.0.0.1", config.server.port
    direct = config.kind == "upstream"
    # replicas measured together: the load alternates between them
    also = {"also_ports": tuple(m.port for m in config.server.members[1:])}
    claim_bodies = tuple(text.encode() for text in fx["claim_requests"])
    placeholder = fixtures_mod.CODE_PLACEHOLDER.encode()
    if family == "search":
        path = f"{UPSTREAM_BASE}Medication/?_count=10" if direct else "/fhir/Medication?_count=10"
        return Plan(host, port, "GET", path, expect_status=200, expect_type="Bundle", **also)
    if family in ("claim", "claim-openhim"):
        return Plan(
            host,
            port,
            "POST",
            f"{UPSTREAM_BASE}Claim/" if direct else "/fhir/Claim",
            bodies=claim_bodies,
            placeholder=placeholder,
            openhim=family == "claim-openhim" and config.kind == "mediator",
            content_type="application/json" if direct else "application/fhir+json",
            expect_status=201,
            expect_type="ClaimResponse",
            **also,
        )
    if family == "eligibility":
        return Plan(
            host,
            port,
            "POST",
            f"{UPSTREAM_BASE}CoverageEligibilityRequest/" if direct else "/fhir/CoverageEligibilityRequest",
            body=fx["eligibility_request"].encode(),
            content_type="application/json" if direct else "application/fhir+json",
            # openIMIS answers 201 (passed on by the bare hop); the mediator answers 200
            expect_status=200 if config.kind == "mediator" else fx["eligibility_status"],
            expect_type="CoverageEligibilityResponse",
            **also,
        )
    raise ValueError(family)


# --- servers ----------------------------------------------------------------------------------


def start_upstream(fixture_file: Path, log_dir: Path) -> Server:
    port = free_port()
    server = spawn(
        "upstream",
        # openIMIS sits behind nginx (keepalive_timeout 75 s): pooled connections are not closed
        # under the hops between two measurements
        gunicorn_argv("tests.benchmarks.upstream:app", port, keepalive=75),
        {"BENCH_FIXTURES": str(fixture_file)},
        port,
        log_dir,
    )
    wait_ready(server, f"{UPSTREAM_BASE}Medication/", 30)
    return server


#: The bare hop as it is, and with its workers bound to CPUs the way the mediator binds its own.
BASELINES = {"baseline": None, "baseline-bound": "tests/benchmarks/bound_workers.py"}


def spawn_baseline(upstream: Server, log_dir: Path, copy: int = 0, name: str = "baseline") -> Server:
    port = free_port()
    return spawn(
        instance_name(name, copy),
        gunicorn_argv("tests.benchmarks.passthrough:app", port, config=BASELINES[name]),
        {"BENCH_UPSTREAM_FHIR": upstream.url + UPSTREAM_BASE},
        port,
        log_dir,
    )


def mediator_env(upstream: Server, port: int, state_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    return {
        "MEDIATOR_HOST": "127.0.0.1",
        "MEDIATOR_PORT": str(port),
        "MEDIATOR_WORKERS": str(WORKERS),
        "MEDIATOR_THREADS": str(THREADS),
        "MEDIATOR_CPU_BINDING": CPU_BINDING,  # never the caller's
        "MEDIATOR_STATE_DIR": str(state_dir),
        "OPENIMIS_URL": upstream.url,
        "LOG_LEVEL": "INFO",  # one summary line per transaction is part of the cost
        **extra,
    }


def spawn_mediator(
    name: str, upstream: Server, state_dir: Path, log_dir: Path, extra: dict[str, str]
) -> Server:
    port = free_port()
    env = mediator_env(upstream, port, state_dir, extra)
    return spawn(name, [sys.executable, "-m", "mediator"], env, port, log_dir)


def mediator_settings(extra: dict[str, str]) -> dict[str, str] | None:
    """`python -m mediator check-config` with `extra`: the settings in force, None if refused."""
    env = {**os.environ, "OPENIMIS_URL": "http://127.0.0.1:9", **extra}
    env.pop("OPENHIM_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "mediator", "check-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


# --- measuring --------------------------------------------------------------------------------


def measure(
    plan: Plan,
    target: Server | ServerGroup,
    others: list[Server],
    concurrency: int,
    duration: float,
    max_requests: int,
    **kw: Any,
) -> dict[str, Any]:
    before = {s.name: s.cpu_seconds() for s in others}
    roles_before = target.cpu_by_role()
    result = run_load(plan, concurrency, duration, max_requests, **kw)
    roles_after = target.cpu_by_role()
    for server in [*target.members, *others]:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited during the measurement ({server.process.returncode}; "
                f"killed from outside?):\n{server.log_tail()}"
            )
    after = {s.name: s.cpu_seconds() for s in others}
    n = max(result["requests"], 1)
    by_role = {r: (roles_after[r] - roles_before.get(r, 0.0)) * 1000 / n for r in roles_after}
    result["cpu_ms_per_req"] = sum(by_role.values())
    result["cpu_ms_per_req_by_role"] = by_role
    result["other_cpu_ms_per_req"] = {s.name: (after[s.name] - before[s.name]) * 1000 / n for s in others}
    memory = target.memory()
    result["memory"] = memory
    result["peak_rss_per_worker_mib"] = max((w["hwm_mib"] for w in memory["workers"]), default=None)
    return result


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def throughput(
    configs: list[Config],
    upstream: Server,
    fx: dict[str, Any],
    rounds: int,
    duration: float,
    max_requests: int,
    watched: list[Server] | None = None,
) -> dict[str, Any]:
    """Rounds of (family x clients x configuration), configurations rotated within a round;
    the CPU of the upstream and of the `watched` servers (PostgreSQL) is counted per request."""
    raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for r in range(rounds):
        for family in FAMILIES:
            for concurrency in CONCURRENCIES:
                todo = [c for c in configs if family in c.families]
                shift = r % len(todo)
                for config in (c.instance(r) for c in todo[shift:] + todo[:shift]):
                    result = measure(
                        plan_for(family, config, fx),
                        config.server,
                        [*([upstream] if config.server is not upstream else []), *(watched or [])],
                        concurrency,
                        duration,
                        max_requests,
                    )
                    result["round"] = r
                    result["server_pid"] = config.server.process.pid
                    raw.setdefault(family, {}).setdefault(str(concurrency), {}).setdefault(
                        config.name, []
                    ).append(result)
                    _progress(
                        f"round {r + 1}/{rounds} {family:13s} c={concurrency:2d} {config.name:15s} "
                        f"{result['rps']:7.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                        f"cpu {result['cpu_ms_per_req']:5.2f} ms/req  failed {result['failed']}"
                    )
    return summarise(raw)


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for family, by_c in raw.items():
        for c, by_config in by_c.items():
            cell: dict[str, Any] = {}
            for name, all_results in by_config.items():
                # A round in which a client waited out the window on an unanswered request (a
                # gunicorn thread parked on a connection, as BENCHMARKS.md tells) measured the
                # wait: with failures and under half the req/s of the cell's best round, it is out.
                best = max((r["rps"] for r in all_results), default=0.0)
                results = [r for r in all_results if r["rps"] and not (r["failed"] and r["rps"] < best / 2)]
                cell[name] = {
                    key: _median([r[key] for r in results])
                    for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "loadgen_cpu_ms_per_req")
                }
                cell[name]["upstream_cpu_ms_per_req"] = _median(
                    [r["other_cpu_ms_per_req"].get("upstream") for r in results]
                )
                cell[name]["stalled_rounds"] = len(all_results) - len(results)
                cell[name]["peak_rss_per_worker_mib"] = max(
                    (r["peak_rss_per_worker_mib"] or 0) for r in all_results
                )
                cell[name]["requests"] = sum(r["requests"] for r in all_results)
                cell[name]["failed"] = sum(r["failed"] for r in all_results)
                cell[name]["errors"] = [e for r in all_results for e in r["errors"]][:5]
            base = cell.get("baseline", {}).get("rps")
            bound = cell.get("baseline-bound", {}).get("rps")
            for name in cell:
                rps = cell[name]["rps"]
                cell[name]["ratio_to_bare"] = rps / base if base and rps else None
                cell[name]["ratio_to_bound_bare"] = rps / bound if bound and rps else None
                # the same ratio per round (configurations of one round ran back to back)
                per_round = []
                for mine, bare in zip(by_config[name], by_config.get("baseline", []), strict=False):
                    if bare["rps"] and mine["rps"]:
                        per_round.append(round(mine["rps"] / bare["rps"], 3))
                cell[name]["ratio_per_round"] = per_round
            summary.setdefault(family, {})[c] = cell
    # p50 added over calling the upstream directly, at 1 client (claim-openhim: the claim's)
    for by_c in summary.values():
        cell = by_c.get("1", {})
        direct = cell.get("upstream") or summary.get("claim", {}).get("1", {}).get("upstream")
        for values in cell.values():
            if direct and direct["p50_ms"] is not None and values["p50_ms"] is not None:
                values["added_p50_ms"] = values["p50_ms"] - direct["p50_ms"]
    return {"summary": summary, "raw": raw}


def _progress(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


# --- the durable store at scale ---------------------------------------------------------------


def prefill_store(db_path: Path, count: int, fx: dict[str, Any]) -> float:
    """`count` finished (state done) claims in the mediator's SQLite store; seconds it took."""
    from mediator.store.sqlite import SqliteClaimStore

    started = time.monotonic()
    SqliteClaimStore(db_path).close()  # the mediator's own schema
    if not count:
        return 0.0
    claim = json.loads(fx["claim_request"])
    payload = json.dumps(
        {"claim": claim, "patient_chfid": fixtures_mod.INSUREE, "item_refs": []}, separators=(",", ":")
    )
    response = fx["claim_response"]
    placeholder, template = fixtures_mod.CODE_PLACEHOLDER, fx["claim_template_code"]
    now = time.time()
    month = 30 * 86400

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(count):
            code = f"PREFILL-{i:07d}"
            at = now - month * (count - i) / count
            yield (
                str(uuid.uuid4()),
                code,
                "HF0001",
                uuid.uuid4().hex * 2,
                "done",
                payload.replace(placeholder, code),
                at,
                at,
                1,
                at + 300,
                0,
                None,
                str(uuid.uuid4()),
                "positive",
                201,
                response.replace(template, code),
                None,
                None,
            )

    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO claims (id, claim_code, facility, content_hash, state, payload, created_at, updated_at,"
        " attempts, next_attempt_at, lease_until, lease_owner, openimis_id, outcome, response_status,"
        " response_body, last_error, openhim_tx_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.monotonic() - started


def scale(
    upstream: Server, fx: dict[str, Any], work: Path, log_dir: Path, duration: float, stack: ExitStack
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cfg = Config("mediator", None, "mediator", ("claim",))  # type: ignore[arg-type]

    # 1. RSS per worker while 10,000 claims go through one mediator
    state = work / "state-rss"
    server = spawn_mediator("mediator-rss", upstream, state, log_dir, {})
    stack.callback(server.stop)
    wait_ready(server, "/health", 60)
    cfg.server = server
    plan = plan_for("claim", cfg, fx)
    samples = []
    sent = 0
    for chunk in (500, 1500, 2000, 2000, 2000, 2000):
        result = run_load(plan, 16, 120, chunk)
        sent += result["requests"]
        memory = server.memory()
        samples.append(
            {
                "claims": sent,
                "failed": result["failed"],
                "rps": result["rps"],
                "worker_rss_mib": [round(w["rss_mib"], 1) for w in memory["workers"]],
                "worker_hwm_mib": [round(w["hwm_mib"], 1) for w in memory["workers"]],
                "agent_rss_mib": round(memory.get("agent", {}).get("rss_mib", 0), 1),
            }
        )
        _progress(f"scale/rss: {sent} claims, worker RSS {samples[-1]['worker_rss_mib']} MiB")
    server.stop()
    out["rss_after_claims"] = samples
    out["store_bytes_after_rss_run"] = sum(p.stat().st_size for p in state.glob("claims.sqlite3*"))

    # 2. the claim path with 0 / 10,000 / 100,000 finished records in the store
    sizes = (0, 10_000, 100_000)
    servers: dict[int, Server] = {}
    out["prefill_s"] = {}
    for size in sizes:
        state = work / f"state-{size}"
        state.mkdir(parents=True)
        out["prefill_s"][str(size)] = round(prefill_store(state / "claims.sqlite3", size, fx), 1)
        _progress(f"scale/store: prefilled {size} records in {out['prefill_s'][str(size)]} s")
        servers[size] = spawn_mediator(f"mediator-store-{size}", upstream, state, log_dir, {})
        stack.callback(servers[size].stop)
    for server in servers.values():
        wait_ready(server, "/health", 60)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in range(2):
        for size in sizes if r % 2 == 0 else tuple(reversed(sizes)):
            cfg.server = servers[size]
            plan = plan_for("claim", cfg, fx)
            if r == 0:  # warm up: login, pools, and each worker's memory of validated elements
                run_load(plan, 4, 1.0, 200, check_all=True)
                run_load(plan, 16, 3.0, 1500)
            for concurrency in CONCURRENCIES:
                result = measure(plan, servers[size], [upstream], concurrency, duration, 100_000)
                raw.setdefault(str(size), {}).setdefault(str(concurrency), []).append(result)
                _progress(
                    f"scale/store: {size:6d} records c={concurrency:2d} {result['rps']:6.0f} req/s "
                    f"p50 {result['p50_ms']:.2f} ms cpu {result['cpu_ms_per_req']:.2f} ms/req"
                )
    store: dict[str, Any] = {}
    for size, by_c in raw.items():
        for c, results in by_c.items():
            store.setdefault(size, {})[c] = {
                key: _median([x[key] for x in results])
                for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")
            } | {"failed": sum(x["failed"] for x in results)}
    for size in store:
        for c in store[size]:
            base = store["0"][c]["rps"]
            store[size][c]["ratio_to_empty_store"] = store[size][c]["rps"] / base if base else None
    out["claim_path_by_store_size"] = store
    out["claim_path_raw"] = raw
    return out


# --- smoke ------------------------------------------------------------------------------------


def smoke_check(configs: list[Config], fx: dict[str, Any]) -> dict[str, Any]:
    """Every configuration answers every family it serves correctly (all bodies checked)."""
    results: dict[str, Any] = {}
    problems = []
    for family in FAMILIES:
        for config in configs:
            if family not in config.families:
                continue
            result = run_load(plan_for(family, config, fx), 2, 0.3, 20, check_all=True, processes=0)
            results.setdefault(family, {})[config.name] = {
                k: result[k] for k in ("requests", "ok", "failed", "errors", "rps")
            }
            if result["failed"] or not result["ok"]:
                problems.append(f"{config.name} {family}: {result['ok']} ok, errors {result['errors']}")
    if problems:
        raise AssertionError("benchmark smoke: wrong answers:\n" + "\n".join(problems))
    return results


# --- the run ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with suppress(OSError):
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("--no-optional-locks", "status", "--porcelain", "--untracked-files=no"))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "commit": commit + ("+uncommitted changes" if dirty else ""),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run(
    *,
    smoke: bool = False,
    do_throughput: bool = True,
    do_scale: bool = False,
    duration: float = 2.0,
    rounds: int = 4,
    instances: int = 2,
    max_requests: int = 50_000,
    out: Path | None = None,
    update_benchmarks_md: bool = False,
    command: str = "",
    stores: bool = False,
) -> dict[str, Any]:
    """Start everything, measure, stop everything; returns the results (also written to `out`)."""
    from mediator.redaction import masked_url
    from mediator.serving import binds_workers, usable_cpus

    started = time.monotonic()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "mode": "smoke"
        if smoke
        else "+".join(m for m, on in (("throughput", do_throughput), ("scale", do_scale)) if on),
        "machine": machine(),
        "settings": {
            "duration_s": duration,
            "rounds": rounds,
            "instances": 1 if smoke else instances,
            "workers": WORKERS,
            "threads": THREADS,
            "cpu_binding": CPU_BINDING,
            "workers_bound_to_cpus": binds_workers(CPU_BINDING, WORKERS, usable_cpus()),
        },
        "notes": [],
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="mediator-bench-") as tmp:
        work = Path(tmp)
        log_dir = work / "logs"
        log_dir.mkdir()
        fixture_file = work / "fixtures.json"
        fx = fixtures_mod.build(fixture_file)
        upstream = start_upstream(fixture_file, log_dir)
        stack.callback(upstream.stop)

        # Does the mediator know the cache setting? (Unknown settings are refused or ignored.)
        cache_known = (mediator_settings({CACHE_SETTING: "false"}) or {}).get(CACHE_SETTING) is not None
        mediators = {"mediator": {CACHE_SETTING: "false"} if cache_known else {}}
        if cache_known:
            mediators["mediator+cache"] = {CACHE_SETTING: "true"}
        else:
            report["notes"].append(
                f"{CACHE_SETTING} is not a setting of this mediator: the cache-on configuration was skipped"
            )
        copies = 1 if smoke else instances
        spawned: dict[str, list[Server | ServerGroup]] = {}
        hops: dict[str, list[Server]] = {}
        if smoke or do_throughput:
            for name in BASELINES:
                for i in range(copies):
                    hops.setdefault(name, []).append(spawn_baseline(upstream, log_dir, i, name))
                    stack.callback(hops[name][-1].stop)
            for name, extra in mediators.items():
                if name == "mediator+cache" and "search" not in FAMILIES:
                    continue  # measured on search alone
                for i in range(copies):
                    label = instance_name(name, i)
                    server = spawn_mediator(label, upstream, work / f"state-{label}", log_dir, extra)
                    stack.callback(server.stop)
                    spawned.setdefault(name, []).append(server)
        watched: list[Server] = []  # their CPU is counted per request, like the upstream's
        if stores and (smoke or do_throughput) and "claim" in FAMILIES:
            pg = stack.enter_context(stores_mod.durable_postgres())
            report["postgres"] = {**stores_mod.server_settings(pg), "pid": pg.process.pid}
            watched.append(stores_mod.as_server(pg))
            for name, replicas in ((stores_mod.PG, 1), (stores_mod.PAIR, 2)):
                for i in range(copies):
                    label = instance_name(name, i)
                    # one fresh database per mediator, or per pair of replicas
                    extra = {**mediators["mediator"], "CLAIM_STORE_URL": stores_mod.database_for(pg, label)}
                    members = []
                    for r in range(replicas):
                        member = f"{label}-{'ab'[r]}" if replicas > 1 else label
                        server = spawn_mediator(member, upstream, work / f"state-{member}", log_dir, extra)
                        stack.callback(server.stop)
                        members.append(server)
                    group = ServerGroup(label, tuple(members)) if replicas > 1 else members[0]
                    spawned.setdefault(name, []).append(group)
        elif stores and (smoke or do_throughput):
            report["notes"].append("--stores measures the claim family, which this run leaves out")
        baselines = [server for servers in hops.values() for server in servers]
        for server in baselines:
            wait_ready(server, "/fhir/Medication", 30)
        configs = [
            Config("upstream", upstream, "upstream", tuple(f for f in FAMILIES if f != "claim-openhim"))
        ]
        for name, servers in hops.items():
            configs.append(Config(name, servers[0], "hop", FAMILIES, servers[1:]))
        for name, servers in spawned.items():
            try:
                for server in (member for group in servers for member in group.members):
                    wait_ready(server, "/health", 60)
            except RuntimeError as exc:
                report["notes"].append(f"{name} did not start, skipped: {str(exc).splitlines()[0]}")
                if name == "mediator":
                    raise
                continue
            families = tuple(f for f in FAMILIES if f == "search") if name == "mediator+cache" else FAMILIES
            if name in (stores_mod.PG, stores_mod.PAIR):
                families = ("claim",)
            configs.append(Config(name, servers[0], "mediator", families, servers[1:]))
        under_test = [
            *baselines,
            *(m for servers in spawned.values() for group in servers for m in group.members),
        ]
        report["configurations"] = {
            c.name: {
                "families": list(c.families),
                "env": {k: masked_url(v) for k, v in c.server.env.items()} if c.kind == "mediator" else {},
                "replicas": len(c.server.members),
            }
            for c in configs
        }

        if smoke:
            report["smoke"] = smoke_check(configs, fx)
        else:
            # warm up (logins, connection pools, the cache's first load) and check every answer once
            every_server = [instance for config in configs for instance in config.each_instance()]
            report["warmup"] = smoke_check(every_server, fx)
            for instance in every_server:
                for family in instance.families:
                    run_load(plan_for(family, instance, fx), 16, 0.5, 400)
            if do_throughput:
                report["throughput"] = throughput(
                    configs, upstream, fx, rounds, duration, max_requests, watched
                )
                if stores:
                    report["throughput"]["stores"] = stores_mod.comparison(report["throughput"])
            for server in under_test:
                server.stop()
            if do_scale:
                report["scale"] = scale(upstream, fx, work, log_dir, duration, stack)
        for server in [upstream, *under_test]:
            try:
                tail = server.log_path.read_text(errors="replace").splitlines()
            except OSError:
                tail = []
            markers = ('"level": "ERROR"', '"level": "CRITICAL"', "Traceback", "[ERROR]", "WORKER TIMEOUT")
            errors = [line for line in tail if any(m in line for m in markers)]
            if errors:
                report["notes"].append(
                    f"{server.name} logged {len(errors)} error lines, e.g. {errors[0][:300]}"
                )
        if out is not None:  # keep the end of every server's log next to the results
            logs = out / f"logs-{report['mode']}"
            logs.mkdir(parents=True, exist_ok=True)
            for log_file in log_dir.glob("*.log"):
                tail = log_file.read_text(errors="replace").splitlines()[-300:]
                (logs / log_file.name).write_text("\n".join(tail) + "\n")
    report["wall_s"] = round(time.monotonic() - started, 1)
    if out is not None:
        write_outputs(report, out, update_benchmarks_md)
    return report


# --- reports ----------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['date']} on {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, "
        f"mediator at {m['commit'] or '?'}; load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
        "",
        f"Command: `{report['command']}` ({report['settings']['rounds']} interleaved rounds of "
        f"{report['settings']['duration_s']} s per cell, each configuration started as "
        f"{report['settings'].get('instances', 1)} servers measured in turn, medians; "
        f"whole run {report['wall_s']} s).",
        "",
        f"Workers bound to one CPU each (mediator and bound hop, `MEDIATOR_CPU_BINDING="
        f"{report['settings'].get('cpu_binding', '?')}`): "
        f"{'yes' if report['settings'].get('workers_bound_to_cpus') else 'no'}.",
        "",
    ]
    for note in report["notes"]:
        lines.append(f"- Note: {note}")
    if report["notes"]:
        lines.append("")
    if "throughput" in report:
        lines += _throughput_tables(report["throughput"]["summary"])
        lines += stores_mod.tables(report)
        lines += _budget(report["throughput"]["summary"])
    if "scale" in report:
        lines += _scale_tables(report["scale"])
    return "\n".join(lines) + "\n"


def _throughput_tables(summary: dict[str, Any]) -> list[str]:
    lines = [
        "`ratio` is req/s divided by the bare pass-through's in the same run; `added p50` is the p50 "
        "latency minus the upstream's called directly (1 client); CPU is utime+stime of the "
        "server's master, workers and agent per request; `upstream CPU` is what the upstream spent "
        "per request of that configuration (the mediator's claim path adds an insuree lookup for "
        "an insuree its worker has not looked up in the last 10 minutes).",
        "",
    ]
    for family in FAMILIES:
        if family not in summary:
            continue
        lines += [
            f"#### {FAMILY_TITLES[family]}",
            "",
            "| clients | configuration | req/s | ratio | p50 ms | p99 ms | added p50 ms | CPU ms/req | "
            "upstream CPU ms/req | peak RSS/worker MiB | failed |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in map(str, CONCURRENCIES):
            for name, v in summary[family].get(c, {}).items():
                lines.append(
                    f"| {c} | {name} | {_f(v['rps'], 0)} | {_f(v['ratio_to_bare'])} | {_f(v['p50_ms'])} | "
                    f"{_f(v['p99_ms'])} | {_f(v.get('added_p50_ms')) if c == '1' else ''} | "
                    f"{_f(v['cpu_ms_per_req'])} | {_f(v['upstream_cpu_ms_per_req'])} | "
                    f"{_f(v['peak_rss_per_worker_mib'], 0)} | {v['failed']}{_stalled(v)} |"
                )
        lines.append("")
    search16 = summary.get("search", {}).get("16", {}).get("upstream")
    if search16:
        lines += [
            f"Load generator sanity: against the upstream directly it drove {_f(search16['rps'], 0)} req/s "
            f"(search, 16 clients) at {_f(search16['loadgen_cpu_ms_per_req'], 3)} ms of its own CPU per "
            "request; it shares the 2 CPUs with the servers.",
            "",
        ]
    return lines


def _stalled(cell: dict[str, Any]) -> str:
    n = cell.get("stalled_rounds")
    return (
        f" ({n} round{'s' * (n > 1)} held up by an unanswered request: left out of the medians)" if n else ""
    )


#: (what, family, clients, configuration, figure, operator, target) of each budget of issue 6
BUDGETS = (
    ("Claim submit, 16 clients, ratio to bare", "claim", "16", "mediator", "ratio_to_bare", ">=", 0.6),
    ("Claim submit with envelope, 16 clients, ratio to bare", "claim-openhim", "16", "mediator", "ratio_to_bare", ">=", 0.6),
    ("Search, cache off, 16 clients, ratio to bare", "search", "16", "mediator", "ratio_to_bare", ">=", 0.8),
    ("Search, cache on, 16 clients, ratio to bare", "search", "16", "mediator+cache", "ratio_to_bare", ">=", 2.0),
    ("Claim submit, 1 client, p50 added over upstream", "claim", "1", "mediator", "added_p50_ms", "<=", 2.0),
)  # fmt: skip


def budget_checks(summary: dict[str, Any]) -> list[tuple[str, str, float | None, float | None, bool | None]]:
    """(what, target, measured, the same ratio to the bound bare hop, met) for each budget."""
    out = []
    for what, family, c, name, key, op, target in BUDGETS:
        cell = summary.get(family, {}).get(c, {}).get(name, {})
        value = cell.get(key)
        bound = cell.get("ratio_to_bound_bare") if key == "ratio_to_bare" else None
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        unit = "x" if key.startswith("ratio") else "ms"
        out.append((what, f"{op} {target} {unit}", value, bound, met))
    return out


def _budget(summary: dict[str, Any]) -> list[str]:
    lines = [
        "#### Budget of issue 6",
        "",
        "`met` is judged against the bare hop, as issue 6 defines it. `against the bound hop`: the "
        "same ratio to the bare hop with its workers bound to CPUs as the mediator's are "
        "(`MEDIATOR_CPU_BINDING`); binding is how a process is run, so this column shows what the "
        "mediator's own work costs.",
        "",
        "| budget | target | measured | met | against the bound hop |",
        "|---|---|---|---|---|",
    ]
    for what, target, value, bound, met in budget_checks(summary):
        verdict = "not measured" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {what} | {target} | {_f(value)} | {verdict} | {_f(bound) if bound else ''} |")
    return [*lines, ""]


def _scale_tables(scale_report: dict[str, Any]) -> list[str]:
    lines = [
        "#### Memory: RSS per worker while claims go through (16 clients)",
        "",
        "| claims sent | worker RSS MiB | worker peak RSS MiB | agent RSS MiB | failed |",
        "|---|---|---|---|---|",
    ]
    for s in scale_report["rss_after_claims"]:
        lines.append(
            f"| {s['claims']} | {', '.join(map(str, s['worker_rss_mib']))} | "
            f"{', '.join(map(str, s['worker_hwm_mib']))} | {s['agent_rss_mib']} | {s['failed']} |"
        )
    lines += [
        "",
        "#### Claim path with finished records already in the durable store",
        "",
        "| finished records | clients | req/s | ratio to empty store | p50 ms | p99 ms | CPU ms/req | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, by_c in scale_report["claim_path_by_store_size"].items():
        for c, v in by_c.items():
            lines.append(
                f"| {int(size):,} | {c} | {_f(v['rps'], 0)} | {_f(v['ratio_to_empty_store'])} | {_f(v['p50_ms'])} | "
                f"{_f(v['p99_ms'])} | {_f(v['cpu_ms_per_req'])} | {v['failed']} |"
            )
    return [*lines, ""]


def write_outputs(report: dict[str, Any], out: Path, update_benchmarks_md: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(report, indent=1, default=str)
    md = markdown(report)
    for name in (f"results-{report['mode']}-{stamp}", f"latest-{report['mode']}"):
        (out / f"{name}.json").write_text(text)
        (out / f"{name}.md").write_text(md)
    _progress(f"results written to {out}/latest-{report['mode']}.json and .md")
    if update_benchmarks_md:
        current = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
        head, _, rest = current.partition(BEGIN)
        old, _, tail = rest.partition(END)
        # keep the figures of the other mode (throughput / scale) from an earlier run, if any
        mode = set(report["mode"].split("+"))
        blocks = {m: text for m, text in _mode_blocks(old).items() if not mode & set(m.split("+"))}
        blocks[report["mode"]] = md
        body = "".join(f"<!-- {mode} -->\n{blocks[mode]}<!-- /{mode} -->\n" for mode in sorted(blocks))
        BENCHMARKS_MD.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
        _progress(f"figures written into {BENCHMARKS_MD}")


def _mode_blocks(text: str) -> dict[str, str]:
    blocks = {}
    rest = text
    while "<!-- /" in rest:
        start = rest.find("<!-- ")
        if start < 0:
            break
        mode = rest[start + 5 : rest.find(" -->", start)]
        if mode.startswith("/"):
            rest = rest[start + 5 :]
            continue
        open_tag, close_tag = f"<!-- {mode} -->\n", f"<!-- /{mode} -->\n"
        begin = rest.find(open_tag, start) + len(open_tag)
        end = rest.find(close_tag, begin)
        if end < 0:
            break
        blocks[mode] = rest[begin:end]
        rest = rest[end + len(close_tag) :]
    return blocks


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    global FAMILIES
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds: check every configuration answers"
    )
    parser.add_argument(
        "--scale", action="store_true", help="memory and store-size runs instead of throughput"
    )
    parser.add_argument("--all", action="store_true", help="throughput and scale runs")
    parser.add_argument(
        "--stores",
        action="store_true",
        help="also the claim path on PostgreSQL: one replica, and two replicas on one database",
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument(
        "--instances",
        type=int,
        default=2,
        help="servers started per configuration, measured in turn round by round (default 2)",
    )
    parser.add_argument("--max-requests", type=int, default=50_000, help="cap per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results", help="results directory")
    parser.add_argument(
        "--update-benchmarks-md", action="store_true", help="write the figures into BENCHMARKS.md"
    )
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help=f"comma-separated subset of {','.join(FAMILIES)}"
    )
    args = parser.parse_args(argv)
    FAMILIES = tuple(f for f in FAMILIES if f in args.families.split(","))
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so every server started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    command = ".venv/bin/python tests/benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run(
        smoke=args.smoke,
        do_throughput=not args.scale or args.all,
        do_scale=args.scale or args.all,
        duration=args.duration,
        rounds=args.rounds,
        instances=max(args.instances, 1),
        max_requests=args.max_requests,
        out=args.out,
        update_benchmarks_md=args.update_benchmarks_md and not args.smoke,
        command=command.strip(),
        stores=args.stores,
    )
    if args.smoke:
        print(json.dumps(report["smoke"], indent=1))
        print(f"benchmark smoke: every configuration answered correctly ({report['wall_s']} s)")
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
