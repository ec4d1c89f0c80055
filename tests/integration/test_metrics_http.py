"""`/metrics` of a real mediator (two gunicorn workers and the agent): what a Prometheus scrape sees."""

from __future__ import annotations

import re

import requests

from tests.sandbox.helpers import make_claim


def value(text: str, name: str, **labels: str) -> float:
    """The sample of `name` with these labels (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(rf"^{re.escape(name)}(\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group("value"))
    return total


def test_metrics_count_transactions_of_every_worker_and_show_the_queue(mediator, clean_sandbox):
    before = requests.get(f"{mediator.url}/metrics", timeout=10).text
    claims = [make_claim(f"MET-{i}-{id(before)}") for i in range(6)]
    for claim in claims:  # keep-alive off: the requests spread over both workers
        answer = requests.post(
            f"{mediator.url}/fhir/Claim", json=claim, headers={"Connection": "close"}, timeout=10
        )
        assert answer.status_code == 201
    scrape = requests.get(f"{mediator.url}/metrics", timeout=10)
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    text = scrape.text
    submitted = {"type": "POST /fhir/Claim", "outcome": "positive"}
    assert (
        value(text, "mediator_transactions_total", **submitted)
        - value(before, "mediator_transactions_total", **submitted)
        == 6
    )
    assert (
        value(text, "mediator_openimis_call_seconds_count", method="POST", resource="Claim", result="ok") >= 6
    )
    assert value(text, "mediator_claim_store_up") == 1
    assert "mediator_claim_queue_depth" in text and "mediator_claim_lease_takeovers_total" in text
    assert "admin123" not in text
