"""Start the real mediator (gunicorn) and the openIMIS sandbox as processes on free ports.

Integration tests talk to them over HTTP exactly as a facility system or OpenHIM would.
Every process started here is stopped, with its whole process group, when the test ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _wait_http(service: Service, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}"
            )
        try:
            requests.get(service.url + path, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not answer {path} within {timeout} s:\n{service.log_tail()}")


def stop(service: Service, timeout: float = 15.0) -> int | None:
    """SIGTERM the process group (gunicorn master, workers, children), then SIGKILL."""
    return stop_process_group(service.process, timeout)


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM a process group started with start_new_session, then SIGKILL what is left."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.returncode


def _spawn(
    name: str, argv: list[str], env: Mapping[str, str], url: str, ready_path: str, timeout: float
) -> Service:
    log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
    full_env = {**os.environ, **env}
    # The test run's own environment must not leak into a service under test.
    for key in ("OPENIMIS_URL", "OPENHIM_API_URL"):
        if key not in env:
            full_env.pop(key, None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(name, url, process, log_path, dict(env))
    try:
        _wait_http(service, ready_path, timeout)
    except BaseException:
        stop(service)
        raise
    return service


@contextmanager
def running_sandbox(timeout: float = 20.0) -> Iterator[Service]:
    port = free_port()
    service = _spawn(
        "sandbox",
        [sys.executable, "-m", "mediator.sandbox", "--host", "127.0.0.1", "--port", str(port)],
        {},
        f"http://127.0.0.1:{port}",
        "/_sandbox/stats",
        timeout,
    )
    try:
        yield service
    finally:
        stop(service)


@contextmanager
def running_mediator(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Iterator[Service]:
    """`python -m mediator` as a user starts it; with no OPENIMIS_URL it embeds the sandbox."""
    port = int((env or {}).get("MEDIATOR_PORT") or free_port())
    base_env = {
        "MEDIATOR_HOST": "127.0.0.1",
        "MEDIATOR_PORT": str(port),
        "SANDBOX_PORT": "0",
        "MEDIATOR_WORKERS": "2",
        "MEDIATOR_STATE_DIR": tempfile.mkdtemp(prefix="mediator-state-"),
    }
    service = _spawn(
        "mediator",
        [sys.executable, "-m", "mediator"],
        {**base_env, **(env or {})},
        f"http://127.0.0.1:{port}",
        "/health",
        timeout,
    )
    try:
        yield service
    finally:
        stop(service)
