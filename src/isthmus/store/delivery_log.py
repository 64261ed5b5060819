"""The delivery log's SQL: read a subscription's deliveries and their attempts, queue
deliveries again (one, or the failed ones of a window), and purge what retention has passed.

Queueing again writes the delivery row and its ``webhook.deliver`` job in the caller's
transaction, as publishing does, so a requeued delivery is never left without its job.
Every read and write is scoped by tenant: another tenant's ids behave as missing ones.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.jobs import JobStatus, NewJob
from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Page
from isthmus.store import queue
from isthmus.store.tables import deliveries, delivery_attempts, events, jobs, tenants

#: The job kind that sends one delivery (the delivery handler's, payload ``deliveryId``).
DELIVER_KIND = "webhook.deliver"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A delivery in one of these has no job and will not change unless queued again.
FINISHED = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    tenant_id: str
    event_id: str
    subscription_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AttemptRow:
    id: str
    delivery_id: str
    attempted_at: datetime
    status_code: int | None
    response_body: str | None
    latency_ms: float | None
    error_class: str | None
    error_message: str | None


@dataclass(frozen=True)
class EventRow:
    id: str
    type: str
    data: Any
    created_at: datetime
    idempotency_key: str | None = None


@dataclass(frozen=True)
class PurgeCounts:
    """How many rows one retention run deleted, per table."""

    attempts: int = 0
    deliveries: int = 0
    events: int = 0
    jobs: int = 0


def _delivery(row: Any) -> DeliveryRow:
    values = dict(row._mapping)
    values["status"] = DeliveryStatus(values["status"])
    return DeliveryRow(**values)


# -- reads -------------------------------------------------------------------------------------


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    subscription_id: str,
    *,
    status: str | None = None,
    event_type: str | None = None,
    before: str | None = None,
    limit: int,
) -> Page[DeliveryRow]:
    """One subscription's deliveries, newest first; ``before`` is the last id of the previous
    page (ids are time ordered, so the (subscription_id, id) index serves the walk)."""
    q = deliveries.select().where(
        deliveries.c.subscription_id == subscription_id, deliveries.c.tenant_id == tenant_id
    )
    if status:
        q = q.where(deliveries.c.status == status)
    if event_type:
        q = q.where(deliveries.c.event_type == event_type)
    if before:
        q = q.where(deliveries.c.id < before)
    rows = [
        _delivery(r)
        for r in await conn.execute(q.order_by(deliveries.c.id.desc()).limit(limit + 1))
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def get(conn: AsyncConnection, tenant_id: str, delivery_id: str) -> DeliveryRow | None:
    row = (
        await conn.execute(
            deliveries.select().where(
                deliveries.c.tenant_id == tenant_id, deliveries.c.id == delivery_id
            )
        )
    ).first()
    return _delivery(row) if row else None


async def attempts(conn: AsyncConnection, tenant_id: str, delivery_id: str) -> list[AttemptRow]:
    """Every attempt of a delivery, oldest first."""
    a = delivery_attempts
    q = (
        sa.select(
            a.c.id,
            a.c.delivery_id,
            a.c.attempted_at,
            a.c.status_code,
            a.c.response_body,
            a.c.latency_ms,
            a.c.error_class,
            a.c.error_message,
        )
        .where(a.c.delivery_id == delivery_id, a.c.tenant_id == tenant_id)
        .order_by(a.c.attempted_at, a.c.id)
    )
    return [AttemptRow(**r._mapping) for r in await conn.execute(q)]


_EVENT = sa.select(
    events.c.id, events.c.type, events.c.data, events.c.created_at, events.c.idempotency_key
)


async def event(conn: AsyncConnection, tenant_id: str, event_id: str) -> EventRow | None:
    q = _EVENT.where(events.c.tenant_id == tenant_id, events.c.id == event_id)
    row = (await conn.execute(q)).first()
    return EventRow(**row._mapping) if row else None


async def query_events(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    type_prefix: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: str | None = None,
    limit: int,
) -> Page[EventRow]:
    """A tenant's events, newest first: of ``event_type``, or of the types starting with
    ``type_prefix``; created in [since, until); ``before`` is the last id of the previous
    page (ids are time ordered)."""
    q = _EVENT.where(events.c.tenant_id == tenant_id)
    if event_type is not None:
        q = q.where(events.c.type == event_type)
    if type_prefix is not None:
        q = q.where(events.c.type.startswith(type_prefix, autoescape=True))
    if since is not None:
        q = q.where(events.c.created_at >= since)
    if until is not None:
        q = q.where(events.c.created_at < until)
    if before:
        q = q.where(events.c.id < before)
    rows = [
        EventRow(**r._mapping)
        for r in await conn.execute(q.order_by(events.c.id.desc()).limit(limit + 1))
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def delivery_counts(
    conn: AsyncConnection, tenant_id: str, event_ids: list[str]
) -> dict[str, dict[DeliveryStatus, int]]:
    """How many of each event's deliveries are in each status (the event_id index)."""
    d = deliveries
    q = (
        sa.select(d.c.event_id, d.c.status, sa.func.count())
        .where(d.c.tenant_id == tenant_id, d.c.event_id.in_(event_ids))
        .group_by(d.c.event_id, d.c.status)
    )
    counts: dict[str, dict[DeliveryStatus, int]] = {}
    for event_id, status, count in await conn.execute(q):
        counts.setdefault(event_id, {})[DeliveryStatus(status)] = count
    return counts


