"""Run the sandbox standalone: `python -m mediator.sandbox --host 127.0.0.1 --port 8551`."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from typing import Any

from werkzeug.serving import make_server

from mediator.logs import configure_logging

from . import create_sandbox_app
from .config import SandboxConfig

log = logging.getLogger("mediator.sandbox")


def main(argv: list[str] | None = None) -> None:
    """Parse options (over SANDBOX_* env defaults) and serve with werkzeug, threaded.

    Its lines are JSON like the mediator's (no banner), and SIGTERM ends it with status 0:
    gunicorn's master, which reaps it, logs an ERROR for a child killed by a signal.
    """
    parser = argparse.ArgumentParser(
        prog="python -m mediator.sandbox", description="Embedded openIMIS FHIR R4 sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8551)
    parser.add_argument("--eligibility-mode", choices=["working", "failing"])
    parser.add_argument("--claim-adjudication", choices=["immediate", "deferred"])
    parser.add_argument("--rate-limit", type=int, help="requests per minute per client IP")
    parser.add_argument("--link-style", choices=["quote_plus", "plain"])
    parser.add_argument(
        "--state-path", metavar="PATH", help="SQLite file for durable state (survives a kill)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (werkzeug)")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.access_log else logging.WARNING)
    cfg = SandboxConfig.from_env()
    if args.eligibility_mode:
        cfg.eligibility_mode = args.eligibility_mode
    if args.claim_adjudication:
        cfg.claim_adjudication = args.claim_adjudication
    if args.rate_limit is not None:
        cfg.request_budget_per_minute = args.rate_limit or None
    if args.link_style:
        cfg.link_style = args.link_style
    if args.state_path:
        cfg.state_path = args.state_path
    app = create_sandbox_app(cfg)
    # Bound here, not by werkzeug, which prints a failure to bind as plain text.
    try:
        listener = socket.create_server((args.host, args.port), backlog=128)
    except OSError as exc:  # a taken port, an address not of this host
        log.error(
            "the openIMIS sandbox cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc
        )
        sys.exit(1)
    with listener:  # werkzeug serves a duplicate of this socket
        server = make_server(args.host, args.port, app, threaded=True, fd=listener.fileno())
    signal.signal(signal.SIGTERM, _stop)
    log.info("openIMIS sandbox listening", extra={"url": f"http://{args.host}:{server.port}"})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stop(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)  # out of serve_forever, through the `finally` that closes the socket


if __name__ == "__main__":
    main()
