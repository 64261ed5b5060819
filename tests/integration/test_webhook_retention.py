"""Retention of the delivery log on both stores: what is older than the cut-off goes, in
batches, what is newer or still in use stays; the cleanup job runs and schedules its next
run, and is scheduled once however often a worker starts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from delivery_log_support import Attempt, finish, publish_event
from webhook_support import PUBLIC_URL

from isthmus.config import Settings
from isthmus.domain.auth import Actor
from isthmus.domain.jobs import JobStatus
from isthmus.hub import Hub
from isthmus.runtime import job_handlers, run_workers
from isthmus.services.access import IssuedKey
from isthmus.store import queue
from isthmus.store.tables import deliveries, delivery_attempts, events, jobs
from isthmus.webhooks import retention
from isthmus.worker import Worker

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
async def actor(admin_key: IssuedKey) -> Actor:
    return Actor(admin_key.key.tenant_id, "test")


async def _subscribe(hub: Hub, actor: Actor) -> str:
    issued = await hub.webhooks.create(actor, url=PUBLIC_URL, events=["*"])
    return issued.subscription.id


async def _ids(hub: Hub, table: sa.Table) -> set[str]:
    async with hub.store.read() as conn:
        return set((await conn.execute(sa.select(table.c.id))).scalars())


async def _attempts_of(hub: Hub, delivery_ids: set[str]) -> int:
    async with hub.store.read() as conn:
        q = sa.select(sa.func.count()).where(delivery_attempts.c.delivery_id.in_(delivery_ids))
        return int((await conn.execute(q)).scalar_one())


async def _retention_jobs(hub: Hub) -> list[queue.JobRow]:
    async with hub.store.read() as conn:
        ids = (
            await conn.execute(
                sa.select(jobs.c.id).where(jobs.c.kind == retention.KIND).order_by(jobs.c.id)
            )
        ).scalars()
        found = [await queue.get(conn, i) for i in list(ids)]
    return [j for j in found if j is not None]


async def test_purge_deletes_what_is_older_than_the_cutoff_and_keeps_the_rest(
    hub: Hub, actor: Actor
) -> None:
    await _subscribe(hub, actor)
    old, young = NOW - 31 * DAY, NOW - 29 * DAY

    async def made(at: datetime, status: str | None, *, touched: datetime | None = None) -> str:
        (d,) = await publish_event(hub, actor.tenant_id, now=at)
        if status is not None:
            await finish(hub, d, status, attempts=[Attempt()] * 2, at=touched or at)
        return d

    gone = {
        await made(old, "delivered"),
        await made(old, "failed"),
        await made(old, "cancelled"),
        await made(old - 300 * DAY, "failed"),
        await made(old, "delivered"),
    }
    kept = {
        await made(young, "delivered"),
        await made(young, "failed"),
        await made(old, None),  # still pending: its job may yet send it
        await made(old, "delivered", touched=NOW - DAY),  # retried lately
    }
    async with hub.store.read() as conn:
        rows = await conn.execute(sa.select(deliveries.c.id, deliveries.c.event_id))
        event_of = {row.id: row.event_id for row in rows}
    old_jobs = await _ids(hub, jobs)

    counts = await retention.purge(hub.store, retention.Retention(days=30, batch=2), now=NOW)

    assert await _ids(hub, deliveries) == kept
    assert await _attempts_of(hub, gone) == 0
    assert await _attempts_of(hub, kept) == 2 * 3  # the pending one has none
    assert await _ids(hub, events) == {event_of[d] for d in kept}
    assert counts.deliveries == len(gone) and counts.attempts == 2 * len(gone)
    assert counts.events == len(gone)
    # The finished jobs of the old deliveries went too; queued ones and young ones stay.
    left = await _ids(hub, jobs)
    assert left < old_jobs and counts.jobs == len(old_jobs - left)
    async with hub.store.read() as conn:
        statuses = {
            row.id: (row.status, row.run_at)
            for row in await conn.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.run_at))
        }
    assert all(
        status == "queued" or run_at >= NOW - 30 * DAY for status, run_at in statuses.values()
    )

    again = await retention.purge(hub.store, retention.Retention(days=30, batch=2), now=NOW)
    assert again == retention.PurgeCounts()


async def test_events_nobody_received_go_too(hub: Hub, actor: Actor) -> None:
    assert await publish_event(hub, actor.tenant_id, now=NOW - 40 * DAY) == []
    assert await publish_event(hub, actor.tenant_id, now=NOW - 10 * DAY) == []

    counts = await retention.purge(hub.store, retention.Retention(days=30), now=NOW)

    assert counts.events == 1
    assert len(await _ids(hub, events)) == 1


async def test_every_tenant_is_purged(hub: Hub, actor: Actor) -> None:
    other = Actor((await hub.access.create_tenant("tenant-b")).id, "test")
    for who in (actor, other):
        await _subscribe(hub, who)
        (d,) = await publish_event(hub, who.tenant_id, now=NOW - 40 * DAY)
        await finish(hub, d, "failed", at=NOW - 40 * DAY)

    counts = await retention.purge(hub.store, retention.Retention(days=30), now=NOW)

    assert counts.deliveries == 2 and await _ids(hub, deliveries) == set()


async def test_the_cleanup_job_purges_and_schedules_its_next_run(
    hub: Hub, actor: Actor, settings: Settings
) -> None:
    assert settings.webhook_retention_days == 30
    await _subscribe(hub, actor)
    (d,) = await publish_event(hub, actor.tenant_id, now=NOW - 31 * DAY)
    await finish(hub, d, "delivered", at=NOW - 31 * DAY)

    assert await retention.ensure_scheduled(hub.store, now=NOW) is True
    assert await retention.ensure_scheduled(hub.store, now=NOW) is False  # one is queued
    worker = Worker(hub.store, clock=lambda: NOW)
    worker.register(retention.KIND, retention.handler(settings.webhook_retention_days))

    assert await worker.run_pending() == 1

    assert await _ids(hub, deliveries) == set()
    first, following = await _retention_jobs(hub)
    assert first.status is JobStatus.DONE
    assert following.status is JobStatus.QUEUED
    assert following.run_at == NOW + retention.INTERVAL
    assert await retention.ensure_scheduled(hub.store, now=NOW) is False

    later = NOW + retention.INTERVAL
    worker.clock = lambda: later
    assert await worker.run_pending() == 1
    statuses = [j.status for j in await _retention_jobs(hub)]
    assert statuses == [JobStatus.DONE, JobStatus.DONE, JobStatus.QUEUED]


async def test_two_runs_at_once_leave_one_next_run(hub: Hub) -> None:
    for _ in range(2):  # as if two processes had both scheduled one, before the lock
        async with hub.store.transaction() as conn:
            await queue.enqueue(conn, kind=retention.KIND, payload={}, now=NOW)
    worker = Worker(hub.store, clock=lambda: NOW)
    worker.register(retention.KIND, retention.handler(30))

    assert await worker.run_pending() == 2

    queued = [j for j in await _retention_jobs(hub) if j.status is JobStatus.QUEUED]
    assert len(queued) == 1


async def test_a_failed_run_is_tried_again_not_given_up(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> retention.PurgeCounts:
        raise RuntimeError("disk full")

    monkeypatch.setattr(retention, "purge", broken)
    assert await retention.ensure_scheduled(hub.store, now=NOW)
    worker = Worker(hub.store, clock=lambda: NOW, max_attempts=1)
    worker.register(retention.KIND, retention.handler(30))

    await worker.run_pending()

    (job,) = await _retention_jobs(hub)
    assert job.status is JobStatus.QUEUED
    assert job.run_at == NOW + timedelta(seconds=retention.RETRY_DELAY)
    assert job.last_error is not None and "disk full" in job.last_error


@pytest.mark.parametrize("days", [0, 3651])
def test_the_retention_setting_is_bounded(days: int, settings: Settings) -> None:
    with pytest.raises(ValueError, match="webhook_retention_days"):
        Settings(database_url=settings.database_url, webhook_retention_days=days)


async def test_running_the_workers_schedules_the_cleanup(hub: Hub) -> None:
    assert retention.KIND in job_handlers(hub)
    stop = asyncio.Event()
    stop.set()  # start, schedule, and drain at once
    await asyncio.wait_for(run_workers(hub, stop), timeout=30)
    statuses = [j.status for j in await _retention_jobs(hub)]
    assert statuses == [JobStatus.QUEUED]
