"""gunicorn configuration of the mediator: every value comes from the mediator's settings."""

import sys

from mediator.serving import gunicorn_options, log_cpu_binding, start_agent, start_embedded_sandbox_if_needed
from mediator.settings import SettingsError, load_settings

try:
    _settings = load_settings()
except SettingsError as _exc:
    print(f"openimis-mediator: invalid setting: {_exc}", file=sys.stderr)
    sys.exit(2)

globals().update(gunicorn_options(_settings))


# The helper processes are kept on the master (`server`), not in this module: a reload (SIGHUP)
# runs this file again as a new module, and on_exit must still find the processes to stop.


def on_starting(server):
    server.mediator_children = {"sandbox": start_embedded_sandbox_if_needed(_settings)}


def when_ready(server):
    log_cpu_binding(_settings)
    # Started after the sandbox, so that the agent reads the sandbox's OPENIMIS_URL.
    server.mediator_children["agent"] = start_agent()


def on_exit(server):
    children = getattr(server, "mediator_children", {})
    for name in ("agent", "sandbox"):
        child = children.get(name)
        if child is not None:
            child.stop()
