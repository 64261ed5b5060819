"""The job queue's contract, on SQLite and on PostgreSQL: the same tests for both stores.

Time is passed explicitly (``now``) wherever a lease or a schedule matters, so nothing here
sleeps to let a lease run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from isthmus.coalescer import Coalescer
from isthmus.domain.jobs import JobStatus, NewJob
from isthmus.errors import StoreUnavailable
from isthmus.hub import Hub
from isthmus.store import db, queue, tenants
from isthmus.store.db import Store, after_commit, make_engine
from isthmus.store.notify import wakeup_for
from isthmus.store.types import utcnow
from isthmus.worker import Job, LeaseLost, RetryLater, Worker

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(hub: Hub) -> Store:
    return hub.store


@pytest.fixture
async def other_store(hub: Hub) -> AsyncIterator[Store]:
    """A second engine on the same database: another process, as far as the queue can tell."""
    second = Store(make_engine(hub.settings.resolved_database_url))
    try:
        yield second
    finally:
        await second.close()


async def put(
    store: Store, n: int = 1, *, kind: str = "test.a", now: datetime | None = T0, **kw: Any
) -> list[str]:
    """``n`` jobs, due at ``now`` (the fake T0 unless None: the wall clock)."""
    async with store.transaction() as conn:
        return await queue.enqueue_many(
            conn, [NewJob(kind, {"n": i}, **kw) for i in range(n)], now=now
        )


async def row(store: Store, job_id: str) -> queue.JobRow:
    async with store.read() as conn:
        found = await queue.get(conn, job_id)
    assert found is not None
    return found


async def counts(store: Store) -> dict[JobStatus, int]:
    async with store.read() as conn:
        return await queue.count_by_status(conn)


async def until_count(store: Store, status: JobStatus, wanted: int) -> int:
    """Polls (bounded, 5 s) until ``wanted`` jobs have ``status``; the last count."""
    for _ in range(100):
        found = (await counts(store))[status]
        if found == wanted:
            break
        await asyncio.sleep(0.05)
    return found


# -- enqueue -------------------------------------------------------------------------------


async def test_enqueue_commits_and_rolls_back_with_the_callers_transaction(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as conn:
            await queue.enqueue(conn, kind="test.a", payload={"x": 1}, now=T0)
            raise Boom
    assert (await counts(store))[JobStatus.QUEUED] == 0

    async with store.transaction() as conn:
        tenant = await tenants.create(conn, "acme")
        job_id = await queue.enqueue(
            conn,
            kind="webhook.deliver",
            payload={"delivery": "dlv_1", "nested": {"a": [1, 2]}},
            tenant_id=tenant.id,
            group="sub_1",
            now=T0,
        )
    stored = await row(store, job_id)
    assert job_id.startswith("job_")
    assert stored.status is JobStatus.QUEUED
    assert stored.tenant_id == tenant.id
    assert stored.group == "sub_1"
    assert stored.payload == {"delivery": "dlv_1", "nested": {"a": [1, 2]}}
    assert (stored.run_at, stored.attempts, stored.lease_token) == (T0, 0, None)


async def test_enqueue_many_keeps_order_and_an_empty_batch_is_nothing(store: Store) -> None:
    ids = await put(store, 50)
    assert ids == sorted(ids) and len(set(ids)) == 50
    async with store.transaction() as conn:
        assert await queue.enqueue_many(conn, []) == []
    assert (await counts(store))[JobStatus.QUEUED] == 50


# -- claim ---------------------------------------------------------------------------------


async def test_claim_takes_due_jobs_only_up_to_the_limit_and_of_the_kinds_asked(
    store: Store,
) -> None:
    due = await put(store, 3, kind="test.a")
    await put(store, 2, kind="test.a", run_at=at(60))
    other = await put(store, 2, kind="test.b")

    first = await queue.claim(store, kinds=["test.a"], limit=2, lease_seconds=LEASE, now=at(1))
    second = await queue.claim(store, kinds=["test.a"], limit=10, lease_seconds=LEASE, now=at(1))
    assert len(first) == 2 and len(second) == 1
    assert {j.id for j in first + second} == set(due)
    job = first[0]
    assert (job.kind, job.attempts, job.lease_expires_at) == ("test.a", 1, at(1 + LEASE))
    assert job.payload in ({"n": 0}, {"n": 1}, {"n": 2})
    assert first[0].lease_token == first[1].lease_token != second[0].lease_token

    assert (
        await queue.claim(store, kinds=["test.a"], limit=10, lease_seconds=LEASE, now=at(1)) == []
    )
    everything = await queue.claim(store, limit=10, lease_seconds=LEASE, now=at(61))
    assert {j.kind for j in everything} == {"test.a", "test.b"}
    assert {j.id for j in everything} >= set(other)
    assert await queue.claim(store, limit=0, lease_seconds=LEASE, now=at(61)) == []


async def test_concurrent_claimers_never_share_a_job(store: Store, other_store: Store) -> None:
    ids = await put(store, 300)
    claims = [
        queue.claim(s, limit=20, lease_seconds=LEASE, now=at(1)) for s in (store, other_store) * 12
    ]
    batches = await asyncio.gather(*claims)
    got = [job.id for batch in batches for job in batch]
    assert len(got) == len(set(got)) == 300  # 24 claims x 20 > 300: every job, once
    assert set(got) == set(ids)
    tokens = [batch[0].lease_token for batch in batches if batch]
    assert len(tokens) == len(set(tokens))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite has no row locks
async def test_a_claim_skips_rows_another_transaction_has_locked(store: Store) -> None:
    locked, free = await put(store, 2)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with store.transaction() as conn:
            assert await queue.cancel_in(conn, locked, now=at(0))  # row locked, uncommitted
            claimed = await asyncio.wait_for(
                queue.claim(store, limit=5, lease_seconds=LEASE, now=at(1)), 2
            )
            assert [job.id for job in claimed] == [free]  # at once, without waiting
            raise Rollback
    assert (await row(store, locked)).status is JobStatus.QUEUED


async def test_expired_leases_are_rescued_and_the_first_holder_is_fenced_out(
    store: Store, other_store: Store
) -> None:
    [job_id] = await put(store)
    [first] = await queue.claim(store, limit=5, lease_seconds=10, now=at(0))
    # Still leased: nobody else gets it.
    assert await queue.claim(other_store, limit=5, lease_seconds=10, now=at(9)) == []

    [rescued] = await queue.claim(other_store, limit=5, lease_seconds=10, now=at(11))
    assert rescued.id == job_id and rescued.attempts == 2
    assert rescued.lease_token != first.lease_token
    before = await row(store, job_id)

    assert not await queue.complete(store, job_id, first.lease_token, now=at(12))
    assert not await queue.retry(store, job_id, first.lease_token, run_at=at(99), error="x")
    assert not await queue.fail(store, job_id, first.lease_token, error="x")
    assert not await queue.release(store, job_id, first.lease_token)
    assert not await queue.extend_lease(store, job_id, first.lease_token, lease_seconds=10)
    assert await row(store, job_id) == before  # the stale holder changed nothing

    assert await queue.complete(other_store, job_id, rescued.lease_token, now=at(12))
    assert not await queue.complete(other_store, job_id, rescued.lease_token, now=at(12))
    done = await row(store, job_id)
    assert (done.status, done.lease_token, done.attempts) == (JobStatus.DONE, None, 2)


async def test_complete_after_the_lease_ran_out_but_before_a_rescue_still_counts(
    store: Store,
) -> None:
    await put(store)
    [job] = await queue.claim(store, limit=1, lease_seconds=10, now=at(0))
    assert await queue.complete(store, job.id, job.lease_token, now=at(60))
    assert await queue.claim(store, limit=1, lease_seconds=10, now=at(61)) == []


async def test_retry_requeues_for_later_and_fail_is_final(store: Store) -> None:
    a, b = await put(store, 2)
    jobs = {j.id: j for j in await queue.claim(store, limit=2, lease_seconds=LEASE, now=at(0))}

    assert await queue.retry(
        store, a, jobs[a].lease_token, run_at=at(300), error="HTTP 503", now=at(1)
    )
    assert await queue.fail(store, b, jobs[b].lease_token, error="HTTP 400", now=at(1))
    retried, failed = await row(store, a), await row(store, b)
    assert (retried.status, retried.run_at, retried.last_error) == (
        JobStatus.QUEUED,
        at(300),
        "HTTP 503",
    )
    assert retried.lease_token is None
    assert (failed.status, failed.last_error) == (JobStatus.FAILED, "HTTP 400")

    assert await queue.claim(store, limit=5, lease_seconds=LEASE, now=at(299)) == []
    [again] = await queue.claim(store, limit=5, lease_seconds=LEASE, now=at(300))
    assert (again.id, again.attempts) == (a, 2)
    assert await queue.complete(store, a, again.lease_token, now=at(301))
    assert await queue.claim(store, limit=5, lease_seconds=LEASE, now=at(10_000)) == []


async def test_release_hands_the_job_back_without_counting_the_attempt(store: Store) -> None:
    [job_id] = await put(store)
    [job] = await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(0))
    assert await queue.release(store, job_id, job.lease_token, now=at(1))
    released = await row(store, job_id)
    assert (released.status, released.attempts, released.run_at) == (JobStatus.QUEUED, 0, at(1))
    [again] = await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(1))
    assert again.attempts == 1


async def test_extend_lease_keeps_a_long_job_from_being_rescued(store: Store) -> None:
    ids = await put(store, 3)
    claimed = await queue.claim(store, limit=3, lease_seconds=10, now=at(0))
    held = await queue.extend_leases(
        store, [(j.id, j.lease_token) for j in claimed[:2]], lease_seconds=10, now=at(8)
    )
    assert held == {claimed[0].id, claimed[1].id}
    [rescued] = await queue.claim(store, limit=3, lease_seconds=10, now=at(12))
    assert rescued.id == claimed[2].id
    assert set(ids) == {j.id for j in claimed}
    assert await queue.extend_leases(store, [], lease_seconds=10) == set()
    assert not await queue.extend_lease(
        store, claimed[2].id, claimed[2].lease_token, lease_seconds=10, now=at(13)
    )


async def test_settling_inside_the_callers_transaction_is_atomic(store: Store) -> None:
    [job_id] = await put(store)
    [job] = await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(0))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as conn:
            assert await queue.complete_in(conn, job_id, job.lease_token, now=at(1))
            raise Boom
    assert (await row(store, job_id)).status is JobStatus.RUNNING

    async with store.transaction() as conn:
        assert await queue.complete_in(conn, job_id, job.lease_token, now=at(1))
    assert (await row(store, job_id)).status is JobStatus.DONE


async def test_cancel_only_touches_queued_jobs_and_purge_only_finished_ones(
    store: Store,
) -> None:
    queued, running, done = await put(store, 3)
    claimed = await queue.claim(store, limit=2, lease_seconds=LEASE, now=at(0))
    assert {j.id for j in claimed} == {queued, running}
    by_id = {j.id: j for j in claimed}
    assert await queue.complete(store, queued, by_id[queued].lease_token, now=at(1))
    # ``queued`` is done now; ``done`` is still queued. Names aside:
    async with store.transaction() as conn:
        assert await queue.cancel_in(conn, done, now=at(2))
        assert not await queue.cancel_in(conn, running, now=at(2))
        assert not await queue.cancel_in(conn, queued, now=at(2))
    assert (await row(store, done)).status is JobStatus.CANCELLED

    async with store.transaction() as conn:
        assert await queue.purge_finished(conn, before=at(2)) == 1  # done at 1
        assert await queue.purge_finished(conn, before=at(3)) == 1  # cancelled at 2
    assert await counts(store) == {
        JobStatus.QUEUED: 0,
        JobStatus.RUNNING: 1,
        JobStatus.DONE: 0,
        JobStatus.FAILED: 0,
        JobStatus.CANCELLED: 0,
    }


# -- wake-up -------------------------------------------------------------------------------


async def test_a_commit_wakes_listeners_and_a_rollback_does_not(
    store: Store, other_store: Store
) -> None:
    wakeup = wakeup_for(store, kinds={"test.a"})
    await wakeup.start()
    try:
        wakeup.clear()
        with pytest.raises(RuntimeError):
            async with other_store.transaction() as conn:
                await queue.enqueue(conn, kind="test.a", payload={})
                raise RuntimeError
        assert not await wakeup.wait(0.3)

        async with other_store.transaction() as conn:
            await queue.enqueue(conn, kind="test.other", payload={})
        assert not await wakeup.wait(0.3)  # not a kind this listener asked for

        async with other_store.transaction() as conn:  # another engine, same database
            await queue.enqueue(conn, kind="test.a", payload={})
        started = time.perf_counter()
        assert await wakeup.wait(5)
        assert time.perf_counter() - started < 0.5
    finally:
        await wakeup.close()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # LISTEN is PostgreSQL's
async def test_a_lost_listen_connection_wakes_and_is_reopened(hub: Hub) -> None:
    assert hub.store.dialect == "postgresql"
    wakeup = wakeup_for(hub.store)
    await wakeup.start()
    try:
        wakeup.clear()
        async with hub.store.transaction() as conn:
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
                )
            )
        # The loss wakes the worker, and a wait re-opens the connection, which counts as a
        # signal too (notifications sent meanwhile are lost): then all is quiet again.
        assert await wakeup.wait(5)
        for _ in range(5):
            wakeup.clear()
            if not await wakeup.wait(0.3):
                break
        else:
            pytest.fail("the wake-up keeps firing")
        async with hub.store.transaction() as conn:
            await queue.enqueue(conn, kind="test.a", payload={})
        assert await wakeup.wait(2)
    finally:
        await wakeup.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one writer at a time
async def test_sqlite_writers_take_their_turns_in_arrival_order(store: Store) -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, hold: asyncio.Event | None = None) -> None:
        async with store.transaction() as conn:
            await queue.enqueue(conn, kind="test.a", payload={"by": name}, now=T0)
            order.append(name)
            if hold is not None:
                await asyncio.wait_for(hold.wait(), 10)

    first = asyncio.create_task(write("first", release))
    while not order:
        await asyncio.sleep(0.01)
    later = []
    for name in ("second", "third", "fourth"):
        later.append(asyncio.create_task(write(name)))
        await asyncio.sleep(0.02)  # each is waiting for its turn before the next arrives
    assert order == ["first"]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert order == ["first", "second", "third", "fourth"]
    assert (await counts(store))[JobStatus.QUEUED] == 4


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_sqlite_writer_kept_waiting_past_its_turn_says_so_and_still_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(db, "SQLITE_TURN_SECONDS", 0.2)
    holding = asyncio.Event()

    async def slow_write() -> None:
        async with store.transaction() as conn:
            await queue.enqueue(conn, kind="test.a", payload={"by": "slow"}, now=T0)
            holding.set()
            await asyncio.sleep(0.6)

    slow = asyncio.create_task(slow_write())
    await asyncio.wait_for(holding.wait(), 10)
    with caplog.at_level(logging.WARNING, logger="isthmus.store"):
        async with store.transaction() as conn:  # waits 0.2 s in turn, then for SQLite
            await queue.enqueue(conn, kind="test.a", payload={"by": "next"}, now=T0)
    await slow
    assert [r.getMessage() for r in caplog.records] == [
        "a write waited 0.2 s for its turn in this process; SQLite's own wait decides now"
    ]
    assert (await counts(store))[JobStatus.QUEUED] == 2


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # NOTIFY is PostgreSQL's
async def test_what_runs_after_a_commit_cannot_undo_it(hub: Hub) -> None:
    store = hub.store
    wakeup = wakeup_for(store, kinds={"test.a"})
    await wakeup.start()
    ran: list[str] = []

    async def fails(_driver: Any) -> None:
        ran.append("fails")
        raise RuntimeError("after commit")

    try:
        wakeup.clear()
        async with store.transaction() as conn:
            hooks = after_commit(conn)
            assert hooks is not None
            hooks["first"] = fails
            await queue.enqueue(conn, kind="test.a", payload={}, now=T0)
        # The failing action is only logged; the commit stands, and the announcement made
        # after it still wakes the workers.
        assert ran == ["fails"]
        assert (await counts(store))[JobStatus.QUEUED] == 1
        assert await wakeup.wait(5)
    finally:
        await wakeup.close()


async def until_gone(admin: asyncpg.Connection, pids: list[int]) -> None:
    """pg_terminate_backend only signals: wait until those backends are really gone, or the
    next statement may still find its connection alive."""
    for _ in range(100):
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
        )
        if not left:
            return
        await asyncio.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_queue_recovers_when_the_server_drops_its_connections(
    hub: Hub, db_url: str
) -> None:
    store = hub.store
    await put(store, 3)
    assert len(await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(1))) == 1
    admin = await asyncpg.connect(db_url)
    try:
        ended = await admin.fetch(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await until_gone(admin, [row["pid"] for row in ended])
    finally:
        await admin.close()
    # Connections the server dropped while idle are replaced: the queue works again with
    # fresh ones (a failure, if any, is StoreUnavailable, never a driver error).
    failures = 0
    for _ in range(50):
        try:
            claimed = await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(2))
        except StoreUnavailable:
            failures += 1
            continue
        break
    else:
        pytest.fail("the queue did not recover")
    assert len(claimed) == 1
    assert failures <= 2
    assert len(await queue.claim(store, limit=5, lease_seconds=LEASE, now=at(3))) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_statement_on_a_dropped_connection_is_store_unavailable(
    hub: Hub, db_url: str
) -> None:
    store = hub.store
    await put(store, 2)
    admin = await asyncpg.connect(db_url)
    try:
        with pytest.raises(StoreUnavailable):
            async with store.driver() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await admin.execute("SELECT pg_terminate_backend($1)", pid)
                await until_gone(admin, [pid])
                await conn.fetchval("SELECT 1")
    finally:
        await admin.close()
    # The broken connection left the pool: the next claim gets a working one.
    assert len(await queue.claim(store, limit=5, lease_seconds=LEASE, now=at(1))) == 2


async def test_an_idle_worker_is_woken_by_an_enqueue_not_by_its_poll(store: Store) -> None:
    seen: asyncio.Queue[float] = asyncio.Queue()

    async def handler(job: Job) -> None:
        seen.put_nowait(time.perf_counter())

    worker = Worker(store, poll_interval=10.0, lease_seconds=LEASE)
    worker.register("test.a", handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.5)  # the worker has found nothing and sleeps for 10 s
        latencies = []
        for _ in range(3):
            async with store.transaction() as conn:
                await queue.enqueue(conn, kind="test.a", payload={})
            committed = time.perf_counter()
            latencies.append(await asyncio.wait_for(seen.get(), 5) - committed)
            await asyncio.sleep(0.2)
        assert max(latencies) < 0.5, latencies
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
    assert (await counts(store))[JobStatus.DONE] == 3


# -- the worker on top ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_worker_outcomes_complete_retry_later_backoff_and_fail(store: Store) -> None:
    clock = FakeClock()
    calls: dict[str, int] = {}

    async def handler(job: Job) -> None:
        calls[job.payload["mode"]] = calls.get(job.payload["mode"], 0) + 1
        if job.payload["mode"] == "later":
            raise RetryLater("busy", delay=120)
        if job.payload["mode"] == "broken":
            raise ValueError("no good")

    worker = Worker(store, max_attempts=3, clock=clock)
    worker.register("test.a", handler)
    async with store.transaction() as conn:
        ok, later, broken = await queue.enqueue_many(
            conn, [NewJob("test.a", {"mode": m}) for m in ("ok", "later", "broken")], now=T0
        )

    assert await worker.run_pending() == 3
    assert (await row(store, ok)).status is JobStatus.DONE
    later_row = await row(store, later)
    assert (later_row.status, later_row.run_at, later_row.last_error) == (
        JobStatus.QUEUED,
        at(120),
        "busy",
    )
    broken_row = await row(store, broken)
    assert (broken_row.status, broken_row.run_at) == (JobStatus.QUEUED, at(1))
    assert broken_row.last_error == "ValueError: no good"

    for seconds in (1, 1 + 2):  # backoff 1 s, then 2 s; the third attempt is the last
        clock.now = at(seconds)
        assert await worker.run_pending() == 1
    assert (await row(store, broken)).status is JobStatus.FAILED
    assert calls == {"ok": 1, "later": 1, "broken": 3}
    assert await worker.run_pending() == 0


async def test_a_handler_settles_atomically_with_its_own_writes(store: Store) -> None:
    async with store.transaction() as conn:
        job_id = await queue.enqueue(conn, kind="test.a", payload={"name": "beta"}, now=T0)

    async def handler(job: Job) -> None:
        async with job.store.transaction() as conn:
            await tenants.create(conn, job.payload["name"])
            await job.complete_in(conn)

    worker = Worker(store, clock=FakeClock())
    worker.register("test.a", handler)
    assert await worker.run_pending() == 1
    assert (await row(store, job_id)).status is JobStatus.DONE
    async with store.read() as conn:
        assert await tenants.by_name(conn, "beta") is not None


async def test_a_handler_whose_lease_was_taken_rolls_its_writes_back(store: Store) -> None:
    [job_id] = await put(store)
    clock = FakeClock()
    stolen: list[str] = []

    async def handler(job: Job) -> None:
        # Meanwhile the lease ran out and another worker rescued the job.
        [rescued] = await queue.claim(store, limit=1, lease_seconds=LEASE, now=at(LEASE + 1))
        stolen.append(rescued.lease_token)
        async with job.store.transaction() as conn:
            await tenants.create(conn, "should-not-exist")
            await job.complete_in(conn)

    worker = Worker(store, clock=clock)
    worker.register("test.a", handler)
    assert await worker.run_pending() == 1
    async with store.read() as conn:
        assert await tenants.by_name(conn, "should-not-exist") is None
    current = await row(store, job_id)
    assert (current.status, current.lease_token) == (JobStatus.RUNNING, stolen[0])


async def test_stopping_the_worker_hands_unfinished_jobs_back(store: Store) -> None:
    ids = await put(store, 3, now=None)
    started = asyncio.Event()

    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = Worker(store, shutdown_grace=0.2, poll_interval=0.1)
    worker.register("test.a", slow)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    await asyncio.wait_for(running, 5)
    for job_id in ids:
        released = await row(store, job_id)
        assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)


async def test_the_heartbeat_keeps_a_slow_jobs_lease(store: Store, other_store: Store) -> None:
    [job_id] = await put(store, now=None)
    release = asyncio.Event()

    async def slow(job: Job) -> None:
        await release.wait()

    worker = Worker(store, lease_seconds=0.6, poll_interval=0.1)
    worker.register("test.a", slow)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(1.5)  # two and a half leases
        assert await queue.claim(other_store, limit=1, lease_seconds=LEASE) == []
        release.set()
        for _ in range(50):
            if (await row(store, job_id)).status is JobStatus.DONE:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
    done = await row(store, job_id)
    assert (done.status, done.attempts) == (JobStatus.DONE, 1)


@contextlib.asynccontextmanager
async def working(worker: Worker, *released: asyncio.Event) -> AsyncIterator[None]:
    """The worker runs inside the block; after it, ``released`` are set, then it stops."""
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        for event in released:
            event.set()
        stop.set()
        await asyncio.wait_for(running, 5)


async def test_a_busy_worker_holds_a_claimed_ahead_job_and_hands_it_back_on_stop(
    store: Store, other_store: Store
) -> None:
    ids = await put(store, 3, now=None)
    gate = asyncio.Event()
    running_now: set[str] = set()
    most = 0

    async def slow(job: Job) -> None:
        nonlocal most
        running_now.add(job.id)
        most = max(most, len(running_now))
        await gate.wait()
        running_now.discard(job.id)

    # Two slots: half as many (one job) are claimed ahead while both are busy.
    worker = Worker(
        store,
        concurrency=2,
        lease_seconds=0.6,
        poll_interval=0.05,
        shutdown_grace=0.2,
        hold_seconds=30,
    )
    worker.register("test.a", slow)
    async with working(worker):
        assert await until_count(store, JobStatus.RUNNING, 3) == 3
        await asyncio.sleep(1.5)  # two and a half leases: the held one's lease is kept too
        assert await queue.claim(other_store, limit=3, lease_seconds=LEASE) == []
        assert (most, len(running_now)) == (2, 2)
    for job_id in ids:
        released = await row(store, job_id)
        assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)


async def test_a_job_held_ahead_while_no_slot_frees_goes_back_for_other_workers(
    store: Store, other_store: Store
) -> None:
    ids = await put(store, 3, now=None)
    gate = asyncio.Event()

    async def long(job: Job) -> None:
        await gate.wait()

    worker = Worker(store, concurrency=2, poll_interval=0.05, hold_seconds=0.3)
    worker.register("test.a", long)
    async with working(worker, gate):
        assert await until_count(store, JobStatus.RUNNING, 3) == 3  # two running, one held
        # Both slots stay busy: the held one goes back.
        assert await until_count(store, JobStatus.QUEUED, 1) == 1
        await asyncio.sleep(0.5)  # and is not claimed again while no slot frees
        [taken] = await queue.claim(other_store, limit=3, lease_seconds=LEASE)
        assert (taken.id, taken.attempts) == (ids[2], 1)  # its held attempt not counted


async def test_a_job_claimed_ahead_starts_when_a_slot_frees_up(store: Store) -> None:
    await put(store, 4, now=None)
    started: list[int] = []
    gates = {n: asyncio.Event() for n in range(4)}

    async def gated(job: Job) -> None:
        started.append(job.payload["n"])
        await gates[job.payload["n"]].wait()

    worker = Worker(store, concurrency=2, poll_interval=5.0, hold_seconds=30)
    worker.register("test.a", gated)
    async with working(worker):
        for _ in range(100):
            if len(started) == 2 and (await counts(store))[JobStatus.RUNNING] == 3:
                break
            await asyncio.sleep(0.02)
        assert sorted(started) == [0, 1]
        assert (await counts(store))[JobStatus.RUNNING] == 3
        gates[1].set()  # one slot frees: the job held ahead starts, no poll needed
        for _ in range(100):
            if len(started) == 3:
                break
            await asyncio.sleep(0.02)
        assert started[2] == 2
        for gate in gates.values():
            gate.set()
        assert await until_count(store, JobStatus.DONE, 4) == 4


async def test_registering_twice_or_nothing_is_refused(store: Store) -> None:
    async def handler(job: Job) -> None:
        return None

    worker = Worker(store)
    with pytest.raises(ValueError, match="at least one handler"):
        await worker.run(asyncio.Event())
    worker.register("test.a", handler)
    with pytest.raises(ValueError, match="already"):
        worker.register("test.a", handler)
    with pytest.raises(ValueError):
        RetryLater("both", delay=1, at=T0)
    assert issubclass(LeaseLost, Exception)


# -- prepare and settle_later ---------------------------------------------------------------


class PreparingHandler:
    """Reads each claimed batch once (``prepare``); settles each job in one batched,
    fenced statement whose future it hands to ``settle_later``."""

    def __init__(self, store: Store, clock: FakeClock, *, failing_prepare: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.failing_prepare = failing_prepare
        self.batches: list[list[int]] = []
        self.seen: dict[int, Any] = {}
        self.gate = asyncio.Event()
        self.gate.set()
        self.settle: Coalescer[Job, bool] = Coalescer(self._complete)

    async def prepare(self, jobs: Sequence[Job]) -> None:
        self.batches.append(sorted(job.payload["n"] for job in jobs))
        if self.failing_prepare:
            raise RuntimeError("the batch read failed")
        for job in jobs:
            job.prepared = ("read once", job.payload["n"])

    async def __call__(self, job: Job) -> None:
        self.seen[job.payload["n"]] = job.prepared
        job.settle_later(self.settle.submit(job))

    async def _complete(self, jobs: list[Job]) -> list[bool]:
        await self.gate.wait()
        leases = [(job.id, job.lease_token) for job in jobs]
        held = await queue.complete_many(self.store, leases, now=self.clock())
        return [job.id in held for job in jobs]


async def test_prepare_runs_once_per_claimed_batch_before_the_handlers(store: Store) -> None:
    await put(store, 5)
    handler = PreparingHandler(store, FakeClock())
    worker = Worker(store, concurrency=5, clock=handler.clock)
    worker.register("test.a", handler)
    assert await worker.run_pending() == 5
    assert handler.batches == [[0, 1, 2, 3, 4]]
    assert handler.seen == {n: ("read once", n) for n in range(5)}
    assert (await counts(store))[JobStatus.DONE] == 5


async def test_a_failed_prepare_leaves_the_handlers_to_run_without_it(store: Store) -> None:
    await put(store, 3)
    handler = PreparingHandler(store, FakeClock(), failing_prepare=True)
    worker = Worker(store, clock=handler.clock)
    worker.register("test.a", handler)
    assert await worker.run_pending() == 3
    assert handler.seen == {0: None, 1: None, 2: None}
    assert (await counts(store))[JobStatus.DONE] == 3


async def test_settle_later_frees_the_slot_and_stop_waits_for_the_settle(store: Store) -> None:
    ids = await put(store, 4, now=None)
    handler = PreparingHandler(store, FakeClock())
    handler.clock.now = utcnow()
    handler.gate.clear()  # the batched settle waits
    worker = Worker(store, concurrency=2, poll_interval=0.05, clock=utcnow)
    worker.register("test.a", handler)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        # Two slots, four jobs: all four handlers ran although no settle has finished.
        for _ in range(100):
            if len(handler.seen) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(handler.seen) == 4
        assert (await counts(store))[JobStatus.RUNNING] == 4
    finally:
        stop.set()
        await asyncio.sleep(0.2)
        assert not running.done()  # the stop waits for the settles under way
        handler.gate.set()
        await asyncio.wait_for(running, 5)
    for job_id in ids:
        assert (await row(store, job_id)).status is JobStatus.DONE
