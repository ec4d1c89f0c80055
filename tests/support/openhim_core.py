"""Run a real OpenHIM core 4.0.5 (on secantusdb) on free loopback ports for integration tests.

Why: the mediator must be tested against a real core, not a stand-in. Core 4.0.5 is the only
core on the npm registry; MongoDB itself is not installable here, so the MongoDB wire-protocol
server secantusdb is used, through ``secantus_launcher.py`` which works around the three
secantus defects core trips over. Everything is started in its own process group and stopped
afterwards, even when a test fails. Failures raise ``OpenHimCoreError`` with the log tails:
integration tests must fail loudly, never skip.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import requests
from urllib3.exceptions import InsecureRequestWarning

OPENHIM_CORE_VERSION = "4.0.5"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "openhim-core"
SECANTUS_LAUNCHER = Path(__file__).resolve().with_name("secantus_launcher.py")

ROOT_EMAIL = "root@openhim.org"
ROOT_PASSWORD = "openhim-password"


class OpenHimCoreError(RuntimeError):
    """The test core could not be installed, started or queried."""


class PortConflictError(OpenHimCoreError):
    """A port picked as free was taken by another process before core or secantus bound it."""


def _sha512_hex(*parts: str) -> str:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(part.encode("utf-8"))
    return digest.hexdigest()


def _tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def ensure_openhim_core_installed(cache_dir: Path = CACHE_DIR, timeout: float = 600.0) -> Path:
    """Install openhim-core 4.0.5 with npm into ``cache_dir`` once; return its package folder.

    A file lock serialises parallel runs; a marker file written after a successful install
    makes an interrupted install be redone instead of half-used.
    """
    package_dir = cache_dir / "node_modules" / "openhim-core"
    marker = cache_dir / f".installed-{OPENHIM_CORE_VERSION}"
    if marker.exists() and (package_dir / "lib" / "server.js").exists():
        return package_dir
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise OpenHimCoreError("node and npm are needed to run OpenHIM core (Node 20 works)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and (package_dir / "lib" / "server.js").exists():
            return package_dir
        manifest = cache_dir / "package.json"
        if not manifest.exists():
            manifest.write_text(
                json.dumps({"name": "openhim-core-testbed", "private": True}) + "\n",
                encoding="utf-8",
            )
        cmd = [
            npm,
            "install",
            f"openhim-core@{OPENHIM_CORE_VERSION}",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--no-package-lock",
        ]
        log_path = cache_dir / "npm-install.log"
        with log_path.open("w", encoding="utf-8") as log:
            try:
                proc = subprocess.run(
                    cmd, cwd=cache_dir, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired as exc:
                raise OpenHimCoreError(
                    f"npm install timed out after {timeout:.0f}s:\n{_tail(log_path)}"
                ) from exc
        if proc.returncode != 0 or not (package_dir / "lib" / "server.js").exists():
            raise OpenHimCoreError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{_tail(log_path)}")
        marker.write_text(OPENHIM_CORE_VERSION + "\n", encoding="utf-8")
    return package_dir


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports free right now (all sockets held open together, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_groups(procs: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM each process group (pid == pgid: started with ``start_new_session``), wait up
    to ``grace`` seconds for leaders and children (core's cluster workers) to go, then
    SIGKILL what is left. All groups are signalled together to keep teardown short."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    while any(_group_alive(p.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in procs:
        if _group_alive(proc.pid):  # only groups still holding our processes (pids get reused)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class OpenHimCore:
    """A running OpenHIM core 4.0.5 plus its secantusdb, on free 127.0.0.1 ports.

    Use as a context manager (or ``start()``/``stop()``). ``work_dir`` holds the override
    config and the logs (``secantus.log``, ``openhim-core.log``); without one a temp dir is
    made and removed on ``stop()``.
    """

    host = "127.0.0.1"
    root_email = ROOT_EMAIL
    root_password = ROOT_PASSWORD

    def __init__(
        self,
        work_dir: Path | None = None,
        *,
        startup_timeout: float = 90.0,
        log_level: str = "info",
    ) -> None:
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="openhim-"))
        self.secantus_log = self.work_dir / "secantus.log"
        self.core_log = self.work_dir / "openhim-core.log"
        self.config_path = self.work_dir / "openhim-override.json"
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[TextIO] = []
        self._last_probe = ""
        self._session = requests.Session()
        # Core's API/router certificates are self-signed (tests only). trust_env=False, or
        # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE would override verify=False (and proxies/.netrc
        # from the environment would apply to loopback calls).
        self._session.verify = False
        self._session.trust_env = False

    # -- URLs -------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"https://{self.host}:{self.ports['api']}"

    @property
    def router_http_url(self) -> str:
        return f"http://{self.host}:{self.ports['router_http']}"

    @property
    def router_https_url(self) -> str:
        return f"https://{self.host}:{self.ports['router_https']}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://{self.host}:{self.ports['mongo']}/openhim"

    @property
    def root_credentials(self) -> tuple[str, str]:
        return self.root_email, self.root_password

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> OpenHimCore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    _PORT_NAMES = (
        "mongo",
        "api",
        "router_http",
        "router_https",
        "rerun",
        "tcp_adapter",
        "polling",
        "audit_udp",
        "audit_tls",
        "audit_tcp",
    )

    def start(self, attempts: int = 2) -> None:
        """Install core if needed, start secantus then core, wait until the API is usable.

        Free ports are picked just before the processes bind them; if another process takes
        one in between (EADDRINUSE), everything is stopped and started again on new ports.
        """
        atexit.register(self.stop)
        try:
            package_dir = ensure_openhim_core_installed()
            self.work_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(1, attempts + 1):
                started = time.monotonic()
                self.ports = dict(zip(self._PORT_NAMES, free_ports(len(self._PORT_NAMES)), strict=True))
                self._write_config()
                try:
                    self._start_secantus()
                    self._start_core(package_dir)
                    self._wait_until_ready(started)
                    break
                except PortConflictError:
                    if attempt == attempts:
                        raise
                    self._stop_processes()
                    for log_path in (self.secantus_log, self.core_log):  # keep for post-mortem
                        if log_path.exists():
                            log_path.replace(log_path.with_suffix(f".attempt{attempt}.log"))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _stop_processes(self) -> None:
        stop_process_groups(self._procs)
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def stop(self) -> None:
        """Stop every process started here, even half-started ones; idempotent."""
        atexit.unregister(self.stop)
        self._stop_processes()
        self._session.close()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _write_config(self) -> None:
        p, host = self.ports, self.host
        config = {
            "bindAddress": host,
            "mongo": {"url": self.mongo_url, "atnaUrl": self.mongo_url},
            "logger": {"level": self.log_level, "logToDB": False},
            "router": {
                "externalHostname": host,
                "httpPort": p["router_http"],
                "httpsPort": p["router_https"],
            },
            "api": {"httpsPort": p["api"]},
            "rerun": {"httpPort": p["rerun"], "host": host},
            "tcpAdapter": {"httpReceiver": {"httpPort": p["tcp_adapter"], "host": host}},
            "polling": {"pollingPort": p["polling"], "host": host},
            "alerts": {"enableAlerts": False},
            "reports": {"enableReports": False},
            "statsd": {"enabled": False},
            "auditing": {
                "servers": {
                    "udp": {"enabled": False, "port": p["audit_udp"]},
                    "tls": {"enabled": False, "port": p["audit_tls"]},
                    "tcp": {"enabled": False, "port": p["audit_tcp"]},
                },
                "auditEvents": {"interface": "internal", "host": host, "port": p["audit_tls"]},
            },
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def _spawn(self, cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> None:
        log = log_path.open("w", encoding="utf-8")
        self._logs.append(log)
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop() reaches every child
        )
        self._procs.append(proc)

    def _start_secantus(self) -> None:
        cmd = [
            sys.executable,
            str(SECANTUS_LAUNCHER),
            "--host",
            self.host,
            "--port",
            str(self.ports["mongo"]),
            "--storage-path",
            ":memory:",
        ]
        self._spawn(cmd, self.secantus_log, self.work_dir, dict(os.environ))
        listening = f"listening on {self.host}:{self.ports['mongo']}"
        self._wait("secantusdb to listen", lambda: listening in self._log(self.secantus_log), 30.0)

    def _start_core(self, package_dir: Path) -> None:
        # nconf reads environment variables with "_" between levels and ranks them above
        # --conf: a stray `api_httpsPort` or `NODE_ENV` would silently change the core.
        defaults = json.loads((package_dir / "config" / "default.json").read_text("utf-8"))
        shadowing = {*defaults, "conf", "cluster"}
        env = {k: v for k, v in os.environ.items() if k != "NODE_ENV" and k.split("_")[0] not in shadowing}
        node = shutil.which("node") or "node"
        cmd = [node, "lib/server.js", f"--conf={self.config_path}"]
        self._spawn(cmd, self.core_log, package_dir, env)

    def _wait_until_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout

        def heartbeat_ok() -> bool:
            return self._get_status("/heartbeat") == 200

        def root_user_exists() -> bool:
            return self._get_status(f"/authenticate/{self.root_email}") == 200

        def core_started() -> bool:
            # Logged once every server of the worker is bound (or failed to bind).
            return "OpenHIM server started" in self._log(self.core_log)

        self._wait("the core API heartbeat", heartbeat_ok, deadline - time.monotonic())
        self._wait("the root user", root_user_exists, deadline - time.monotonic())
        self._wait("core's start-up to finish", core_started, deadline - time.monotonic())
        self._check_port_conflict()

    @staticmethod
    def _log(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _check_port_conflict(self) -> None:
        """Raise ``PortConflictError`` if a server could not bind: core logs EADDRINUSE and
        carries on without that server; secantus exits."""
        for log_path in (self.core_log, self.secantus_log):
            text = self._log(log_path)
            if "EADDRINUSE" in text or "Address already in use" in text:
                raise PortConflictError(
                    self.error(f"a port was taken by another process (see {log_path.name})").args[0]
                )

    def _get_status(self, path: str) -> int | None:
        """Status of an unauthenticated API GET, or None (the error is kept for messages)."""
        try:
            resp = self._request("GET", self.api_url + path, timeout=2)
        except requests.RequestException as exc:
            self._last_probe = f"GET {path}: {exc!r}"
            return None
        self._last_probe = f"GET {path}: {resp.status_code} {resp.text[:200]}"
        return resp.status_code

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until true; raise with the log tails on timeout or process death."""
        deadline = time.monotonic() + max(timeout, 0.0)
        self._last_probe = ""
        while True:
            self._check_port_conflict()
            for proc in self._procs:
                if proc.poll() is not None:
                    raise self.error(f"{proc.args[1]!r} exited ({proc.returncode}) waiting for {what}")
            if ready():
                return
            if time.monotonic() >= deadline:
                last = f" (last probe: {self._last_probe})" if self._last_probe else ""
                raise self.error(f"timed out after {timeout:.0f}s waiting for {what}{last}")
            time.sleep(0.2)

    def error(self, message: str) -> OpenHimCoreError:
        """An ``OpenHimCoreError`` whose message carries the tail of both logs."""
        return OpenHimCoreError(
            f"OpenHIM test core: {message}\n"
            f"--- {self.secantus_log} (tail) ---\n{_tail(self.secantus_log)}\n"
            f"--- {self.core_log} (tail) ---\n{_tail(self.core_log)}"
        )

    # -- API client -------------------------------------------------------------------------
    def token_headers(self, email: str = ROOT_EMAIL, password: str = ROOT_PASSWORD) -> dict[str, str]:
        """Headers of core's legacy token scheme (the only API auth core 4.0.5 accepts)."""
        url = f"{self.api_url}/authenticate/{email}"
        resp = self._read_again_if_dropped("GET", lambda: self._request("GET", url))
        if resp.status_code != 200:
            raise self.error(f"GET /authenticate/{email} answered {resp.status_code}: {resp.text}")
        user_salt = resp.json()["salt"]
        auth_salt = secrets.token_hex(16)
        auth_ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        password_hash = _sha512_hex(user_salt, password)
        return {
            "auth-username": email,
            "auth-ts": auth_ts,
            "auth-salt": auth_salt,
            "auth-token": _sha512_hex(password_hash, auth_salt, auth_ts),
        }

    def api(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token_auth: bool = True,
        **kw: Any,
    ) -> requests.Response:
        """Call the core API; token-authenticated as root unless ``token_auth=False``."""
        headers = dict(kw.pop("headers", None) or {})

        def send() -> requests.Response:
            if token_auth:
                headers.update(self.token_headers())  # fresh for every attempt
            return self._request(method, self.api_url + path, json=json, headers=headers, **kw)

        return self._read_again_if_dropped(method, send)

    def _read_again_if_dropped(self, method: str, send: Callable[[], requests.Response]) -> requests.Response:
        """Core 4.0.5 sometimes drops a pooled keep-alive connection (or restarts its worker):
        a read is safe to send once more."""
        try:
            return send()
        except requests.ConnectionError:
            if method != "GET":
                raise
            time.sleep(1.0)
            return send()

    def router(self, method: str, path: str, *, https: bool = False, **kw: Any) -> requests.Response:
        """Send a request through the router; retry once on a refused/reset connection
        (core 4.0.5's worker can crash and be restarted by its master)."""
        url = (self.router_https_url if https else self.router_http_url) + path
        try:
            return self._request(method, url, **kw)
        except requests.ConnectionError:
            time.sleep(2.0)
            return self._request(method, url, **kw)

    def _request(self, method: str, url: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            return self._session.request(method, url, **kw)

    def _expect(self, resp: requests.Response, *statuses: int) -> requests.Response:
        if resp.status_code not in statuses:
            raise self.error(
                f"{resp.request.method} {resp.request.path_url} answered "
                f"{resp.status_code}: {resp.text[:500]}"
            )
        return resp

    # -- helpers for tests ------------------------------------------------------------------
    def create_client(self, client_id: str, password: str, roles: list[str], **extra: Any) -> dict[str, Any]:
        """Create a client that can use Basic auth on the router; return core's record.

        Core 4.0.5 checks ``hash(passwordAlgorithm)(password + passwordSalt).hex()``
        (lib/middleware/basicAuthentication.js), so store a sha512 hash of that.
        """
        salt = secrets.token_hex(16)
        body = {
            "clientID": client_id,
            "name": extra.pop("name", client_id),
            "roles": roles,
            "passwordAlgorithm": "sha512",
            "passwordSalt": salt,
            "passwordHash": _sha512_hex(password, salt),
            **extra,
        }
        self._expect(self.api("POST", "/clients", body), 201)
        clients = self._expect(self.api("GET", "/clients"), 200).json()
        return next(c for c in clients if c["clientID"] == client_id)

    def create_channel(self, channel: dict[str, Any]) -> dict[str, Any]:
        """Create a channel (core answers only a text); return core's record of it."""
        self._expect(self.api("POST", "/channels", channel), 201)
        channels = self._expect(self.api("GET", "/channels"), 200).json()
        return next(c for c in channels if c["name"] == channel["name"])

    def wait_for_router(
        self,
        path: str,
        expected_status: Callable[[int], bool],
        timeout: float = 15.0,
        *,
        method: str = "GET",
        https: bool = False,
        **kw: Any,
    ) -> requests.Response:
        """Poll the router until the status satisfies ``expected_status``.

        Channel changes reach core's router after 1-2.5 s (its channel cache refresh):
        poll, don't sleep a fixed time.
        """
        url = (self.router_https_url if https else self.router_http_url) + path
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                resp = self._request(method, url, **kw)
                if expected_status(resp.status_code):
                    return resp
                last = f"{resp.status_code}: {resp.text[:200]}"
            except requests.ConnectionError as exc:
                last = f"connection error: {exc}"
            if time.monotonic() >= deadline:
                raise self.error(f"router {method} {path} not as expected after {timeout}s: {last}")
            time.sleep(0.25)

    def transactions(self, filters: dict[str, Any] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Transactions, newest first, in full representation (``filters`` is core's
        ``filters`` JSON query parameter, e.g. ``{"channelID": id}``)."""
        params: dict[str, Any] = {
            "filterRepresentation": "full",
            "filterLimit": limit,
            "filterPage": 0,
        }
        if filters:
            params["filters"] = json.dumps(filters)
        return self._expect(self.api("GET", "/transactions", params=params), 200).json()

    def wait_for_transaction(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15.0,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Poll ``transactions()`` until one satisfies ``predicate`` (core saves the final
        status shortly after answering the client)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.transactions(filters) if predicate(t)]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise self.error(f"no matching transaction after {timeout}s")
            time.sleep(0.25)


@contextlib.contextmanager
def running_openhim_core(work_dir: Path | None = None, **kwargs: Any) -> Iterator[OpenHimCore]:
    """A started ``OpenHimCore``, stopped on exit whatever happens."""
    core = OpenHimCore(work_dir, **kwargs)
    core.start()
    try:
        yield core
    finally:
        core.stop()
