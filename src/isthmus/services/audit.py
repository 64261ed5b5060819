"""Writing and reading the audit trail. Rows are written in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.auth import Actor
from isthmus.domain.ids import new_id
from isthmus.domain.pagination import DEFAULT_LIMIT, decode_cursor
from isthmus.domain.records import AuditEntry, Page
from isthmus.errors import InvalidInput
from isthmus.store import audit as audit_store
from isthmus.store.db import Store
from isthmus.store.types import utcnow


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str,
    diff: dict[str, Any] | None = None,
    *,
    tenant_id: str | None = None,
) -> None:
    await audit_store.append(
        conn,
        AuditEntry(
            id=new_id("aud"),
            tenant_id=tenant_id or actor.tenant_id,
            at=utcnow(),
            actor=actor.id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            client_ip=actor.client_ip,
            diff=diff or {},
        ),
    )


class AuditService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def query(
        self,
        tenant_id: str,
        *,
        resource: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[AuditEntry]:
        """``resource`` is a type (``integration``) or a type and id (``integration/int_...``)."""
        resource_type, _, resource_id = (resource or "").partition("/")
        if since and until and since >= until:
            raise InvalidInput.field("until", "must be after since")
        async with self.store.read() as conn:
            return await audit_store.query(
                conn,
                tenant_id,
                resource_type=resource_type or None,
                resource_id=resource_id or None,
                action=action,
                since=since,
                until=until,
                after=decode_cursor(cursor),
                limit=limit,
            )
