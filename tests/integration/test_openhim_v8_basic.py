"""The OpenHIM agent against a core that speaks v8's Basic auth (stand-in, real HTTP)."""

import dataclasses
import threading
import time

import pytest

from mediator import agent as agent_module
from mediator.agent import CONFIG_RECHECK_BEATS, OpenHimAgent
from mediator.openhim.live_config import CONSOLE_CONFIG_FILE, OPENHIM_STATE_FILE, SharedState
from mediator.runtime import MediatorRuntime
from mediator.settings import Secret
from tests.support.openhim_v8_standin import running_standin
from tests.support.waiting import wait_until as wait_for


@pytest.fixture
def standin():
    with running_standin() as (url, state):
        yield url, state


@pytest.fixture
def agent_settings(settings, standin, tmp_path):
    url, _ = standin
    return settings.with_overrides(
        {
            "openhim_api_url": url,
            "openhim_password": "openhim-password",
            "openhim_heartbeat_interval": "1",
            "openhim_install_channels": "true",
            "mediator_state_dir": str(tmp_path),
        }
    )


@pytest.fixture
def running_agent(agent_settings):
    agent = OpenHimAgent(agent_settings, SharedState(agent_settings.mediator_state_dir))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    yield agent
    stop.set()
    thread.join(10)


def test_registers_with_basic_auth_installs_channels_and_heartbeats(running_agent, standin, agent_settings):
    _, state = standin
    wait_for(lambda: len(state.heartbeats) >= 2)
    assert agent_settings.mediator_urn in state.mediators
    assert running_agent.api.scheme == "basic"
    assert set(state.auth_headers_seen) == {"Basic"}, "a v8 core must never see the token scheme"
    assert len(state.channels) == 5
    assert state.heartbeats[0].get("config") is True, "the first beat asks for the console config"
    assert all("config" not in beat for beat in state.heartbeats[1:CONFIG_RECHECK_BEATS])
    status = SharedState(agent_settings.mediator_state_dir).read(OPENHIM_STATE_FILE)
    assert status["registered"] is True and status["last_heartbeat"]


