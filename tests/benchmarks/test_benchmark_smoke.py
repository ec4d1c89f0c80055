"""The benchmark never rots: its smoke mode starts every configuration (upstream stand-in, bare
pass-through, mediator, mediator with the master-data cache) under gunicorn, checks that each
answers every transaction family correctly, and stops everything it started."""

from __future__ import annotations

import os
import time

import pytest

from tests.benchmarks import run as bench

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

    report = bench.run(smoke=True, out=tmp_path, command="pytest smoke")

    assert time.monotonic() - began < 30
    smoke = report["smoke"]
    assert set(smoke) == set(bench.FAMILIES)
    for family, by_config in smoke.items():
        assert {"baseline", "baseline-bound", "mediator"} <= set(by_config), family
        for name, result in by_config.items():
            assert result["ok"] > 0 and result["failed"] == 0, (family, name, result["errors"])
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
