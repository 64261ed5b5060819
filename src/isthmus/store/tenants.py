"""Tenants."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_id
from isthmus.domain.records import Tenant
from isthmus.errors import Conflict
from isthmus.store.tables import tenants
from isthmus.store.types import utcnow


def _row(row: sa.Row[tuple[str, str, object]]) -> Tenant:
    return Tenant(**row._mapping)


async def create(conn: AsyncConnection, name: str) -> Tenant:
    tenant = Tenant(id=new_id("ten"), name=name, created_at=utcnow())
    try:
        async with conn.begin_nested():
            await conn.execute(tenants.insert().values(**tenant.__dict__))
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} already exists") from exc
    return tenant


async def by_name(conn: AsyncConnection, name: str) -> Tenant | None:
    row = (await conn.execute(tenants.select().where(tenants.c.name == name))).first()
    return _row(row) if row else None


async def by_id(conn: AsyncConnection, tenant_id: str) -> Tenant | None:
    row = (await conn.execute(tenants.select().where(tenants.c.id == tenant_id))).first()
    return _row(row) if row else None


async def list_all(conn: AsyncConnection) -> list[Tenant]:
    rows = await conn.execute(tenants.select().order_by(tenants.c.name))
    return [_row(r) for r in rows]
