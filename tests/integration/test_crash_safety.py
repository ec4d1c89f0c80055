"""Nothing lost, nothing doubled, with the mediator and openIMIS killed (SIGKILL) at random.

Clinics submit a few hundred claims, retrying until they get an answer, while a chaos thread
SIGKILLs the whole mediator (gunicorn master, workers, agent) or the sandbox (durable state, like
a database) at random moments and restarts them. Afterwards openIMIS must hold every claim
exactly once, and what each clinic finally reads must match what openIMIS holds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.sandbox.helpers import make_claim
from tests.support.services import Service, _spawn, free_port, stop

pytestmark = pytest.mark.integration

CLAIMS = int(os.environ.get("CRASH_TEST_CLAIMS", "200"))
CLIENTS = 4
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
REPORT = Path(os.environ.get("CRASH_TEST_REPORT", "/tmp/crash-test-report.json"))


class Chaos:
    """The mediator and the sandbox on fixed ports, SIGKILLed and restarted on demand."""

    def __init__(self, tmp: Path) -> None:
        self.sandbox_port, self.mediator_port = free_port(), free_port()
        self.sandbox_state = tmp / "openimis.sqlite3"
        self.mediator_env = {
            "MEDIATOR_HOST": "127.0.0.1",
            "MEDIATOR_PORT": str(self.mediator_port),
            "MEDIATOR_PUBLIC_URL": f"http://127.0.0.1:{self.mediator_port}",
            "MEDIATOR_STATE_DIR": str(tmp / "mediator"),
            "MEDIATOR_WORKERS": "2",
            "OPENIMIS_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "OPENIMIS_CONNECT_TIMEOUT": "1",
            "OPENIMIS_READ_TIMEOUT": "2",  # a claim in flight is taken over after 11 s
            "OPENIMIS_LOGIN_RETRY_AFTER": "1",
            "FORWARD_BACKOFF_INITIAL": "0.5",
            "FORWARD_BACKOFF_MAX": "2",
            "FORWARD_POLL_INTERVAL": "0.2",
            "MASTER_DATA_CACHE_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
        }
        self.lock = threading.Lock()
        self.kills = Counter()
        self.sandbox = self._start_sandbox()
        self.mediator = self._start_mediator()

    @property
    def mediator_url(self) -> str:
        return f"http://127.0.0.1:{self.mediator_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def _start_sandbox(self) -> Service:
        argv = [
            sys.executable,
            "-m",
            "mediator.sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.sandbox_port),
        ]
        argv += ["--state-path", str(self.sandbox_state)]
        return _spawn("sandbox", argv, {}, self.sandbox_url, "/_sandbox/stats", 30)

    def _start_mediator(self) -> Service:
        argv = [sys.executable, "-m", "mediator"]
        return _spawn("mediator", argv, self.mediator_env, self.mediator_url, "/health", 60)

    def kill(self, which: str) -> None:
        with self.lock:
            service = self.mediator if which == "mediator" else self.sandbox
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()
            self.kills[which] += 1
            time.sleep(random.uniform(0.0, 0.5))
            if which == "mediator":
                self.mediator = self._start_mediator()
            else:
                self.sandbox = self._start_sandbox()

    def close(self) -> None:
        stop(self.mediator)
        stop(self.sandbox)


def submit_until_answered(chaos: Chaos, claim: dict) -> tuple[int, dict]:
    """What a clinic system does: send, and on no answer or a 5xx, send the same claim again."""
    time.sleep(random.uniform(0.1, 0.5))  # clinics at work, not a load test: the kills land in between
    body = json.dumps(claim)
    for _ in range(200):
        try:
            answer = requests.post(chaos.mediator_url + "/fhir/Claim", data=body, headers=FHIR, timeout=15)
            if answer.status_code < 500:
                return answer.status_code, answer.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no answer for claim {claim['identifier'][0]['value']}")


def a_claim(i: int) -> dict:
    code = f"K{i:04d}-{uuid.uuid4().hex[:6].upper()}"
    kind = i % 10
    if kind == 0:  # negative: not in HF0003's price list
        return make_claim(code, facility="HF0003", admin="JMDP0013", lines=[("service", "S1", 1, 150.0)])
    if kind == 1:  # queued: openIMIS leaves it entered
        return make_claim("Q-" + code)
    return make_claim(code)


def final_outcome(chaos: Chaos, claim_code: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            bundle = requests.get(
                chaos.mediator_url + "/fhir/ClaimResponse", params={"identifier": claim_code}, timeout=10
            ).json()
            entries = bundle.get("entry") or []
            if entries:
                resource = entries[0]["resource"]
                held = "held by the mediator" in resource.get("disposition", "")
                if not held:
                    return resource["meta"]["tag"][0]["code"]
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"claim {claim_code} never reached a final state")


def test_random_sigkills_lose_no_claim_and_double_none(tmp_path):
    chaos = Chaos(tmp_path)
    done = threading.Event()
    started = time.monotonic()

    def chaos_monkey() -> None:
        while not done.wait(random.uniform(0.3, 1.2)):
            chaos.kill(random.choice(["mediator", "sandbox", "mediator"]))

    claims = [a_claim(i) for i in range(CLAIMS)]
    monkey = threading.Thread(target=chaos_monkey, daemon=True)
    try:
        monkey.start()
        with ThreadPoolExecutor(CLIENTS) as pool:
            first_answers = list(pool.map(lambda c: submit_until_answered(chaos, c), claims))
        done.set()
        monkey.join(30)

        codes = [c["identifier"][0]["value"] for c in claims]
        finals = {code: final_outcome(chaos, code) for code in codes}
        upstream = requests.get(chaos.sandbox_url + "/_sandbox/claims", timeout=10).json()
    finally:
        done.set()
        chaos.close()

    held = Counter(c["code"] for c in upstream["claims"])
    status = {c["code"]: c["status"] for c in upstream["claims"]}
    lost = [code for code in codes if held[code] == 0]
    doubled = [code for code in codes if held[code] > 1]
    expected = {1: "negative", 2: "queued"}
    mismatched = [
        code for code in codes if code in status and finals[code] != expected.get(status[code], "positive")
    ]
    # A clinic that got a definite answer at once must have been told the truth.
    mismatched += [
        code
        for code, (http_status, body) in zip(codes, first_answers, strict=True)
        if http_status in (200, 201) and body["meta"]["tag"][0]["code"] != finals[code]
    ]
    report = {
        "claims": CLAIMS,
        "kills": dict(chaos.kills),
        "lost": len(lost),
        "duplicated": len(doubled),
        "answers_mismatched": len(mismatched),
        "first_answers": dict(Counter(status for status, _ in first_answers)),
        "final_outcomes": dict(Counter(finals.values())),
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.write_text(json.dumps(report, indent=2))
    print("crash test:", json.dumps(report))
    assert sum(chaos.kills.values()) >= 5, report
    assert {http_status for http_status, _ in first_answers} <= {200, 201, 202}, report
    assert not lost, f"lost claims: {lost[:10]}"
    assert not doubled, f"duplicated claims: {doubled[:10]}"
    assert not mismatched, [(c, finals[c], status[c]) for c in mismatched[:10]]
