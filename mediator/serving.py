"""Running the mediator under gunicorn: options, logging, and the embedded openIMIS sandbox.

`mediator/config/gunicorn.conf.py` is a thin shim over this module so that the Docker image, the
console script and `python -m mediator` all start the service the same way.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from gunicorn.glogging import Logger as GunicornLogger

from mediator.settings import Settings

log = logging.getLogger("mediator.serving")

#: gunicorn kills a worker silent for this long; upstream calls are bounded by the read timeout.
WORKER_TIMEOUT_MARGIN_S = 30


def logging_config(level: str) -> dict[str, Any]:
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "mediator.logs.MediatorJsonFormatter"}},
        "filters": {"context": {"()": "mediator.logs.ContextFilter"}},
        "handlers": {"console": handler},
        "root": {"level": level.upper(), "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
            # One summary line per transaction is logged by the mediator itself.
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


class QuietAccessLogger(GunicornLogger):
    """gunicorn's logger, building an access-log line only when the access logger writes it.

    The mediator logs one JSON line per transaction and silences `gunicorn.access`; yet with a
    logging config given, gunicorn formats every request's access-log fields (the whole WSGI
    environ among them) before its logger drops the line: ~14 us per request.
    """

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


def prepare_metrics_dir(state_dir: str) -> None:
    """In the master, before any worker or the agent: an empty directory for this run's metrics.

    prometheus-client reads the variable when it is first imported, so the processes that
    inherit it (workers, agent) all count into the files of this directory (`mediator.metrics`).
    """
    directory = Path(state_dir) / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": [f"{settings.mediator_host}:{settings.mediator_port}"],
        "workers": settings.mediator_workers,
        "threads": settings.mediator_threads,
        "worker_class": "mediator.web.worker.FhirThreadWorker",  # gthread, errors in FHIR
        "timeout": int(settings.openimis_connect_timeout + settings.openimis_read_timeout)
        + WORKER_TIMEOUT_MARGIN_S,
        "graceful_timeout": 30,
        "keepalive": 5,
        "limit_request_line": 8190,
        "logconfig_dict": logging_config(settings.log_level),
        "logger_class": f"{__name__}.{QuietAccessLogger.__name__}",
        "proc_name": "openimis-mediator",
        **cpu_binding_hooks(settings.mediator_cpu_binding, settings.mediator_workers),
    }


def cpu_binding_hooks(binding: str, workers: int) -> dict[str, Any]:
    """gunicorn hooks that bind each worker process to one CPU, or none when binding is off.

    A worker runs one Python thread at a time (the GIL) and hands it between its threads at
    every I/O wait; threads spread over several CPUs hand it across CPUs, which costs far more
    than on one (benchmark: 6-23 % more claims/s, BENCHMARKS.md).
    """
    usable = usable_cpus()
    if not binds_workers(binding, workers, usable):
        return {}
    return {
        "pre_fork": partial(choose_worker_cpu, usable),
        "post_fork": bind_worker_to_its_cpu,
    }


def log_cpu_binding(settings: Settings) -> None:
    """One line at start saying whether the workers are bound, and why: `auto` may decide either way."""
    usable = usable_cpus()
    bound = binds_workers(settings.mediator_cpu_binding, settings.mediator_workers, usable)
    log.info(
        "workers %s (MEDIATOR_CPU_BINDING=%s, %d workers, usable CPUs: %s)",
        "bound to one CPU each" if bound else "not bound to CPUs",
        settings.mediator_cpu_binding,
        settings.mediator_workers,
        ",".join(map(str, usable)) or "unknown",
    )


def binds_workers(binding: str, workers: int, usable: list[int]) -> bool:
    """`auto` binds only when the workers fill the usable CPUs: the instance owns them (a cpuset,
    a dedicated host). On a larger shared host, two instances would bind to the same CPUs."""
    if binding == "off" or len(usable) < 2:
        return False
    return binding == "on" or workers >= len(usable)


def least_bound_cpu(usable: list[int], bound: list[int]) -> int:
    """The usable CPU the fewest live workers are bound to: a restarted worker takes the one its
    predecessor left."""
    return min(usable, key=bound.count)  # the first such CPU: min keeps the first of equals


def choose_worker_cpu(usable: list[int], server: Any, worker: Any) -> None:
    """`pre_fork` hook, in the master, which alone knows the live workers' CPUs."""
    # a copy first: gunicorn's SIGCHLD handler may reap a worker out of WORKERS meanwhile
    bound = [w.mediator_cpu for w in list(server.WORKERS.values()) if hasattr(w, "mediator_cpu")]
    worker.mediator_cpu = least_bound_cpu(usable, bound)


def bind_worker_to_its_cpu(server: Any, worker: Any) -> None:
    """`post_fork` hook, in the new worker, before it starts its threads (they inherit the CPU)."""
    try:
        os.sched_setaffinity(0, {worker.mediator_cpu})
    except OSError as exc:  # a container may forbid it: run unbound rather than not at all
        log.warning("worker %d not bound to CPU %d: %s", os.getpid(), worker.mediator_cpu, exc)
    else:
        log.info("worker %d bound to CPU %d", os.getpid(), worker.mediator_cpu)


