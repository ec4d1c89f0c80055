"""The Docker image: healthcheck on the configured port, the state directory a volume, secrets from
files, the demo password refused towards a real server. Built only where a Docker daemon runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.support.services import ROOT, free_port, running_mediator
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no Docker here: `docker` is not on PATH, so the image is not built"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        said = (info.stderr.strip().splitlines() or [f"exit {info.returncode}"])[-1]
        return f"no Docker daemon answers, so the image is not built (`docker info`: {said})"
    return None


def _health(env: dict[str, str]) -> int:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    return subprocess.run(
        [sys.executable, "-m", "mediator", "health"], env={**clean, **env}, capture_output=True, timeout=30
    ).returncode


def test_the_healthcheck_asks_the_configured_port(tmp_path):
    with running_mediator({"MEDIATOR_STATE_DIR": str(tmp_path)}) as mediator:
        port = mediator.env["MEDIATOR_PORT"]
        assert _health({"MEDIATOR_PORT": port, "MEDIATOR_STATE_DIR": str(tmp_path)}) == 0
        assert _health({"MEDIATOR_PORT": str(free_port()), "MEDIATOR_STATE_DIR": str(tmp_path)}) == 1


@pytest.fixture(scope="module")
def image():
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"openimis-mediator-test:{uuid.uuid4().hex[:12]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=900)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_the_image_declares_its_state_volume_and_a_pinned_base(image):
    config = json.loads(
        subprocess.run(["docker", "image", "inspect", image], check=True, capture_output=True).stdout
    )[0]["Config"]
    assert "/app/var" in (config.get("Volumes") or {})
    assert "MEDIATOR_STATE_DIR=/app/var" in config["Env"]
    assert config["Healthcheck"]["Test"] == ["CMD", "openimis-mediator", "health"]
    base = (ROOT / "Dockerfile").read_text().split("FROM ", 1)[1].split()[0]
    assert base.count(".") >= 2 and base.endswith("-slim-bookworm"), base  # python:3.11.x-slim-bookworm


def test_the_container_gets_healthy_on_a_configured_port(image, tmp_path):
    name = f"mediator-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-e", "MEDIATOR_PORT=9001", "--health-interval=1s", image],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:

        def status() -> str:
            inspect = ["docker", "inspect", "-f", "{{.State.Health.Status}}", name]
            state = subprocess.run(inspect, capture_output=True, text=True, timeout=30).stdout.strip()
            assert state != "unhealthy", subprocess.run(["docker", "logs", name], capture_output=True).stderr
            return state == "healthy"

        wait_until(status, timeout=90, every=1)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_the_container_reads_secrets_from_files_and_refuses_the_demo_password(image, tmp_path):
    secret = tmp_path / "openimis-password"
    secret.write_text("a-real-password\n")
    secret.chmod(0o644)
    base = ["docker", "run", "--rm", "-e", "OPENIMIS_URL=https://imis.example.org"]
    refused = subprocess.run([*base, image, "check-config"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "OPENIMIS_PASSWORD: the demo default is refused" in refused.stderr
    mounted = ["-v", f"{secret}:/run/secrets/pw:ro", "-e", "OPENIMIS_PASSWORD_FILE=/run/secrets/pw"]
    accepted = subprocess.run(
        [*base, *mounted, image, "check-config"], capture_output=True, text=True, timeout=120
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "OPENIMIS_PASSWORD='***'" in accepted.stdout
