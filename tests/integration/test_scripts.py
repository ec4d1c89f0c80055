"""`./scripts/serve` and `./scripts/test` start again without a network: nothing is installed
while pyproject.toml is unchanged."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.services import ROOT

pytestmark = pytest.mark.integration

#: pip with no index and no wheel directory: any install (a build needs setuptools) fails.
NO_NETWORK = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/nonexistent", "PIP_EXTRA_INDEX_URL": ""}


def _script(tmp_path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    return subprocess.run(
        list(argv),
        cwd=ROOT,
        env={**clean, "MEDIATOR_STATE_DIR": str(tmp_path / "state"), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_scripts_start_again_offline_once_installed(tmp_path):
    first = _script(tmp_path, "./scripts/test", "--version")  # what CI's fresh clone runs first
    assert first.returncode == 0, first.stderr
    for argv in (["./scripts/serve", "check-config"], ["./scripts/test", "--version"]):
        again = _script(tmp_path, *argv, **NO_NETWORK)
        assert again.returncode == 0, f"{argv}: {again.stderr}"
