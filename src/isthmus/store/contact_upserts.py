"""The sync's write path: contacts in bulk, matched by email, built for throughput.

``upsert_many`` takes a fixed number of statements per batch whatever its size (one SELECT
by the batch's emails, one multi-row INSERT of the new contacts, one UPDATE of the changed
ones, one of those that only gained a source; on PostgreSQL one more to lock the rows about
to change; and, for a batch with records whose email changed at the source, two more: lock
their contacts and give them their new emails).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.contacts import (
    Change,
    Contact,
    Mapped,
    Source,
    is_linked,
    normalise_email,
    reconcile,
)
from isthmus.domain.ids import new_ids
from isthmus.store.bulk import rows_from, rows_json
from isthmus.store.contacts import SELECT_CHUNK, contact_values, row_contact
from isthmus.store.many import execute_many
from isthmus.store.tables import contacts


@dataclass(frozen=True)
class UpsertOutcome:
    """What a batch did: the contacts it created and updated (as stored now), and how many
    it left unchanged (those that only gained a source entry included)."""

    created: list[Contact]
    updated: list[Contact]
    unchanged: int


# -- bulk upsert ------------------------------------------------------------------------------


async def upsert_many(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    mapped: Sequence[Mapped],
    now: datetime,
    *,
    moved: Mapping[str, str] | None = None,
) -> UpsertOutcome:
    """Write a batch of synced records, matched to contacts by email.

    New emails are inserted; a known contact is updated only when the merged fields hash
    differently (``reconcile``), and gains or updates the integration's source entry. The
    same email twice in a batch is written once, as its last record; the earlier counts as
    unchanged, so that every record counts once (a sync skips a duplicate of another id
    before, so these are one record listed twice). Known contacts are read
    light first (id, hash, sources): only those about to change are read whole, and on
    PostgreSQL locked as they are, so concurrent syncs of two integrations merge instead
    of overwriting each other; an insert that loses a race for an email is handled as an
    update of the winner's row.

    ``moved`` (new email -> the email its record had, ``RecordEmails.moved``): a record
    whose new email no contact has, while the contact with the old one is linked to it,
    is that contact with its email changed at the source: it is updated, email included,
    not made anew (first, so that a record of the batch listed with the old email makes a
    new contact of it). A new email another contact has goes to that contact, as any.
    """
    batch: dict[str, Mapped] = {}
    superseded = 0
    for item in mapped:
        email = normalise_email(item.email)
        if email != item.email:
            item = replace(item, email=email)
        if batch.pop(email, None) is not None:  # the last record of an email wins
            superseded += 1
        batch[email] = item
    if not batch:
        return UpsertOutcome([], [], 0)

    olds = {new: old for new, old in (moved or {}).items() if new in batch}
    known = await _known(conn, tenant_id, [*batch, *(o for o in olds.values() if o not in batch)])
    olds = {
        new: old
        for new, old in olds.items()
        if new not in known
        and old in known
        and is_linked(known[old].sources, integration_id, batch[new].external_id)
    }
    renamed = await _renamed(conn, tenant_id, integration_id, batch, olds, now)
    for old in olds.values():
        known.pop(old)  # free now: a record of the batch with it is a new contact
    fresh = [m for email, m in batch.items() if email not in known and email not in olds]
    created = await _insert_new(conn, tenant_id, integration_id, fresh, now)
    unchanged = superseded
    writing: list[str] = []
    for email, item in batch.items():
        found = known.get(email)
        if email in olds:
            continue
        if found is None:
            if email not in created:  # another transaction inserted it first
                writing.append(email)
        elif item.hash != found.hash or not is_linked(
            found.sources, integration_id, item.external_id
        ):
            writing.append(email)
        else:
            unchanged += 1

    current = await _locked(conn, tenant_id, writing) if writing else {}
    plans = [
        reconcile(current[email], batch[email], integration_id, now)
        for email in writing
        if email in current  # else deleted meanwhile: the next sync creates it again
    ]
    plans += [(Change.UPDATED, c) for c in renamed]
    updated = [c for change, c in plans if change is Change.UPDATED]
    linked = [c for change, c in plans if change is Change.LINKED]
    await _write(conn, updated, linked)
    return UpsertOutcome(
        created=[created[email] for email in batch if email in created],
        updated=updated,
        unchanged=unchanged + len(plans) - len(updated),
    )


async def refresh_statistics(conn: AsyncConnection) -> None:
    """PostgreSQL: ANALYZE the contacts table, for a bulk load that grows it faster than
    autovacuum follows. Without statistics (a new or emptied table) the planner rates the
    tenant index as good as the email index for a lookup by email, and taking it reads
    every contact of the tenant per lookup; fresh statistics make it take the email index.
    In a transaction of its own, holding no row locks: it takes a lock that other ANALYZEs
    wait for, and none that writes wait for. SQLite: nothing to do."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("ANALYZE contacts"))


