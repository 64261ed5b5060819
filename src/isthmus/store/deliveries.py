"""Deliveries for the delivery engine: insert them in bulk, load one with its event, record
an attempt and the delivery's new state, and keep the subscription's failure counters.

The delivery log (lists, manual retry, retention) has its own module, ``delivery_log``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_id
from isthmus.domain.jobs import JobStatus
from isthmus.domain.records import WebhookSubscription
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.store import notify
from isthmus.store.queue import complete_statement as job_complete_statement
from isthmus.store.subscriptions import from_row as subscription_from_row
from isthmus.store.tables import deliveries, delivery_attempts, events, secrets
from isthmus.store.tables import webhook_subscriptions as subs

PENDING = "pending"


@dataclass(frozen=True)
class DeliveryWork:
    """What one attempt needs: the delivery's state and its event."""

    id: str
    tenant_id: str
    subscription_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    data: Any
    event_created_at: datetime


async def insert_many(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(deliveries.insert(), list(rows))


_INSERT_WITH_JOBS = sa.text(
    """
    WITH r AS (
        SELECT * FROM unnest(
            CAST(:delivery_ids AS VARCHAR[]), CAST(:subscription_ids AS VARCHAR[]),
            CAST(:job_ids AS VARCHAR[]), CAST(:dues AS TIMESTAMPTZ[])
        ) AS r(delivery_id, subscription_id, job_id, due)
    ), d AS (
        INSERT INTO deliveries (id, tenant_id, event_id, subscription_id, event_type, status,
                                attempts, next_attempt_at, created_at, updated_at)
        SELECT delivery_id, :tenant_id, :event_id, subscription_id, :event_type, :pending,
               0, due, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ)
        FROM r
    ), j AS (
        INSERT INTO jobs (id, tenant_id, kind, payload, group_key, status, run_at, attempts,
                          created_at, updated_at)
        SELECT job_id, :tenant_id, :kind, jsonb_build_object('deliveryId', delivery_id),
               subscription_id, :queued, due, 0, CAST(:now AS TIMESTAMPTZ),
               CAST(:now AS TIMESTAMPTZ)
        FROM r
    )
    SELECT pg_notify(:channel, :kind)
    """
)


async def insert_with_jobs(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    event_id: str,
    event_type: str,
    kind: str,
    now: datetime,
    rows: Sequence[tuple[str, str, datetime]],
) -> list[str]:
    """PostgreSQL, one statement: a new event's pending deliveries, ``(delivery id,
    subscription id, first attempt due)``, each with its job of ``kind`` (payload
    ``{"deliveryId": ...}``, group the subscription, due then) queued, and the queue's
    announcement (``notify.announce``). What ``insert_many`` then ``queue.enqueue_many``
    write, without their round trips. Returns the job ids, in order."""
    if not rows:
        return []
    job_ids = [new_id("job") for _ in rows]
    await conn.execute(
        _INSERT_WITH_JOBS,
        {
            "delivery_ids": [r[0] for r in rows],
            "subscription_ids": [r[1] for r in rows],
            "job_ids": job_ids,
            "dues": [r[2] for r in rows],
            "tenant_id": tenant_id,
            "event_id": event_id,
            "event_type": event_type,
            "pending": PENDING,
            "kind": kind,
            "queued": JobStatus.QUEUED.value,
            "now": now,
            "channel": notify.CHANNEL,
        },
    )
    return job_ids


async def load(conn: AsyncConnection, delivery_id: str) -> DeliveryWork | None:
    row = (
        await conn.execute(
            sa.select(
                deliveries.c.id,
                deliveries.c.tenant_id,
                deliveries.c.subscription_id,
                deliveries.c.event_id,
                deliveries.c.event_type,
                deliveries.c.status,
                deliveries.c.attempts,
                events.c.data,
                events.c.created_at,
            )
            .join(events, events.c.id == deliveries.c.event_id)
            .where(deliveries.c.id == delivery_id)
        )
    ).first()
    return DeliveryWork(*row) if row else None


#: What identifies the current state of a subscription's signing secrets in the vault: the
#: newest write of any of them and how many there are (a rotation rewrites one, a removal
#: drops one). None when there are none.
SecretsStamp = tuple[datetime | None, int]

_SUB_PREFIX = "sub__"


def _load_for_attempt_statement() -> sa.Select[Any]:
    owner = sa.literal("webhook:") + subs.c.id
    stamp_where = secrets.c.owner == owner
    newest = sa.select(sa.func.max(secrets.c.updated_at)).where(stamp_where).scalar_subquery()
    count = sa.select(sa.func.count()).where(stamp_where).scalar_subquery()
    return (
        sa.select(
            deliveries.c.id,
            deliveries.c.tenant_id,
            deliveries.c.subscription_id,
            deliveries.c.event_id,
            deliveries.c.event_type,
            deliveries.c.status,
            deliveries.c.attempts,
            events.c.data,
            events.c.created_at,
            *(c.label(_SUB_PREFIX + c.name) for c in subs.c),
            newest.label("secrets_newest"),
            count.label("secrets_count"),
        )
        .select_from(
            deliveries.join(events, events.c.id == deliveries.c.event_id).outerjoin(
                subs,
                sa.and_(
                    subs.c.id == deliveries.c.subscription_id,
                    subs.c.tenant_id == deliveries.c.tenant_id,
                ),
            )
        )
        .where(deliveries.c.id == sa.bindparam("delivery_id"))
    )


# Built once: building a statement of this size (and its cache key) costs more CPU than the
# round trip it saves, at every delivery.
_LOAD_FOR_ATTEMPT = _load_for_attempt_statement()


async def load_for_attempt(
    conn: AsyncConnection, delivery_id: str
) -> tuple[DeliveryWork, WebhookSubscription | None, SecretsStamp] | None:
    """``load`` and the delivery's subscription (None if it is gone) and the stamp of its
    signing secrets, in one statement."""
    row = (await conn.execute(_LOAD_FOR_ATTEMPT, {"delivery_id": delivery_id})).first()
    if row is None:
        return None
    work = DeliveryWork(*row[:9])
    values = row._mapping
    sub = None
    if values[_SUB_PREFIX + "id"] is not None:
        sub = subscription_from_row({c.name: values[_SUB_PREFIX + c.name] for c in subs.c})
    return work, sub, (values["secrets_newest"], int(values["secrets_count"] or 0))


async def record_attempt(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(delivery_attempts.insert().values(**values))


async def settle(conn: AsyncConnection, delivery_id: str, attempts: int, **values: Any) -> bool:
    """Set a pending delivery's new state after attempt number ``attempts``. Fenced on
    (pending, attempts - 1): False if someone else changed it meanwhile."""
    result = await conn.execute(
        deliveries.update()
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.status == PENDING,
            deliveries.c.attempts == attempts - 1,
        )
        .values(attempts=attempts, **values)
    )
    return result.rowcount == 1


#: The columns of an attempt row and of a successful delivery's new state that
#: ``record_success`` takes.
ATTEMPT_COLUMNS = tuple(c.name for c in delivery_attempts.c)
SUCCESS_STATE = (
    "status",
    "delivered_at",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "updated_at",
)


def _record_success_statement() -> sa.Select[Any]:
    job = job_complete_statement().cte("done_job")
    held = sa.exists(sa.select(job.c.id))
    settled = (
        deliveries.update()
        .where(
            deliveries.c.id == sa.bindparam("a_delivery_id"),
            deliveries.c.status == PENDING,
            deliveries.c.attempts == sa.bindparam("d_previous_attempts", type_=sa.Integer()),
            held,
        )
        .values(
            attempts=sa.bindparam("d_attempts", type_=sa.Integer()),
            **{n: sa.bindparam(f"d_{n}", type_=deliveries.c[n].type) for n in SUCCESS_STATE},
        )
        .returning(deliveries.c.id)
        .cte("settled_delivery")
    )
    recorded = (
        delivery_attempts.insert()
        .from_select(
            list(ATTEMPT_COLUMNS),
            sa.select(
                *(
                    sa.bindparam(f"a_{n}", type_=delivery_attempts.c[n].type)
                    for n in ATTEMPT_COLUMNS
                )
            ).where(held),
        )
        .returning(delivery_attempts.c.id)
        .cte("recorded_attempt")
    )
    return sa.select(
        *(
            sa.select(sa.func.count()).select_from(cte).scalar_subquery()
            for cte in (job, settled, recorded)
        )
    )


_RECORD_SUCCESS = _record_success_statement()


async def record_success(
    conn: AsyncConnection,
    attempt: dict[str, Any],
    attempts: int,
    state: dict[str, Any],
    job_params: dict[str, Any],
) -> tuple[bool, bool]:
    """PostgreSQL, one statement (atomic without a transaction): a successful attempt's row
    (``ATTEMPT_COLUMNS``), the delivery's new state after attempt number ``attempts``
    (``SUCCESS_STATE``, fenced as ``settle`` is) and its job's completion, fenced by its
    lease (``job_params``: ``queue.complete_params``). Returns (job held, delivery settled);
    when the job was no longer held nothing at all is written."""
    params = {f"a_{n}": attempt[n] for n in ATTEMPT_COLUMNS}
    params |= {f"d_{n}": state[n] for n in SUCCESS_STATE}
    params |= {"d_attempts": attempts, "d_previous_attempts": attempts - 1, **job_params}
    counts = (await conn.execute(_RECORD_SUCCESS, params)).one()
    return counts[0] == 1, counts[1] == 1


async def cancel(conn: AsyncConnection, delivery_id: str, reason: str, now: datetime) -> None:
    await conn.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id, deliveries.c.status == PENDING)
        .values(status="cancelled", last_error=reason, next_attempt_at=None, updated_at=now)
    )


