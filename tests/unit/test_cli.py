"""The command line as an operator meets it: its help, the agent by hand, a pipe closed early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _cli(tmp_path: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    return subprocess.run(
        [sys.executable, "-m", "mediator", *args],
        env={**clean, "MEDIATOR_STATE_DIR": str(tmp_path / "state")},
        cwd=tmp_path,
        text=True,
        timeout=60,
        **{"capture_output": True, **kwargs},
    )


def test_help_lists_every_operator_command(tmp_path):
    result = _cli(tmp_path, "--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "check-config",
        "queue list|show|retry",
        "cache status|refresh",
        "health",
        "agent",
    ):
        assert f"\n  {command} " in result.stdout, command


def test_the_agent_run_by_hand_says_what_it_needs(tmp_path):
    result = _cli(tmp_path, "agent")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "OPENIMIS_URL is not set" in result.stderr and "openimis-mediator serve" in result.stderr


def test_check_config_into_a_closed_pipe_ends_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` once it has its line: every write meets a closed pipe
    try:
        result = _cli(
            tmp_path, "check-config", stdout=write_end, stderr=subprocess.PIPE, capture_output=False
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141
