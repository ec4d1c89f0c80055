"""What operators of a replicated service watch, in Prometheus's text format (`GET /metrics`).

Counted where things happen: transactions by type and outcome (the web layer), openIMIS calls
and their latency (the openIMIS client), claims in flight taken over from a sender whose lease
expired (the forwarder). The claim queue is read from the store when Prometheus scrapes: with
PostgreSQL that is the deployment's shared queue, the same on every replica.

gunicorn runs several worker processes and the agent: counters are kept in prometheus-client's
multiprocess files under `<MEDIATOR_STATE_DIR>/metrics` (made empty by the master before its
workers start: `serving.prepare_metrics_dir`) and summed at scrape time, so a scrape of any
worker shows the whole instance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

TRANSACTIONS = Counter(
    "mediator_transactions_total", "Requests answered, by transaction type and outcome", ["type", "outcome"]
)
UPSTREAM_CALLS = Histogram(
    "mediator_openimis_call_seconds",
    "Calls to openIMIS, by method, resource and result (ok, error status, timeout, unreachable)",
    ["method", "resource", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
NOTIFICATIONS = Counter(
    "mediator_notifications_total", "Deliveries to facilities' subscription endpoints, by result", ["result"]
)
LEASE_TAKEOVERS = Counter(
    "mediator_claim_lease_takeovers_total",
    "Claims in flight taken over by a forwarder because their sender's lease expired (a dead worker or replica)",
)


def upstream_call(method: str, path: str, result: str, seconds: float) -> None:
    resource = next((segment for segment in path.split("/") if segment), "")
    UPSTREAM_CALLS.labels(method, resource, result).observe(seconds)


def exposition(queue_status: Callable[[], dict[str, Any]]) -> tuple[bytes, str]:
    """The text a scrape gets: this instance's counters and the claim queue as the store has it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:  # one process (tests, `flask run`): the default registry holds the counters
        from prometheus_client import REGISTRY as registry
    registry = _with_queue(registry, queue_status)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _QueueCollector:
    def __init__(self, queue_status: Callable[[], dict[str, Any]]) -> None:
        self._queue_status = queue_status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._queue_status()
        reachable = status.get("store") != "unreachable"
        yield GaugeMetricFamily(
            "mediator_claim_store_up", "1 if the claim store answered this scrape", value=int(reachable)
        )
        if not reachable:
            return
        for name, key, help_text in (
            ("mediator_claim_queue_depth", "queue_depth", "Claims held or in flight"),
            (
                "mediator_claims_awaiting_adjudication",
                "awaiting_adjudication",
                "Claims openIMIS left entered",
            ),
            (
                "mediator_claims_unconfirmed",
                "unconfirmed_for_an_operator",
                "Claims openIMIS holds by code but shows as another facility's (for an operator)",
            ),
            ("mediator_oldest_held_claim_seconds", "oldest_queued_age_s", "Age of the oldest held claim"),
            ("mediator_notifications_pending", "notifications_pending", "Notifications not delivered yet"),
            (
                "mediator_subscriptions_in_error",
                "subscriptions_in_error",
                "Subscriptions stopped by failed deliveries",
            ),
        ):
            yield GaugeMetricFamily(name, help_text, value=float(status.get(key) or 0))


def _with_queue(registry: Any, queue_status: Callable[[], dict[str, Any]]) -> Any:
    combined = CollectorRegistry()
    combined.register(_Delegate(registry))
    combined.register(_QueueCollector(queue_status))
    return combined


class _Delegate:
    """Another registry's metrics, as one collector (a registry cannot be registered itself)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()
