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

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.ids import new_ids
from isthmus.domain.jobs import FINISHED, JobRow, JobStatus, NewJob
from isthmus.store import notify
from isthmus.store.claim import claim as claim  # part of this module's contract
from isthmus.store.db import Store
from isthmus.store.many import execute_many
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


_INSERT_JOBS = jobs.insert()


async def enqueue_many(
    conn: AsyncConnection, new_jobs: Iterable[NewJob], *, now: datetime | None = None
) -> list[str]:
    """Queue jobs in the caller's transaction (one INSERT); returns their ids, in order."""
    now = now or utcnow()
    new_jobs = list(new_jobs)
    ids = new_ids("job", len(new_jobs))
    kinds: set[str] = set()
    rows: list[dict[str, Any]] = []
    for job, job_id in zip(new_jobs, ids, strict=True):
        kinds.add(job.kind)
        rows.append(
            {
                "id": job_id,
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
    await execute_many(conn, _INSERT_JOBS, rows)
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


def _fenced_many_sql(assignments: str) -> str:
    """PostgreSQL: ``assignments`` on the jobs still held under the ``(id, token)`` pairs
    given as two arrays ($1, $2), in one statement; returns their ids.

    A job has a lease token only while it runs (a claim sets a fresh one, every settle
    clears it), so the token alone fences, and the rows are found by id: a condition on
    ``status`` would invite the planner, on a table without statistics yet, to read every
    entry its index keeps for running jobs (dead ones included) at each call. The ``= ANY``
    repeats the join's key so that a plan cached while the table was empty still looks the
    rows up by index instead of reading the table.
    """
    return f"""
        UPDATE jobs SET {assignments}
        FROM unnest($1::varchar[], $2::varchar[]) AS held(id, token)
        WHERE jobs.id = ANY($1::varchar[]) AND jobs.id = held.id
          AND jobs.lease_token = held.token
        RETURNING jobs.id
    """  # noqa: S608 - constants only; every value is a bound parameter


_COMPLETE_MANY_PG = _fenced_many_sql(
    f"status = '{JobStatus.DONE.value}', lease_token = NULL, run_at = $3, updated_at = $3"
)
_EXTEND_PG = _fenced_many_sql("run_at = $3, updated_at = $4")


async def _fenced_many_postgres(
    store: Store, sql: str, leases: list[tuple[str, str]], *args: Any
) -> set[str]:
    async with store.driver() as conn:
        rows = await conn.fetch(sql, [j for j, _t in leases], [t for _j, t in leases], *args)
    return {row[0] for row in rows}


async def complete_many(
    store: Store, leases: Iterable[tuple[str, str]], *, now: datetime | None = None
) -> set[str]:
    """``complete_many_in`` in a transaction of its own."""
    leases = list(leases)
    if not leases:
        return set()
    now = now or utcnow()
    if store.dialect == "postgresql":
        return await _fenced_many_postgres(store, _COMPLETE_MANY_PG, leases, now)
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
    leases = list(leases)
    if not leases:
        return set()
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    if store.dialect == "postgresql":
        return await _fenced_many_postgres(store, _EXTEND_PG, leases, expires, now)
    held = _held(leases)
    assert held is not None
    statement = jobs.update().where(held).values(run_at=expires, updated_at=now)
    async with store.transaction() as conn:
        return set((await conn.execute(statement.returning(jobs.c.id))).scalars())


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
