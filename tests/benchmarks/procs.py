"""Servers of the benchmark as process groups, and what /proc says about their cost.

CPU is utime+stime of the gunicorn master and all its descendants (workers, the mediator's
agent); memory is VmHWM (peak RSS) / VmRSS of each worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.support.services import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")
#: The same worker model for the upstream, the baseline and the mediator (MEDIATOR_WORKERS/THREADS).
WORKERS, THREADS = 2, 8
#: MEDIATOR_CPU_BINDING of the mediator, and the rule the bound bare hop follows (its default).
CPU_BINDING = "auto"


def gunicorn_argv(app: str, port: int, keepalive: int = 5, config: str | None = None) -> list[str]:
    """gunicorn as the mediator runs it: gthread, 2 workers x 8 threads, keep-alive 5 s."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        *(["--config", config] if config else []),
        "--worker-class",
        "gthread",
        "--workers",
        str(WORKERS),
        "--threads",
        str(THREADS),
        "--keep-alive",
        str(keepalive),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def members(self) -> tuple[Server, ...]:
        """The servers a measurement of this one drives (a `ServerGroup` has several)."""
        return (self,)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (master, workers, children), then SIGKILL."""
        stop_process_group(self.process, timeout)

    # -- /proc -----------------------------------------------------------------------------

    def pids(self) -> dict[int, str]:
        """pid -> role (master, worker, agent, child) of the live processes of this server."""
        children = _children_map()
        roles = {self.process.pid: "master"}
        todo = [self.process.pid]
        while todo:
            parent = todo.pop()
            for child in children.get(parent, []):
                if parent == self.process.pid:
                    roles[child] = "agent" if b"agent" in _cmdline(child) else "worker"
                else:
                    roles[child] = "child"
                todo.append(child)
        return roles

    def cpu_seconds(self) -> float:
        return sum(_cpu(pid) for pid in self.pids())

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the live processes, summed by role (master, worker, agent)."""
        out: dict[str, float] = {}
        for pid, role in self.pids().items():
            out[role] = out.get(role, 0.0) + _cpu(pid)
        return out

    def memory(self) -> dict[str, Any]:
        """Peak and current RSS (MiB) of each worker, and of the agent if any."""
        out: dict[str, Any] = {"workers": []}
        for pid, role in sorted(self.pids().items()):
            status = _status(pid)
            entry = {
                "pid": pid,
                "hwm_mib": status.get("VmHWM", 0) / 1024,
                "rss_mib": status.get("VmRSS", 0) / 1024,
            }
            if role == "worker":
                out["workers"].append(entry)
            elif role in ("agent", "master"):
                out[role] = entry
        return out


@dataclass
class ServerGroup:
    """Replicas measured together as one configuration: the load generator alternates each
    client's requests between them; CPU and workers are the sum over the replicas."""

    name: str
    members: tuple[Server, ...]

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def url(self) -> str:
        return self.members[0].url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.members[0].process

    @property
    def env(self) -> dict[str, str]:
        return self.members[0].env

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {m.name}\n{m.log_tail(lines)}" for m in self.members)

    def stop(self, timeout: float = 15.0) -> None:
        for member in self.members:
            member.stop(timeout)

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members)

    def cpu_by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for member in self.members:
            for role, seconds in member.cpu_by_role().items():
                out[role] = out.get(role, 0.0) + seconds
        return out

    def memory(self) -> dict[str, Any]:
        parts = [m.memory() for m in self.members]
        out: dict[str, Any] = {"workers": [w for p in parts for w in p["workers"]]}
        out.update({k: v for k, v in parts[0].items() if k != "workers"})
        return out


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cpu(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def spawn(name: str, argv: list[str], env: dict[str, str], port: int, log_dir: Path) -> Server:
    """Start a server in its own process group; stdout and stderr go to `<log_dir>/<name>.log`."""
    full_env = {**os.environ, **env}
    for key in ("OPENIMIS_URL", "OPENHIM_API_URL"):  # never leak the caller's into a server
        if key not in env:
            full_env.pop(key, None)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, f"http://127.0.0.1:{port}", process, log_path, env)


def wait_ready(server: Server, path: str, timeout: float) -> None:
    """Until `path` answers, or raise with the log's tail (the server is stopped then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            server.stop()
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            requests.get(server.url + path, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer {path} within {timeout} s:\n{server.log_tail()}")
