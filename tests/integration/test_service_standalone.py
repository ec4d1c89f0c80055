"""`python -m mediator` with nothing configured: gunicorn plus the embedded sandbox."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.services import running_mediator
from tests.support.waiting import wait_until


def test_fresh_start_answers_medication_from_the_embedded_sandbox(tmp_path):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        answer = requests.get(mediator.url + "/fhir/Medication", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("application/fhir+json")
        bundle = answer.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        assert bundle["total"] > 0 and bundle["entry"][0]["resource"]["resourceType"] == "Medication"

        ready = requests.get(mediator.url + "/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["openhim"] == {"mode": "standalone"}

    log = mediator.log()
    json_lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("embedded openIMIS sandbox" in line["message"] for line in json_lines)
    assert "admin123" not in log


def _state_and_parent(process: Path) -> tuple[str, int]:
    """From /proc/<pid>/stat: the process's state letter ("Z": ended, not yet reaped) and parent."""
    fields = (process / "stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _children_of(master_pid: int, *command: bytes) -> list[int]:
    """The live processes the gunicorn master started with these command-line words (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state, parent = _state_and_parent(entry)
        except (OSError, ValueError, IndexError):
            continue
        if parent == master_pid and state != "Z" and all(word in argv for word in command):
            found.append(int(entry.name))
    return found


def _agents_of(master_pid: int) -> list[int]:
    return _children_of(master_pid, b"mediator", b"agent")


def _ready_worker(url: str) -> int | None:
    """The pid of the worker that answered /ready on a new connection."""
    try:
        return requests.get(url + "/ready", timeout=5).json()["worker"]
    except (requests.RequestException, ValueError, KeyError):  # workers are being replaced
        return None


def _alive(pid: int) -> bool:
    try:
        return _state_and_parent(Path("/proc") / str(pid))[0] != "Z"
    except OSError:
        return False


def test_a_dead_agent_is_started_again_and_does_its_work(tmp_path):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        wait_until(lambda: "services/items cache refreshed" in mediator.log())
        (agent,) = wait_until(lambda: _agents_of(mediator.process.pid))
        os.kill(agent, signal.SIGKILL)

        (restarted,) = wait_until(lambda: [p for p in _agents_of(mediator.process.pid) if p != agent])
        died = [json.loads(line) for line in mediator.log().splitlines() if "process died" in line]
        assert [line["level"] for line in died] == ["ERROR"]
        # None when gunicorn's master reaped the agent first; gunicorn then logs the SIGKILL.
        assert died[0]["exit_code"] in (-signal.SIGKILL, None)

        # The new agent serves the instance: it reloads the services/items copy when asked.
        before = mediator.log().count("services/items cache refreshed")
        env = {**os.environ, **mediator.env}
        refresh = [sys.executable, "-m", "mediator", "cache", "refresh"]
        assert subprocess.run(refresh, env=env, capture_output=True, timeout=60).returncode == 0
        wait_until(lambda: mediator.log().count("services/items cache refreshed") > before)
        assert _agents_of(mediator.process.pid) == [restarted]
    assert "process died" not in mediator.log().split('"Handling signal: term"')[-1]


def test_after_a_reload_stopping_the_master_stops_the_agent_and_the_sandbox(tmp_path):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        master = mediator.process.pid
        (agent,) = wait_until(lambda: _agents_of(master))
        (sandbox,) = wait_until(lambda: _children_of(master, b"mediator.sandbox"))
        old_workers = set(_children_of(master)) - {agent, sandbox}
        os.kill(master, signal.SIGHUP)  # gunicorn reloads: its config file runs again
        new_workers = wait_until(lambda: len(w := set(_children_of(master)) - {agent, sandbox} - old_workers) == 2
                                 and not old_workers & set(_children_of(master)) and w)  # fmt: skip
        # Both new workers serving (a worker still booting would sit out the stop's grace period).
        wait_until(lambda: new_workers <= {_ready_worker(mediator.url) for _ in range(20)})
        os.kill(master, signal.SIGTERM)  # the master alone, as `docker stop` does
        mediator.process.wait(timeout=30)
        assert not _alive(agent) and not _alive(sandbox), "stopped with the master, not left behind"
        assert "process died" not in mediator.log()


def _cpus_of(pid: int) -> str:
    status = (Path("/proc") / str(pid) / "status").read_text()
    return next(
        line.split(":")[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list")
    )


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binding workers to CPUs needs two CPUs")
def test_each_worker_is_bound_to_its_own_cpu_and_a_replacement_takes_the_freed_one(tmp_path):
    env = {"MEDIATOR_STATE_DIR": str(tmp_path), "MEDIATOR_WORKERS": "2", "MEDIATOR_CPU_BINDING": "on"}
    usable = sorted(os.sched_getaffinity(0))
    with running_mediator(env) as mediator:
        master = mediator.process.pid
        (agent,) = wait_until(lambda: _agents_of(master))
        (sandbox,) = wait_until(lambda: _children_of(master, b"mediator.sandbox"))
        workers = wait_until(lambda: len(w := set(_children_of(master)) - {agent, sandbox}) == 2 and w)
        # a worker shows in /proc when forked, and binds itself just after
        first_two = [str(usable[0]), str(usable[1])]
        cpus = wait_until(
            lambda: sorted((c := {pid: _cpus_of(pid) for pid in workers}).values()) == first_two and c,
            timeout=10,
        )

        # The second CPU's worker, killed twice: a replacement given the next CPU in turn (or one
        # chosen by gunicorn's worker count) lands on the first CPU at one of the two kills.
        for _ in range(2):
            (victim,) = [pid for pid, cpu in cpus.items() if cpu == str(usable[1])]
            os.kill(victim, signal.SIGKILL)
            (replacement,) = wait_until(
                lambda: len(w := set(_children_of(master)) - {agent, sandbox} - set(cpus)) == 1 and w
            )
            wait_until(lambda pid=replacement: _cpus_of(pid) == str(usable[1]), timeout=10)
            del cpus[victim]
            cpus[replacement] = str(usable[1])
        assert _cpus_of(agent) == _cpus_of(master), "only workers are bound"
    assert "workers bound to one CPU each (MEDIATOR_CPU_BINDING=on, 2 workers" in mediator.log()
