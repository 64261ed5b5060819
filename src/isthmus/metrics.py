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

per integration (the same labels):

- ``isthmus_integration_health{health}``: 1 for its health (healthy, warning, error,
  unknown), 0 for the others;
- ``isthmus_sync_runs{status}``: its sync runs kept, by status;
- ``isthmus_sync_last_success_timestamp_seconds``: when its latest successful run ended;
- ``isthmus_sync_last_run_records{outcome}``: what its latest finished run fetched,
  created, updated, left unchanged and skipped;

``isthmus_contacts{tenant}``: contacts per tenant;
``isthmus_webhook_deliveries{tenant, status}``: outbound webhook deliveries by status; and
the queue every worker takes jobs from, per job kind (``webhook.deliver``, ``integration.sync``,
...): ``isthmus_jobs{kind, state="due"|"scheduled"|"running"}`` and
``isthmus_jobs_oldest_due_seconds{kind}``, how long the longest-waiting due job has waited
(0 when none waits): the figure to scale workers out on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from isthmus.domain.integrations import Health
from isthmus.store.db import Store
from isthmus.store.metrics import (
    RUN_COUNTS,
    IntegrationFigures,
    QueueFigures,
    SyncFigures,
    contact_counts,
    delivery_counts,
    integration_figures,
    queue_figures,
    sync_figures,
)
from isthmus.store.types import utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABELS = ["tenant", "integration", "provider"]


class Snapshot(Collector):
    """The store's figures as read for one scrape."""

    def __init__(
        self,
        integrations: list[IntegrationFigures],
        syncs: list[SyncFigures],
        contacts: list[tuple[str, int]],
        deliveries: list[tuple[str, str, int]],
        queue: list[QueueFigures],
        now: datetime,
    ) -> None:
        self.integrations = integrations
        self.syncs = syncs
        self.contacts = contacts
        self.deliveries = deliveries
        self.queue = queue
        self.now = now

    def collect(self) -> Iterator[Metric]:
        requests = _gauge(
            "isthmus_integration_requests",
            "Outbound calls of the integration in its request log, by outcome (2xx: success).",
            "outcome",
        )
        average = _gauge(
            "isthmus_integration_response_seconds_average",
            "Average response time of the integration's calls in its request log.",
        )
        p95 = _gauge(
            "isthmus_integration_response_seconds_p95",
            "95th percentile (nearest rank) response time of the integration's calls.",
        )
        last = _gauge(
            "isthmus_integration_last_activity_timestamp_seconds",
            "When the integration last made a call (Unix time).",
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
        yield from self._syncs()

        contacts = GaugeMetricFamily(
            "isthmus_contacts", "Contacts in the tenant's store.", labels=["tenant"]
        )
        for tenant_id, count in self.contacts:
            contacts.add_metric([tenant_id], count)
        yield contacts

        deliveries = GaugeMetricFamily(
            "isthmus_webhook_deliveries",
            "Outbound webhook deliveries kept in the delivery log, by status.",
            labels=["tenant", "status"],
        )
        for tenant_id, status, count in self.deliveries:
            deliveries.add_metric([tenant_id, status], count)
        yield deliveries
        yield from self._queue()

    def _queue(self) -> Iterator[Metric]:
        counts = GaugeMetricFamily(
            "isthmus_jobs",
            "Unfinished jobs of the queue, by kind and state: due (waiting for a worker), "
            "scheduled (for later), running.",
            labels=["kind", "state"],
        )
        waited = GaugeMetricFamily(
            "isthmus_jobs_oldest_due_seconds",
            "How long the longest-waiting due job of the kind has waited (0: none waits).",
            labels=["kind"],
        )
        for figures in self.queue:
            counts.add_metric([figures.kind, "due"], figures.due)
            counts.add_metric([figures.kind, "scheduled"], figures.scheduled)
            counts.add_metric([figures.kind, "running"], figures.running)
            oldest = figures.oldest_due
            waited.add_metric(
                [figures.kind], max((self.now - oldest).total_seconds(), 0.0) if oldest else 0.0
            )
        yield from (counts, waited)

    def _syncs(self) -> Iterator[Metric]:
        health = _gauge(
            "isthmus_integration_health",
            "1 for the integration's health (healthy, warning, error, unknown), 0 for the others.",
            "health",
        )
        runs = _gauge(
            "isthmus_sync_runs",
            "The integration's contact sync runs kept, by status.",
            "status",
        )
        success = _gauge(
            "isthmus_sync_last_success_timestamp_seconds",
            "When the integration's latest successful sync run ended (Unix time).",
        )
        records = _gauge(
            "isthmus_sync_last_run_records",
            "Records the integration's latest finished sync run fetched, created, updated, "
            "left unchanged and skipped.",
            "outcome",
        )
        for figures in self.syncs:
            labels = [figures.tenant_id, figures.integration_id, figures.provider]
            for state in Health:
                health.add_metric([*labels, state.value], int(figures.health == state.value))
            for status, count in sorted(figures.runs.items()):
                runs.add_metric([*labels, status], count)
            if figures.last_success is not None:
                success.add_metric(labels, figures.last_success.timestamp())
            if figures.last_counts is not None:
                for outcome in RUN_COUNTS:
                    records.add_metric([*labels, outcome], figures.last_counts[outcome])
        yield from (health, runs, success, records)


async def exposition(store: Store) -> bytes:
    """The text a scrape gets: the store's figures, then this process's own."""
    now = utcnow()
    async with store.read() as conn:
        snapshot = Snapshot(
            await integration_figures(conn),
            await sync_figures(conn),
            await contact_counts(conn),
            await delivery_counts(conn),
            await queue_figures(conn, now),
            now,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return generate_latest(registry) + generate_latest(REGISTRY)


def _gauge(name: str, documentation: str, *extra: str) -> GaugeMetricFamily:
    """A gauge of one integration's figures: its labels, and ``extra`` ones."""
    return GaugeMetricFamily(name, documentation, labels=[*_LABELS, *extra])
