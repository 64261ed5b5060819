"""Retention of the integrations' history: a recurring ``connectors.request_log_retention``
job deletes request log entries older than ``integration_log_retention_days`` and ended sync
runs older than ``sync_run_retention_days`` (each integration's latest stays), then queues
its own next run an hour later.

Wiring (``isthmus.runtime``)::

    handlers[request_log_retention.KIND] = request_log_retention.handler(
        hub.settings.integration_log_retention_days, hub.settings.sync_run_retention_days
    )
    await request_log_retention.ensure_scheduled(hub.store)  # when a worker process starts

The chain is kept single as the delivery log's is (``isthmus.webhooks.retention``): the
schedule is checked and extended under a lock, and a failed run is tried again later
rather than given up. Purging is idempotent, so a duplicate run would do no harm.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.job import Handler, Job, LeaseLost, RetryLater
from isthmus.store import delivery_log as schedule
from isthmus.store import integration_requests as repo
from isthmus.store import queue, sync_runs
from isthmus.store.db import Store
from isthmus.store.types import utcnow

log = logging.getLogger("isthmus.connectors.request_log_retention")

KIND = "connectors.request_log_retention"
#: How often the cleanup runs.
INTERVAL = timedelta(hours=1)
#: Entries deleted per transaction: short transactions, short locks.
BATCH = 5000
#: A failed run is tried again this much later.
RETRY_DELAY = 300.0


async def purge(store: Store, days: int, *, now: datetime | None = None, batch: int = BATCH) -> int:
    """Delete every entry older than ``days``, batch by batch; how many went."""
    before = (now or utcnow()) - timedelta(days=days)
    return await _in_batches(store, lambda conn, n: repo.purge(conn, before=before, limit=n), batch)


async def purge_runs(
    store: Store, days: int, *, now: datetime | None = None, batch: int = BATCH
) -> int:
    """Delete every sync run that ended over ``days`` ago, but each integration's latest
    ended one, batch by batch; how many went."""
    before = (now or utcnow()) - timedelta(days=days)
    return await _in_batches(
        store, lambda conn, n: sync_runs.purge_finished(conn, before=before, limit=n), batch
    )


async def _in_batches(
    store: Store, delete: Callable[[AsyncConnection, int], Awaitable[int]], batch: int
) -> int:
    """``delete`` (up to a batch of rows, answering how many went) until it runs short,
    each batch in a transaction of its own: short transactions, short locks."""
    gone = 0
    while True:
        async with store.transaction() as conn:
            deleted = await delete(conn, batch)
        gone += deleted
        if deleted < batch:
            return gone


async def ensure_scheduled(store: Store, *, now: datetime | None = None) -> bool:
    """Queue a run, due now, unless one is queued or running; True if queued. Call it when a
    worker process starts."""
    async with store.transaction() as conn:
        await schedule.lock_schedule(conn, KIND)
        if await schedule.live_jobs(conn, KIND):
            return False
        await queue.enqueue(conn, kind=KIND, payload={}, run_at=now, now=now)
    return True


def handler(
    days: int, run_days: int, *, interval: timedelta = INTERVAL, batch: int = BATCH
) -> Handler:
    """The job handler keeping ``days`` of log and ``run_days`` of sync runs: purge, then
    queue the next run ``interval`` later and complete this one, in one transaction."""

    async def run(job: Job) -> None:
        now = job.clock()
        try:
            gone = await purge(job.store, days, now=now, batch=batch)
            runs = await purge_runs(job.store, run_days, now=now, batch=batch)
            async with job.store.transaction() as conn:
                await schedule.lock_schedule(conn, KIND)
                # Queued ones only: a duplicate run going on at the same time decides for
                # itself after this transaction (the lock), and then sees ours.
                if not await schedule.live_jobs(conn, KIND, running=False):
                    await queue.enqueue(conn, kind=KIND, payload={}, run_at=now + interval, now=now)
                await job.complete_in(conn)
        except LeaseLost:
            raise  # another worker has this run now; it schedules the next one
        except Exception as exc:
            # RetryLater is not counted against the attempt limit: the one job that keeps
            # the chain alive is never given up.
            log.exception("request log retention failed; trying again in %.0f s", RETRY_DELAY)
            raise RetryLater(f"retention failed: {exc}", delay=RETRY_DELAY) from exc
        log.info(
            "request log retention (%d days): purged %d entries; sync runs (%d days): %d",
            days,
            gone,
            run_days,
            runs,
        )

    return run
