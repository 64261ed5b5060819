"""Webhook subscriptions. Their signing secrets live in ``secrets``, never in these rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Page, WebhookSubscription
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.store.tables import webhook_subscriptions as subs


def _row(row: Any) -> WebhookSubscription:
    return from_row(row._mapping)


def from_row(mapping: Any) -> WebhookSubscription:
    """A subscription from a mapping of its column values."""
    data = dict(mapping)
    data["events"] = tuple(data["events"])
    data["retry_schedule"] = tuple(data["retry_schedule"])
    data["status"] = SubscriptionStatus(data["status"])
    return WebhookSubscription(**data)


def _values(sub: WebhookSubscription) -> dict[str, Any]:
    values = dict(sub.__dict__)
    values["events"] = list(sub.events)
    values["retry_schedule"] = list(sub.retry_schedule)
    values["status"] = str(sub.status)
    return values


async def insert(conn: AsyncConnection, sub: WebhookSubscription) -> None:
    await conn.execute(subs.insert().values(**_values(sub)))


async def update(conn: AsyncConnection, sub: WebhookSubscription) -> None:
    await conn.execute(
        subs.update()
        .where(subs.c.tenant_id == sub.tenant_id, subs.c.id == sub.id)
        .values(**_values(sub))
    )


async def get(
    conn: AsyncConnection, tenant_id: str, sub_id: str, *, for_update: bool = False
) -> WebhookSubscription | None:
    query = subs.select().where(subs.c.tenant_id == tenant_id, subs.c.id == sub_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def delete(conn: AsyncConnection, tenant_id: str, sub_id: str) -> bool:
    result = await conn.execute(
        subs.delete().where(subs.c.tenant_id == tenant_id, subs.c.id == sub_id)
    )
    return result.rowcount > 0


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    status: str | None = None,
    is_active: bool | None = None,
    after: str | None = None,
    limit: int,
) -> Page[WebhookSubscription]:
    q = subs.select().where(subs.c.tenant_id == tenant_id)
    if status:
        q = q.where(subs.c.status == status)
    if is_active is not None:
        q = q.where(subs.c.is_active.is_(is_active))
    if after:
        q = q.where(subs.c.id > after)
    rows = [_row(r) for r in await conn.execute(q.order_by(subs.c.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


# Built once: every publish runs it, and reusing a statement is cheaper than building it.
_RECEIVING = (
    subs.select()
    .where(
        subs.c.tenant_id == sa.bindparam("tenant_id"),
        subs.c.is_active.is_(True),
        subs.c.status == SubscriptionStatus.ACTIVE.value,
    )
    .order_by(subs.c.id)
)


async def receiving(conn: AsyncConnection, tenant_id: str) -> list[WebhookSubscription]:
    """The tenant's subscriptions that receive events now: switched on and not disabled."""
    return [_row(r) for r in await conn.execute(_RECEIVING, {"tenant_id": tenant_id})]
