"""A stand-in for the mediator API of OpenHIM core v8, where Basic auth is the norm.

The real core the suite runs (4.0.5) only speaks the legacy token scheme, so the Basic path is
tested against this: it follows what the contract note read from core 8.5's source — Basic
auth on every call, `/authenticate/:email` answering 404 for password-only users, semver-gated
re-registration (same or lower version: ignored, still 201), heartbeat answering the config
when it changed in the console or when asked, channel installation from defaultChannelConfig,
a channel name core already has failing the installation (500, E11000), as core's unique index does.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass
class StandInState:
    username: str = "root@openhim.org"
    password: str = "openhim-password"
    mediators: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_changed: set[str] = field(default_factory=set)
    channels: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    registrations: int = 0
    auth_headers_seen: list[str] = field(default_factory=list)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in SEMVER.match(text).groups())


def create_standin(state: StandInState) -> Flask:
    app = Flask("openhim-v8-standin")

    @app.before_request
    def basic_auth() -> Response | None:
        if request.path.startswith("/authenticate/"):
            return None
        header = request.headers.get("Authorization", "")
        state.auth_headers_seen.append(header.split(" ")[0] if header else "")
        expected = base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
        if header != f"Basic {expected}":
            return Response("Unauthorized", 401)
        return None

    @app.get("/authenticate/<email>")
    def authenticate(email: str) -> Response:
        # v8: a user with only a password has no salt to hand out.
        return Response(f"Could not find user by email {email}", 404)

    @app.post("/mediators")
    def register() -> Response:
        doc = request.get_json()
        if not doc.get("urn") or not SEMVER.match(str(doc.get("version", ""))):
            return Response("Invalid mediator: urn and a semver version are required", 400)
        state.registrations += 1
        existing = state.mediators.get(doc["urn"])
        if existing is None:
            state.mediators[doc["urn"]] = {**doc, "config": doc.get("config", {})}
        elif _version(doc["version"]) > _version(existing["version"]):
            config = {**doc.get("config", {}), **existing.get("config", {})}  # existing values win
            state.mediators[doc["urn"]] = {**doc, "config": config}
        return Response("Mediator registered", 201)

    @app.get("/mediators/<path:urn>")
    def get_mediator(urn: str) -> Response:
        mediator = state.mediators.get(unquote(urn))
        return jsonify(mediator) if mediator else Response("not found", 404)

    @app.put("/mediators/<path:urn>/config")
    def put_config(urn: str) -> Response:
        urn = unquote(urn)
        if urn not in state.mediators:
            return Response("not found", 404)
        state.mediators[urn]["config"] = request.get_json()
        state.config_changed.add(urn)
        return Response("ok", 200)

    @app.post("/mediators/<path:urn>/heartbeat")
    def heartbeat(urn: str) -> Response:
        urn = unquote(urn)
        body = request.get_json()
        if urn not in state.mediators:
            return Response("not found", 404)
        if "uptime" not in body:
            return Response("uptime required", 400)
        state.heartbeats.append(body)
        if body.get("config") or urn in state.config_changed:
            state.config_changed.discard(urn)
            return jsonify(state.mediators[urn].get("config", {}))
        return Response("", 200)

    @app.post("/mediators/<path:urn>/channels")
    def install_channels(urn: str) -> Response:
        urn = unquote(urn)
        names = request.get_json()
        wanted = [c for c in state.mediators[urn]["defaultChannelConfig"] if not names or c["name"] in names]
        existing = {c["name"] for c in state.channels}
        state.channels.extend(c for c in wanted if c["name"] not in existing)  # saved one by one
        if any(c["name"] in existing for c in wanted):  # the unique index on channels.name
            return Response("Could not load mediator default channel config: E11000 duplicate key", 500)
        return Response("channels created", 201)

    @app.get("/channels")
    def list_channels() -> Response:
        return jsonify(state.channels)

    return app


@contextmanager
def running_standin() -> Iterator[tuple[str, StandInState]]:
    state = StandInState()
    server = make_server("127.0.0.1", 0, create_standin(state), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        thread.join(5)
