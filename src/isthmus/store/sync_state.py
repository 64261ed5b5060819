"""Where an integration's incremental sync picks up: a small JSON state per integration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.store.tables import sync_state


async def get(conn: AsyncConnection, integration_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(
            sa.select(sync_state.c.state).where(sync_state.c.integration_id == integration_id)
        )
    ).first()
    return dict(row.state) if row is not None and row.state else {}


async def put(
    conn: AsyncConnection, tenant_id: str, integration_id: str, state: dict[str, Any], now: datetime
) -> None:
    updated = await conn.execute(
        sync_state.update()
        .where(sync_state.c.integration_id == integration_id)
        .values(state=state, updated_at=now)
    )
    if updated.rowcount == 0:
        await conn.execute(
            sync_state.insert().values(
                integration_id=integration_id, tenant_id=tenant_id, state=state, updated_at=now
            )
        )


async def forget(conn: AsyncConnection, integration_id: str) -> None:
    """Drop the state: the integration's next run walks its whole listing."""
    await conn.execute(sync_state.delete().where(sync_state.c.integration_id == integration_id))
