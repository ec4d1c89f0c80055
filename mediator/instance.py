"""What one instance owns before it starts anything: its state directory, its lock, its port.

The gunicorn master checks them all before it starts a helper process (the sandbox, the agent),
so that a start-up failure is one line and leaves no process behind; the lock, held by the
master for its whole life, refuses a second instance on the same state directory (two
forwarders on one claim queue, two agents heartbeating as one mediator).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

from mediator.settings import Settings, SettingsError

LOCK_FILE = "instance.lock"
#: How long a port in use is tried again before the start is refused.
PORT_WAIT_S = 5.0


def check_state_dir(settings: Settings) -> None:
    """Raise a SettingsError naming the setting when the state directory (or the claim store's,
    when CLAIM_STORE_PATH puts it elsewhere) cannot be used; leaves nothing behind."""
    _check_directory("MEDIATOR_STATE_DIR", Path(settings.mediator_state_dir))
    if settings.claim_store_path:
        _check_directory("CLAIM_STORE_PATH", settings.claim_store_file.parent)


def _check_directory(name: str, path: Path) -> None:
    """Tried rather than judged from the mode bits, which say nothing of a read-only file system
    or of what root may do."""
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{name}: {path} is not a directory")
    ancestor = next((p for p in (path, *path.parents) if p.exists()), path)
    if not ancestor.is_dir():
        raise SettingsError(f"{name}: {path} cannot be created: {ancestor} is not a directory")
    try:
        tempfile.TemporaryDirectory(dir=ancestor, prefix=".openimis-mediator-probe-").cleanup()
    except OSError as exc:
        what = "is not writable" if ancestor == path else f"cannot be created in {ancestor}"
        raise SettingsError(f"{name}: {path} {what}: {exc.strerror} (uid {os.getuid()})") from None


def prepare_state_dir(settings: Settings) -> Path:
    """The state directory, created private (0700: it holds claims and the console config)."""
    check_state_dir(settings)
    path = Path(settings.mediator_state_dir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise SettingsError(f"MEDIATOR_STATE_DIR: {path}: {exc.strerror}") from None
    return path


class InstanceLock:
    """An flock on `<state dir>/instance.lock`, with the holder's pid in the file for the message.

    The kernel releases it when the holder ends, however it ends: no stale lock after a crash.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise SettingsError(
                f"MEDIATOR_STATE_DIR: {self.path.parent} is in use by another instance"
                f"{f' (pid {holder})' if holder else ''}: give each instance its own state directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        # The master's alone: a worker it forks lets go of its copy, so that a master killed
        # alone frees the state directory for its successor at once.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the process holding the lock, or None when no instance holds it."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd) or -1
        finally:
            os.close(fd)  # a shared lock taken here goes with it
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pid_in(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def check_port_free(settings: Settings, wait_s: float = PORT_WAIT_S) -> None:
    """One line where gunicorn would log ten. A port in use is tried again for a few seconds, as
    gunicorn does: a predecessor's workers may still be ending (a restart after a crash)."""
    host, port = settings.mediator_host, settings.mediator_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise SettingsError(
                        f"MEDIATOR_HOST: cannot listen on {host}:{port}: {exc.strerror}"
                    ) from None
        if time.monotonic() >= deadline:
            raise SettingsError(f"MEDIATOR_PORT: {host}:{port} is already in use")
        time.sleep(0.2)


def claim_instance(settings: Settings) -> InstanceLock:
    """Everything the master checks before it starts a process: raises a one-line SettingsError."""
    prepare_state_dir(settings)
    lock = InstanceLock(settings.mediator_state_dir)
    lock.acquire()
    try:
        check_port_free(settings)
    except SettingsError:
        lock.release()
        raise
    return lock
