"""Deliveries for the delivery engine: load a batch with their events and subscriptions,
record attempts and the deliveries' new states (successes in bulk), and keep the
subscription's failure counters. Publishing writes them (``events.insert_published``).

The delivery log (lists, manual retry, retention) has its own module, ``delivery_log``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.jobs import JobStatus
from isthmus.domain.records import WebhookSubscription
from isthmus.domain.webhooks import SubscriptionStatus
from isthmus.store.db import Store
from isthmus.store.queue import complete_many_in
from isthmus.store.subscriptions import from_row as subscription_from_row
from isthmus.store.tables import deliveries, delivery_attempts, events, secrets
from isthmus.store.tables import webhook_subscriptions as subs

PENDING = "pending"
DELIVERED = "delivered"


@dataclass(frozen=True, slots=True)
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


#: What identifies the current state of a subscription's signing secrets in the vault: the
#: newest write of any of them and how many there are (a rotation rewrites one, a removal
#: drops one). None when there are none.
SecretsStamp = tuple[datetime | None, int]

#: What ``load_many`` gives per delivery: its work, its subscription (None if gone) and the
#: stamp of the subscription's signing secrets.
Loaded = tuple[DeliveryWork, WebhookSubscription | None, SecretsStamp]

_SUB_NAMES = tuple(c.name for c in subs.c)
_SUB_JSON = frozenset(c.name for c in subs.c if isinstance(c.type, sa.JSON))


def _load_statement() -> sa.Select[Any]:
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
            *subs.c,
            newest,
            count,
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
        .where(deliveries.c.id.in_(sa.bindparam("delivery_ids", expanding=True)))
    )


# Built once: building a statement of this size (and its cache key) costs more CPU than the
# round trip it saves.
_LOAD = _load_statement()

# The same on PostgreSQL as SQL text for the driver (``Store.driver``); JSON comes as text.
# Each delivery, its event and its subscription are looked up by key (LATERAL ... LIMIT 1,
# which the planner does not flatten into a join of its choice), whatever it believes of the
# tables' sizes: a fresh database has no statistics, and a hash join that reads every event at each
# batch turns a backlog into quadratic work.
_LOAD_PG = f"""
    SELECT d.id, d.tenant_id, d.subscription_id, d.event_id, d.event_type, d.status,
           d.attempts, e.data, e.created_at,
           {", ".join(f"s.{n}" for n in _SUB_NAMES)},
           stamp.newest, stamp.count
    FROM unnest($1::varchar[]) AS wanted(id)
    CROSS JOIN LATERAL (
        SELECT id, tenant_id, subscription_id, event_id, event_type, status, attempts
        FROM deliveries WHERE deliveries.id = wanted.id LIMIT 1
    ) d
    CROSS JOIN LATERAL (
        SELECT data::text, created_at FROM events WHERE events.id = d.event_id LIMIT 1
    ) e
    LEFT JOIN LATERAL (
        SELECT {", ".join(f"{n}::text AS {n}" if n in _SUB_JSON else n for n in _SUB_NAMES)}
        FROM webhook_subscriptions
        WHERE webhook_subscriptions.id = d.subscription_id
          AND webhook_subscriptions.tenant_id = d.tenant_id
        LIMIT 1
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT max(updated_at) AS newest, count(*) AS count FROM secrets
        WHERE owner = 'webhook:' || s.id
    ) stamp ON true
"""  # noqa: S608 - constants only; every value is a bound parameter


async def load_many(store: Store, delivery_ids: Sequence[str]) -> dict[str, Loaded]:
    """Deliveries with their events, subscriptions (None if gone) and secrets stamps, by
    delivery id, in one statement; ids that do not exist are left out."""
    if not delivery_ids:
        return {}
    if store.dialect == "postgresql":
        async with store.driver() as conn:
            rows = await conn.fetch(_LOAD_PG, list(delivery_ids))
        parse_json = True
    else:
        async with store.read() as sa_conn:
            rows = (await sa_conn.execute(_LOAD, {"delivery_ids": list(delivery_ids)})).all()
        parse_json = False
    found: dict[str, Loaded] = {}
    # Many deliveries of a batch share a subscription: build each once.
    seen: dict[str, WebhookSubscription] = {}
    width = len(_SUB_NAMES)
    for row in rows:
        data = json.loads(row[7]) if parse_json else row[7]
        work = DeliveryWork(row[0], row[1], row[2], row[3], row[4], row[5], row[6], data, row[8])
        sub_values = row[9 : 9 + width]
        sub_id = sub_values[0]
        sub = seen.get(sub_id) if sub_id is not None else None
        if sub_id is not None and sub is None:
            mapping = dict(zip(_SUB_NAMES, sub_values, strict=True))
            if parse_json:
                for name in _SUB_JSON:
                    mapping[name] = json.loads(mapping[name])
            sub = seen[sub_id] = subscription_from_row(mapping)
        found[work.id] = (work, sub, (row[9 + width], int(row[10 + width] or 0)))
    return found


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


@dataclass(frozen=True, slots=True)
class Success:
    """A successful attempt, for ``record_successes``: the job's lease, the delivery and
    its attempt number, and what the attempt's row keeps."""

    job_id: str
    lease_token: str
    delivery_id: str
    tenant_id: str
    attempts: int
    attempt_id: str
    at: datetime
    status_code: int
    response_body: str | None
    latency_ms: float


