"""gunicorn as the mediator configures it."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gunicorn.config import Config

from mediator.serving import (
    SupervisedChild,
    bind_worker_to_its_cpu,
    binds_workers,
    choose_worker_cpu,
    gunicorn_options,
)
from mediator.settings import Settings, SettingsError, load_settings
from tests.support.waiting import wait_until


class _Response:
    status = "201 CREATED"
    sent = 12
    headers = [("Content-Type", "application/fhir+json")]


class _Request:
    headers = [("HOST", "mediator")]


_ENVIRON = {
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/fhir/Claim",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "PATH_INFO": "/fhir/Claim",
}


def _gunicorn_logger(settings: Settings):
    cfg = Config()
    for name, value in gunicorn_options(settings).items():
        cfg.set(name, value)
    return cfg.logger_class(cfg)


def test_access_log_fields_are_not_built_while_the_access_log_is_off(settings, monkeypatch) -> None:
    logger = _gunicorn_logger(settings)

    def built(*_args):
        raise AssertionError("access-log fields built for a line nobody writes")

    monkeypatch.setattr(logger, "atoms", built)
    logger.access(_Response, _Request, _ENVIRON, datetime.timedelta(milliseconds=3))


def test_an_operator_who_turns_the_access_log_on_gets_its_lines(settings, caplog) -> None:
    logger = _gunicorn_logger(settings)
    access = logging.getLogger("gunicorn.access")
    access.addHandler(caplog.handler)
    access.setLevel(logging.INFO)
    try:
        logger.access(_Response, _Request, _ENVIRON, datetime.timedelta(milliseconds=3))
    finally:
        access.removeHandler(caplog.handler)
        access.setLevel(logging.CRITICAL)
    assert any('"POST /fhir/Claim HTTP/1.1" 201' in r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _restore_logging():
    """gunicorn's logger applies the mediator's logging config to the whole process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _supervised(tmp_path, exit_code: int) -> tuple[SupervisedChild, Path]:
    """A child that notes each of its starts in a file, then exits at once."""
    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('started\\n'); raise SystemExit({exit_code})"
    child = SupervisedChild("agent", [sys.executable, "-c", script])
    child.FIRST_DELAY_S = 0.05
    return child, starts


def _count(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_a_dead_child_is_started_again_until_the_instance_stops(tmp_path, caplog):
    child, starts = _supervised(tmp_path, exit_code=1)
    with caplog.at_level(logging.ERROR, logger="mediator.serving"):
        child.start()
        wait_until(lambda: _count(starts) >= 3, timeout=10, every=0.02)
        child.stop()
    stopped_at = _count(starts)
    time.sleep(0.5)  # several restart delays
    assert _count(starts) == stopped_at
    died = [r for r in caplog.records if "process died" in r.getMessage()]
    assert died and all(r.exit_code == 1 for r in died)


def test_a_child_is_not_started_again_once_the_master_got_a_stop_signal(tmp_path):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append("master's own handler"))
    try:
        child, starts = _supervised(tmp_path, exit_code=0)
        child.FIRST_DELAY_S = 0.2
        child.start()
        child.restart_until_signalled(signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)  # as the process group gets SIGTERM
        wait_until(lambda: _count(starts) == 1 and child.exited(), timeout=10, every=0.02)
        time.sleep(0.6)  # three restart delays
        child.stop()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == ["master's own handler"], "the master's handler still runs"
    assert _count(starts) == 1


def test_a_failed_restart_is_tried_again(tmp_path, caplog):
    child, starts = _supervised(tmp_path, exit_code=1)
    command = child.argv
    with caplog.at_level(logging.ERROR, logger="mediator.serving"):
        child.start()
        wait_until(lambda: _count(starts) >= 1, timeout=10, every=0.02)
        child.argv = [str(tmp_path / "no-such-program")]  # the next starts fail
        wait_until(lambda: any("could not be started" in r.getMessage() for r in caplog.records), timeout=10)
        child.argv = command
        before = _count(starts)
        wait_until(lambda: _count(starts) > before, timeout=10, every=0.02)
        child.stop()


# -- binding each worker to one CPU ----------------------------------------------------------


@pytest.mark.parametrize(
    ("binding", "workers", "usable", "binds"),
    [
        ("auto", 2, [0, 1], True),  # the instance fills its CPUs (a cpuset, a dedicated host)
        ("auto", 4, [2, 3], True),
        ("auto", 2, list(range(16)), False),  # a larger shared host: another instance may bind too
        ("on", 2, list(range(16)), True),
        ("off", 2, [0, 1], False),
        ("on", 2, [0], False),  # one CPU: nothing to choose
    ],
)
def test_workers_are_bound_when_the_instance_owns_its_cpus(binding, workers, usable, binds) -> None:
    assert binds_workers(binding, workers, usable) is binds


class _Worker:
    pass


class _Master:
    def __init__(self, *cpus: int) -> None:
        self.WORKERS = {}
        for pid, cpu in enumerate(cpus, start=100):
            worker = _Worker()
            worker.mediator_cpu = cpu
            self.WORKERS[pid] = worker


@pytest.mark.parametrize(
    ("usable", "live", "chosen"),
    [
        ([0, 1], (), 0),
        ([0, 1], (0,), 1),
        ([0, 1], (1,), 0),  # a worker restarted after the one on CPU 0 died
        ([2, 3, 5], (2, 3), 5),
        ([0, 1], (0, 1, 0), 1),  # more workers than CPUs: spread evenly
    ],
)
def test_a_new_worker_takes_the_cpu_fewest_live_workers_are_bound_to(usable, live, chosen) -> None:
    worker = _Worker()
    choose_worker_cpu(usable, _Master(*live), worker)
    assert worker.mediator_cpu == chosen


def test_binding_off_gives_gunicorn_no_fork_hooks(settings) -> None:
    on = gunicorn_options(replace(settings, mediator_cpu_binding="on"))
    off = gunicorn_options(replace(settings, mediator_cpu_binding="off"))
    assert "pre_fork" not in off and "post_fork" not in off
    if len(os.sched_getaffinity(0)) > 1:
        assert callable(on["pre_fork"]) and callable(on["post_fork"])


def test_an_unknown_cpu_binding_is_named() -> None:
    with pytest.raises(
        SettingsError, match=r"^MEDIATOR_CPU_BINDING: 'sometimes' is not one of auto, on, off$"
    ):
        load_settings({"MEDIATOR_CPU_BINDING": "sometimes"})


def test_a_worker_the_system_will_not_bind_runs_unbound_and_says_so(monkeypatch, caplog) -> None:
    def refused(_pid, _cpus):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", refused)
    worker = _Worker()
    worker.mediator_cpu = 1
    with caplog.at_level(logging.INFO, logger="mediator.serving"):
        bind_worker_to_its_cpu(_Master(), worker)  # no exception: the worker serves unbound
    (record,) = [r for r in caplog.records if r.name == "mediator.serving"]
    assert record.levelname == "WARNING"
    assert f"worker {os.getpid()} not bound to CPU 1" in record.getMessage()
