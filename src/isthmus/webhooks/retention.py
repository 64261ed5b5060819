"""Retention of the delivery log: a recurring ``webhooks.retention`` job deletes finished
deliveries, their attempts and events older than ``webhook_retention_days``, and finished
jobs as old, then queues its own next run.

Wiring (``isthmus.runtime``)::

    handlers[retention.KIND] = retention.handler(hub.settings.webhook_retention_days)
    await retention.ensure_scheduled(hub.store)  # once, when a worker process starts

The chain is kept single: scheduling checks for a queued or running run under a lock
(PostgreSQL advisory lock; SQLite runs one writer at a time), and the job only queues its
successor when no other run is queued. A duplicate run would be harmless anyway: purging
is idempotent. A run that fails is tried again later rather than given up, so the chain
never ends on an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from isthmus.job import Handler, Job, LeaseLost, RetryLater
from isthmus.store import delivery_log as repo
from isthmus.store import queue
from isthmus.store.db import Store
from isthmus.store.delivery_log import PurgeCounts
from isthmus.store.types import utcnow

log = logging.getLogger("isthmus.webhooks.retention")

KIND = "webhooks.retention"
#: How often the cleanup runs.
INTERVAL = timedelta(hours=1)
#: Rows deleted per transaction: short transactions, short locks, bounded memory.
BATCH = 1000
#: A failed run is tried again this much later.
RETRY_DELAY = 300.0


@dataclass(frozen=True)
class Retention:
    """What to keep: ``days`` of finished deliveries (counted from creation and from the
    last change, so a lately retried delivery stays), their attempts and events."""

    days: int
    batch: int = BATCH

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)


async def purge(store: Store, retention: Retention, *, now: datetime | None = None) -> PurgeCounts:
    """Delete everything ``retention`` no longer keeps, batch by batch, each batch in a
    transaction of its own; returns how many rows went, per table."""
    before = retention.cutoff(now or utcnow())
    attempts = deliveries = events = 0
    async with store.read() as conn:
        tenants = await repo.tenant_ids(conn)
    # Per tenant, so every batch reads the (tenant_id, ...) indexes of deliveries and events.
    for tenant_id in tenants:
        while True:
            async with store.transaction() as conn:
                gone_attempts, gone = await repo.purge_deliveries(
                    conn, tenant_id, before=before, limit=retention.batch
                )
            attempts, deliveries = attempts + gone_attempts, deliveries + gone
            if gone < retention.batch:
                break
        # Events after deliveries: an event goes once no delivery refers to it.
        while True:
            async with store.transaction() as conn:
                gone = await repo.purge_events(
                    conn, tenant_id, before=before, limit=retention.batch
                )
            events += gone
            if gone < retention.batch:
                break
    async with store.transaction() as conn:
        purged_jobs = await repo.purge_jobs(conn, before=before)
    return PurgeCounts(attempts=attempts, deliveries=deliveries, events=events, jobs=purged_jobs)


async def ensure_scheduled(store: Store, *, now: datetime | None = None) -> bool:
    """Queue a retention run, due now, unless one is queued or running; True if queued.
    Call it when a worker process starts."""
    async with store.transaction() as conn:
        await repo.lock_schedule(conn, KIND)
        if await repo.live_jobs(conn, KIND):
            return False
        await queue.enqueue(conn, kind=KIND, payload={}, run_at=now, now=now)
    return True


def handler(days: int, *, interval: timedelta = INTERVAL, batch: int = BATCH) -> Handler:
    """The ``webhooks.retention`` job handler keeping ``days`` (the setting
    ``webhook_retention_days``): purge, then queue the next run ``interval`` later and
    complete this one, in one transaction."""
    retention = Retention(days=days, batch=batch)

    async def run(job: Job) -> None:
        now = job.clock()
        try:
            counts = await purge(job.store, retention, now=now)
            async with job.store.transaction() as conn:
                await repo.lock_schedule(conn, KIND)
                # Queued ones only: a duplicate run going on at the same time decides for
                # itself, after this transaction (the lock), and then sees ours.
                if not await repo.live_jobs(conn, KIND, running=False):
                    await queue.enqueue(conn, kind=KIND, payload={}, run_at=now + interval, now=now)
                await job.complete_in(conn)
        except LeaseLost:
            raise  # another worker has this run now; it schedules the next one
        except Exception as exc:
            # RetryLater, unlike a plain error, is not counted against the worker's attempt
            # limit: the one job that keeps the chain alive is never given up.
            log.exception("retention run failed; trying again in %.0f s", RETRY_DELAY)
            raise RetryLater(f"retention failed: {exc}", delay=RETRY_DELAY) from exc
        log.info(
            "retention (%d days): purged %d deliveries, %d attempts, %d events, %d jobs",
            retention.days,
            counts.deliveries,
            counts.attempts,
            counts.events,
            counts.jobs,
        )

    return run
