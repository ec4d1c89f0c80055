"""Configuration from the OpenHIM console, shared by every worker of one instance.

One background process per instance (the agent) heartbeats and receives the console config;
it validates it and writes it atomically to a file in the state directory. Each worker looks
at that file at most once a second and puts a new config in force without a restart. An
invalid config never reaches the file: the previous one stays in force and the agent records
why, which `/ready` reports.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mediator.settings import Settings

CONSOLE_CONFIG_FILE = "console-config.json"
OPENHIM_STATE_FILE = "openhim-state.json"


def console_overrides(settings: Settings, config: Mapping[str, Any]) -> dict[str, Any]:
    """Console parameters -> settings fields. Unknown parameters are ignored; an empty
    password means "keep the one the mediator was started with"."""
    fields = settings.console_params()
    overrides: dict[str, Any] = {}
    for param, value in config.items():
        field_name = fields.get(param)
        if field_name is None or value is None:
            continue
        if field_name.endswith("_password") and value == "":
            continue
        overrides[field_name] = value
    return overrides


def apply_console_config(settings: Settings, config: Mapping[str, Any]) -> Settings:
    """The settings with the console's values in force; raises SettingsError if one is invalid."""
    return settings.with_overrides(console_overrides(settings, config))


class SharedState:
    """Small JSON documents in the instance's state directory, replaced atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def write(self, name: str, document: Mapping[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(document, fh)
            os.chmod(tmp, 0o600)  # the console config can hold the openIMIS password
            os.replace(tmp, self.directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / name).read_text())
        except (OSError, ValueError):
            return None

    def mtime(self, name: str) -> float | None:
        try:
            return os.stat(self.directory / name).st_mtime_ns
        except OSError:
            return None

    def remove(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)