# One statement: complete the jobs still held under their leases; for those only, the
# attempt row and the delivery's new state (fenced as ``settle`` is: a delivery changed
# meanwhile keeps its state, the attempt stays in its log). Returns the held jobs' ids.
# The token alone fences the job (see ``queue._fenced_many_sql``). The ``= ANY`` conditions
# repeat the join's keys so the rows are found by their index even under a plan cached
# while the tables were empty.
_RECORD_SUCCESSES_PG = f"""
    WITH r AS (
        SELECT * FROM unnest(
            $1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::int[],
            $6::varchar[], $7::timestamptz[], $8::int[], $9::text[], $10::float8[]
        ) AS r(job_id, token, delivery_id, tenant_id, attempts, attempt_id, at, status_code,
               body, latency_ms)
    ), done AS (
        UPDATE jobs
        SET status = '{JobStatus.DONE.value}', lease_token = NULL, run_at = r.at,
            updated_at = r.at
        FROM r
        WHERE jobs.id = ANY($1::varchar[]) AND jobs.id = r.job_id AND jobs.lease_token = r.token
        RETURNING jobs.id
    ), held AS MATERIALIZED (
        SELECT r.* FROM r JOIN done ON done.id = r.job_id
    ), settled AS (
        UPDATE deliveries
        SET status = '{DELIVERED}', attempts = held.attempts, delivered_at = held.at,
            next_attempt_at = NULL, last_status_code = held.status_code, last_error = NULL,
            updated_at = held.at
        FROM held
        WHERE deliveries.id = ANY($3::varchar[]) AND deliveries.id = held.delivery_id
          AND deliveries.status = '{PENDING}'
          AND deliveries.attempts = held.attempts - 1
    ), recorded AS (
        INSERT INTO delivery_attempts (id, delivery_id, tenant_id, attempted_at, status_code,
                                       response_body, latency_ms, error_class, error_message)
        SELECT attempt_id, delivery_id, tenant_id, at, status_code, body, latency_ms,
               NULL, NULL
        FROM held
    )
    SELECT job_id FROM held
"""  # noqa: S608 - constants only; every value is a bound parameter

_SETTLE_DELIVERED = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("s_id"),
        deliveries.c.status == PENDING,
        deliveries.c.attempts == sa.bindparam("s_previous"),
    )
    .values(
        status=DELIVERED,
        attempts=sa.bindparam("s_attempts"),
        delivered_at=sa.bindparam("s_at", type_=deliveries.c.delivered_at.type),
        next_attempt_at=None,
        last_status_code=sa.bindparam("s_code"),
        last_error=None,
        updated_at=sa.bindparam("s_at", type_=deliveries.c.updated_at.type),
    )
)


async def record_successes(store: Store, successes: Sequence[Success]) -> set[str]:
    """Successful attempts of many deliveries at once: each job's completion fenced by its
    lease and, only where it held, the attempt's row and the delivery's new state, all
    atomic (one statement on PostgreSQL, one transaction on SQLite). Returns the ids of the
    jobs completed; nothing at all is written for the others (their lease was lost)."""
    if not successes:
        return set()
    if store.dialect == "postgresql":
        async with store.driver() as conn:
            rows = await conn.fetch(
                _RECORD_SUCCESSES_PG,
                [s.job_id for s in successes],
                [s.lease_token for s in successes],
                [s.delivery_id for s in successes],
                [s.tenant_id for s in successes],
                [s.attempts for s in successes],
                [s.attempt_id for s in successes],
                [s.at for s in successes],
                [s.status_code for s in successes],
                [s.response_body for s in successes],
                [s.latency_ms for s in successes],
            )
        return {row[0] for row in rows}
    leases = [(s.job_id, s.lease_token) for s in successes]
    async with store.transaction() as conn:
        held = await complete_many_in(conn, leases, now=max(s.at for s in successes))
        recorded = [s for s in successes if s.job_id in held]
        if recorded:
            await conn.execute(
                delivery_attempts.insert(),
                [
                    {
                        "id": s.attempt_id,
                        "delivery_id": s.delivery_id,
                        "tenant_id": s.tenant_id,
                        "attempted_at": s.at,
                        "status_code": s.status_code,
                        "response_body": s.response_body,
                        "latency_ms": s.latency_ms,
                        "error_class": None,
                        "error_message": None,
                    }
                    for s in recorded
                ],
            )
            await conn.execute(
                _SETTLE_DELIVERED,
                [
                    {
                        "s_id": s.delivery_id,
                        "s_previous": s.attempts - 1,
                        "s_attempts": s.attempts,
                        "s_at": s.at,
                        "s_code": s.status_code,
                    }
                    for s in recorded
                ],
            )
    return held


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
