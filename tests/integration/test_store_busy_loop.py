"""The embedded store answers while the event loop is busy.

SQLite's statements run in a connection thread, which needs the GIL back after each one;
with Python's default switch interval (5 ms) an event loop busy in steps of a few
milliseconds kept it from that thread for tens of seconds. ``tune_process`` (what ``serve``
and ``worker`` run once started) sets a shorter one."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from isthmus.hub import Hub
from isthmus.runtime import tune_process

#: The loop's steps of work between its turns, and how long the statements may take in all
#: (measured: 0.02 s with the tuned interval, 28-55 s with Python's default).
STEP_SECONDS = 0.002
PATIENCE_SECONDS = 5.0


@pytest.fixture
def tuned(hub: Hub) -> Iterator[Hub]:
    before = sys.getswitchinterval()
    tune_process(hub.store)
    yield hub
    sys.setswitchinterval(before)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_write_is_answered_while_the_event_loop_is_busy(tuned: Hub) -> None:
    hub = tuned
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            until = time.perf_counter() + STEP_SECONDS
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    spinning = asyncio.create_task(busy())
    try:
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        async with asyncio.timeout(PATIENCE_SECONDS):
            async with hub.store.transaction() as conn:
                await conn.execute(sa.text("SELECT 1"))
            async with hub.store.read() as conn:
                answer = (await conn.execute(sa.text("SELECT 2"))).scalar_one()
        took = time.perf_counter() - started
    finally:
        stop.set()
        await spinning
    assert answer == 2
    assert took < PATIENCE_SECONDS
