"""The registration document and the calls that register the mediator and install channels.

`mediator.json` is the template an operator can read; the URN, the version (the package's: a
new release re-registers, since core only updates on a greater version) and the host/port of
every route are filled in from the settings at registration.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mediator import __version__
from mediator.openhim.api import OpenHimApi, OpenHimError
from mediator.settings import CONFIG_DIR, Settings

log = logging.getLogger("mediator.openhim")

MEDIATOR_JSON = Path(os.environ.get("MEDIATOR_JSON", CONFIG_DIR.parent / "mediator.json"))


def registration_document(settings: Settings, template: Path = MEDIATOR_JSON) -> dict[str, Any]:
    doc = json.loads(template.read_text())
    doc["urn"] = settings.mediator_urn
    doc["version"] = __version__
    for endpoint in doc.get("endpoints", []):
        endpoint["host"], endpoint["port"] = settings.route_host, str(settings.route_port)
    for channel in doc.get("defaultChannelConfig", []):
        for route in channel.get("routes", []):
            route["host"], route["port"] = settings.route_host, settings.route_port
    doc["config"] = initial_console_config(settings, doc.get("configDefs", []))
    return doc


def initial_console_config(settings: Settings, config_defs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the console shows before an operator changes anything: the settings in force.

    Passwords are left out: the console is not where a secret from the environment should be
    copied to. (Core keeps existing console values over these on re-registration.)
    """
    fields = settings.console_params()
    config: dict[str, Any] = {}
    for definition in config_defs:
        param = definition["param"]
        if param in fields and definition.get("type") != "password":
            config[param] = getattr(settings, fields[param])
    return config


def register(api: OpenHimApi, document: dict[str, Any]) -> None:
    response = api.request("POST", "/mediators", document)
    if response.status_code not in (200, 201):
        raise OpenHimError(f"registration answered {response.status_code}: {response.text[:300]}")


def install_channels(api: OpenHimApi, urn: str) -> None:
    response = api.request("POST", f"/mediators/{quote(urn, safe='')}/channels", [])
    if response.status_code not in (200, 201):
        raise OpenHimError(f"channel installation answered {response.status_code}: {response.text[:300]}")


def heartbeat(api: OpenHimApi, urn: str, uptime_s: float, want_config: bool) -> dict[str, Any] | None:
    """Beat once; returns the console config when core sends it (changed, or asked for)."""
    body: dict[str, Any] = {"uptime": round(uptime_s, 1)}
    if want_config:
        body["config"] = True
    response = api.request("POST", f"/mediators/{quote(urn, safe='')}/heartbeat", body)
    if response.status_code != 200:
        raise OpenHimError(f"heartbeat answered {response.status_code}: {response.text[:200]}")
    if not response.content.strip():
        return None
    try:
        config = response.json()
    except ValueError:
        raise OpenHimError("heartbeat answered a body that is not JSON") from None
    return config if isinstance(config, dict) else None