def test_a_restart_finds_its_channels_and_heartbeats(running_agent, standin, agent_settings):
    """A second start against a core that has the mediator and its channels (a v8 core too)."""
    _, state = standin
    wait_for(lambda: state.heartbeats)
    state.channels[1]["allow"] = ["changed-by-the-operator"]
    restarted = OpenHimAgent(agent_settings, SharedState(agent_settings.mediator_state_dir))
    stop = threading.Event()
    thread = threading.Thread(target=restarted.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: restarted._status.get("last_heartbeat"), timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert restarted._status["registered"] is True and "attempts" not in restarted._status
    assert len(state.channels) == 5 and state.channels[1]["allow"] == ["changed-by-the-operator"]


def test_console_change_reaches_workers_within_a_heartbeat(running_agent, standin, agent_settings):
    _, state = standin
    wait_for(lambda: state.heartbeats)
    worker = MediatorRuntime(agent_settings)
    state.mediators[agent_settings.mediator_urn]["config"] = {"openimisReadTimeout": 7, "logLevel": "WARNING"}
    state.config_changed.add(agent_settings.mediator_urn)

    def worker_has_it():
        worker._next_config_check = 0  # the worker checks once a second; do not wait for it here
        worker.refresh_live_config()
        return worker.settings.openimis_read_timeout == 7

    wait_for(worker_has_it, timeout=3)
    assert worker.settings.log_level == "WARNING"


@pytest.fixture
def recheck_every_third_beat(monkeypatch):
    monkeypatch.setattr(agent_module, "CONFIG_RECHECK_BEATS", 3)


def test_a_console_change_core_does_not_send_still_arrives(
    recheck_every_third_beat, running_agent, standin, agent_settings
):
    """Core 4.0.5 loses a change saved while it handles a heartbeat: the agent asks again."""
    _, state = standin
    shared = SharedState(agent_settings.mediator_state_dir)
    wait_for(lambda: shared.read(CONSOLE_CONFIG_FILE))  # the first beat's config
    first = shared.mtime(CONSOLE_CONFIG_FILE)
    wait_for(lambda: len(state.heartbeats) >= 4, timeout=10)  # asked again at the 4th beat
    assert state.heartbeats[3].get("config") is True
    assert shared.mtime(CONSOLE_CONFIG_FILE) == first, "an unchanged config is not written again"
    # A change core never flags (not in config_changed), as when its race loses it:
    state.mediators[agent_settings.mediator_urn]["config"] = {"openimisReadTimeout": 9}
    wait_for(lambda: shared.read(CONSOLE_CONFIG_FILE)["config"] == {"openimisReadTimeout": 9}, timeout=10)
    assert running_agent.settings.openimis_read_timeout == 9


def test_invalid_console_value_is_refused_and_previous_stays(running_agent, standin, agent_settings):
    _, state = standin
    shared = SharedState(agent_settings.mediator_state_dir)
    urn = agent_settings.mediator_urn
    wait_for(lambda: state.heartbeats)
    state.mediators[urn]["config"] = {"openimisReadTimeout": 9}
    state.config_changed.add(urn)
    wait_for(lambda: (shared.read(CONSOLE_CONFIG_FILE) or {}).get("config") == {"openimisReadTimeout": 9})
    state.mediators[urn]["config"] = {"openimisReadTimeout": -3}
    state.config_changed.add(urn)
    wait_for(lambda: (shared.read(OPENHIM_STATE_FILE) or {}).get("config_error"))
    assert "OPENIMIS_READ_TIMEOUT" in shared.read(OPENHIM_STATE_FILE)["config_error"]
    assert shared.read(CONSOLE_CONFIG_FILE)["config"] == {"openimisReadTimeout": 9}


def test_reregistration_only_with_a_greater_version(agent_settings, standin, monkeypatch):
    from mediator.openhim import registration
    from mediator.openhim.api import OpenHimApi

    _, state = standin
    api = OpenHimApi(agent_settings)
    registration.register(api, registration.registration_document(agent_settings))
    urn = agent_settings.mediator_urn
    state.mediators[urn]["config"] = {"logLevel": "ERROR"}
    monkeypatch.setattr(registration, "__version__", "0.0.1")
    registration.register(api, registration.registration_document(agent_settings))
    assert state.mediators[urn]["version"] != "0.0.1"
    monkeypatch.setattr(registration, "__version__", "99.0.0")
    registration.register(api, registration.registration_document(agent_settings))
    assert state.mediators[urn]["version"] == "99.0.0"
    assert state.mediators[urn]["config"]["logLevel"] == "ERROR", "console values survive an upgrade"


def test_one_heartbeat_loop_per_instance_and_clean_sigterm(standin, sandbox):
    """Two gunicorn workers, yet one heartbeat per interval; SIGTERM stops every process."""
    from tests.support.services import running_mediator, stop

    url, state = standin
    env = {
        "OPENIMIS_URL": sandbox.url,
        "OPENHIM_API_URL": url,
        "OPENHIM_PASSWORD": "openhim-password",
        "OPENHIM_AUTH": "basic",
        "OPENHIM_HEARTBEAT_INTERVAL": "1",
        "MEDIATOR_WORKERS": "3",
    }
    with running_mediator(env) as mediator:
        wait_for(lambda: len(state.heartbeats) >= 1, timeout=20)
        first = len(state.heartbeats)
        time.sleep(4.5)
        beats = len(state.heartbeats) - first
        assert 3 <= beats <= 6, f"{beats} heartbeats in 4.5 s at a 1 s interval with 3 workers"
        assert state.registrations == 1
        children = _children(mediator.process.pid)
        assert len(children) >= 4  # 3 workers + the agent
        assert stop(mediator) == 0, "gunicorn exits cleanly on SIGTERM"
    for pid in children:
        assert not _alive(pid), f"process {pid} survived the mediator's shutdown"


def _children(pid: int) -> list[int]:
    import subprocess

    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


@pytest.fixture
def replica_settings(agent_settings):
    """A replica: its claim store is shared with others (PostgreSQL); the agent only reads the URL."""
    return dataclasses.replace(agent_settings, claim_store_url=Secret("postgresql://r:p@db.example.org/x"))


def test_a_replica_asks_for_the_console_config_at_every_beat(replica_settings, standin):
    """Core hands a change to the first heartbeat only: another replica's must not take it from this one."""
    _, state = standin
    agent = OpenHimAgent(replica_settings, SharedState(replica_settings.mediator_state_dir))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(state.heartbeats) >= 3, timeout=10)
        assert all(beat.get("config") is True for beat in state.heartbeats[:3])
    finally:
        stop.set()
        thread.join(10)
