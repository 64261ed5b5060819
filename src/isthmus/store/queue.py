"""The durable job queue: jobs are rows of the store, written in the caller's transaction.

Life of a job::

    enqueue --> queued --claim--> running --complete--> done
                  ^                  |  |---fail------> failed
                  |                  |  '---lease expires: claimable again (rescue)
                  '---retry/release--'
                queued --cancel--> cancelled

The contract:

- ``enqueue``/``enqueue_many`` take the caller's connection: the job commits or rolls back with
  the rows it belongs to (no dual write), and waiting workers are woken on commit
  (``isthmus.store.notify``).
- ``claim`` is one short transaction. It takes due queued jobs and running jobs whose lease
  has expired (rescue), gives the batch a fresh random lease token, adds one to ``attempts``
  and sets the lease expiry. Concurrent claimers never get the same job: PostgreSQL locks the
  picked rows with ``FOR UPDATE SKIP LOCKED``; SQLite, which ignores FOR UPDATE, serialises
  writers (every write transaction is ``BEGIN IMMEDIATE``).
- Every state change after a claim is fenced by the lease token (``WHERE id = :id AND
  lease_token = :token AND status = 'running'``) and returns False when the lease is gone: the
  job was rescued by another claimer, or is already settled. A rescued job cannot be completed
  twice. Completing after the lease expired but before anyone rescued the job still succeeds.
- The ``*_in`` variants join the caller's transaction, so a handler commits its own rows and
  its job's completion together; the others open a transaction of their own.
- Delivery is at least once: a job runs again only when its worker died or lost the lease
  before settling it.
- Time is the caller's (``now``, default the wall clock). Hosts sharing a PostgreSQL queue
  need synchronised clocks, and a lease much longer than their skew.

In the ``jobs`` table ``run_at`` is when a claimer may take the row next: the scheduled time
of a queued job, the lease expiry of a running one, the finish time of a settled one. One
index, (status, run_at), serves due work, rescue and retention.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_id
from isthmus.domain.jobs import FINISHED, ClaimedJob, JobRow, JobStatus, NewJob
from isthmus.store import notify
from isthmus.store.db import Store
from isthmus.store.tables import jobs
from isthmus.store.types import utcnow

#: ``last_error`` is cut to this many characters.
MAX_ERROR_CHARS = 4000


# -- enqueue (inside the caller's transaction) ---------------------------------------------


async def enqueue(
    conn: AsyncConnection,
    *,
    kind: str,
    payload: Mapping[str, Any],
    tenant_id: str | None = None,
    run_at: datetime | None = None,
    group: str | None = None,
    now: datetime | None = None,
) -> str:
    """Queue one job in the caller's transaction; returns its id."""
    ids = await enqueue_many(conn, [NewJob(kind, payload, tenant_id, run_at, group)], now=now)
    return ids[0]


async def enqueue_many(
    conn: AsyncConnection, new_jobs: Iterable[NewJob], *, now: datetime | None = None
) -> list[str]:
    """Queue jobs in the caller's transaction (one INSERT); returns their ids, in order."""
    now = now or utcnow()
    ids: list[str] = []
    kinds: set[str] = set()
    rows: list[dict[str, Any]] = []
    for job in new_jobs:
        ids.append(new_id("job"))
        kinds.add(job.kind)
        rows.append(
            {
                "id": ids[-1],
                "tenant_id": job.tenant_id,
                "kind": job.kind,
                "payload": dict(job.payload),
                "group_key": job.group,
                "status": JobStatus.QUEUED.value,
                "run_at": job.run_at or now,
                "attempts": 0,
                "lease_token": None,
                "last_error": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    if not rows:
        return []
    await conn.execute(jobs.insert(), rows)
    await notify.announce(conn, kinds)
    return ids


async def cancel_in(conn: AsyncConnection, job_id: str, *, now: datetime | None = None) -> bool:
    """Cancel a job that is still queued (a running one finishes its attempt first)."""
    now = now or utcnow()
    result = await conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.CANCELLED.value, run_at=now, updated_at=now)
    )
    return result.rowcount == 1


