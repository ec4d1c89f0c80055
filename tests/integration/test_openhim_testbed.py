"""The OpenHIM test harness works against a real core 4.0.5 (auth, clients, channels, router,
transactions): if this fails, every OpenHIM integration test is meaningless."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.openhim_core import OpenHimCore

pytestmark = pytest.mark.integration


class _EchoHandler(BaseHTTPRequestHandler):
    """Upstream service behind the test channel: records requests, answers JSON."""

    received: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.server.received.append(  # type: ignore[attr-defined]
            {"path": self.path, "headers": dict(self.headers.items())}
        )
        body = json.dumps({"echo": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_token_auth_lists_mediators(openhim_core: OpenHimCore) -> None:
    resp = openhim_core.api("GET", "/mediators")
    assert resp.status_code == 200, resp.text
    assert isinstance(resp.json(), list)


def test_basic_auth_is_refused_by_core_4_0_5(openhim_core: OpenHimCore) -> None:
    resp = openhim_core.api("GET", "/mediators", token_auth=False, auth=openhim_core.root_credentials)
    assert resp.status_code == 401


def test_client_request_through_router_is_recorded(
    openhim_core: OpenHimCore, upstream: ThreadingHTTPServer
) -> None:
    client = openhim_core.create_client("testbed-client", "s3cret-pass", ["testbed-role"])
    assert client["clientID"] == "testbed-client"
    channel = openhim_core.create_channel(
        {
            "name": "testbed-echo",
            "urlPattern": "^/testbed/.*$",
            "methods": ["GET"],
            "allow": ["testbed-role"],
            "authType": "private",
            "routes": [
                {
                    "name": "echo",
                    "host": "127.0.0.1",
                    "port": upstream.server_address[1],
                    "primary": True,
                    "type": "http",
                }
            ],
        }
    )

    good = ("testbed-client", "s3cret-pass")
    resp = openhim_core.wait_for_router("/testbed/ping?x=1", lambda s: s != 404, auth=good)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"echo": "/testbed/ping?x=1"}
    forwarded = upstream.received[-1]  # type: ignore[attr-defined]
    assert forwarded["headers"].get("X-OpenHIM-ClientID") == "testbed-client"
    assert "Authorization" not in forwarded["headers"]

    wrong = openhim_core.router("GET", "/testbed/ping", auth=("testbed-client", "wrong"))
    assert wrong.status_code == 401
    assert len(upstream.received) == 1  # type: ignore[attr-defined]

    tx = openhim_core.wait_for_transaction(
        lambda t: t["request"]["path"] == "/testbed/ping" and t["status"] == "Successful",
        filters={"channelID": channel["_id"]},
    )
    assert tx["clientID"] == client["_id"]
    assert tx["response"]["status"] == 200
    assert tx["request"]["querystring"] == "x=1"


def test_api_failure_message_carries_log_tails(openhim_core: OpenHimCore) -> None:
    err = openhim_core.error("probe")
    assert "openhim-core.log" in str(err)
    assert "secantus.log" in str(err)
