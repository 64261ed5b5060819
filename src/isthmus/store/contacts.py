"""Contacts one at a time for the API, and streamed for exports (the sync's bulk writes are
in ``contact_upserts``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.contacts import (
    Contact,
    ContactFilter,
    Source,
    normalise_email,
)
from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Page
from isthmus.errors import Conflict
from isthmus.store.tables import contacts

#: Emails per SELECT ... IN: far below every driver's bound-parameter limit.
SELECT_CHUNK = 1000
#: The SQLite function behind case-insensitive matching of non-ASCII text (SQLite's own
#: LIKE and lower() fold ASCII only).
_LOWER = "isthmus_lower"


def row_contact(row: Any) -> Contact:
    m = row._mapping
    return Contact(
        id=m["id"],
        tenant_id=m["tenant_id"],
        email=m["email"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        phone=m["phone"],
        company=m["company"],
        job_title=m["job_title"],
        custom=m["custom"] or {},
        sources=tuple(Source.from_json(s) for s in m["sources"] or ()),
        hash=m["hash"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def contact_values(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "tenant_id": contact.tenant_id,
        "email": contact.email,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "phone": contact.phone,
        "company": contact.company,
        "job_title": contact.job_title,
        "custom": dict(contact.custom),
        "sources": [s.as_json() for s in contact.sources],
        "hash": contact.hash,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
    }


# -- one at a time ----------------------------------------------------------------------------


async def get(
    conn: AsyncConnection, tenant_id: str, contact_id: str, *, for_update: bool = False
) -> Contact | None:
    query = contacts.select().where(contacts.c.tenant_id == tenant_id, contacts.c.id == contact_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return row_contact(row) if row else None


async def by_email(conn: AsyncConnection, tenant_id: str, email: str) -> Contact | None:
    query = contacts.select().where(contacts.c.tenant_id == tenant_id, contacts.c.email == email)
    row = (await conn.execute(query)).first()
    return row_contact(row) if row else None


async def insert(conn: AsyncConnection, contact: Contact) -> None:
    """Conflict if the tenant has a contact with this email."""
    try:
        async with conn.begin_nested():
            await conn.execute(contacts.insert().values(**contact_values(contact)))
    except IntegrityError as exc:
        raise await _taken(conn, contact) from exc


async def update(conn: AsyncConnection, contact: Contact) -> None:
    """Write every field of ``contact``; Conflict if its new email is another's."""
    values = contact_values(contact)
    del values["id"], values["tenant_id"], values["created_at"]
    try:
        async with conn.begin_nested():
            await conn.execute(
                contacts.update()
                .where(contacts.c.tenant_id == contact.tenant_id, contacts.c.id == contact.id)
                .values(**values)
            )
    except IntegrityError as exc:
        raise await _taken(conn, contact) from exc


async def _taken(conn: AsyncConnection, contact: Contact) -> Conflict:
    holder = await by_email(conn, contact.tenant_id, contact.email)
    which = f" ({holder.id})" if holder else ""
    return Conflict(f"a contact with email {contact.email!r} already exists{which}")


async def delete(conn: AsyncConnection, tenant_id: str, contact_id: str) -> bool:
    result = await conn.execute(
        contacts.delete().where(contacts.c.tenant_id == tenant_id, contacts.c.id == contact_id)
    )
    return result.rowcount > 0


# -- lists and exports ------------------------------------------------------------------------