@dataclass(frozen=True)
class _Known:
    """What deciding whether a synced record changes a stored contact needs of it."""

    id: str
    hash: str
    sources: tuple[Source, ...]


# PostgreSQL gets each step as one statement over the batch as one parameter (the emails
# an array, the rows one JSON text: ``isthmus.store.bulk``): one prepared statement whatever
# the batch size, no per-row parameter handling; SQLite gets portable Core.
# Each email is looked up on its own through the unique (tenant_id, email) index: a LATERAL
# subquery with LIMIT 1 is a nested loop the planner cannot turn into a join. As a join,
# a planner whose statistics lagged behind a growing table (a first sync outruns
# autovacuum) scanned every contact of the tenant for every batch: quadratic. (Not
# ``email = ANY(:emails)`` either: a generic plan searches the array linearly per row.)
def _pg_by_emails(columns: Sequence[str], *, lock: bool) -> str:
    inner = ", ".join(f"c.{name}" for name in columns)
    outer = ", ".join(f"found.{name}" for name in columns)
    return f"""
    SELECT {outer}
    FROM unnest(CAST(:emails AS VARCHAR[])) AS e(email)
    CROSS JOIN LATERAL (
        SELECT {inner} FROM contacts AS c
        WHERE c.tenant_id = :tenant_id AND c.email = e.email
        LIMIT 1 {"FOR UPDATE" if lock else ""}
    ) AS found
    """  # noqa: S608 - built from constants; every value is a bound parameter


