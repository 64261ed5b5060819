"""Event types, keyed by (tenant, name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import EventType, Page
from isthmus.errors import Conflict
from isthmus.store.tables import event_types


def _row(row: Any) -> EventType:
    return EventType(**row._mapping)


async def insert(conn: AsyncConnection, event_type: EventType) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(event_types.insert().values(**event_type.__dict__))
    except IntegrityError as exc:
        raise Conflict(f"an event type named {event_type.name!r} already exists") from exc


async def insert_missing(
    conn: AsyncConnection, tenant_id: str, described: Mapping[str, str], at: datetime
) -> None:
    """Add the named event types a tenant lacks; existing ones (changed or archived by the
    tenant, or added by a process racing this one) are left exactly as they are."""
    rows = [
        {
            "tenant_id": tenant_id,
            "name": name,
            "description": description,
            "schema": None,
            "archived": False,
            "created_at": at,
            "updated_at": at,
        }
        for name, description in described.items()
    ]
    insert_fn = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(insert_fn(event_types).values(rows).on_conflict_do_nothing())


async def update(conn: AsyncConnection, event_type: EventType) -> None:
    values = {k: v for k, v in event_type.__dict__.items() if k not in ("tenant_id", "name")}
    await conn.execute(
        event_types.update()
        .where(
            event_types.c.tenant_id == event_type.tenant_id,
            event_types.c.name == event_type.name,
        )
        .values(**values)
    )


# Built once (every publish reads its type): statements are cheaper to reuse than to build.
_GET = event_types.select().where(
    event_types.c.tenant_id == sa.bindparam("tenant_id"),
    event_types.c.name == sa.bindparam("name"),
)
_GET_FOR_UPDATE = _GET.with_for_update()


async def get(
    conn: AsyncConnection, tenant_id: str, name: str, *, for_update: bool = False
) -> EventType | None:
    query = _GET_FOR_UPDATE if for_update else _GET
    row = (await conn.execute(query, {"tenant_id": tenant_id, "name": name})).first()
    return _row(row) if row else None


async def live_names(
    conn: AsyncConnection, tenant_id: str, names: Iterable[str] | None = None
) -> set[str]:
    """Which of ``names`` (all, when None) are event types of the tenant that are not
    archived."""
    where = [event_types.c.tenant_id == tenant_id, event_types.c.archived.is_(False)]
    if names is not None:
        wanted = list(set(names))
        if not wanted:
            return set()
        where.append(event_types.c.name.in_(wanted))
    rows = await conn.execute(sa.select(event_types.c.name).where(*where))
    return {r[0] for r in rows}


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    archived: bool | None = None,
    after: str | None = None,
    limit: int,
) -> Page[EventType]:
    # Byte order on both stores: PostgreSQL's default collation would sort "." and "_" by
    # locale rules, so the same tenant would list differently on SQLite and PostgreSQL.
    name: Any = event_types.c.name
    if conn.dialect.name == "postgresql":
        name = name.collate("C")
    q = event_types.select().where(event_types.c.tenant_id == tenant_id)
    if archived is not None:
        q = q.where(event_types.c.archived.is_(archived))
    if after:
        q = q.where(name > after)
    rows = [_row(r) for r in await conn.execute(q.order_by(name).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].name) if more and rows else None)
