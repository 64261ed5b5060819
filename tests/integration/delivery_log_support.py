"""Helpers for the delivery log tests: publish events (the real ``publish``), then put their
deliveries into the state a test needs, as the delivery handler would have left them.

``finish`` writes the rows directly: the log's tests are about reading, requeueing and
purging deliveries, not about sending them (the delivery handler's tests do that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_id
from isthmus.hub import Hub
from isthmus.store import queue
from isthmus.store.tables import deliveries, delivery_attempts, jobs
from isthmus.store.types import utcnow
from isthmus.webhooks.publish import publish


@dataclass(frozen=True)
class Attempt:
    status_code: int | None = 500
    response_body: str | None = '{"message": "receiver broke"}'
    latency_ms: float | None = 12.5
    error_class: str | None = "http_status"
    error_message: str | None = "500 Internal Server Error"


async def publish_event(
    hub: Hub,
    tenant_id: str,
    event_type: str = "contact.created",
    data: Any = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Publish one event; returns the ids of the deliveries it made, in subscription order
    (subscription ids are time ordered: the first created comes first)."""
    async with hub.store.transaction() as conn:
        result = await publish(
            conn,
            tenant_id=tenant_id,
            event_type=event_type,
            data=data if data is not None else {"id": new_id("c")},
            now=now,
        )
        rows = await conn.execute(
            sa.select(deliveries.c.id)
            .where(deliveries.c.event_id == result.event_id)
            .order_by(deliveries.c.subscription_id)
        )
        return list(rows.scalars())


async def finish(
    hub: Hub,
    delivery_id: str,
    status: str,
    *,
    attempts: list[Attempt] | None = None,
    at: datetime | None = None,
) -> None:
    """Give a pending delivery its final ``status`` with ``attempts`` (default one failed
    try) and its job done, as if the handler had run at ``at``."""
    at = at or utcnow()
    tries = attempts if attempts is not None else [Attempt()]
    async with hub.store.transaction() as conn:
        tenant_id = (
            await conn.execute(
                sa.select(deliveries.c.tenant_id).where(deliveries.c.id == delivery_id)
            )
        ).scalar_one()
        for i, attempt in enumerate(tries):
            await conn.execute(
                delivery_attempts.insert().values(
                    id=new_id("att"),
                    delivery_id=delivery_id,
                    tenant_id=tenant_id,
                    attempted_at=at - timedelta(seconds=len(tries) - i),
                    **attempt.__dict__,
                )
            )
        last = tries[-1] if tries else None
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id == delivery_id)
            .values(
                status=status,
                attempts=len(tries),
                next_attempt_at=None,
                last_status_code=last.status_code if last else None,
                last_error=last.error_message if last and status != "delivered" else None,
                delivered_at=at if status == "delivered" else None,
                updated_at=at,
            )
        )
        for job in await deliver_jobs(conn, delivery_id):
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job)
                .values(status=queue.JobStatus.DONE.value, run_at=at, updated_at=at)
            )


async def deliver_jobs(conn: AsyncConnection, delivery_id: str) -> list[str]:
    """Ids of the ``webhook.deliver`` jobs of one delivery, oldest first."""
    q = sa.select(jobs.c.id, jobs.c.payload).where(jobs.c.kind == "webhook.deliver")
    return [
        row.id
        for row in await conn.execute(q.order_by(jobs.c.id))
        if row.payload == {"deliveryId": delivery_id}
    ]