# -- claim ---------------------------------------------------------------------------------


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
    claimed: list[ClaimedJob] = []
    async with store.transaction() as conn:
        for status in (JobStatus.RUNNING, JobStatus.QUEUED):
            if len(claimed) == limit:
                break
            picked = sa.select(jobs.c.id).where(jobs.c.status == status.value, jobs.c.run_at <= now)
            if wanted is not None:
                picked = picked.where(jobs.c.kind.in_(wanted))
            # A materialized CTE is evaluated once, so its LIMIT and row locks hold exactly.
            cte = (
                picked.order_by(jobs.c.run_at)
                .limit(limit - len(claimed))
                .with_for_update(skip_locked=True)
                .cte("picked")
                .prefix_with("MATERIALIZED")
            )
            statement = (
                jobs.update()
                .where(jobs.c.id.in_(sa.select(cte.c.id)))
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
    claimed.sort(key=lambda job: job.id)
    return claimed


# -- settle, fenced by the lease token -----------------------------------------------------


def _fenced(job_id: Any, lease_token: Any, **values: Any) -> sa.Update:
    return (
        jobs.update()
        .where(
            jobs.c.id == job_id,
            jobs.c.lease_token == lease_token,
            jobs.c.status == JobStatus.RUNNING.value,
        )
        .values(lease_token=None, **values)
    )


async def _settle(conn: AsyncConnection, job_id: str, lease_token: str, **values: Any) -> bool:
    """The fenced update every settle is: it ends the lease, and touches nothing when the
    lease is no longer this token's."""
    return (await conn.execute(_fenced(job_id, lease_token, **values))).rowcount == 1


def complete_statement() -> sa.Update:
    """The fenced update of ``complete_in`` with bound parameters (``complete_params``),
    returning the job's id when the lease held: for a caller that makes it part of a
    statement of its own (a PostgreSQL CTE)."""
    done_at = sa.bindparam("job_done_at", type_=jobs.c.run_at.type)
    return _fenced(
        sa.bindparam("job_id", type_=jobs.c.id.type),
        sa.bindparam("job_lease_token", type_=jobs.c.lease_token.type),
        status=JobStatus.DONE.value,
        run_at=done_at,
        updated_at=done_at,
    ).returning(jobs.c.id)


def complete_params(job_id: str, lease_token: str, *, now: datetime) -> dict[str, Any]:
    """The parameters of ``complete_statement`` for one job."""
    return {"job_id": job_id, "job_lease_token": lease_token, "job_done_at": now}


def _error(text: str | None) -> str | None:
    return text[:MAX_ERROR_CHARS] if text is not None else None


async def complete_in(
    conn: AsyncConnection, job_id: str, lease_token: str, *, now: datetime | None = None
) -> bool:
    """Mark the job done in the caller's transaction; False if the lease is gone."""
    now = now or utcnow()
    return await _settle(
        conn, job_id, lease_token, status=JobStatus.DONE.value, run_at=now, updated_at=now
    )


async def retry_in(
    conn: AsyncConnection,
    job_id: str,
    lease_token: str,
    *,
    run_at: datetime,
    error: str | None,
    now: datetime | None = None,
) -> bool:
    """Queue the job again for ``run_at``, recording ``error``; False if the lease is gone."""
    return await _settle(
        conn,
        job_id,
        lease_token,
        status=JobStatus.QUEUED.value,
        run_at=run_at,
        last_error=_error(error),
        updated_at=now or utcnow(),
    )


async def fail_in(
    conn: AsyncConnection,
    job_id: str,
    lease_token: str,
    *,
    error: str,
    now: datetime | None = None,
) -> bool:
    """Give up on the job (kept, status failed); False if the lease is gone."""
    now = now or utcnow()
    return await _settle(
        conn,
        job_id,
        lease_token,
        status=JobStatus.FAILED.value,
        run_at=now,
        last_error=_error(error),
        updated_at=now,
    )


async def release_in(
    conn: AsyncConnection, job_id: str, lease_token: str, *, now: datetime | None = None
) -> bool:
    """Hand the job back untouched (a worker shutting down): queued, due now, and this
    attempt not counted. False if the lease is gone."""
    now = now or utcnow()
    return await _settle(
        conn,
        job_id,
        lease_token,
        status=JobStatus.QUEUED.value,
        run_at=now,
        attempts=jobs.c.attempts - 1,
        updated_at=now,
    )


async def complete(
    store: Store, job_id: str, lease_token: str, *, now: datetime | None = None
) -> bool:
    """``complete_in`` in a transaction of its own."""
    async with store.transaction() as conn:
        return await complete_in(conn, job_id, lease_token, now=now)


async def retry(
    store: Store,
    job_id: str,
    lease_token: str,
    *,
    run_at: datetime,
    error: str | None,
    now: datetime | None = None,
) -> bool:
    """``retry_in`` in a transaction of its own."""
    async with store.transaction() as conn:
        return await retry_in(conn, job_id, lease_token, run_at=run_at, error=error, now=now)


async def fail(
    store: Store, job_id: str, lease_token: str, *, error: str, now: datetime | None = None
) -> bool:
    """``fail_in`` in a transaction of its own."""
    async with store.transaction() as conn:
        return await fail_in(conn, job_id, lease_token, error=error, now=now)


async def release(
    store: Store, job_id: str, lease_token: str, *, now: datetime | None = None
) -> bool:
    """``release_in`` in a transaction of its own."""
    async with store.transaction() as conn:
        return await release_in(conn, job_id, lease_token, now=now)


def _held(leases: Iterable[tuple[str, str]]) -> sa.ColumnElement[bool] | None:
    """Rows still held under the given ``(job_id, lease_token)`` pairs; None for no pairs."""
    by_token: dict[str, list[str]] = defaultdict(list)
    for job_id, token in leases:
        by_token[token].append(job_id)
    if not by_token:
        return None
    return sa.and_(
        jobs.c.status == JobStatus.RUNNING.value,
        sa.or_(
            *(
                sa.and_(jobs.c.lease_token == token, jobs.c.id.in_(ids))
                for token, ids in by_token.items()
            )
        ),
    )


async def complete_many_in(
    conn: AsyncConnection, leases: Iterable[tuple[str, str]], *, now: datetime | None = None
) -> set[str]:
    """``complete_in`` for many ``(job_id, lease_token)`` pairs in one statement; returns
    the ids completed (the others had lost their lease)."""
    held = _held(leases)
    if held is None:
        return set()
    now = now or utcnow()
    statement = (
        jobs.update()
        .where(held)
        .values(status=JobStatus.DONE.value, lease_token=None, run_at=now, updated_at=now)
        .returning(jobs.c.id)
    )
    return set((await conn.execute(statement)).scalars())


async def complete_many(
    store: Store, leases: Iterable[tuple[str, str]], *, now: datetime | None = None
) -> set[str]:
    """``complete_many_in`` in a transaction of its own."""
    leases = list(leases)
    if not leases:
        return set()
    async with store.transaction() as conn:
        return await complete_many_in(conn, leases, now=now)


async def extend_leases(
    store: Store,
    leases: Iterable[tuple[str, str]],
    *,
    lease_seconds: float,
    now: datetime | None = None,
) -> set[str]:
    """Push the lease expiry of held jobs (``(job_id, lease_token)`` pairs) to ``now +
    lease_seconds``, in one statement; returns the ids still held (the others were lost)."""
    held = _held(leases)
    if held is None:
        return set()
    now = now or utcnow()
    statement = (
        jobs.update()
        .where(held)
        .values(run_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(jobs.c.id)
    )
    async with store.transaction() as conn:
        return set((await conn.execute(statement)).scalars())


async def extend_lease(
    store: Store,
    job_id: str,
    lease_token: str,
    *,
    lease_seconds: float,
    now: datetime | None = None,
) -> bool:
    """``extend_leases`` for one job: False if its lease is gone."""
    held = await extend_leases(store, [(job_id, lease_token)], lease_seconds=lease_seconds, now=now)
    return job_id in held


# -- inspection and retention --------------------------------------------------------------


async def get(conn: AsyncConnection, job_id: str) -> JobRow | None:
    row = (await conn.execute(jobs.select().where(jobs.c.id == job_id))).first()
    if row is None:
        return None
    values = dict(row._mapping)
    values["group"] = values.pop("group_key")
    values["status"] = JobStatus(values["status"])
    return JobRow(**values)


async def count_by_status(
    conn: AsyncConnection, *, kinds: Sequence[str] | None = None
) -> dict[JobStatus, int]:
    """How many jobs are in each status (every status present, zeros included)."""
    query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
    if kinds is not None:
        query = query.where(jobs.c.kind.in_(list(kinds)))
    counts = {status: 0 for status in JobStatus}
    for status, count in await conn.execute(query):
        counts[JobStatus(status)] = count
    return counts


async def purge_finished(conn: AsyncConnection, *, before: datetime) -> int:
    """Delete done, failed and cancelled jobs that finished before ``before``."""
    result = await conn.execute(
        jobs.delete().where(
            jobs.c.status.in_([status.value for status in FINISHED]), jobs.c.run_at < before
        )
    )
    return result.rowcount


async def holds_lease_in(conn: AsyncConnection, job_id: str, lease_token: str) -> bool:
    """In the caller's transaction: is the job still running under ``lease_token``? On
    PostgreSQL the row stays share-locked until the transaction ends, so no other worker can
    rescue the job meanwhile (claims skip locked rows); SQLite's write lock already does it.
    For a long handler that commits work in steps, each fenced by its lease."""
    query = sa.select(jobs.c.id).where(
        jobs.c.id == job_id,
        jobs.c.lease_token == lease_token,
        jobs.c.status == JobStatus.RUNNING.value,
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return (await conn.execute(query)).first() is not None
