"""A start that cannot succeed says why in one line, exits, and leaves no process behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from tests.support.services import ROOT, free_port, running_mediator, stop_process_group

pytestmark = pytest.mark.integration


def _start_and_wait(tmp_path: Path, **env: str) -> tuple[int, list[str], bool]:
    """`python -m mediator` to its end: exit code, output lines, whether its processes are all gone."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    full_env = {
        **clean,
        "MEDIATOR_HOST": "127.0.0.1",
        "MEDIATOR_PORT": str(free_port()),
        "MEDIATOR_WORKERS": "1",
        "MEDIATOR_STATE_DIR": str(tmp_path / "state"),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "mediator"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        code = process.poll()
        try:
            os.killpg(process.pid, 0)  # anything left of the instance (an orphaned sandbox)?
            alone = False
        except ProcessLookupError:
            alone = True
        stop_process_group(process, timeout=5)
    return code, output.decode(errors="replace").splitlines(), alone


def _refusal(lines: list[str]) -> str:
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [json.loads(line) for line in lines if line.startswith("{") and '"ERROR"' in line]
    assert len(errors) == 1, "\n".join(lines)
    return errors[0]["message"]


def _listening(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_a_taken_port_is_one_line_and_no_sandbox_is_left(tmp_path):
    sandbox_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines, alone = _start_and_wait(
            tmp_path, MEDIATOR_PORT=str(port), SANDBOX_PORT=str(sandbox_port)
        )
    assert code == 2
    assert f"MEDIATOR_PORT: 127.0.0.1:{port} is already in use" in _refusal(lines)
    assert alone and not _listening(sandbox_port)


def test_an_unusable_state_directory_is_one_line_and_nothing_is_left(tmp_path):
    (tmp_path / "file").write_text("")
    sandbox_port = free_port()
    code, lines, alone = _start_and_wait(
        tmp_path, MEDIATOR_STATE_DIR=str(tmp_path / "file" / "state"), SANDBOX_PORT=str(sandbox_port)
    )
    assert code == 2
    assert "MEDIATOR_STATE_DIR: " in _refusal(lines) and "is not a directory" in _refusal(lines)
    assert alone and not _listening(sandbox_port)


def test_a_taken_sandbox_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sandbox_port = taken.getsockname()[1]
        code, lines, alone = _start_and_wait(tmp_path, SANDBOX_PORT=str(sandbox_port))
    assert code == 2 and alone
    assert f"SANDBOX_PORT: 127.0.0.1:{sandbox_port} is already in use" in _refusal(lines)


def test_a_second_instance_on_the_same_state_directory_is_refused(tmp_path):
    state = str(tmp_path / "shared-state")
    with running_mediator({"MEDIATOR_STATE_DIR": state}) as first:
        code, lines, alone = _start_and_wait(tmp_path, MEDIATOR_STATE_DIR=state, SANDBOX_PORT="0")
        assert code == 2 and alone
        assert f"{state} is in use by another instance (pid {first.process.pid})" in _refusal(lines)
        assert requests.get(first.url + "/health", timeout=5).ok  # the first one is untouched
