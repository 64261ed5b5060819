"""Encrypted values of every package, addressed by owner row and field.

Only ciphertext, nonce and key id are stored; sealing and opening happen in the vault.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.store.tables import secrets
from isthmus.store.types import utcnow
from isthmus.vault import Sealed


async def put(conn: AsyncConnection, tenant_id: str, owner: str, field: str, s: Sealed) -> None:
    values = {"key_id": s.key_id, "nonce": s.nonce, "ciphertext": s.ciphertext}
    updated = await conn.execute(
        secrets.update()
        .where(secrets.c.owner == owner, secrets.c.field == field)
        .values(**values, updated_at=utcnow())
    )
    if updated.rowcount == 0:
        await conn.execute(
            secrets.insert().values(
                tenant_id=tenant_id, owner=owner, field=field, updated_at=utcnow(), **values
            )
        )


async def get_all(conn: AsyncConnection, owner: str) -> dict[str, Sealed]:
    rows = await conn.execute(
        sa.select(secrets.c.field, secrets.c.key_id, secrets.c.nonce, secrets.c.ciphertext).where(
            secrets.c.owner == owner
        )
    )
    return {r.field: Sealed(r.key_id, r.nonce, r.ciphertext) for r in rows}


async def delete(conn: AsyncConnection, owner: str, fields: list[str] | None = None) -> None:
    query = secrets.delete().where(secrets.c.owner == owner)
    if fields is not None:
        query = query.where(secrets.c.field.in_(fields))
    await conn.execute(query)


async def count_by_key(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        sa.select(secrets.c.key_id, sa.func.count()).group_by(secrets.c.key_id)
    )
    return {r[0]: r[1] for r in rows}


async def not_under_key(
    conn: AsyncConnection, key_id: str, after: tuple[str, str], batch: int
) -> list[tuple[str, str, str, Sealed]]:
    """(tenant, owner, field, sealed) of the next ``batch`` secrets sealed under another key,
    in (owner, field) order after ``after``."""
    rows = await conn.execute(
        sa.select(secrets)
        .where(
            secrets.c.key_id != key_id,
            sa.tuple_(secrets.c.owner, secrets.c.field) > sa.tuple_(*after),
        )
        .order_by(secrets.c.owner, secrets.c.field)
        .limit(batch)
    )
    return [(r.tenant_id, r.owner, r.field, Sealed(r.key_id, r.nonce, r.ciphertext)) for r in rows]


async def replace_if_unchanged(
    conn: AsyncConnection, owner: str, field: str, old: Sealed, new: Sealed
) -> bool:
    """Swap a re-encrypted value in, unless someone wrote the secret since it was read."""
    result = await conn.execute(
        secrets.update()
        .where(secrets.c.owner == owner, secrets.c.field == field, secrets.c.nonce == old.nonce)
        .values(key_id=new.key_id, nonce=new.nonce, ciphertext=new.ciphertext)
    )
    return result.rowcount > 0


async def tenants_with_secrets(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(sa.select(secrets.c.tenant_id).distinct())
    return [r[0] for r in rows]
