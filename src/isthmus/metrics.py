"""The Prometheus export (``GET /metrics``, text exposition format).

Outbound calls are made by worker processes and ``serve`` alike, so counters kept in one
process would each see only part. The figures are read from the store at scrape time
instead (the same ones ``GET /api/v1/integrations/{id}/metrics`` answers), through a
collector built for the one scrape. They describe what the store keeps, so retention makes
them go down as well as up: they are gauges, not counters. The serving process's own
``process_*`` and ``python_*`` figures follow them.

Exported, per integration with calls in its request log (labels ``tenant``,
``integration``, ``provider``):

- ``isthmus_integration_requests{outcome="success"|"failure"}``: calls (2xx is success);
- ``isthmus_integration_response_seconds_average`` and ``..._p95``: response times;
- ``isthmus_integration_last_activity_timestamp_seconds``: the last call;

and ``isthmus_webhook_deliveries{tenant, status}``: outbound webhook deliveries by status.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from isthmus.store.db import Store
from isthmus.store.metrics import IntegrationFigures, delivery_counts, integration_figures

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ["tenant", "integration", "provider"]


class Snapshot(Collector):
    """The store's figures as read for one scrape."""

    def __init__(
        self, integrations: list[IntegrationFigures], deliveries: list[tuple[str, str, int]]
    ) -> None:
        self.integrations = integrations
        self.deliveries = deliveries

    def collect(self) -> Iterator[Metric]:
        requests = GaugeMetricFamily(
            "isthmus_integration_requests",
            "Outbound calls of the integration in its request log, by outcome (2xx: success).",
            labels=[*_LABELS, "outcome"],
        )
        average = GaugeMetricFamily(
            "isthmus_integration_response_seconds_average",
            "Average response time of the integration's calls in its request log.",
            labels=_LABELS,
        )
        p95 = GaugeMetricFamily(
            "isthmus_integration_response_seconds_p95",
            "95th percentile (nearest rank) response time of the integration's calls.",
            labels=_LABELS,
        )
        last = GaugeMetricFamily(
            "isthmus_integration_last_activity_timestamp_seconds",
            "When the integration last made a call (Unix time).",
            labels=_LABELS,
        )
        for figures in self.integrations:
            labels = [figures.tenant_id, figures.integration_id, figures.provider]
            m = figures.metrics
            requests.add_metric([*labels, "success"], m.successes)
            requests.add_metric([*labels, "failure"], m.failures)
            if m.average_ms is not None:
                average.add_metric(labels, m.average_ms / 1000)
            if m.p95_ms is not None:
                p95.add_metric(labels, m.p95_ms / 1000)
            if m.last_at is not None:
                last.add_metric(labels, m.last_at.timestamp())
        yield from (requests, average, p95, last)

        deliveries = GaugeMetricFamily(
            "isthmus_webhook_deliveries",
            "Outbound webhook deliveries kept in the delivery log, by status.",
            labels=["tenant", "status"],
        )
        for tenant_id, status, count in self.deliveries:
            deliveries.add_metric([tenant_id, status], count)
        yield deliveries


async def exposition(store: Store) -> bytes:
    """The text a scrape gets: the store's figures, then this process's own."""
    async with store.read() as conn:
        snapshot = Snapshot(await integration_figures(conn), await delivery_counts(conn))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return generate_latest(registry) + generate_latest(REGISTRY)
