"""Polling settings and where each integration's schedule stands, and the scheduler's
hand-out of due syncs.

``dispatch_due`` is the one way a scheduled sync starts. In the caller's transaction it
takes the due rows (polling on, integration enabled, ``next_poll_at <= now``), locking them
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite runs one writer at a time), advances
their ``next_poll_at``, queues a run for each and enqueues its ``integration.sync`` job. A
due row is therefore handed out once, whichever process ticks: another scheduler either
skips the locked row or, once this transaction commits, no longer finds it due. An
integration whose previous run is still queued or running gets no second one (the runs'
partial unique index), only its next poll time moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.jobs import NewJob
from isthmus.domain.schedule import Frequency, Schedule, following
from isthmus.store import queue, sync_runs
from isthmus.store.sync_runs import SYNC_KIND, NewRun, Trigger
from isthmus.store.tables import integrations, polling_settings

log = logging.getLogger("isthmus.scheduler")

_COLUMNS = (
    "enabled",
    "frequency",
    "cron",
    "time_of_day",
    "day_of_week",
    "day_of_month",
    "timezone",
    "max_retries",
    "retry_count",
    "next_poll_at",
    "last_poll_at",
    "updated_at",
)


@dataclass(frozen=True)
class PollingRow:
    """An integration's polling settings (``schedule``, ``enabled``, ``max_retries``) and
    state: ``retry_count`` failed runs in a row are being retried, the next poll is due at
    ``next_poll_at`` (None: none), the scheduler last handed one out at ``last_poll_at``."""

    integration_id: str
    tenant_id: str
    enabled: bool
    schedule: Schedule
    max_retries: int
    retry_count: int
    next_poll_at: datetime | None
    last_poll_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Dispatched:
    """One due poll handed out: its run (None when a run was already queued or running)
    and the next poll time it left behind."""

    tenant_id: str
    integration_id: str
    run_id: str | None
    next_poll_at: datetime | None


def _row(row: Any) -> PollingRow:
    return PollingRow(
        integration_id=row.integration_id,
        tenant_id=row.tenant_id,
        enabled=row.enabled,
        schedule=Schedule(
            frequency=Frequency(row.frequency),
            timezone=row.timezone,
            time_of_day=row.time_of_day,
            day_of_week=row.day_of_week,
            day_of_month=row.day_of_month,
            cron=row.cron,
        ),
        max_retries=row.max_retries,
        retry_count=row.retry_count,
        next_poll_at=row.next_poll_at,
        last_poll_at=row.last_poll_at,
        updated_at=row.updated_at,
    )


def _values(row: PollingRow) -> dict[str, Any]:
    schedule = row.schedule
    return {
        "integration_id": row.integration_id,
        "tenant_id": row.tenant_id,
        "enabled": row.enabled,
        "frequency": str(schedule.frequency),
        "cron": schedule.cron,
        "time_of_day": schedule.time_of_day,
        "day_of_week": schedule.day_of_week,
        "day_of_month": schedule.day_of_month,
        "timezone": schedule.timezone,
        "max_retries": row.max_retries,
        "retry_count": row.retry_count,
        "next_poll_at": row.next_poll_at,
        "last_poll_at": row.last_poll_at,
        "updated_at": row.updated_at,
    }


async def get(
    conn: AsyncConnection, tenant_id: str, integration_id: str, *, for_update: bool = False
) -> PollingRow | None:
    query = polling_settings.select().where(
        polling_settings.c.tenant_id == tenant_id,
        polling_settings.c.integration_id == integration_id,
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def put(conn: AsyncConnection, row: PollingRow) -> None:
    """Write the row whole, inserting it or replacing the one there."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(polling_settings).values(**_values(row))
    statement = insert.on_conflict_do_update(
        index_elements=[polling_settings.c.integration_id],
        set_={name: insert.excluded[name] for name in _COLUMNS},
    )
    await conn.execute(statement)


async def set_state(
    conn: AsyncConnection,
    integration_id: str,
    *,
    enabled: bool,
    retry_count: int,
    next_poll_at: datetime | None,
    now: datetime,
) -> None:
    """Record what a finished run decided: on or off, retries so far, the next poll."""
    await conn.execute(
        polling_settings.update()
        .where(polling_settings.c.integration_id == integration_id)
        .values(enabled=enabled, retry_count=retry_count, next_poll_at=next_poll_at, updated_at=now)
    )


async def dispatch_due(conn: AsyncConnection, *, now: datetime, limit: int) -> list[Dispatched]:
    """Hand out up to ``limit`` due polls in the caller's transaction (module docstring);
    the most overdue first. Fewer than ``limit`` back means nothing more is due."""
    query = (
        sa.select(polling_settings)
        .join(integrations, integrations.c.id == polling_settings.c.integration_id)
        .where(
            polling_settings.c.enabled == sa.true(),
            polling_settings.c.next_poll_at <= now,
            integrations.c.enabled == sa.true(),
        )
        .order_by(polling_settings.c.next_poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=polling_settings)
    )
    due = [_row(r) for r in await conn.execute(query)]
    if not due:
        return []
    created = await sync_runs.insert_queued_many(
        conn,
        [
            NewRun(row.tenant_id, row.integration_id, Trigger.SCHEDULE, row.retry_count + 1)
            for row in due
        ],
        now=now,
    )
    await queue.enqueue_many(
        conn,
        [
            NewJob(
                SYNC_KIND,
                {"runId": created[row.integration_id], "integrationId": row.integration_id},
                row.tenant_id,
                None,
                row.integration_id,
            )
            for row in due
            if row.integration_id in created
        ],
        now=now,
    )
    handed: list[Dispatched] = []
    for row in due:
        run_id = created.get(row.integration_id)
        handed.append(Dispatched(row.tenant_id, row.integration_id, run_id, _next(row, now)))
    await conn.execute(
        polling_settings.update()
        .where(polling_settings.c.integration_id == sa.bindparam("b_integration_id"))
        .values(
            next_poll_at=sa.bindparam("b_next_poll_at", type_=polling_settings.c.next_poll_at.type),
            last_poll_at=sa.bindparam("b_last_poll_at", type_=polling_settings.c.last_poll_at.type),
        ),
        [
            {
                "b_integration_id": done.integration_id,
                "b_next_poll_at": done.next_poll_at,
                "b_last_poll_at": now if done.run_id else row.last_poll_at,
            }
            for done, row in zip(handed, due, strict=True)
        ],
    )
    return handed


def _next(row: PollingRow, now: datetime) -> datetime | None:
    assert row.next_poll_at is not None  # it was due
    try:
        return following(row.schedule, row.next_poll_at, now)
    except (ValueError, LookupError):  # LookupError: ZoneInfoNotFoundError
        # Checked when saved, so only a time zone gone from the tz database gets here:
        # stop polling it rather than fail every tick; saving the settings again says why.
        log.exception("integration %s: no next poll time for %s", row.integration_id, row)
        return None