async def query(
    conn: AsyncConnection,
    tenant_id: str,
    where: ContactFilter,
    *,
    after: str | None = None,
    limit: int,
) -> Page[Contact]:
    """One page in id (creation) order, after the contact ``after``."""
    q = contacts.select().where(contacts.c.tenant_id == tenant_id, *await _filters(conn, where))
    if after:
        q = q.where(contacts.c.id > after)
    rows = [row_contact(r) for r in await conn.execute(q.order_by(contacts.c.id).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def stream(
    conn: AsyncConnection, tenant_id: str, where: ContactFilter, *, batch_size: int = 1000
) -> AsyncIterator[list[Contact]]:
    """Every matching contact in id order, ``batch_size`` at a time: an export holds one
    batch in memory, never the table."""
    after: str | None = None
    while True:
        page = await query(conn, tenant_id, where, after=after, limit=batch_size)
        if page.items:
            yield page.items
        if page.next_cursor is None:
            return
        after = page.items[-1].id


async def linked_emails(
    conn: AsyncConnection, tenant_id: str, integration_id: str, *, batch_size: int = 5000
) -> dict[str, str]:
    """External id -> email of the contacts with the integration's source entry: what a
    sync compares its records with to find one whose email changed at the source. Read in
    id order, ``batch_size`` rows at a time."""
    found: dict[str, str] = {}
    q = sa.select(contacts.c.id, contacts.c.email, contacts.c.sources).where(
        contacts.c.tenant_id == tenant_id, _from_integration(conn, integration_id)
    )
    after = ""
    while True:
        rows = (
            await conn.execute(
                q.where(contacts.c.id > after).order_by(contacts.c.id).limit(batch_size)
            )
        ).all()
        for _id, email, sources in rows:
            for source in sources or ():
                external_id = source.get("externalId")
                if source.get("integrationId") == integration_id and external_id is not None:
                    found[str(external_id)] = email
        if len(rows) < batch_size:
            return found
        after = rows[-1].id


async def _filters(conn: AsyncConnection, where: ContactFilter) -> list[sa.ColumnElement[bool]]:
    c = contacts.c
    found: list[sa.ColumnElement[bool]] = []
    # A blank filter (``?company=``) filters nothing, like one left out.
    email, company, q = (v.strip() if v else None for v in (where.email, where.company, where.q))
    if email:
        found.append(c.email == normalise_email(email))
    if company:
        found.append(await _ilike(conn, c.company, _escaped(company)))
    if where.integration_id:
        found.append(_from_integration(conn, where.integration_id))
    if where.updated_since is not None:
        found.append(c.updated_at >= where.updated_since)
    if q:
        pattern = f"%{_escaped(q)}%"
        full_name = sa.func.coalesce(c.first_name, "") + " " + sa.func.coalesce(c.last_name, "")
        found.append(
            sa.or_(*[await _ilike(conn, col, pattern) for col in (c.email, full_name, c.company)])
        )
    return found


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _ilike(
    conn: AsyncConnection, column: sa.ColumnElement[Any], pattern: str
) -> sa.ColumnElement[bool]:
    """``column`` matches the LIKE ``pattern`` with case ignored, Unicode included."""
    if conn.dialect.name == "postgresql":
        return column.ilike(pattern, escape="\\")
    if pattern.isascii():
        return column.like(pattern, escape="\\")  # SQLite's LIKE ignores ASCII case
    await _install_lower(conn)
    return sa.func.isthmus_lower(column).like(pattern.lower(), escape="\\")


async def _install_lower(conn: AsyncConnection) -> None:
    raw = await conn.get_raw_connection()
    if raw.info.get(_LOWER):
        return
    driver: Any = raw.driver_connection
    await driver.create_function(_LOWER, 1, _lower, deterministic=True)
    raw.info[_LOWER] = True


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _from_integration(conn: AsyncConnection, integration_id: str) -> sa.ColumnElement[bool]:
    if conn.dialect.name == "postgresql":
        clause = sa.text("contacts.sources @> CAST(:source_filter AS JSONB)").bindparams(
            source_filter=json.dumps([{"integrationId": integration_id}])
        )
    else:
        clause = sa.text(
            "EXISTS (SELECT 1 FROM json_each(contacts.sources) AS s "
            "WHERE json_extract(s.value, '$.integrationId') = :source_filter)"
        ).bindparams(source_filter=integration_id)
    return sa.and_(clause)