async def event_deliveries(
    conn: AsyncConnection, tenant_id: str, event_id: str
) -> list[DeliveryRow]:
    """Every delivery of an event, in the order they were made."""
    q = deliveries.select().where(
        deliveries.c.tenant_id == tenant_id, deliveries.c.event_id == event_id
    )
    return [_delivery(r) for r in await conn.execute(q.order_by(deliveries.c.id))]


# -- queue again ----------------------------------------------------------------------------


def _pending(now: datetime) -> dict[str, Any]:
    # ``attempts`` is kept: it counts every try the log shows, and the delivery handler's
    # policy then allows one more try past a spent schedule rather than a whole new one.
    # ``delivered_at`` is cleared (a pending delivery is not delivered); the attempt log
    # keeps the earlier success.
    return {
        "status": DeliveryStatus.PENDING.value,
        "next_attempt_at": now,
        "delivered_at": None,
        "updated_at": now,
    }


async def requeue(
    conn: AsyncConnection, tenant_id: str, delivery_id: str, *, now: datetime
) -> DeliveryRow | None:
    """Make one finished delivery pending again and queue its job, in the caller's
    transaction. None when it is missing or already pending: the status test is part of the
    UPDATE, so two concurrent retries cannot queue it twice."""
    statement = (
        deliveries.update()
        .where(
            deliveries.c.tenant_id == tenant_id,
            deliveries.c.id == delivery_id,
            deliveries.c.status != DeliveryStatus.PENDING.value,
        )
        .values(**_pending(now))
        .returning(*deliveries.c)
    )
    row = (await conn.execute(statement)).first()
    if row is None:
        return None
    updated = _delivery(row)
    await queue.enqueue(
        conn, **_job(updated.tenant_id, updated.subscription_id, updated.id), now=now
    )
    return updated


async def requeue_failed(
    conn: AsyncConnection,
    tenant_id: str,
    subscription_id: str,
    *,
    since: datetime,
    until: datetime,
    limit: int,
    now: datetime,
) -> list[str]:
    """Make up to ``limit`` failed deliveries of a subscription created in [since, until)
    pending again, oldest first, and queue their jobs, in the caller's transaction; returns
    their ids. Rows already requeued are no longer failed, so calling again takes the next
    batch, and concurrent calls never queue a delivery twice."""
    d = deliveries
    picked = (
        sa.select(d.c.id)
        .where(
            d.c.subscription_id == subscription_id,
            d.c.tenant_id == tenant_id,
            d.c.status == DeliveryStatus.FAILED.value,
            d.c.created_at >= since,
            d.c.created_at < until,
        )
        .order_by(d.c.id)
        .limit(limit)
        .scalar_subquery()
    )
    statement = (
        d.update()
        .where(d.c.id.in_(picked), d.c.status == DeliveryStatus.FAILED.value)
        .values(**_pending(now))
        .returning(d.c.id)
    )
    ids = sorted((await conn.execute(statement)).scalars())
    await queue.enqueue_many(
        conn, [NewJob(**_job(tenant_id, subscription_id, i)) for i in ids], now=now
    )
    return ids


