"""Deliveries handled in batches: the jobs claimed together are loaded together, and the
successes that finish together are recorded by one statement, each still fenced by its own
job's lease. A job whose lease another worker took over records nothing, in a batch or not.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from delivery_support import FakeClock, ScriptedReceiver, attempt_rows, delivery_rows
from webhook_support import create_webhook

from isthmus.config import Settings
from isthmus.domain.ids import new_id
from isthmus.domain.jobs import ClaimedJob, JobStatus
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.store import deliveries, queue
from isthmus.store.tables import jobs
from isthmus.store.types import utcnow
from isthmus.webhooks.publish import DELIVER, NewEvent, publish_many
from isthmus.worker import Worker

LEASE = 30.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]})


async def publish_events(hub: Hub, tenant: str, n: int) -> None:
    async with hub.store.transaction() as conn:
        await publish_many(conn, tenant, [NewEvent("contact.created", {"n": i}) for i in range(n)])


async def job_rows(hub: Hub) -> dict[str, queue.JobRow]:
    """Each delivery's job, by delivery id."""
    async with hub.store.read() as conn:
        ids = [row.id for row in await conn.execute(sa.select(jobs.c.id))]
        found = [await queue.get(conn, job_id) for job_id in ids]
    return {job.payload["deliveryId"]: job for job in found if job is not None}


async def test_a_job_taken_over_mid_flight_records_nothing_while_the_others_of_its_batch_do(
    api: httpx.AsyncClient, hub: Hub, receiver: ScriptedReceiver, admin_key: IssuedKey
) -> None:
    created = await create_webhook(api, url=receiver.url("/slow/0.4"), events=["*"])
    receiver.secrets.append(str(created["secret"]))
    await publish_events(hub, admin_key.key.tenant_id, 3)
    clock = FakeClock()
    worker = Worker(hub.store, clock=clock, lease_seconds=LEASE)
    worker.register(DELIVER, hub.deliver)

    running = asyncio.create_task(worker.run_pending())
    for _ in range(200):  # all three requests are in flight
        if len(receiver.hits) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(receiver.hits) == 3
    # Another worker finds one of the leases expired (its clock is past it) and takes the job.
    [rescued] = await queue.claim(
        hub.store,
        limit=1,
        lease_seconds=LEASE,
        kinds=[DELIVER],
        now=clock.now + timedelta(seconds=LEASE + 1),
    )
    assert await asyncio.wait_for(running, 10) == 3

    rows = {d["id"]: d for d in await delivery_rows(hub.store)}
    lost = rescued.payload["deliveryId"]
    # The rescued delivery was sent (at least once) but its outcome belongs to the new holder:
    # no attempt in its log, its state untouched, its job still running under the new lease.
    assert (rows[lost]["status"], rows[lost]["attempts"]) == ("pending", 0)
    assert await attempt_rows(hub.store, lost) == []
    by_delivery = await job_rows(hub)
    assert (by_delivery[lost].status, by_delivery[lost].attempts) == (JobStatus.RUNNING, 2)
    for delivery_id, row in rows.items():
        if delivery_id == lost:
            continue
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 1, 200)
        [attempt] = await attempt_rows(hub.store, delivery_id)
        assert attempt["status_code"] == 200
        assert by_delivery[delivery_id].status is JobStatus.DONE
    assert all(receiver.verified(hit) for hit in receiver.hits)


async def test_recording_successes_together_fences_each_by_its_own_lease(
    api: httpx.AsyncClient, hub: Hub, admin_key: IssuedKey
) -> None:
    tenant = admin_key.key.tenant_id
    await create_webhook(api, events=["*"])
    await publish_events(hub, tenant, 4)
    now = utcnow() + timedelta(seconds=1)
    claimed = await queue.claim(hub.store, limit=4, lease_seconds=LEASE, kinds=[DELIVER], now=now)
    assert len(claimed) == 4
    taken, cancelled, *kept = claimed
    # One job is taken over by another claimer; another's delivery is cancelled by hand.
    [again] = await queue.claim(
        hub.store, limit=1, lease_seconds=LEASE, kinds=[DELIVER], now=now + timedelta(hours=1)
    )
    assert again.id == taken.id
    async with hub.store.transaction() as conn:
        await deliveries.cancel(conn, cancelled.payload["deliveryId"], "by hand", now)

    def success(job: ClaimedJob, token: str) -> deliveries.Success:
        return deliveries.Success(
            job_id=job.id,
            lease_token=token,
            delivery_id=job.payload["deliveryId"],
            tenant_id=tenant,
            attempts=1,
            attempt_id=new_id("att"),
            at=now,
            status_code=204,
            response_body="",
            latency_ms=1.5,
        )

    held = await deliveries.record_successes(
        hub.store, [success(job, job.lease_token) for job in claimed]
    )

    assert held == {cancelled.id, *(job.id for job in kept)}
    rows = {d["id"]: d for d in await delivery_rows(hub.store)}
    taken_id = taken.payload["deliveryId"]
    assert (rows[taken_id]["status"], rows[taken_id]["attempts"]) == ("pending", 0)
    assert await attempt_rows(hub.store, taken_id) == []
    # Changed by someone else meanwhile: the attempt stays in its log, the state is theirs.
    cancelled_id = cancelled.payload["deliveryId"]
    assert rows[cancelled_id]["status"] == "cancelled"
    assert len(await attempt_rows(hub.store, cancelled_id)) == 1
    for job in kept:
        row = rows[job.payload["deliveryId"]]
        assert (row["status"], row["attempts"], row["delivered_at"]) == ("delivered", 1, now)
        [attempt] = await attempt_rows(hub.store, row["id"])
        assert (attempt["status_code"], attempt["latency_ms"]) == (204, 1.5)
    by_delivery = await job_rows(hub)
    assert by_delivery[taken_id].status is JobStatus.RUNNING
    assert {by_delivery[d].status for d in rows if d != taken_id} == {JobStatus.DONE}

    # The new holder records its own attempt; the old lease can never record again.
    assert await deliveries.record_successes(hub.store, [success(again, again.lease_token)]) == {
        taken.id
    }
    assert await deliveries.record_successes(hub.store, [success(taken, taken.lease_token)]) == (
        set()
    )
    assert len(await attempt_rows(hub.store, taken_id)) == 1
