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


def install_channels(api: OpenHimApi, urn: str) -> list[str]:
    """Install the mediator's default channels that core does not have yet; returns their names.

    Core creates every channel it is asked for, and a name it already has fails the whole call
    (500, E11000 duplicate key on `name`): after a restart, all of them would. So channels are
    installed by name, only those missing; one that exists (installed before, made or changed
    by an operator, even deleted in the console) is left as it is.
    """
    path = f"/mediators/{quote(urn, safe='')}"
    wanted = _default_channel_names(api, path)
    existing = _channel_names(api)
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    response = api.request("POST", f"{path}/channels", missing)
    if response.status_code in (200, 201):
        return missing
    # Another instance (or an operator) may have made one in between: what counts is that they exist.
    still_missing = [name for name in missing if name not in _channel_names(api)]
    if still_missing:
        raise OpenHimError(
            f"channel installation answered {response.status_code}: {response.text[:300]}"
            f" (missing: {', '.join(still_missing)})"
        )
    return missing


def _default_channel_names(api: OpenHimApi, mediator_path: str) -> list[str]:
    """The channels core would install for the mediator: those of the document it kept (core
    keeps the first registration of a version, whatever is sent again)."""
    response = api.request("GET", mediator_path)
    if response.status_code != 200:
        raise OpenHimError(f"mediator read answered {response.status_code}: {response.text[:200]}")
    mediator = _json(response)
    config = mediator.get("defaultChannelConfig") if isinstance(mediator, dict) else None
    return [str(c["name"]) for c in _json_list(config) if c.get("name")]


def _channel_names(api: OpenHimApi) -> set[str]:
    response = api.request("GET", "/channels")
    if response.status_code != 200:
        raise OpenHimError(f"channel list answered {response.status_code}: {response.text[:200]}")
    return {str(c.get("name")) for c in _json_list(_json(response))}


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        raise OpenHimError(f"OpenHIM answered a body that is not JSON ({response.status_code})") from None


def _json_list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


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
