"""Figures for the Prometheus export, read across tenants at scrape time: each integration's
request metrics, and webhook deliveries by status."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.store.integration_requests import (
    RequestMetrics,
    metrics_of,
    p95_query,
    summary_query,
)
from isthmus.store.tables import deliveries, integrations
from isthmus.store.tables import integration_requests as calls


@dataclass(frozen=True)
class IntegrationFigures:
    tenant_id: str
    integration_id: str
    provider: str
    metrics: RequestMetrics


async def integration_figures(conn: AsyncConnection) -> list[IntegrationFigures]:
    """The metrics of every integration with calls in the log."""
    group = [calls.c.tenant_id, calls.c.integration_id]
    p95s = {
        (r.tenant_id, r.integration_id): float(r.duration_ms)
        for r in await conn.execute(p95_query([], group))
    }
    summary = summary_query([], group).subquery()
    statement = (
        sa.select(summary, integrations.c.provider)
        .join(integrations, integrations.c.id == summary.c.integration_id)
        .order_by(summary.c.tenant_id, summary.c.integration_id)
    )
    return [
        IntegrationFigures(
            row.tenant_id,
            row.integration_id,
            row.provider,
            metrics_of(row, p95s.get((row.tenant_id, row.integration_id))),
        )
        for row in await conn.execute(statement)
    ]


async def delivery_counts(conn: AsyncConnection) -> list[tuple[str, str, int]]:
    """(tenant id, status, deliveries) for every pair that has any."""
    statement = (
        sa.select(deliveries.c.tenant_id, deliveries.c.status, sa.func.count())
        .group_by(deliveries.c.tenant_id, deliveries.c.status)
        .order_by(deliveries.c.tenant_id, deliveries.c.status)
    )
    return [(row[0], row[1], int(row[2])) for row in await conn.execute(statement)]
