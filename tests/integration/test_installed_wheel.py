"""`pip install` of the built wheel gives a working `openimis-mediator`, outside any checkout.

The wheel is built offline from a copy of the sources (the build backend is a test extra) and
installed with --no-deps in a new venv that borrows the project venv's dependencies, so the test
needs no network and takes seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import requests

from tests.support.services import ROOT, free_port, stop_process_group
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin directory of a fresh venv holding only the wheel (dependencies borrowed)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mediator", source / "mediator", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work / "dist")]
    subprocess.run([*build, str(source)], check=True, timeout=120)
    (wheel,) = (work / "dist").glob("*.whl")

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, timeout=120)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies, after the venv's own site-packages: `mediator` is the wheel's.
    Path(site, "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


WHERE_AND_URN = """
import mediator
from mediator.openhim.registration import registration_document
from mediator.settings import load_settings
print(mediator.__file__)
print(registration_document(load_settings())["urn"])
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    env.pop("PYTHONPATH", None)
    return {**env, "MEDIATOR_STATE_DIR": str(tmp_path / "state"), **extra}


def test_check_config_runs_from_another_directory(installed, tmp_path):
    result = subprocess.run(
        [str(installed / "openimis-mediator"), "check-config"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "MEDIATOR_PORT=8550" in result.stdout
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            WHERE_AND_URN,
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    module_file, urn = where.stdout.split()
    assert Path(module_file).is_relative_to(installed.parent), module_file
    assert urn == "urn:mediator:openimis-fhir-r4"  # mediator.json is in the wheel


def test_serve_starts_from_another_directory(installed, tmp_path):
    port = free_port()
    env = _env(tmp_path, MEDIATOR_HOST="127.0.0.1", MEDIATOR_PORT=str(port), SANDBOX_PORT="0")
    env["MEDIATOR_WORKERS"] = "1"
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [str(installed / "openimis-mediator"), "serve"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/fhir/Medication", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(answers, timeout=30)
    finally:
        stop_process_group(process)
