"""Sync runs: one row per sync of one integration, from queued to its outcome.

Life of a run::

    queued --start--> running --finish--> succeeded | failed
       '------------------------finish--> cancelled

At most one run per integration is queued or running, whichever process asks: a partial
unique index holds it, and ``insert_queued`` answers None (nothing written) when it meets
it. Every read is scoped by tenant, so another tenant's runs behave as missing ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_id
from isthmus.domain.pagination import encode_cursor
from isthmus.domain.records import Page
from isthmus.store.tables import sync_runs

#: The job kind that runs one sync; payload ``{"runId", "integrationId"}``, group the
#: integration id.
SYNC_KIND = "integration.sync"
#: ``error`` is cut to this many characters.
MAX_ERROR_CHARS = 4000


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The statuses the partial unique index allows once per integration.
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    API = "api"


@dataclass(frozen=True)
class RunCounts:
    """What a run did with the records it fetched; ``skipped_reasons``: reason -> count."""

    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    skipped_reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncRun:
    id: str
    tenant_id: str
    integration_id: str
    trigger: Trigger
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: RunCounts
    error: str | None
    error_class: str | None
    checkpoint: dict[str, Any] | None
    attempt: int


@dataclass(frozen=True)
class NewRun:
    """A run to queue: ``attempt`` is 1, or the retry's number plus one."""

    tenant_id: str
    integration_id: str
    trigger: Trigger
    attempt: int = 1


def _row(row: Any) -> SyncRun:
    return SyncRun(
        id=row.id,
        tenant_id=row.tenant_id,
        integration_id=row.integration_id,
        trigger=Trigger(row.trigger),
        status=RunStatus(row.status),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=RunCounts(
            fetched=row.fetched,
            created=row.created,
            updated=row.updated,
            unchanged=row.unchanged,
            skipped=row.skipped,
            skipped_reasons=dict(row.skipped_reasons or {}),
        ),
        error=row.error,
        error_class=row.error_class,
        checkpoint=row.checkpoint,
        attempt=row.attempt,
    )


def _counts(counts: RunCounts) -> dict[str, Any]:
    return {
        "fetched": counts.fetched,
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "skipped": counts.skipped,
        "skipped_reasons": dict(counts.skipped_reasons),
    }


# -- queue ---------------------------------------------------------------------------------


async def insert_queued_many(
    conn: AsyncConnection, runs: Sequence[NewRun], *, now: datetime
) -> dict[str, str]:
    """Queue runs in one statement; returns integration id -> new run id for those
    written. An integration that already has a queued or running run (or two of ``runs``)
    gets none: the partial unique index refuses it and ON CONFLICT DO NOTHING skips it."""
    if not runs:
        return {}
    rows = [
        {
            "id": new_id("run"),
            "tenant_id": run.tenant_id,
            "integration_id": run.integration_id,
            "trigger": str(run.trigger),
            "status": str(RunStatus.QUEUED),
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            **_counts(RunCounts()),
            "error": None,
            "error_class": None,
            "checkpoint": None,
            "attempt": run.attempt,
        }
        for run in runs
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(sync_runs)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(sync_runs.c.integration_id, sync_runs.c.id)
    )
    return {integration_id: run_id for integration_id, run_id in await conn.execute(statement)}


async def insert_queued(conn: AsyncConnection, run: NewRun, *, now: datetime) -> SyncRun | None:
    """Queue one run; None when the integration already has one queued or running."""
    created = await insert_queued_many(conn, [run], now=now)
    if run.integration_id not in created:
        return None
    found = await get(conn, run.tenant_id, created[run.integration_id])
    assert found is not None
    return found


async def start(conn: AsyncConnection, run_id: str, *, now: datetime) -> bool:
    """queued -> running; False if the run is not queued (gone, running, or finished)."""
    result = await conn.execute(
        sync_runs.update()
        .where(sync_runs.c.id == run_id, sync_runs.c.status == RunStatus.QUEUED.value)
        .values(status=RunStatus.RUNNING.value, started_at=now)
    )
    return result.rowcount == 1


