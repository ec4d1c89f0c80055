"""What an instance owns: an absolute state directory, usable or named in one line, and a lock."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mediator.instance import InstanceLock, check_port_free, check_state_dir, prepare_state_dir
from mediator.settings import SettingsError, load_settings


def test_the_default_state_directory_is_the_users_not_the_current_directorys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings({"HOME": "/home/op"}).mediator_state_dir == "/home/op/.local/state/openimis-mediator"
    xdg = load_settings({"HOME": "/home/op", "XDG_STATE_HOME": "/srv/state"})
    assert xdg.mediator_state_dir == "/srv/state/openimis-mediator"


def test_a_relative_state_directory_is_made_absolute_once_for_every_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"MEDIATOR_STATE_DIR": "var", "CLAIM_STORE_PATH": "store/claims.db"})
    assert settings.mediator_state_dir == str(tmp_path / "var")
    assert settings.claim_store_file == tmp_path / "store" / "claims.db"
    assert settings.with_overrides({}).mediator_state_dir == str(tmp_path / "var")


@pytest.mark.parametrize("inside", ["", "state"])
def test_an_unusable_state_directory_is_named_in_one_line(tmp_path, inside):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    settings = load_settings({"MEDIATOR_STATE_DIR": str(not_a_dir / inside)})
    with pytest.raises(SettingsError) as err:
        check_state_dir(settings)
    assert str(err.value).startswith("MEDIATOR_STATE_DIR: ") and "not a directory" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_check_leaves_nothing_and_the_start_makes_it_private(tmp_path):
    settings = load_settings({"MEDIATOR_STATE_DIR": str(tmp_path / "a" / "state")})
    check_state_dir(settings)
    assert list(tmp_path.iterdir()) == []
    path = prepare_state_dir(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


HOLD = """
import sys, time
from mediator.instance import InstanceLock
InstanceLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_instance_on_one_state_directory_is_refused_while_the_first_lives(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert InstanceLock(tmp_path).holder() == holder.pid
        with pytest.raises(SettingsError) as err:
            InstanceLock(tmp_path).acquire()
        assert str(err.value) == (
            f"MEDIATOR_STATE_DIR: {tmp_path} is in use by another instance (pid {holder.pid}): "
            "give each instance its own state directory"
        )
    finally:
        holder.kill()
        holder.wait()
    assert InstanceLock(tmp_path).holder() is None  # the kernel let go with the process
    lock = InstanceLock(tmp_path)
    lock.acquire()
    assert stat.S_IMODE((tmp_path / "instance.lock").stat().st_mode) == 0o600
    lock.release()


def test_a_taken_port_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = load_settings({"MEDIATOR_HOST": "127.0.0.1", "MEDIATOR_PORT": str(port)})
        with pytest.raises(SettingsError, match=rf"^MEDIATOR_PORT: 127.0.0.1:{port} is already in use$"):
            check_port_free(settings, wait_s=0.5)
    check_port_free(settings)


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIATOR_", "OPENIMIS_", "OPENHIM_"))}
    return subprocess.run(
        [sys.executable, "-m", "mediator", *args],
        env={**clean, "MEDIATOR_STATE_DIR": str(tmp_path / "state"), **env},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_refuses_an_unusable_state_directory(tmp_path):
    (tmp_path / "file").write_text("")
    result = _cli(tmp_path, "check-config", MEDIATOR_STATE_DIR=str(tmp_path / "file"))
    assert result.returncode == 2
    assert result.stderr == (
        f"openimis-mediator: invalid setting: MEDIATOR_STATE_DIR: {tmp_path / 'file'} is not a directory\n"
    )


def test_queue_commands_say_which_store_they_looked_for_and_create_none(tmp_path):
    result = _cli(tmp_path, "queue", "list")
    assert result.returncode == 1
    assert f"no claim store at {tmp_path / 'state' / 'claims.sqlite3'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()
    cache = _cli(tmp_path, "cache", "status")
    assert cache.returncode == 1 and f"no state directory at {tmp_path / 'state'}" in cache.stderr


FORK_AND_KILL_MASTER = """
import os, signal, sys, time
from mediator.instance import InstanceLock
InstanceLock(sys.argv[1]).acquire()
if os.fork() == 0:  # a worker, as gunicorn forks it (the fork hooks have run when it runs)
    print("worker", flush=True)
    time.sleep(30)
    os._exit(0)
time.sleep(30)
"""


def test_the_lock_is_the_masters_alone_not_its_workers(tmp_path):
    master = subprocess.Popen(
        [sys.executable, "-c", FORK_AND_KILL_MASTER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert master.stdout.readline() == "worker\n"
        master.kill()  # the master alone: its worker lives on a while
        master.wait()
        assert InstanceLock(tmp_path).holder() is None
    finally:
        os.killpg(master.pid, 9)
