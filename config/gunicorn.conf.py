"""gunicorn configuration of the mediator: every value comes from the mediator's settings."""

import sys

from mediator.serving import gunicorn_options, start_embedded_sandbox_if_needed
from mediator.settings import SettingsError, load_settings

try:
    _settings = load_settings()
except SettingsError as _exc:
    print(f"openimis-mediator: invalid setting: {_exc}", file=sys.stderr)
    sys.exit(2)

globals().update(gunicorn_options(_settings))
_state = {}


def on_starting(server):
    _state["sandbox"] = start_embedded_sandbox_if_needed(_settings)


def on_exit(server):
    sandbox = _state.get("sandbox")
    if sandbox is not None:
        sandbox.stop()
