"""A real PostgreSQL server for the tests, started on a free loopback port and removed afterwards.

The server is Debian's `postgresql` package (`./scripts/test` installs it when it is missing).
PostgreSQL refuses to run as root, so under root (CI) it runs as the `postgres` user that the
package creates. Clients connect over TCP with a password, as the mediator does in production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.services import free_port

PASSWORD = "store-s3cret-pw"


@dataclass
class PostgresServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        """A new, empty database owned by the mediator's role; its URL (with the password)."""
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            db.execute(f'CREATE DATABASE "{name}" OWNER mediator')
        return f"postgresql://mediator:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        """SIGKILL-free stop (fast shutdown), for tests that take the database away."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        bindir = subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip()
        if (Path(bindir) / "initdb").exists():
            return Path(bindir)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError("PostgreSQL is not installed: ./scripts/test installs Debian's postgresql package")


def _server_user() -> dict[str, int]:
    """How to start the server's programs: as `postgres` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres(port: int | None = None) -> Iterator[PostgresServer]:
    bindir = _bindir()
    as_user = _server_user()
    uid = as_user.get("user")
    top = Path(tempfile.mkdtemp(prefix="mediator-pg-"))
    top.chmod(0o755)
    data, pwfile = top / "data", top / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if uid is not None:
        os.chown(top, uid, -1)
        os.chown(pwfile, uid, -1)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        cwd=top,
        **as_user,
    )
    port = port or free_port()
    log = open(top / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={top}",
            "-c",
            "fsync=off",  # the tests kill processes, not the machine
            "-c",
            "max_connections=200",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=top,
        **as_user,
    )
    server = PostgresServer(port, data, process)
    try:
        _wait_ready(server, top)
        with psycopg.connect(server.admin_url, autocommit=True) as db:
            db.execute(f"CREATE ROLE mediator LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(top, ignore_errors=True)


def _wait_ready(server: PostgresServer, top: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                "PostgreSQL exited at start:\n" + (top / "server.log").read_text(errors="replace")
            )
        try:
            with psycopg.connect(server.admin_url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
