"""Published events: insert, and find an earlier one by its idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.store.tables import events


@dataclass(frozen=True)
class StoredEvent:
    id: str
    tenant_id: str
    type: str
    payload_hash: str
    created_at: datetime


class DuplicateKey(Exception):
    """Another transaction wrote an event with this idempotency key first."""


_INSERT = events.insert()


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    """Insert one event; ``DuplicateKey`` if its idempotency key is taken (the insert runs in
    a savepoint, so the caller's transaction stays usable)."""
    if values.get("idempotency_key") is None:
        await conn.execute(_INSERT, values)  # no key, no conflict possible
        return
    try:
        async with conn.begin_nested():
            await conn.execute(_INSERT, values)
    except IntegrityError as exc:
        raise DuplicateKey(values["idempotency_key"]) from exc


async def by_key(conn: AsyncConnection, tenant_id: str, key: str) -> StoredEvent | None:
    """The event holding ``key`` in this tenant, whatever its age."""
    row = (
        await conn.execute(
            sa.select(
                events.c.id,
                events.c.tenant_id,
                events.c.type,
                events.c.payload_hash,
                events.c.created_at,
            ).where(events.c.tenant_id == tenant_id, events.c.idempotency_key == key)
        )
    ).first()
    return StoredEvent(*row) if row else None


async def release_key(conn: AsyncConnection, event_id: str) -> None:
    """Free an expired idempotency key: the unique index spans all time, the promise 24 h."""
    await conn.execute(events.update().where(events.c.id == event_id).values(idempotency_key=None))