async def save_checkpoint(
    conn: AsyncConnection, run_id: str, checkpoint: dict[str, Any] | None, counts: RunCounts
) -> bool:
    """Record where a running run stands (after a page); False if it is not running."""
    result = await conn.execute(
        sync_runs.update()
        .where(sync_runs.c.id == run_id, sync_runs.c.status == RunStatus.RUNNING.value)
        .values(checkpoint=checkpoint, **_counts(counts))
    )
    return result.rowcount == 1


async def finish(
    conn: AsyncConnection,
    run_id: str,
    *,
    status: RunStatus,
    counts: RunCounts,
    error: str | None,
    error_class: str | None,
    now: datetime,
) -> bool:
    """Settle a queued or running run with its outcome; False if it was already settled."""
    if status in ACTIVE:
        raise ValueError(f"a run finishes as succeeded, failed or cancelled, not {status}")
    result = await conn.execute(
        sync_runs.update()
        .where(sync_runs.c.id == run_id, sync_runs.c.status.in_([s.value for s in ACTIVE]))
        .values(
            status=status.value,
            finished_at=now,
            error=error[:MAX_ERROR_CHARS] if error is not None else None,
            error_class=error_class,
            **_counts(counts),
        )
    )
    return result.rowcount == 1


# -- reads ---------------------------------------------------------------------------------


async def get(
    conn: AsyncConnection, tenant_id: str, run_id: str, *, for_update: bool = False
) -> SyncRun | None:
    query = sync_runs.select().where(sync_runs.c.tenant_id == tenant_id, sync_runs.c.id == run_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def active(conn: AsyncConnection, tenant_id: str, integration_id: str) -> SyncRun | None:
    """The integration's queued or running run, if it has one."""
    query = sync_runs.select().where(
        sync_runs.c.tenant_id == tenant_id,
        sync_runs.c.integration_id == integration_id,
        sync_runs.c.status.in_([s.value for s in ACTIVE]),
    )
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def latest(conn: AsyncConnection, tenant_id: str, integration_id: str) -> SyncRun | None:
    """The integration's newest run, whatever its status."""
    page = await list_for(conn, tenant_id, integration_id, before=None, limit=1)
    return page.items[0] if page.items else None


async def latest_finished(
    conn: AsyncConnection, tenant_id: str, integration_id: str
) -> SyncRun | None:
    query = (
        sync_runs.select()
        .where(
            sync_runs.c.tenant_id == tenant_id,
            sync_runs.c.integration_id == integration_id,
            sync_runs.c.finished_at.is_not(None),
        )
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return _row(row) if row else None


async def list_for(
    conn: AsyncConnection,
    tenant_id: str,
    integration_id: str,
    *,
    before: str | None,
    limit: int,
) -> Page[SyncRun]:
    """The integration's runs, newest first; ``before`` is the last id of the page before."""
    query = sync_runs.select().where(
        sync_runs.c.tenant_id == tenant_id, sync_runs.c.integration_id == integration_id
    )
    if before:
        query = query.where(sync_runs.c.id < before)
    query = query.order_by(sync_runs.c.id.desc()).limit(limit + 1)
    rows = [_row(r) for r in await conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def purge_finished(conn: AsyncConnection, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` runs that ended before ``before``, but each integration's
    latest ended run (its last outcome stays on record); how many went."""
    newer = sync_runs.alias("newer")
    later_run = (
        sa.select(newer.c.id)
        .where(
            newer.c.integration_id == sync_runs.c.integration_id,
            newer.c.finished_at > sync_runs.c.finished_at,
        )
        .exists()
    )
    doomed = (
        sa.select(sync_runs.c.id)
        .where(sync_runs.c.finished_at < before, later_run)
        .limit(limit)
        .scalar_subquery()
    )
    result = await conn.execute(sa.delete(sync_runs).where(sync_runs.c.id.in_(doomed)))
    return int(result.rowcount or 0)
