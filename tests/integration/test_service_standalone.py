"""`python -m mediator` with nothing configured: gunicorn plus the embedded sandbox."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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


def _agents_of(master_pid: int) -> list[int]:
    """The agent processes the gunicorn master started (Linux /proc)."""
    agents = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == master_pid and argv[-3:] == [b"mediator", b"agent", b""]:
            agents.append(int(entry.name))
    return agents


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
