"""Per-subscription rate limit and maximum concurrency, with real workers on a real clock:
a limited or slow endpoint never holds back another subscription's deliveries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from delivery_support import ScriptedReceiver, attempt_rows, delivery_rows
from webhook_support import create_webhook

from isthmus.config import Settings
from isthmus.hub import Hub
from isthmus.runtime import run_workers

EVENTS = "/api/v1/events"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"outbound_allowlist": ["127.0.0.0/8"]})


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def emit_many(api: httpx.AsyncClient, n: int, type_: str = "contact.created") -> None:
    for i in range(n):
        response = await api.post(EVENTS, json={"type": type_, "data": {"n": i}})
        assert response.status_code == 202, response.text


async def all_delivered(hub: Hub, sub_id: str, n: int) -> bool:
    rows = await delivery_rows(hub.store, subscription_id=sub_id)
    return len(rows) == n and all(r["status"] == "delivered" for r in rows)


async def slow_calls_at_least(receiver: ScriptedReceiver, n: int) -> bool:
    return receiver.in_flight["/slow/2"] >= n


async def test_the_rate_limit_spaces_deliveries_without_spending_attempts(
    api: httpx.AsyncClient, hub: Hub, receiver: ScriptedReceiver
) -> None:
    limited = await create_webhook(
        api, url=receiver.url("/limited"), events=["contact.created"], rateLimitPerSecond=5
    )
    free = await create_webhook(api, url=receiver.url("/free"), events=["contact.created"])
    await emit_many(api, 12)
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(hub, stop))
    try:
        await until(lambda: all_delivered(hub, str(free["id"]), 12))
        free_done = time.monotonic()
        await until(lambda: all_delivered(hub, str(limited["id"]), 12))
    finally:
        stop.set()
        await workers

    times = sorted(h.at for h in receiver.on("/limited"))
    assert len(times) == 12
    # A moving window of one second: never more than 5 within any second.
    assert all(times[i + 5] - times[i] >= 0.95 for i in range(len(times) - 5))
    assert free_done < times[-1]  # the unlimited one was not held back
    for row in await delivery_rows(hub.store, subscription_id=str(limited["id"])):
        assert row["attempts"] == 1  # waiting for the rate limit is not an attempt
        assert len(await attempt_rows(hub.store, row["id"])) == 1


async def test_a_slow_endpoint_at_its_concurrency_does_not_delay_a_fast_one(
    api: httpx.AsyncClient, hub: Hub, receiver: ScriptedReceiver
) -> None:
    slow = await create_webhook(
        api, url=receiver.url("/slow/0.4"), events=["lead.created"], maxConcurrency=2
    )
    fast = await create_webhook(api, url=receiver.url("/fast"), events=["contact.created"])
    await emit_many(api, 8, "lead.created")  # 4 rounds of 0.4 s at 2 at a time: >= 1.6 s
    await emit_many(api, 40)
    started = time.monotonic()
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(hub, stop))
    try:
        await until(lambda: all_delivered(hub, str(fast["id"]), 40))
        fast_done = time.monotonic() - started
        await until(lambda: all_delivered(hub, str(slow["id"]), 8))
        slow_done = time.monotonic() - started
    finally:
        stop.set()
        await workers

    assert receiver.max_in_flight["/slow/0.4"] <= 2
    assert slow_done >= 1.5
    # Measured from the first request: a fresh PostgreSQL pool takes a moment to open.
    first_hit = min(h.at for h in receiver.hits) - started
    # 40 quick deliveries take a fraction of a second on an idle box; the slow endpoint's
    # 8 at 2 at a time take >= 1.6 s. Generous for a loaded CI box, still far from serial.
    assert fast_done - first_hit < 2.0, (fast_done, slow_done, first_hit)
    assert fast_done < slow_done
    for row in await delivery_rows(hub.store, subscription_id=str(slow["id"])):
        assert row["attempts"] == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
async def test_max_concurrency_holds_across_processes_on_postgresql(
    api: httpx.AsyncClient, hub: Hub, settings: Settings, receiver: ScriptedReceiver
) -> None:
    # Two hubs are two processes as far as the limit knows: no state shared but the store.
    slow = await create_webhook(
        api, url=receiver.url("/slow/0.3"), events=["lead.created"], maxConcurrency=2
    )
    await emit_many(api, 8, "lead.created")
    other = Hub.build(settings)
    stop = asyncio.Event()
    workers = [asyncio.create_task(run_workers(h, stop)) for h in (hub, other)]
    try:
        await until(lambda: all_delivered(hub, str(slow["id"]), 8))
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await other.close()
    assert receiver.max_in_flight["/slow/0.3"] == 2


async def test_a_slow_endpoint_without_limits_holds_at_most_half_the_slots(
    api: httpx.AsyncClient, hub: Hub, receiver: ScriptedReceiver
) -> None:
    # No maxConcurrency: once a call has shown the endpoint slow (2 s each), its backlog
    # takes at most half of the worker's 8 slots, and another subscriber's event goes out
    # at once instead of after the backlog's first rounds.
    assert hub.settings.worker_concurrency == 8
    slow = await create_webhook(api, url=receiver.url("/slow/2"), events=["lead.created"])
    fast = await create_webhook(api, url=receiver.url("/fast"), events=["contact.created"])
    stop = asyncio.Event()
    workers = asyncio.create_task(run_workers(hub, stop))
    try:
        await emit_many(api, 1, "lead.created")
        await until(lambda: all_delivered(hub, str(slow["id"]), 1))
        await emit_many(api, 8, "lead.created")  # 2 rounds of 2 s at 4 at a time
        await until(lambda: slow_calls_at_least(receiver, 4), timeout=5)
        published = time.monotonic()
        await emit_many(api, 1)
        await until(lambda: all_delivered(hub, str(fast["id"]), 1), timeout=5)
        fast_took = time.monotonic() - published
        await until(lambda: all_delivered(hub, str(slow["id"]), 9), timeout=20)
    finally:
        stop.set()
        await workers

    # All 8 slots would have taken the backlog: the fast event would have waited for
    # its first round to end (2 s).
    assert receiver.max_in_flight["/slow/2"] == 4
    assert fast_took < 1.5, fast_took
    for row in await delivery_rows(hub.store, subscription_id=str(slow["id"])):
        assert row["attempts"] == 1  # waiting for a slot is not an attempt
