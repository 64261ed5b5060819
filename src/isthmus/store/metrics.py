"""Figures for the Prometheus export, read across tenants at scrape time: each integration's
request metrics, health and sync runs, contacts per tenant, webhook deliveries by status,
and the job queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.jobs import JobStatus
from isthmus.store.integration_requests import (
    RequestMetrics,
    metrics_of,
    p95_query,
    summary_query,
)
from isthmus.store.sync_runs import RunStatus
from isthmus.store.tables import contacts, deliveries, integrations, jobs, sync_runs
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


@dataclass(frozen=True)
class SyncFigures:
    """An integration's health and sync runs, as the store keeps them."""

    tenant_id: str
    integration_id: str
    provider: str
    health: str
    #: Runs kept, by status (those it has).
    runs: dict[str, int]
    #: When its latest successful run ended.
    last_success: datetime | None
    #: The counts of its latest finished run: fetched, created, updated, unchanged, skipped.
    last_counts: dict[str, int] | None


#: The counts of a run, in the order the export names them.
RUN_COUNTS = ("fetched", "created", "updated", "unchanged", "skipped")


async def sync_figures(conn: AsyncConnection) -> list[SyncFigures]:
    """Every integration's health and the figures of its sync runs."""
    runs: dict[str, dict[str, int]] = {}
    statement = sa.select(sync_runs.c.integration_id, sync_runs.c.status, sa.func.count()).group_by(
        sync_runs.c.integration_id, sync_runs.c.status
    )
    for integration_id, status, count in await conn.execute(statement):
        runs.setdefault(integration_id, {})[status] = int(count)
    statement = (
        sa.select(sync_runs.c.integration_id, sa.func.max(sync_runs.c.finished_at))
        .where(sync_runs.c.status == RunStatus.SUCCEEDED.value)
        .group_by(sync_runs.c.integration_id)
    )
    succeeded = {row[0]: row[1] for row in await conn.execute(statement)}
    latest = (
        sa.select(
            sync_runs.c.integration_id,
            *(sync_runs.c[name] for name in RUN_COUNTS),
            sa.func.row_number()
            .over(
                partition_by=sync_runs.c.integration_id,
                order_by=(sync_runs.c.finished_at.desc(), sync_runs.c.id.desc()),
            )
            .label("newest"),
        )
        .where(sync_runs.c.finished_at.is_not(None))
        .subquery()
    )
    statement = sa.select(latest).where(latest.c.newest == 1)
    counts = {
        row.integration_id: {name: int(row._mapping[name]) for name in RUN_COUNTS}
        for row in await conn.execute(statement)
    }
    statement = sa.select(
        integrations.c.tenant_id,
        integrations.c.id,
        integrations.c.provider,
        integrations.c.health,
    ).order_by(integrations.c.tenant_id, integrations.c.id)
    return [
        SyncFigures(
            row.tenant_id,
            row.id,
            row.provider,
            row.health,
            runs.get(row.id, {}),
            succeeded.get(row.id),
            counts.get(row.id),
        )
        for row in await conn.execute(statement)
    ]


async def contact_counts(conn: AsyncConnection) -> list[tuple[str, int]]:
    """(tenant id, contacts) for every tenant that has any."""
    statement = (
        sa.select(contacts.c.tenant_id, sa.func.count())
        .group_by(contacts.c.tenant_id)
        .order_by(contacts.c.tenant_id)
    )
    return [(row[0], int(row[1])) for row in await conn.execute(statement)]


@dataclass(frozen=True)
class QueueFigures:
    """The unfinished jobs of one kind: due (waiting for a worker), scheduled (for later:
    a retry, a turned-away delivery's place, housekeeping) and running; and when the
    longest-waiting due one became due."""

    kind: str
    due: int
    scheduled: int
    running: int
    oldest_due: datetime | None


async def queue_figures(conn: AsyncConnection, now: datetime) -> list[QueueFigures]:
    """Per job kind that has unfinished jobs (the (status, run_at) index finds them)."""
    due = sa.and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.run_at <= now)
    statement = (
        sa.select(
            jobs.c.kind,
            sa.func.count().filter(due),
            sa.func.count().filter(
                sa.and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.run_at > now)
            ),
            sa.func.count().filter(jobs.c.status == JobStatus.RUNNING.value),
            sa.func.min(jobs.c.run_at).filter(due),
        )
        .where(jobs.c.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .group_by(jobs.c.kind)
        .order_by(jobs.c.kind)
    )
    return [
        QueueFigures(kind, int(n_due), int(n_later), int(n_running), oldest)
        for kind, n_due, n_later, n_running, oldest in await conn.execute(statement)
    ]
