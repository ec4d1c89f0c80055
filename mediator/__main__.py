"""Command line: `python -m mediator` (or `openimis-mediator`) starts the service.

Sub-commands:
  serve                     run the mediator under gunicorn (the default)
  check-config              print the settings in force (secrets masked); exit 2 on an invalid one
  queue list|show|retry     the durable claim queue: held, in-flight and awaiting claims
  cache status|refresh      the services/items copy the agent keeps
  health                    exit 0 when this instance answers /health on its configured port
  agent                     the instance's background process (the gunicorn master starts it)

Run every command with the settings of the service, so that it finds its state directory.
"""

from __future__ import annotations

import argparse
import os
import sys

from mediator.settings import CONFIG_DIR, Settings, SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader went away (`check-config | head -1`): end quietly, as Unix tools do; the
        # output still buffered must not fail again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a tool a broken pipe ended


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openimis-mediator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the mediator under gunicorn (default)")
    commands.add_parser("check-config", help="validate and print the settings in force")
    commands.add_parser("health", help="is the instance answering? (the container's healthcheck)")
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
    return parser


def _run(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "check-config":
            from mediator.instance import check_state_dir

            check_state_dir(settings)
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

    if args.command == "health":
        return _health(settings)

    if args.command == "agent":
        return _agent(settings)

    # Replace this process by gunicorn so that signals (SIGTERM from Docker, systemd...) reach
    # the gunicorn master directly.
    gunicorn_argv = [sys.executable, "-m", "gunicorn", "--config", str(CONFIG_DIR / "gunicorn.conf.py")]
    os.execv(sys.executable, [*gunicorn_argv, "mediator.wsgi:app"])
    return 0  # not reached


def _health(settings: Settings) -> int:
    """The container's healthcheck, on the port and address the settings say (not a literal)."""
    import urllib.request

    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(
        settings.mediator_host, settings.mediator_host
    )
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.mediator_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            print(f"{url}: {answer.status}")
            return 0
    except OSError as exc:  # refused, timed out, or an HTTP error status
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def _agent(settings: Settings) -> int:
    """The agent is the master's child; run by hand, say what it needs rather than fail later."""
    from mediator.instance import InstanceLock

    holder = InstanceLock(settings.mediator_state_dir).holder()
    if holder is not None and holder != os.getppid():
        print(
            f"openimis-mediator agent: the instance {f'(pid {holder}) ' if holder > 0 else ''}running on "
            f"{settings.mediator_state_dir} has its own agent; `openimis-mediator serve` starts it",
            file=sys.stderr,
        )
        return 2
    if settings.uses_sandbox:
        print(
            "openimis-mediator agent: OPENIMIS_URL is not set. The agent is started by "
            "`openimis-mediator serve` (which gives it the embedded sandbox's URL); run by hand it "
            "needs the service's settings: OPENIMIS_URL, and MEDIATOR_STATE_DIR of the instance",
            file=sys.stderr,
        )
        return 2
    from mediator.agent import run_agent
    from mediator.logs import configure_logging

    configure_logging(settings.log_level)
    return run_agent(settings)


if __name__ == "__main__":
    sys.exit(main())
