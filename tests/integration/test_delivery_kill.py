"""A delivery worker killed with SIGKILL mid-run loses nothing (PostgreSQL, two real
``isthmus worker`` processes, 2,000 events to one local receiver).

Each attempt's effects commit with its job's settle, so the deliveries the dead worker was
sending when it died are sent again by the other worker once their lease (2 s here) runs out:
the receiver may see those twice (at least once), and every delivery ends ``delivered``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from delivery_support import ScriptedReceiver

from e2e.conftest import Launcher, Process, clean_env, isthmus_executable
from isthmus.config import load_settings
from isthmus.domain.auth import Actor
from isthmus.hub import Hub
from isthmus.store import migrate
from isthmus.webhooks.publish import publish

pytestmark = pytest.mark.postgres

EVENTS = 2_000
LEASE_SECONDS = 2
CONCURRENCY = 8  # per worker process
DEADLINE = 90.0


@pytest.fixture
def pg_url(fresh_db_url: str) -> str:
    """A new PostgreSQL database of its own, dropped after the test."""
    return fresh_db_url


@pytest.fixture
async def receiver() -> AsyncIterator[ScriptedReceiver]:
    server = ScriptedReceiver()
    server.script("/hook", [("sleep", 0.005)] * (2 * EVENTS))  # so that requests overlap
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:  # type: ignore[misc]
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Launcher(logs)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.mark.parametrize("fresh_db_url", ["postgresql"], indirect=True)
async def test_sigkill_mid_run_loses_no_delivery(
    pg_url: str, tmp_path: Path, receiver: ScriptedReceiver, launcher: Launcher
) -> None:
    deadline = time.monotonic() + DEADLINE
    home = tmp_path / "home"
    settings = load_settings(home=home, database_url=pg_url, outbound_allowlist=["127.0.0.0/8"])
    hub = Hub.build(settings)
    try:
        await migrate.upgrade(hub.store)
        tenant = await hub.access.create_tenant("kill")
        issued = await hub.webhooks.create(
            Actor(tenant.id, "test"), url=receiver.url("/hook"), events=["*"]
        )
        receiver.secrets.append(issued.secret)

        env = clean_env(
            ISTHMUS_HOME=str(home),
            ISTHMUS_DATABASE_URL=pg_url,
            ISTHMUS_OUTBOUND_ALLOWLIST="127.0.0.0/8",
            ISTHMUS_WORKER_LEASE_SECONDS=str(LEASE_SECONDS),
            ISTHMUS_LOG_LEVEL="warning",
        )
        workers: list[Process] = [
            launcher.spawn(
                [isthmus_executable(), "worker", "--concurrency", str(CONCURRENCY)],
                env=env,
                name=name,
            )
            for name in ("a", "b")
        ]
        while not all("worker, concurrency" in w.stdout() for w in workers):
            assert all(w.running() for w in workers), [w.tail() for w in workers]
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.05)

        async def publish_batch(start: int) -> None:
            async with hub.store.transaction() as conn:
                for n in range(start, start + 400):
                    await publish(
                        conn, tenant_id=tenant.id, event_type="lead.created", data={"n": n}
                    )

        # Five transactions at once, not more: the suite's other tests share the server's
        # connections.
        await asyncio.gather(*(publish_batch(start) for start in range(0, EVENTS, 400)))
        published = time.monotonic()

        async def delivered() -> int:
            async with hub.store.read() as conn:
                query = sa.text("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                return int((await conn.execute(query)).scalar_one())

        while len(receiver.hits) < 500:
            assert time.monotonic() < deadline, "deliveries did not get under way"
            await asyncio.sleep(0.01)
        # Hold the answers until both workers have every slot waiting on a request: worker
        # a then surely dies holding 8 jobs whose attempts it never recorded. (Killed at a
        # random moment, a worker whose jobs all wait on one batched record statement that
        # the server completes after the kill leaves nothing to rescue.)
        receiver.answering.clear()
        while receiver.in_flight["/hook"] < 2 * CONCURRENCY:
            assert time.monotonic() < deadline, f"{receiver.in_flight['/hook']} in flight"
            await asyncio.sleep(0.01)
        async with hub.store.read() as conn:
            query = sa.text("SELECT count(*) FROM jobs WHERE status = 'running'")
            running_at_kill = (await conn.execute(query)).scalar_one()
        workers[0].proc.kill()  # SIGKILL, with requests in flight
        workers[0].proc.wait(10)
        receiver.answering.set()
        killed = time.monotonic()
        at_kill = await delivered()
        assert at_kill < EVENTS, "everything was delivered before the kill: nothing proved"

        while await delivered() < EVENTS:
            assert workers[1].running(), workers[1].tail()
            assert time.monotonic() < deadline, f"stuck at {await delivered()}"
            await asyncio.sleep(0.1)
        finished = time.monotonic()

        async with hub.store.read() as conn:
            ids = set((await conn.execute(sa.text("SELECT id FROM deliveries"))).scalars())
            # The delivery jobs; the workers also keep an hourly cleanup job queued.
            deliver = "FROM jobs WHERE kind = 'webhook.deliver'"
            statuses = Counter((await conn.execute(sa.text(f"SELECT status {deliver}"))).scalars())
            rescued = (
                await conn.execute(sa.text(f"SELECT count(*) {deliver} AND attempts > 1"))
            ).scalar_one()
        received = Counter(h.headers["webhook-id"] for h in receiver.hits)
        twice = sum(1 for n in received.values() if n > 1)
        print(
            f"\n{EVENTS} deliveries, 2 worker processes: worker a killed "
            f"{killed - published:.2f} s after publishing, with {at_kill} delivered and "
            f"{running_at_kill} jobs running; "
            f"{rescued} jobs rescued, {twice} deliveries received twice; all delivered "
            f"{finished - killed:.2f} s after the kill ({finished - published:.2f} s in all)"
        )
        assert len(ids) == EVENTS
        assert set(received) == ids  # every delivery arrived, at least once
        assert all(receiver.verified(h) for h in receiver.hits)
        assert statuses == {"done": EVENTS}
        assert rescued > 0, "the killed worker held no job: the test proved nothing"
        assert twice <= rescued  # duplicates only for what was in flight at the kill
    finally:
        await hub.close()
