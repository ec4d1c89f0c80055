"""The benchmark never rots: its smoke mode starts every configuration (upstream stand-in, bare
pass-through, mediator, mediator with the master-data cache, and with `--stores` the mediator on
a PostgreSQL it starts, alone and as two replicas on one database) under gunicorn, checks that
each answers every transaction family correctly, and stops everything it started."""

from __future__ import annotations

import os
import time

import pytest

from tests.benchmarks import run as bench
from tests.support.postgres import PASSWORD

pytestmark = pytest.mark.integration


def _live(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z":
            alive.add(pid)
    return alive


def test_benchmark_smoke(tmp_path, monkeypatch):
    started_pids: set[int] = set()
    spawn = bench.spawn

    def recording_spawn(*args, **kwargs):
        server = spawn(*args, **kwargs)
        started_pids.add(server.process.pid)
        return server

    monkeypatch.setattr(bench, "spawn", recording_spawn)
    began = time.monotonic()

    report = bench.run(smoke=True, out=tmp_path, command="pytest smoke", stores=True)

    assert time.monotonic() - began < 50
    smoke = report["smoke"]
    assert set(smoke) == set(bench.FAMILIES)
    for family, by_config in smoke.items():
        assert {"baseline", "baseline-bound", "mediator"} <= set(by_config), family
        for name, result in by_config.items():
            assert result["ok"] > 0 and result["failed"] == 0, (family, name, result["errors"])
    # the claim path on PostgreSQL, durable as in production, alone and as two replicas
    assert {"mediator-pg", "mediator-pg-x2"} <= set(smoke["claim"])
    assert report["postgres"]["fsync"] == "on"
    assert report["configurations"]["mediator-pg-x2"]["replicas"] == 2
    assert PASSWORD not in (tmp_path / "latest-smoke.json").read_text()
    for replica in ("a", "b"):  # the load went to both replicas
        log = (tmp_path / "logs-smoke" / f"mediator-pg-x2-{replica}.log").read_text()
        assert '"path": "/fhir/Claim", "status": 201' in log, replica
    started_pids.add(report["postgres"]["pid"])
    assert (tmp_path / "latest-smoke.json").exists()
    # every server started (and its process group) is gone
    assert started_pids
    deadline = time.monotonic() + 5
    while _live(started_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _live(started_pids)
    for pid in started_pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
