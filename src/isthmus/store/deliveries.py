"""Deliveries for the delivery engine: insert them in bulk, load one with its event, record
an attempt and the delivery's new state, and keep the subscription's failure counters.

The delivery log (lists, manual retry, retention) has its own module, ``delivery_log``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.store.tables import deliveries, delivery_attempts, events
from isthmus.store.tables import webhook_subscriptions as subs

PENDING = "pending"


@dataclass(frozen=True)
class DeliveryWork:
    """What one attempt needs: the delivery's state and its event."""

    id: str
    tenant_id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    data: Any
    event_created_at: datetime


async def insert_many(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(deliveries.insert(), list(rows))


async def load(conn: AsyncConnection, delivery_id: str) -> DeliveryWork | None:
    row = (
        await conn.execute(
            sa.select(
                deliveries.c.id,
                deliveries.c.tenant_id,
                deliveries.c.subscription_id,
                deliveries.c.event_id,
                deliveries.c.event_type,
                deliveries.c.status,
                deliveries.c.attempts,
                events.c.data,
                events.c.created_at,
            )
            .join(events, events.c.id == deliveries.c.event_id)
            .where(deliveries.c.id == delivery_id)
        )
    ).first()
    return DeliveryWork(*row) if row else None


async def record_attempt(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(delivery_attempts.insert().values(**values))


async def settle(conn: AsyncConnection, delivery_id: str, attempts: int, **values: Any) -> bool:
    """Set a pending delivery's new state after attempt number ``attempts``. Fenced on
    (pending, attempts - 1): False if someone else changed it meanwhile."""
    result = await conn.execute(
        deliveries.update()
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.status == PENDING,
            deliveries.c.attempts == attempts - 1,
        )
        .values(attempts=attempts, **values)
    )
    return result.rowcount == 1


async def cancel(conn: AsyncConnection, delivery_id: str, reason: str, now: datetime) -> None:
    await conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id, deliveries.c.status == PENDING)
        .values(status="cancelled", last_error=reason, next_attempt_at=None, updated_at=now)
    )


# -- the subscription's failure counters ---------------------------------------------------


async def reset_failures(conn: AsyncConnection, sub_id: str) -> None:
    """After a success. Writes only when there is something to reset: most deliveries succeed,
    and an update of the shared subscription row would serialise them all on its lock."""
    await conn.execute(
        subs.update()
        .where(
            subs.c.id == sub_id,
            sa.or_(subs.c.consecutive_failures != 0, subs.c.first_failure_at.is_not(None)),
        )
        .values(consecutive_failures=0, first_failure_at=None)
    )


async def count_failure(
    conn: AsyncConnection, sub_id: str, now: datetime
) -> tuple[int, datetime | None] | None:
    """After a delivery ended failed: (consecutive failures, first failure's time), or None
    if the subscription is gone."""
    row = (
        await conn.execute(
            subs.update()
            .where(subs.c.id == sub_id)
            .values(
                consecutive_failures=subs.c.consecutive_failures + 1,
                first_failure_at=sa.func.coalesce(subs.c.first_failure_at, now),
            )
            .returning(subs.c.consecutive_failures, subs.c.first_failure_at)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def disable(conn: AsyncConnection, sub_id: str, reason: str, now: datetime) -> bool:
    """Disable an active subscription; False if it was already disabled (or is gone), so
    only one caller announces it."""
    result = await conn.execute(
        subs.update()
        .where(subs.c.id == sub_id, subs.c.status == SubscriptionStatus.ACTIVE.value)
        .values(status=SubscriptionStatus.DISABLED.value, disabled_reason=reason, updated_at=now)
    )
    return result.rowcount == 1
