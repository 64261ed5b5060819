"""Claiming jobs of the durable queue (see ``isthmus.store.queue`` for the contract): one
short transaction takes due jobs and jobs whose lease expired, and leases them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from isthmus.domain.jobs import ClaimedJob, JobStatus
from isthmus.store.db import Store
from isthmus.store.tables import jobs
from isthmus.store.types import utcnow


async def claim(
    store: Store,
    *,
    limit: int,
    lease_seconds: float,
    kinds: Iterable[str] | None = None,
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Take up to ``limit`` jobs that are due (queued, ``run_at <= now``) or abandoned
    (running, lease expired), in one transaction; expired leases are served first."""
    if limit <= 0:
        return []
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    token = secrets.token_hex(16)
    wanted = sorted(set(kinds)) if kinds is not None else None
    if store.dialect == "postgresql":
        claimed = await _claim_postgres(store, limit, wanted, token, now, expires)
    else:
        claimed = await _claim_sqlite(store, limit, wanted, token, now, expires)
    claimed.sort(key=lambda job: job.id)
    return claimed


def _claim_sql(with_kinds: bool) -> str:
    kind = "AND kind = ANY($5::varchar[])" if with_kinds else ""
    # One statement, so one round trip and its own transaction. Each CTE is materialised,
    # so its LIMIT and row locks hold exactly; the due jobs fill what rescue left.
    return f"""
        WITH rescued AS MATERIALIZED (
            SELECT id FROM jobs
            WHERE status = '{JobStatus.RUNNING.value}' AND run_at <= $1 {kind}
            ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED
        ), due AS MATERIALIZED (
            SELECT id FROM jobs
            WHERE status = '{JobStatus.QUEUED.value}' AND run_at <= $1 {kind}
            ORDER BY run_at LIMIT $2 - (SELECT count(*) FROM rescued) FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs
        SET status = '{JobStatus.RUNNING.value}', lease_token = $3, run_at = $4,
            attempts = attempts + 1, updated_at = $1
        WHERE id IN (SELECT id FROM rescued UNION ALL SELECT id FROM due)
        RETURNING id, tenant_id, kind, payload::text, group_key, attempts, created_at
    """  # noqa: S608 - constants only; every value is a bound parameter


_CLAIM_PG = {True: _claim_sql(True), False: _claim_sql(False)}


async def _claim_postgres(
    store: Store,
    limit: int,
    wanted: list[str] | None,
    token: str,
    now: datetime,
    expires: datetime,
) -> list[ClaimedJob]:
    args: list[Any] = [now, limit, token, expires]
    if wanted is not None:
        args.append(wanted)
    async with store.driver() as conn:
        # One statement, its own transaction. The driver's connections scan the queue index
        # plainly (never a bitmap scan), which marks the entries of dead row versions, so
        # later claims skip them; see ``isthmus.store.db``.
        rows = await conn.fetch(_CLAIM_PG[wanted is not None], *args)
    return [
        ClaimedJob(
            id=row[0],
            tenant_id=row[1],
            kind=row[2],
            payload=json.loads(row[3]),
            group=row[4],
            attempts=row[5],
            lease_token=token,
            lease_expires_at=expires,
            created_at=row[6],
        )
        for row in rows
    ]


async def _claim_sqlite(
    store: Store,
    limit: int,
    wanted: list[str] | None,
    token: str,
    now: datetime,
    expires: datetime,
) -> list[ClaimedJob]:
    # SQLite ignores FOR UPDATE; its write transaction (BEGIN IMMEDIATE) serialises claims.
    claimed: list[ClaimedJob] = []
    async with store.transaction() as conn:
        for status in (JobStatus.RUNNING, JobStatus.QUEUED):
            if len(claimed) == limit:
                break
            picked = sa.select(jobs.c.id).where(jobs.c.status == status.value, jobs.c.run_at <= now)
            if wanted is not None:
                picked = picked.where(jobs.c.kind.in_(wanted))
            statement = (
                jobs.update()
                .where(jobs.c.id.in_(picked.order_by(jobs.c.run_at).limit(limit - len(claimed))))
                .values(
                    status=JobStatus.RUNNING.value,
                    lease_token=token,
                    run_at=expires,
                    attempts=jobs.c.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    jobs.c.id,
                    jobs.c.tenant_id,
                    jobs.c.kind,
                    jobs.c.payload,
                    jobs.c.group_key,
                    jobs.c.attempts,
                    jobs.c.created_at,
                )
            )
            for row in await conn.execute(statement):
                claimed.append(
                    ClaimedJob(
                        id=row.id,
                        tenant_id=row.tenant_id,
                        kind=row.kind,
                        payload=row.payload,
                        group=row.group_key,
                        attempts=row.attempts,
                        lease_token=token,
                        lease_expires_at=expires,
                        created_at=row.created_at,
                    )
                )
    return claimed
