"""API keys: only the SHA-256 of a key is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.records import ApiKey
from isthmus.store.tables import api_keys

_PUBLIC = [c for c in api_keys.c if c.name != "key_hash"]


def _row(row: Any) -> ApiKey:
    data = dict(row._mapping)
    data["scopes"] = tuple(data["scopes"])
    return ApiKey(**data)


async def insert(conn: AsyncConnection, key: ApiKey, key_hash: str) -> None:
    values = {**key.__dict__, "scopes": list(key.scopes), "key_hash": key_hash}
    await conn.execute(api_keys.insert().values(**values))


async def by_hash(conn: AsyncConnection, key_hash: str) -> ApiKey | None:
    query = sa.select(*_PUBLIC).where(api_keys.c.key_hash == key_hash)
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def get(conn: AsyncConnection, tenant_id: str, key_id: str) -> ApiKey | None:
    query = sa.select(*_PUBLIC).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def list_for(conn: AsyncConnection, tenant_id: str) -> list[ApiKey]:
    query = sa.select(*_PUBLIC).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.id)
    return [_row(r) for r in await conn.execute(query)]


async def revoke(conn: AsyncConnection, tenant_id: str, key_id: str, at: datetime) -> bool:
    result = await conn.execute(
        api_keys.update()
        .where(
            api_keys.c.tenant_id == tenant_id,
            api_keys.c.id == key_id,
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=at)
    )
    return result.rowcount > 0
