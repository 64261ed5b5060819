"""The scheduler: every few seconds, hand the due syncs to the job queue.

It runs in every ``serve`` and every ``worker`` process; they need no coordination, because
the hand-out (``isthmus.store.polling.dispatch_due``) gives each due poll to exactly one of
them, in the transaction that queues its run and job. The scheduler runs no sync itself:
workers do, as ``integration.sync`` jobs. Wiring (``isthmus.runtime``)::

    scheduler = asyncio.create_task(run_scheduler(hub, stop), name="scheduler")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from isthmus.store import polling
from isthmus.store.db import Store
from isthmus.store.polling import Dispatched
from isthmus.store.types import utcnow

if TYPE_CHECKING:
    from isthmus.hub import Hub

log = logging.getLogger("isthmus.scheduler")

#: Seconds between ticks: how late a poll may start at most, beside the queue's own delay.
TICK_SECONDS = 15.0
#: Due polls handed out per transaction (short transactions, short row locks).
BATCH = 100
#: Transactions per tick at most; what is left waits for the next tick.
MAX_BATCHES = 50


async def tick(
    store: Store, *, now: datetime | None = None, batch: int = BATCH
) -> list[Dispatched]:
    """Hand out every poll due at ``now`` (up to ``MAX_BATCHES`` batches); returns them."""
    now = now or utcnow()
    handed: list[Dispatched] = []
    for _ in range(MAX_BATCHES):
        async with store.transaction() as conn:
            taken = await polling.dispatch_due(conn, now=now, limit=batch)
        handed.extend(taken)
        # A handed-out row's next poll is after ``now``: no batch sees it again.
        if len(taken) < batch:
            break
    return handed


async def run_scheduler(
    hub: Hub,
    stop: asyncio.Event,
    *,
    tick_seconds: float = TICK_SECONDS,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Tick until ``stop`` is set. A failed tick (the store unreachable, ...) is logged and
    the next one tries again."""
    if tick_seconds <= 0:
        raise ValueError("tick_seconds must be positive")
    while not stop.is_set():
        try:
            handed = await tick(hub.store, now=clock())
        except Exception:
            log.exception("handing out due syncs failed; trying again at the next tick")
        else:
            queued = sum(1 for d in handed if d.run_id is not None)
            if handed:
                log.info(
                    "handed out %d due syncs (%d already running)", queued, len(handed) - queued
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick_seconds)