_KNOWN_COLUMNS = ("email", "id", "hash", "sources")
_PG_KNOWN = sa.text(_pg_by_emails(_KNOWN_COLUMNS, lock=False)).columns(
    *(contacts.c[name] for name in _KNOWN_COLUMNS)
)
# Rows are locked one by one in the order of the emails, which ``_locked`` sorts: two
# transactions locking overlapping batches wait for each other instead of deadlocking.
_PG_SELECT_LOCKED = sa.text(
    _pg_by_emails([column.name for column in contacts.c], lock=True)
).columns(*contacts.c)
_ROWS = rows_from(
    "rows",
    [
        ("id", "text"),
        ("email", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("phone", "text"),
        ("company", "text"),
        ("job_title", "text"),
        ("custom", "jsonb"),
        ("sources", "jsonb"),
        ("hash", "text"),
        ("updated_at", "timestamptz"),
    ],
)
_PG_INSERT_ROWS = f"""
    INSERT INTO contacts (id, tenant_id, email, first_name, last_name, phone, company,
                          job_title, custom, sources, hash, created_at, updated_at)
    SELECT r.id, :tenant_id, r.email, r.first_name, r.last_name, r.phone, r.company,
           r.job_title, r.custom, r.sources, r.hash, r.updated_at, r.updated_at
    FROM {_ROWS}
    """  # noqa: S608 - a constant; every value is a bound parameter
# New contacts go in with a plain INSERT (ON CONFLICT's speculative insertion costs a
# quarter of the statement's server time); only when another transaction took one of the
# emails since they were read does the batch go again, skipping what is taken.
_PG_INSERT = sa.text(_PG_INSERT_ROWS + " RETURNING email")
_PG_INSERT_SKIPPING_TAKEN = sa.text(
    _PG_INSERT_ROWS + " ON CONFLICT (tenant_id, email) DO NOTHING RETURNING email"
)
_PG_UPDATE = sa.text(
    f"""
    UPDATE contacts AS c
    SET first_name = r.first_name, last_name = r.last_name, phone = r.phone,
        company = r.company, job_title = r.job_title, custom = r.custom,
        sources = r.sources, hash = r.hash, updated_at = r.updated_at
    FROM {_ROWS}
    WHERE c.id = r.id
    """  # noqa: S608 - a constant; every value is a bound parameter
)
_PG_LINK = sa.text(
    """
    UPDATE contacts AS c SET sources = CAST(r.sources AS JSONB)
    FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:sources AS TEXT[])) AS r(id, sources)
    WHERE c.id = r.id
    """
)

_PG_RENAME = sa.text(
    """
    UPDATE contacts AS c SET email = r.email
    FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:emails AS VARCHAR[])) AS r(id, email)
    WHERE c.id = r.id
    """
)
_RENAME = (
    contacts.update()
    .where(contacts.c.id == sa.bindparam("b_id"))
    .values(email=sa.bindparam("b_email"))
)

_INSERT = sqlite_insert(contacts).on_conflict_do_nothing(index_elements=["tenant_id", "email"])
# The columns a changed contact's UPDATE sets, each bound as ``b_<column>``.
_SET: tuple[str, ...] = ("first_name", "last_name", "phone", "company", "job_title")
_SET += ("custom", "sources", "hash", "updated_at")
_UPDATE = (
    contacts.update()
    .where(contacts.c.id == sa.bindparam("b_id"))
    .values({name: sa.bindparam(f"b_{name}", type_=contacts.c[name].type) for name in _SET})
)
_SQLITE_KNOWN = sa.select(*(contacts.c[name] for name in _KNOWN_COLUMNS))
_LINK = (
    contacts.update()
    .where(contacts.c.id == sa.bindparam("b_id"))
    .values(sources=sa.bindparam("b_sources", type_=contacts.c.sources.type))
)


async def _known(conn: AsyncConnection, tenant_id: str, emails: list[str]) -> dict[str, _Known]:
    found: dict[str, _Known] = {}
    for start in range(0, len(emails), SELECT_CHUNK):
        chunk = emails[start : start + SELECT_CHUNK]
        if conn.dialect.name == "postgresql":
            rows = await conn.execute(_PG_KNOWN, {"tenant_id": tenant_id, "emails": chunk})
        else:
            where = (contacts.c.tenant_id == tenant_id, contacts.c.email.in_(chunk))
            rows = await conn.execute(_SQLITE_KNOWN.where(*where))
        for email, contact_id, digest, sources in rows:
            found[email] = _Known(
                contact_id, digest, tuple(Source.from_json(s) for s in sources or ())
            )
    return found


async def _locked(conn: AsyncConnection, tenant_id: str, emails: list[str]) -> dict[str, Contact]:
    """The contacts with these emails, whole, locked on PostgreSQL (SQLite writers take
    turns: nothing to lock)."""
    found: dict[str, Contact] = {}
    emails = sorted(emails)
    for start in range(0, len(emails), SELECT_CHUNK):
        chunk = emails[start : start + SELECT_CHUNK]
        if conn.dialect.name == "postgresql":
            params = {"tenant_id": tenant_id, "emails": chunk}
            rows = await conn.execute(_PG_SELECT_LOCKED, params)
        else:
            where = (contacts.c.tenant_id == tenant_id, contacts.c.email.in_(chunk))
            rows = await conn.execute(contacts.select().where(*where))
        found.update((r.email, row_contact(r)) for r in rows)
    return found


async def _insert_new(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    fresh: list[Mapped],
    now: datetime,
) -> dict[str, Contact]:
    """Insert what is new; the ones inserted, by email (an email another transaction took
    meanwhile is left out)."""
    if not fresh:
        return {}
    ids = new_ids("con", len(fresh))
    planned = {
        m.email: Contact.new_from(
            m,
            id=contact_id,
            tenant_id=tenant_id,
            sources=(Source(integration_id, m.external_id),),
            now=now,
        )
        for m, contact_id in zip(fresh, ids, strict=True)
    }
    if conn.dialect.name == "postgresql":
        params = {"tenant_id": tenant_id, **_arrays(list(planned.values()))}
        try:
            async with conn.begin_nested():  # a savepoint: a lost race undoes this alone
                result = await conn.execute(_PG_INSERT, params)
        except IntegrityError:
            result = await conn.execute(_PG_INSERT_SKIPPING_TAKEN, params)
        return {email: planned[email] for (email,) in result}
    # SQLite: one plain executemany, no RETURNING (which SQLAlchemy turns into many small
    # statements); this transaction holds the write lock since it read these emails, so
    # every row goes in, unless a caller broke that rule: then ask which did.
    inserted = await execute_many(conn, _INSERT, [contact_values(c) for c in planned.values()])
    if inserted == len(planned):
        return planned
    ids = [c.id for c in planned.values()]
    stored = set(
        (await conn.execute(sa.select(contacts.c.id).where(contacts.c.id.in_(ids)))).scalars()
    )
    return {email: c for email, c in planned.items() if c.id in stored}


async def _renamed(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    batch: Mapping[str, Mapped],
    olds: Mapping[str, str],
    now: datetime,
) -> list[Contact]:
    """The contacts whose records moved to a new email (new -> old in ``olds``), with
    their new emails stored and their other fields merged, for ``_write`` to store."""
    if not olds:
        return []
    current = await _locked(conn, tenant_id, list(olds.values()))
    renamed = [
        reconcile(current[old], batch[new], integration_id, now)[1]  # the email differs
        for new, old in olds.items()
        if old in current
    ]
    if renamed:
        await _rename(conn, renamed)
    return renamed


async def _rename(conn: AsyncConnection, renamed: list[Contact]) -> None:
    """Give these contacts their new emails."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            _PG_RENAME, {"ids": [c.id for c in renamed], "emails": [c.email for c in renamed]}
        )
    else:
        await execute_many(conn, _RENAME, [{"b_id": c.id, "b_email": c.email} for c in renamed])


async def _write(conn: AsyncConnection, updated: list[Contact], linked: list[Contact]) -> None:
    """Store the updated contacts whole, and the new sources of the linked ones."""
    if conn.dialect.name == "postgresql":
        if updated:
            await conn.execute(_PG_UPDATE, _arrays(updated))
        if linked:
            sources = [_json([s.as_json() for s in c.sources]) for c in linked]
            await conn.execute(_PG_LINK, {"ids": [c.id for c in linked], "sources": sources})
        return
    if updated:
        await execute_many(conn, _UPDATE, [_update_params(c) for c in updated])
    if linked:
        await execute_many(
            conn,
            _LINK,
            [{"b_id": c.id, "b_sources": [s.as_json() for s in c.sources]} for c in linked],
        )


def _arrays(rows: list[Contact]) -> dict[str, str]:
    """The contacts as ``_ROWS`` takes them: one JSON text."""
    return {
        "rows": rows_json(
            [
                (
                    c.id,
                    c.email,
                    c.first_name,
                    c.last_name,
                    c.phone,
                    c.company,
                    c.job_title,
                    dict(c.custom) if c.custom else {},
                    [s.as_json() for s in c.sources],
                    c.hash,
                    c.updated_at,
                )
                for c in rows
            ]
        )
    }


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


# Made once, not per call as ``json.dumps`` with options does: a sync encodes every row.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _update_params(contact: Contact) -> dict[str, Any]:
    values = contact_values(contact)
    return {f"b_{name}": values[name] for name in ("id", *_SET)}