# -- the subscription's failure counters ---------------------------------------------------


async def reset_failures(conn: AsyncConnection, sub_id: str) -> None:
    """After a success. Writes only when there is something to reset: most deliveries succeed,
    and an update of the shared subscription row would serialise them all on its lock."""
    await conn.execute(
        subs.update()
        .where(
            subs.c.id == sub_id,
            sa.or_(subs.c.consecutive_failures != 0, subs.c.first_failure_at.is_not(None)),
        )
        .values(consecutive_failures=0, first_failure_at=None)
    )


async def count_failure(
    conn: AsyncConnection, sub_id: str, now: datetime
) -> tuple[int, datetime | None] | None:
    """After a delivery ended failed: (consecutive failures, first failure's time), or None
    if the subscription is gone."""
    row = (
        await conn.execute(
            subs.update()
            .where(subs.c.id == sub_id)
            .values(
                consecutive_failures=subs.c.consecutive_failures + 1,
                first_failure_at=sa.func.coalesce(subs.c.first_failure_at, now),
            )
            .returning(subs.c.consecutive_failures, subs.c.first_failure_at)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def disable(conn: AsyncConnection, sub_id: str, reason: str, now: datetime) -> bool:
    """Disable an active subscription; False if it was already disabled (or is gone), so
    only one caller announces it."""
    result = await conn.execute(
        subs.update()
        .where(subs.c.id == sub_id, subs.c.status == SubscriptionStatus.ACTIVE.value)
        .values(status=SubscriptionStatus.DISABLED.value, disabled_reason=reason, updated_at=now)
    )
    return result.rowcount == 1
