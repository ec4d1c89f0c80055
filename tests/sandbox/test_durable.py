"""Durable state (SandboxConfig.state_path): claims, submission counters and adjudication
survive a restart, in-process (a new app on the same file) and for a SIGKILLed process."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from mediator.sandbox import SandboxConfig, create_sandbox_app

from .helpers import BASE, Api, make_claim, uuid_of

ROOT = Path(__file__).resolve().parents[2]


def _app(path: Path) -> Flask:
    return create_sandbox_app(SandboxConfig(state_path=str(path)))


def _api(app: Flask, token: str | None = None) -> Api:
    client = app.test_client()
    if token is None:
        token = client.post(BASE + "login/", json={"username": "Admin", "password": "admin123"}).json["token"]
    return Api(client, {"Authorization": f"Bearer {token}", "Accept": "application/json"})


def _close(app: Flask) -> None:
    app.extensions["openimis_sandbox"].store.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sandbox.db"


def test_default_is_in_memory():
    assert SandboxConfig().state_path is None
    assert create_sandbox_app().extensions["openimis_sandbox"].store.db is None
    cfg = SandboxConfig.from_env({"SANDBOX_STATE_PATH": "/tmp/x.db"})
    assert cfg.state_path == "/tmp/x.db"


def test_state_file_is_wal_with_full_sync(state):
    app = _app(state)
    conn = app.extensions["openimis_sandbox"].store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    _close(app)


def test_claims_counters_and_adjudication_survive_a_restart(state):
    first = _app(state)
    api = _api(first)
    pos = api.post("Claim/", make_claim("D-POS")).json
    neg = make_claim("D-NEG", facility="HF0003", admin="JMDP0013", lines=[("service", "S1", 1, 150.0)])
    assert api.post("Claim/", neg).status_code == 201
    assert api.post("Claim/", make_claim("Q-D1")).json["outcome"] == "queued"
    assert api.post("Claim/", make_claim("D-POS")).status_code == 500  # duplicate, counted
    assert api.post("Claim/", make_claim("D-BAD", icd=["ZZZ"])).status_code == 500  # failed, counted
    other_hf = make_claim("D-POS", facility="HF0002", admin="JMDP0012")
    assert api.post("Claim/", other_hf).status_code == 201
    adj = {"claim_code": "Q-D1", "status": "valuated", "reasons": {"0004": -1}}
    assert api.control("adjudicate", adj).status_code == 200
    before = api.control("claims").json
    # The first app is not closed: like a killed process, it never checkpoints or cleans up.

    second = _app(state)
    api2 = _api(second, token=api.headers["Authorization"].split()[1])  # old token still valid
    after = api2.control("claims").json
    assert after == before
    assert after["submissions"] == {"D-POS": 3, "D-NEG": 1, "Q-D1": 1, "D-BAD": 1}
    assert after["accepted"] == {"D-POS": 2, "D-NEG": 1, "Q-D1": 1}
    by_code = {(c["code"], c["facility"]): c for c in after["claims"]}
    assert by_code[("D-POS", "HF0001")]["uuid"] == uuid_of(pos)
    assert by_code[("D-NEG", "HF0003")]["status_name"] == "rejected"
    assert by_code[("D-NEG", "HF0003")]["lines"][0]["rejection_reason"] == 2
    assert by_code[("Q-D1", "HF0001")]["status_name"] == "valuated"
    # Reads rebuild the same resources from the reloaded claims.
    assert api2.get(f"ClaimResponse/{pos['id']}/").json == pos
    cr = api2.get("ClaimResponse/Q-D1/").json
    assert cr["outcome"] == "complete"
    assert [t["category"]["coding"][0]["code"] for t in cr["total"]] == ["2", "4", "8", "16"]
    assert api2.get("Claim/").json["total"] == 4

    dup = api2.post("Claim/", make_claim("D-POS"))
    assert dup.status_code == 500
    assert dup.json["issue"][0]["details"]["text"] == "Claim with code 'D-POS' already exists."
    assert api2.post("Claim/", make_claim("D-NEW")).status_code == 201
    _close(second)

    third = _app(state)
    claims = _api(third).control("claims").json
    assert claims["submissions"]["D-POS"] == 4 and claims["submissions"]["D-NEW"] == 1
    assert len(claims["claims"]) == 5
    _close(third)
    _close(first)


def test_commit_is_visible_to_another_connection_before_the_answer_is_used(state):
    app = _app(state)
    cr = _api(app).post("Claim/", make_claim("D-VIS")).json
    with sqlite3.connect(state) as other:
        rows = other.execute("SELECT uuid, code, facility_code FROM claims").fetchall()
        counts = other.execute("SELECT code, n FROM submissions").fetchall()
    assert rows == [(uuid_of(cr), "D-VIS", "HF0001")]
    assert counts == [("D-VIS", 1)]
    _close(app)


def test_unique_constraint_refuses_a_duplicate_the_memory_did_not_see(state):
    """Two instances on one file (not a supported setup): the database still says no."""
    a, b = _app(state), _app(state)
    assert _api(a).post("Claim/", make_claim("D-TWICE")).status_code == 201
    resp = _api(b).post("Claim/", make_claim("D-TWICE"))
    assert resp.status_code == 500
    assert resp.json["issue"][0]["details"]["text"] == "Claim with code 'D-TWICE' already exists."
    assert _api(b).control("claims").json["claims"] == []
    _close(a)
    _close(b)


def test_concurrent_duplicates_store_one_claim(state):
    app = _app(state)
    token = _api(app).headers["Authorization"].split()[1]
    results: list[int] = []

    def worker() -> None:
        api = _api(app, token)
        for i in range(10):
            results.append(api.post("Claim/", make_claim(f"D-CC-{i}")).status_code)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(201) == 10 and results.count(500) == 50
    _close(app)
    again = _app(state)
    claims = _api(again).control("claims").json
    assert len(claims["claims"]) == 10
    assert set(claims["submissions"].values()) == {6}
    _close(again)


def test_reset_clears_the_state_file(state):
    app = _app(state)
    api = _api(app)
    api.post("Claim/", make_claim("D-RST"))
    assert api.control("reset", {}).status_code == 200
    assert api.control("claims").json == {"claims": [], "submissions": {}, "accepted": {}}
    again = _app(state)
    assert _api(again).control("claims").json == {"claims": [], "submissions": {}, "accepted": {}}
    assert _api(again).post("Claim/", make_claim("D-RST")).status_code == 201
    _close(app)
    _close(again)


# ---------------------------------------------------------------- real process, SIGKILL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(port: int, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _start(port: int, state: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediator.sandbox", "--port", str(port), "--state-path", str(state)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sandbox exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            if _call(port, "/_sandbox/stats")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("sandbox did not start")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()


def test_sigkilled_process_keeps_its_claims(state):
    port = _free_port()
    proc = _start(port, state)
    try:
        status, login = _call(port, BASE + "login/", {"username": "Admin", "password": "admin123"})
        assert status == 200
        token = login["token"]
        status, cr = _call(port, BASE + "Claim/", make_claim("K-1"), token)
        assert status == 201
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL

    proc = _start(port, state)
    try:
        status, claims = _call(port, "/_sandbox/claims")
        assert status == 200
        assert [(c["uuid"], c["code"], c["status_name"]) for c in claims["claims"]] == [
            (uuid_of(cr), "K-1", "checked")
        ]
        assert claims["submissions"] == {"K-1": 1}
        status, dup = _call(port, BASE + "Claim/", make_claim("K-1"), token)  # token from before the kill
        assert status == 500
        assert dup["issue"][0]["details"]["text"] == "Claim with code 'K-1' already exists."
        assert _call(port, "/_sandbox/claims")[1]["submissions"] == {"K-1": 2}
    finally:
        _kill(proc)
