"""Run the sandbox standalone: `python -m mediator.sandbox --host 127.0.0.1 --port 8551`."""

from __future__ import annotations

import argparse
import logging

from . import create_sandbox_app
from .config import SandboxConfig


def main(argv: list[str] | None = None) -> None:
    """Parse options (over SANDBOX_* env defaults) and serve with werkzeug, threaded."""
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
    if not args.access_log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
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
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