def usable_cpus() -> list[int]:
    """The CPUs of this process's affinity mask (a cpuset narrows it; a CPU quota does not)."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return []
    return sorted(os.sched_getaffinity(0))


class ChildProcess:
    """A helper process of the gunicorn master (sandbox, agent), stopped with the master."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class EmbeddedSandbox(ChildProcess):
    """The openIMIS sandbox as a child process of the gunicorn master, for standalone runs."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port or _free_port(host)
        super().__init__(
            "sandbox", [sys.executable, "-m", "mediator.sandbox", "--host", host, "--port", str(self.port)]
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if _port_open(self.host, self.port):
            raise RuntimeError(f"SANDBOX_PORT: {self.host}:{self.port} is already in use")
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError("the embedded openIMIS sandbox exited at start")
            if _port_open(self.host, self.port):
                log.info("embedded openIMIS sandbox started", extra={"url": self.url})
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the embedded openIMIS sandbox did not start within {timeout} s")


class SupervisedChild(ChildProcess):
    """A helper process the master starts again whenever it ends while the instance runs.

    The agent alone forwards held claims, refreshes the services/items copy and heartbeats to
    OpenHIM: if it died unnoticed, claims answered 202 would wait forever. Whether it ended on
    purpose is the master's to say, not the exit code's: the instance is stopping once the master
    got a stop signal (`restart_until_signalled`) or `stop` was called. The exit code is only
    logged, and is unknown when gunicorn's master, which reaps any child of its own, got it first
    (gunicorn then logs how the process ended).
    """

    #: Seconds before the first restart; doubled after each quick death, up to the maximum.
    FIRST_DELAY_S = 1.0
    MAX_DELAY_S = 60.0

    def __init__(self, name: str, argv: list[str]) -> None:
        super().__init__(name, argv)
        self._stopping = threading.Event()
        self._signalled = False  # a plain flag: a signal handler must take no lock
        self._turn = threading.Lock()  # a restart and `stop` never cross
        # gunicorn's master forks workers from its main thread while this thread may be starting
        # the child or logging: a worker forked meanwhile would inherit Popen's error pipe (and
        # the restart would wait for that worker's whole life) or a held stderr lock. The master's
        # forks (os.fork, which runs these hooks; Popen's own fork does not) wait for this lock.
        self._spawning = threading.Lock()
        os.register_at_fork(
            before=self._spawning.acquire,
            after_in_parent=self._spawning.release,
            after_in_child=self._spawning.release,
        )

    def start(self) -> None:
        super().start()
        threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True).start()

    def restart_until_signalled(self, *signums: int) -> None:
        """Chain the master's handlers of its stop signals (from the master's main thread)."""
        for signum in signums:
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # the default action ends the master, and this thread with it

            def note_stop(received: int, frame: Any, previous: Any = previous) -> None:
                self._signalled = True
                previous(received, frame)

            signal.signal(signum, note_stop)

    def _watch(self) -> None:
        delay, process = self.FIRST_DELAY_S, self.process
        while True:
            started = time.monotonic()
            code = _exit_code(process) if process is not None else None
            if time.monotonic() - started > self.MAX_DELAY_S:
                delay = self.FIRST_DELAY_S  # it had been running well: a fresh death
            # Decided after the wait: a stop signal sent to the whole process group may end the
            # child before the master has run its handler.
            self._stopping.wait(delay)
            with self._turn, self._spawning:
                if self._signalled or self._stopping.is_set():
                    return
                if process is not None:
                    log.error(
                        f"the {self.name} process died; it is started again",
                        extra={"exit_code": code, "down_for_s": delay},
                    )
                try:
                    super().start()
                    process = self.process
                except Exception:  # this thread must outlive a failed start: the next round tries again
                    process = None
                    log.exception(f"the {self.name} process could not be started")
            delay = min(delay * 2, self.MAX_DELAY_S)

    def stop(self) -> None:
        with self._turn:
            self._stopping.set()
        super().stop()


def _exit_code(process: subprocess.Popen[bytes]) -> int | None:
    """Wait for the process to end; its exit code, or None if gunicorn's master reaped it first."""
    try:
        _, status = os.waitpid(process.pid, 0)
    except ChildProcessError:
        return None
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode


def start_agent() -> SupervisedChild:
    """One background agent per instance (forwarder, OpenHIM heartbeat), whatever the worker count.

    The agent never exits with 3 or 4: gunicorn's master, when it happens to reap the agent
    itself, takes those for a worker's boot or app-load error and halts the whole instance.
    """
    agent = SupervisedChild("agent", [sys.executable, "-m", "mediator", "agent"])
    agent.start()
    agent.restart_until_signalled(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
    return agent


def refuse_start(reason: str) -> NoReturn:
    """One line saying why the instance does not start, then the master's exit (2: configuration)."""
    log.error("the mediator does not start: %s", reason)
    raise SystemExit(2)


def stop_children_at_exit(server: Any) -> None:
    """Stop the helper processes however the master ends: gunicorn skips `on_exit` when it exits
    while it starts (its port taken meanwhile) or after an error in its main loop. The workers,
    forked from the master, inherit the handler: it acts in the master only."""
    master = os.getpid()

    def stop_children() -> None:
        if os.getpid() == master:
            children = getattr(server, "mediator_children", {})
            for name in ("agent", "sandbox"):
                if children.get(name) is not None:
                    children[name].stop()

    atexit.register(stop_children)


def start_embedded_sandbox_if_needed(settings: Settings) -> EmbeddedSandbox | None:
    """With no OPENIMIS_URL, start the sandbox and point the workers (via the env) at it."""
    if not settings.uses_sandbox:
        return None  # (the demo password towards a real server is refused with the settings)
    sandbox = EmbeddedSandbox(settings.sandbox_host, settings.sandbox_port)
    sandbox.start()
    os.environ["OPENIMIS_URL"] = sandbox.url
    log.warning(
        "OPENIMIS_URL is not set: running against the embedded openIMIS sandbox (demo data only)",
        extra={"sandbox_url": sandbox.url},
    )
    return sandbox


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
