"""Three replicas on one PostgreSQL: no claim stranded when a node dies, none submitted twice.

Replicas A, B and C share one claim store (a real PostgreSQL server) in front of a durable
sandbox. C takes claims and dies for good: some held (openIMIS down), some in flight (openIMIS
slow). Clinics then submit claims spread over A and B, retrying on another replica when one
does not answer, while A and B are SIGKILLed and restarted at random. At the end openIMIS holds
every claim exactly once and every replica answers every claim as openIMIS holds it.
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

import requests

from tests.sandbox.helpers import make_claim
from tests.support.services import Service, _spawn, free_port, stop

CLAIMS = int(os.environ.get("REPLICA_TEST_CLAIMS", "60"))
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


class Deployment:
    def __init__(self, tmp: Path, store_url: str) -> None:
        self.tmp, self.store_url = tmp, store_url
        self.sandbox_port = free_port()
        self.sandbox = _spawn(
            "sandbox",
            [
                sys.executable,
                "-m",
                "mediator.sandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.sandbox_port),
                "--state-path",
                str(tmp / "openimis.sqlite3"),
            ],
            {},
            self.sandbox_url,
            "/_sandbox/stats",
            30,
        )
        self.ports = {name: free_port() for name in "ABC"}
        self.lock = threading.Lock()
        self.replicas: dict[str, Service] = {name: self._start(name) for name in "ABC"}
        self.kills = Counter()

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _start(self, name: str) -> Service:
        env = {
            "MEDIATOR_HOST": "127.0.0.1",
            "MEDIATOR_PORT": str(self.ports[name]),
            "MEDIATOR_PUBLIC_URL": self.url(name),
            "MEDIATOR_STATE_DIR": str(self.tmp / f"replica-{name}"),
            "MEDIATOR_WORKERS": "2",
            "CLAIM_STORE_URL": self.store_url,
            "CLAIM_STORE_POOL_SIZE": "4",
            "OPENIMIS_URL": self.sandbox_url,
            "OPENIMIS_CONNECT_TIMEOUT": "1",
            "OPENIMIS_READ_TIMEOUT": "2",  # a claim in flight is taken over after 17 s
            "OPENIMIS_LOGIN_RETRY_AFTER": "1",
            "FORWARD_BACKOFF_INITIAL": "0.5",
            "FORWARD_BACKOFF_MAX": "2",
            "FORWARD_POLL_INTERVAL": "0.2",
            "ADJUDICATION_POLL_INTERVAL": "1",
            "MASTER_DATA_CACHE_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
        }
        return _spawn(
            f"replica-{name}", [sys.executable, "-m", "mediator"], env, self.url(name), "/health", 60
        )

    def kill(self, name: str, restart: bool = True) -> None:
        with self.lock:
            service = self.replicas[name]
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()
            self.kills[name] += 1
            if restart:
                time.sleep(random.uniform(0.0, 0.5))
                self.replicas[name] = self._start(name)

    def fault(self, **faults) -> None:
        requests.post(self.sandbox_url + "/_sandbox/faults", json=faults, timeout=5).raise_for_status()

    def upstream(self) -> dict:
        return requests.get(self.sandbox_url + "/_sandbox/claims", timeout=10).json()

    def close(self) -> None:
        for service in self.replicas.values():
            stop(service)
        stop(self.sandbox)


def post(url: str, claim: dict, timeout: float = 15) -> requests.Response:
    return requests.post(url + "/fhir/Claim", data=json.dumps(claim), headers=FHIR, timeout=timeout)


def submit_until_answered(deployment: Deployment, claim: dict, replicas: str = "AB") -> tuple[int, dict]:
    """A clinic behind a load balancer: on no answer or a 5xx, the same claim to the next replica."""
    time.sleep(random.uniform(0.0, 0.4))
    for attempt in range(200):
        name = replicas[(attempt + random.randrange(len(replicas))) % len(replicas)]
        try:
            answer = post(deployment.url(name), claim)
            if answer.status_code < 500:
                return answer.status_code, answer.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no answer for claim {claim['identifier'][0]['value']}")


def final_tag(deployment: Deployment, name: str, claim_code: str, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            bundle = requests.get(
                deployment.url(name) + "/fhir/ClaimResponse", params={"identifier": claim_code}, timeout=10
            ).json()
            for entry in bundle.get("entry") or []:
                resource = entry["resource"]
                if "held by the mediator" not in resource.get("disposition", ""):
                    return resource["meta"]["tag"][0]["code"]
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"claim {claim_code} never reached a final state on replica {name}")


def a_claim(i: int) -> dict:
    code = f"R{i:03d}-{uuid.uuid4().hex[:6].upper()}"
    if i % 10 == 0:  # negative: not in HF0003's price list
        return make_claim(code, facility="HF0003", admin="JMDP0013", lines=[("service", "S1", 1, 150.0)])
    return make_claim(code)


def test_replicas_share_claims_and_survive_a_node_lost_for_good(tmp_path, postgres_url):
    deployment = Deployment(tmp_path, postgres_url)
    try:
        # -- C holds claims while openIMIS is down, and takes more while it is slow; then C dies.
        held = [a_claim(1000 + i) for i in range(6)]
        deployment.fault(fail_next=6, fail_status=503)
        held_answers = [post(deployment.url("C"), claim) for claim in held]
        assert [a.status_code for a in held_answers] == [202] * 6
        deployment.fault(fail_next=0, delay_s=1.5)
        in_flight = [a_claim(2000 + i) for i in range(4)]
        with ThreadPoolExecutor(4) as pool:
            for claim in in_flight:
                pool.submit(
                    lambda c: requests.post(deployment.url("C") + "/fhir/Claim", json=c, timeout=0.7), claim
                )
            time.sleep(0.6)
            deployment.kill("C", restart=False)
        deployment.fault(delay_s=0)

        # -- the same claim twice, on two replicas; identical claims at once on both; a conflict.
        retried = a_claim(3001)
        first = post(deployment.url("A"), retried)
        again = post(deployment.url("B"), retried)
        assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
        location = first.headers["Location"].replace(deployment.url("A"), deployment.url("B"))
        assert requests.get(location, timeout=10).json()["id"] == first.json()["id"], (
            "a Location answers anywhere"
        )
        racing = a_claim(3002)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: post(deployment.url("AB"[i % 2]), racing), range(6)))
        assert {a.status_code for a in answers} == {201} and len({a.json()["id"] for a in answers}) == 1
        other = make_claim(retried["identifier"][0]["value"], lines=[("service", "A1", 1, 10.0)])
        assert post(deployment.url("B"), other).status_code == 409

        # -- clinics submit through A and B while they are killed and restarted.
        done = threading.Event()

        def chaos() -> None:
            while not done.wait(random.uniform(0.5, 1.5)):
                deployment.kill(random.choice("AB"))

        claims, first_answers = [], []
        monkey = threading.Thread(target=chaos, daemon=True)
        monkey.start()
        with ThreadPoolExecutor(4) as pool:  # batches until enough claims AND enough kills
            while len(claims) < CLAIMS or deployment.kills["A"] + deployment.kills["B"] < 3:
                batch = [a_claim(len(claims) + i) for i in range(20)]
                first_answers += pool.map(lambda c: submit_until_answered(deployment, c), batch)
                claims += batch
        done.set()
        monkey.join(30)

        everything = [*held, *in_flight, retried, racing, *claims]
        codes = [c["identifier"][0]["value"] for c in everything]
        finals = {code: final_tag(deployment, random.choice("AB"), code) for code in codes}
        # Every replica answers every claim the same way (here: the claims C held, asked of A).
        assert all(final_tag(deployment, "A", c["identifier"][0]["value"]) for c in held + in_flight)
        upstream = deployment.upstream()
    finally:
        deployment.close()

    stored = Counter(c["code"] for c in upstream["claims"])
    status = {c["code"]: c["status"] for c in upstream["claims"]}
    lost = [code for code in codes if stored[code] == 0]
    doubled = [code for code in codes if stored[code] > 1]
    expected = {1: "negative", 2: "queued"}
    mismatched = [code for code in codes if finals[code] != expected.get(status.get(code), "positive")]
    mismatched += [
        code
        for code, (http_status, body) in zip(
            [c["identifier"][0]["value"] for c in claims], first_answers, strict=True
        )
        if http_status in (200, 201) and body["meta"]["tag"][0]["code"] != finals[code]
    ]
    report = {"kills": dict(deployment.kills), "lost": lost, "doubled": doubled, "mismatched": mismatched}
    assert deployment.kills["C"] == 1 and deployment.kills["A"] + deployment.kills["B"] >= 3, report
    assert not lost and not doubled and not mismatched, report
