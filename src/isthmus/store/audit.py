"""The audit log: append and read; there is deliberately no update or delete here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import AuditEntry, Page
from isthmus.store.tables import audit_log


async def append(conn: AsyncConnection, entry: AuditEntry) -> None:
    await conn.execute(audit_log.insert().values(**entry.__dict__))


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: str | None = None,
    limit: int,
) -> Page[AuditEntry]:
    q = sa.select(audit_log).where(audit_log.c.tenant_id == tenant_id)
    conditions: list[Any] = []
    if resource_type:
        conditions.append(audit_log.c.resource_type == resource_type)
    if resource_id:
        conditions.append(audit_log.c.resource_id == resource_id)
    if action:
        conditions.append(audit_log.c.action == action)
    if since:
        conditions.append(audit_log.c.at >= since)
    if until:
        conditions.append(audit_log.c.at < until)
    if after:
        conditions.append(audit_log.c.id < after)
    q = q.where(*conditions).order_by(audit_log.c.id.desc()).limit(limit + 1)
    rows = [AuditEntry(**r._mapping) for r in await conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)
