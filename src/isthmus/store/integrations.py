"""Integrations. Their credentials live in ``secrets``, never in these rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.integrations import Health, IntegrationStatus, IntegrationType
from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Integration, Page
from isthmus.errors import Conflict
from isthmus.store.tables import integrations


def _row(row: Any) -> Integration:
    data = dict(row._mapping)
    data["type"] = IntegrationType(data["type"])
    data["status"] = IntegrationStatus(data["status"])
    data["health"] = Health(data["health"])
    return Integration(**data)


def _values(integration: Integration) -> dict[str, Any]:
    values = dict(integration.__dict__)
    for enum_field in ("type", "status", "health"):
        values[enum_field] = str(values[enum_field])
    return values


async def insert(conn: AsyncConnection, integration: Integration) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(integrations.insert().values(**_values(integration)))
    except IntegrityError as exc:
        raise Conflict(f"an integration named {integration.name!r} already exists") from exc


async def update(conn: AsyncConnection, integration: Integration) -> None:
    values = _values(integration)
    try:
        async with conn.begin_nested():
            await conn.execute(
                integrations.update()
                .where(
                    integrations.c.tenant_id == integration.tenant_id,
                    integrations.c.id == integration.id,
                )
                .values(**values)
            )
    except IntegrityError as exc:
        raise Conflict(f"an integration named {integration.name!r} already exists") from exc


async def get(
    conn: AsyncConnection, tenant_id: str, integration_id: str, *, for_update: bool = False
) -> Integration | None:
    query = integrations.select().where(
        integrations.c.tenant_id == tenant_id, integrations.c.id == integration_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def by_name(conn: AsyncConnection, tenant_id: str, name: str) -> Integration | None:
    query = integrations.select().where(
        integrations.c.tenant_id == tenant_id, integrations.c.name == name
    )
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def delete(conn: AsyncConnection, tenant_id: str, integration_id: str) -> bool:
    result = await conn.execute(
        integrations.delete().where(
            integrations.c.tenant_id == tenant_id, integrations.c.id == integration_id
        )
    )
    return result.rowcount > 0


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    provider: str | None = None,
    type: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int,
) -> Page[Integration]:
    q = integrations.select().where(integrations.c.tenant_id == tenant_id)
    if provider:
        q = q.where(integrations.c.provider == provider)
    if type:
        q = q.where(integrations.c.type == type)
    if status:
        q = q.where(integrations.c.status == status)
    if after:
        q = q.where(integrations.c.id > after)
    rows = [_row(r) for r in await conn.execute(q.order_by(integrations.c.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def all_for(conn: AsyncConnection, tenant_id: str) -> list[Integration]:
    q = integrations.select().where(integrations.c.tenant_id == tenant_id)
    return [_row(r) for r in await conn.execute(q.order_by(integrations.c.name))]


async def set_status(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    status: IntegrationStatus,
    message: str | None,
    *,
    now: datetime,
    verified: bool = False,
) -> bool:
    """Set an integration's status and status message (and ``verified_at`` to ``now`` when
    ``verified``); False when there is no such integration."""
    values: dict[str, Any] = {"status": str(status), "status_message": message, "updated_at": now}
    if verified:
        values["verified_at"] = now
    result = await conn.execute(
        integrations.update()
        .where(integrations.c.tenant_id == tenant_id, integrations.c.id == integration_id)
        .values(**values)
    )
    return result.rowcount > 0
