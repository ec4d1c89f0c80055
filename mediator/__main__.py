"""Command line: `python -m mediator` (or `openimis-mediator`) starts the service.

Sub-commands: `serve` (the default), `check-config` (print the settings in force, secrets
masked, and exit non-zero when one is invalid), and `agent` (the instance's background
process, started by the gunicorn master).
"""

from __future__ import annotations

import argparse
import os
import sys

from mediator.settings import CONFIG_DIR, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openimis-mediator", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the mediator under gunicorn (default)")
    commands.add_parser("check-config", help="validate and print the settings in force")
    commands.add_parser("agent", help="the background agent (started by the gunicorn master)")
    queue = commands.add_parser("queue", help="inspect and nudge the durable claim queue")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True)
    queue_commands.add_parser("list", help="claims not finished yet (held, in flight, awaiting adjudication)")
    show = queue_commands.add_parser("show", help="one claim record, by claim code or id")
    show.add_argument("key")
    retry = queue_commands.add_parser("retry", help="make a held claim due now (by claim code or id)")
    retry.add_argument("key")
    notifications = commands.add_parser("notifications", help="facilities' notifications (the outbox)")
    note_commands = notifications.add_subparsers(dest="notification_command", required=True)
    note_commands.add_parser("list", help="the latest notifications and the subscriptions' state")
    note_show = note_commands.add_parser("show", help="one notification, by id")
    note_show.add_argument("key")
    note_retry = note_commands.add_parser("retry", help="make a pending notification due now")
    note_retry.add_argument("key")
    store = commands.add_parser("store", help="the claim store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    migrate = store_commands.add_parser(
        "migrate", help="copy this instance's SQLite claims into the PostgreSQL store (CLAIM_STORE_URL)"
    )
    migrate.add_argument("--from", dest="source", help="the SQLite file (default: this instance's)")
    cache = commands.add_parser("cache", help="the services/items cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser("status", help="when the copy was refreshed and what it holds")
    cache_commands.add_parser("refresh", help="have the agent reload the copy from openIMIS now")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"openimis-mediator: invalid setting: {exc}", file=sys.stderr)
        return 2

    if args.command == "check-config":
        for name, value in sorted(vars(settings).items()):
            print(f"{name.upper()}={value!r}")
        return 0

    if args.command == "queue":
        from mediator.queue_cli import run_queue_command

        return run_queue_command(settings, args.queue_command, getattr(args, "key", None))

    if args.command == "notifications":
        from mediator.queue_cli import run_notification_command

        return run_notification_command(settings, args.notification_command, getattr(args, "key", None))

    if args.command == "store":
        from mediator.queue_cli import run_store_command

        return run_store_command(settings, args.source)

    if args.command == "cache":
        from mediator.queue_cli import run_cache_command

        return run_cache_command(settings, args.cache_command)

    if args.command == "agent":
        from mediator.agent import run_agent
        from mediator.logs import configure_logging

        configure_logging(settings.log_level)
        return run_agent(settings)

    # Replace this process by gunicorn so that signals (SIGTERM from Docker, systemd...) reach
    # the gunicorn master directly.
    gunicorn_argv = [sys.executable, "-m", "gunicorn", "--config", str(CONFIG_DIR / "gunicorn.conf.py")]
    os.execv(sys.executable, [*gunicorn_argv, "mediator.wsgi:app"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
