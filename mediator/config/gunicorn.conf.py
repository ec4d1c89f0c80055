"""gunicorn configuration of the mediator: every value comes from the mediator's settings."""

import sys

from mediator.instance import claim_instance
from mediator.serving import (
    gunicorn_options,
    log_cpu_binding,
    prepare_metrics_dir,
    refuse_start,
    start_agent,
    start_embedded_sandbox_if_needed,
    stop_children_at_exit,
)
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
    # Before any process is started: a failure here leaves nothing behind.
    try:
        server.mediator_lock = claim_instance(_settings)
    except SettingsError as exc:
        refuse_start(str(exc))
    prepare_metrics_dir(_settings.mediator_state_dir)  # before any worker or the agent
    server.mediator_children = {}
    stop_children_at_exit(server)


def when_ready(server):
    # Once gunicorn listens: a taken port never leaves a sandbox running.
    try:
        server.mediator_children["sandbox"] = start_embedded_sandbox_if_needed(_settings)
    except RuntimeError as exc:
        refuse_start(str(exc))
    log_cpu_binding(_settings)
    # Started after the sandbox, so that the agent reads the sandbox's OPENIMIS_URL.
    server.mediator_children["agent"] = start_agent()


def on_exit(server):
    children = getattr(server, "mediator_children", {})
    for name in ("agent", "sandbox"):
        child = children.get(name)
        if child is not None:
            child.stop()