def _job(tenant_id: str, subscription_id: str, delivery_id: str) -> dict[str, Any]:
    """The delivery job as publishing writes it: grouped by subscription, so its rate limit
    and concurrency hold for requeued deliveries too."""
    return {
        "kind": DELIVER_KIND,
        "payload": {"deliveryId": delivery_id},
        "tenant_id": tenant_id,
        "group": subscription_id,
    }


# -- retention ------------------------------------------------------------------------------


async def tenant_ids(conn: AsyncConnection) -> list[str]:
    return list((await conn.execute(sa.select(tenants.c.id).order_by(tenants.c.id))).scalars())


async def purge_deliveries(
    conn: AsyncConnection, tenant_id: str, *, before: datetime, limit: int
) -> tuple[int, int]:
    """Delete up to ``limit`` finished deliveries of a tenant created and last changed before
    ``before``, with their attempts; returns (attempts, deliveries) deleted.

    The (tenant_id, status, created_at) index finds them; ``updated_at`` keeps an old delivery
    that was retried lately in the log until it too has aged.
    """
    d = deliveries
    ids = list(
        (
            await conn.execute(
                sa.select(d.c.id)
                .where(
                    d.c.tenant_id == tenant_id,
                    d.c.status.in_([s.value for s in FINISHED]),
                    d.c.created_at < before,
                    d.c.updated_at < before,
                )
                .limit(limit)
            )
        ).scalars()
    )
    if not ids:
        return 0, 0
    gone_attempts = await conn.execute(
        delivery_attempts.delete().where(delivery_attempts.c.delivery_id.in_(ids))
    )
    gone = await conn.execute(d.delete().where(d.c.id.in_(ids)))
    return gone_attempts.rowcount, gone.rowcount


async def purge_events(
    conn: AsyncConnection, tenant_id: str, *, before: datetime, limit: int
) -> int:
    """Delete up to ``limit`` events of a tenant created before ``before`` that no delivery
    refers to any more (a pending or lately retried delivery keeps its event)."""
    referred = sa.exists().where(deliveries.c.event_id == events.c.id)
    ids = list(
        (
            await conn.execute(
                sa.select(events.c.id)
                .where(events.c.tenant_id == tenant_id, events.c.created_at < before, ~referred)
                .limit(limit)
            )
        ).scalars()
    )
    if not ids:
        return 0
    return (await conn.execute(events.delete().where(events.c.id.in_(ids)))).rowcount


async def purge_jobs(conn: AsyncConnection, *, before: datetime) -> int:
    """Finished jobs of every kind (their deliveries keep the story)."""
    return await queue.purge_finished(conn, before=before)


# -- the retention schedule -----------------------------------------------------------------


async def lock_schedule(conn: AsyncConnection, kind: str) -> None:
    """Serialise the transactions that check and extend a recurring job's schedule until
    the caller's transaction ends, so two processes cannot both add one. SQLite already
    runs one writer at a time."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(kind.encode())  # fits the bigint advisory-lock key
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


async def live_jobs(conn: AsyncConnection, kind: str, *, running: bool = True) -> int:
    """How many jobs of ``kind`` are queued, or running too when ``running`` (the
    (status, run_at) index finds them without reading finished ones)."""
    statuses = [JobStatus.QUEUED.value] + ([JobStatus.RUNNING.value] if running else [])
    q = (
        sa.select(sa.func.count())
        .select_from(jobs)
        .where(jobs.c.status.in_(statuses), jobs.c.kind == kind)
    )
    return int((await conn.execute(q)).scalar_one())
