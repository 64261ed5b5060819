"""Published events: write a batch with its deliveries and their jobs, and find earlier
events by their idempotency keys."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_ids
from isthmus.domain.jobs import JobStatus, NewJob
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.store import notify, queue
from isthmus.store.bulk import rows_from, rows_json, texts_param
from isthmus.store.deliveries import PENDING
from isthmus.store.many import execute_many
from isthmus.store.tables import deliveries, event_types, events
from isthmus.store.tables import webhook_subscriptions as subs
from isthmus.store.types import JSONType

#: Rows per statement on SQLite, well under its limit of bound parameters.
_SQLITE_CHUNK = 500


@dataclass(frozen=True)
class StoredEvent:
    id: str
    tenant_id: str
    type: str
    payload_hash: str
    created_at: datetime


class EventRow(NamedTuple):
    """One event to write (``data_json``: its data serialised; ``payload_hash`` tells
    repeats of its idempotency key apart, empty without one)."""

    id: str
    type: str
    idempotency_key: str | None
    payload_hash: str
    data_json: str


class DeliveryRow(NamedTuple):
    """One pending delivery of a new event to a subscription, first attempt due at ``due``."""

    event_id: str
    event_type: str
    subscription_id: str
    due: datetime


class TypeState(NamedTuple):
    """An event type as publishing checks it."""

    schema: dict[str, Any] | None
    archived: bool


class Receiver(NamedTuple):
    """A subscription that receives events now, as fan-out needs it."""

    id: str
    events: tuple[str, ...]
    retry_schedule: tuple[float, ...]


def _publishing_reads() -> sa.CompoundSelect[Any]:
    named = sa.select(
        sa.literal("type").label("what"),
        event_types.c.name.label("key"),
        event_types.c.schema.label("a"),
        sa.type_coerce(sa.null(), JSONType).label("b"),
        event_types.c.archived.label("archived"),
    ).where(
        event_types.c.tenant_id == sa.bindparam("tenant_id"),
        event_types.c.name.in_(sa.bindparam("names", expanding=True)),
    )
    receiving = sa.select(
        sa.literal("sub"),
        subs.c.id,
        subs.c.events,
        subs.c.retry_schedule,
        sa.null(),
    ).where(
        subs.c.tenant_id == sa.bindparam("tenant_id"),
        subs.c.is_active.is_(True),
        subs.c.status == SubscriptionStatus.ACTIVE.value,
    )
    return sa.union_all(named, receiving)


# Built once: every publish runs it.
_PUBLISHING_READS = _publishing_reads()


async def publishing_reads(
    conn: AsyncConnection, tenant_id: str, type_names: Iterable[str]
) -> tuple[dict[str, TypeState], list[Receiver]]:
    """What a publish reads, in one statement: the tenant's event types of these names (those
    that exist) and its subscriptions that receive events now (switched on, not disabled),
    by id."""
    rows = await conn.execute(
        _PUBLISHING_READS, {"tenant_id": tenant_id, "names": sorted(set(type_names))}
    )
    types: dict[str, TypeState] = {}
    receivers: list[Receiver] = []
    for what, key, a, b, archived in rows:
        if what == "type":
            types[key] = TypeState(a, bool(archived))
        else:
            receivers.append(Receiver(key, tuple(a), tuple(b)))
    receivers.sort(key=lambda r: r.id)
    return types, receivers


_INSERT_DELIVERIES = deliveries.insert()
_SQLITE_INSERT_EVENT = (
    sqlite_insert(events)
    .values(data=sa.bindparam("b_data", type_=sa.Text()))
    .on_conflict_do_nothing(
        index_elements=["tenant_id", "idempotency_key"],
        index_where=events.c.idempotency_key.is_not(None),
    )
)

# PostgreSQL: the whole batch in one statement. Events whose idempotency key another
# transaction took meanwhile are not written (ON CONFLICT waits for that transaction, as a
# plain insert would), and neither are their deliveries (see ``_insert_published_sql``).
# The events and their deliveries each as one JSON text (``isthmus.store.bulk``); an
# event's data beside the events' (long text), as the JSON text it already is, and it stays
# that text (``json``).
_EVENT_ROWS = rows_from(
    "events",
    [("id", "text"), ("type", "text"), ("key", "text"), ("hash", "text")],
    "e",
    texts=[("data", "json")],
)
_EVENT_DATA = texts_param("events", "data")
_DELIVERY_ROWS = rows_from(
    "deliveries",
    [
        ("delivery_id", "text"),
        ("event_id", "text"),
        ("event_type", "text"),
        ("subscription_id", "text"),
        ("job_id", "text"),
        ("due", "timestamptz"),
    ],
)


def _insert_published_sql(keyed: bool) -> sa.TextClause:
    # Keyed events may lose their key to another transaction: only the events written, and
    # their deliveries, go in, and the statement names them. Events without keys cannot
    # conflict (their ids are new): no speculative insertion, no filter, nothing returned.
    if keyed:
        on_conflict = (
            "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
            "DO NOTHING RETURNING id"
        )
        written, answer = "WHERE r.event_id IN (SELECT id FROM ev)", "SELECT id FROM ev"
    else:
        on_conflict, written, answer = "", "", "SELECT NULL LIMIT 0"
    return sa.text(
        f"""
    WITH ev AS (
        INSERT INTO events (id, tenant_id, type, data, idempotency_key, payload_hash,
                            created_at)
        SELECT e.id, :tenant_id, e.type, e.data, e.key, e.hash, :now
        FROM {_EVENT_ROWS}
        {on_conflict}
    ), r AS (
        SELECT * FROM {_DELIVERY_ROWS}
        {written}
    ), d AS (
        INSERT INTO deliveries (id, tenant_id, event_id, subscription_id, event_type, status,
                                attempts, next_attempt_at, created_at, updated_at)
        SELECT delivery_id, :tenant_id, event_id, subscription_id, event_type,
               '{PENDING}', 0, due, :now, :now
        FROM r
    ), j AS (
        INSERT INTO jobs (id, tenant_id, kind, payload, group_key, status, run_at, attempts,
                          created_at, updated_at)
        SELECT job_id, :tenant_id, :kind, jsonb_build_object('deliveryId', delivery_id),
               subscription_id, '{JobStatus.QUEUED.value}', due, 0, :now, :now
        FROM r
    )
    {answer}
    """  # noqa: S608 - constants only; every value is a bound parameter
    ).bindparams(sa.bindparam("now", type_=events.c.created_at.type))


_INSERT_PUBLISHED = _insert_published_sql(keyed=True)
_INSERT_PUBLISHED_UNKEYED = _insert_published_sql(keyed=False)


async def insert_published(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    kind: str,
    now: datetime,
    new_events: Sequence[EventRow],
    new_deliveries: Sequence[DeliveryRow],
) -> set[str]:
    """Write events, their pending deliveries, and one job of ``kind`` per delivery (payload
    ``{"deliveryId": ...}``, group the subscription, due with the delivery), announced to
    the workers on commit, in the caller's transaction and a constant number of statements.
    An event whose idempotency key was taken meanwhile by another transaction is skipped
    with its deliveries. Returns the ids of the events written."""
    if not new_events:
        return set()
    if conn.dialect.name == "postgresql":
        done = await _insert_published_postgres(
            conn, tenant_id, kind, now, new_events, new_deliveries
        )
        if new_deliveries and done:
            await notify.announce(conn, [kind])
        return done
    # SQLite: one plain executemany (no RETURNING, which SQLAlchemy turns into many small
    # statements), the data bound as the text it already is. A write transaction holds
    # SQLite's lock from its BEGIN, so no other one took a key since the caller read them:
    # every row goes in, unless a caller broke that rule; then ask which did.
    inserted = await execute_many(
        conn,
        _SQLITE_INSERT_EVENT,
        [
            {
                "id": e.id,
                "tenant_id": tenant_id,
                "type": e.type,
                "b_data": e.data_json,
                "idempotency_key": e.idempotency_key,
                "payload_hash": e.payload_hash,
                "created_at": now,
            }
            for e in new_events
        ],
    )
    written = {e.id for e in new_events}
    if inserted != len(new_events):
        written = set()
        ids = [e.id for e in new_events]
        for start in range(0, len(ids), _SQLITE_CHUNK):
            chunk = ids[start : start + _SQLITE_CHUNK]
            found = await conn.execute(sa.select(events.c.id).where(events.c.id.in_(chunk)))
            written.update(found.scalars())
    rows: list[dict[str, Any]] = []
    jobs: list[NewJob] = []
    kept = [d for d in new_deliveries if d.event_id in written]
    for d, delivery_id in zip(kept, new_ids("dlv", len(kept)), strict=True):
        rows.append(
            {
                "id": delivery_id,
                "tenant_id": tenant_id,
                "event_id": d.event_id,
                "subscription_id": d.subscription_id,
                "event_type": d.event_type,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": d.due,
                "last_status_code": None,
                "last_error": None,
                "delivered_at": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        jobs.append(NewJob(kind, {"deliveryId": delivery_id}, tenant_id, d.due, d.subscription_id))
    if rows:
        await execute_many(conn, _INSERT_DELIVERIES, rows)
        await queue.enqueue_many(conn, jobs, now=now)
    return written


async def _insert_published_postgres(
    conn: AsyncConnection,
    tenant_id: str,
    kind: str,
    now: datetime,
    new_events: Sequence[EventRow],
    new_deliveries: Sequence[DeliveryRow],
) -> set[str]:
    keyed = any(e.idempotency_key is not None for e in new_events)
    result = await conn.execute(
        _INSERT_PUBLISHED if keyed else _INSERT_PUBLISHED_UNKEYED,
        {
            "tenant_id": tenant_id,
            "now": now,
            "kind": kind,
            "events": rows_json(
                [(e.id, e.type, e.idempotency_key, e.payload_hash) for e in new_events]
            ),
            _EVENT_DATA: [e.data_json for e in new_events],
            "deliveries": rows_json(
                [
                    (delivery_id, d.event_id, d.event_type, d.subscription_id, job_id, d.due)
                    for d, delivery_id, job_id in zip(
                        new_deliveries,
                        new_ids("dlv", len(new_deliveries)),
                        new_ids("job", len(new_deliveries)),
                        strict=True,
                    )
                ]
            ),
        },
    )
    if not keyed:
        return {e.id for e in new_events}
    return {row[0] for row in result}


_BY_KEYS = sa.select(
    events.c.id,
    events.c.tenant_id,
    events.c.type,
    events.c.payload_hash,
    events.c.created_at,
    events.c.idempotency_key,
).where(
    events.c.tenant_id == sa.bindparam("tenant_id"),
    events.c.idempotency_key.in_(sa.bindparam("keys", expanding=True)),
)


async def by_keys(
    conn: AsyncConnection, tenant_id: str, keys: Iterable[str]
) -> dict[str, StoredEvent]:
    """The events holding ``keys`` in this tenant, whatever their age, by key."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await conn.execute(_BY_KEYS, {"tenant_id": tenant_id, "keys": wanted})
    return {row[5]: StoredEvent(*row[:5]) for row in rows}


async def release_keys(conn: AsyncConnection, event_ids: Iterable[str]) -> None:
    """Free expired idempotency keys: the unique index spans all time, the promise 24 h."""
    ids = list(event_ids)
    if ids:
        await conn.execute(events.update().where(events.c.id.in_(ids)).values(idempotency_key=None))
