"""What the worker processes run: every job handler of the hub, in one registry.

``isthmus worker`` runs ``run_workers``; ``isthmus serve`` runs it beside the API unless
``--no-workers``. A package with jobs of its own adds its handler to ``job_handlers``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from isthmus.connectors import request_log_retention
from isthmus.hub import Hub
from isthmus.job import Handler
from isthmus.scheduler import run_scheduler
from isthmus.store.db import Store
from isthmus.store.sync_runs import SYNC_KIND
from isthmus.webhooks import retention
from isthmus.webhooks.publish import DELIVER
from isthmus.worker import run_worker

log = logging.getLogger("isthmus.worker")


#: The cyclic garbage collector's thresholds in a serving process (Python's: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


#: How long a thread waits for the GIL before it asks for it (Python's: 5 ms).
SWITCH_INTERVAL_SECONDS = 0.001


def tune_process(store: Store) -> None:
    """For a long-running ``serve`` or ``worker`` process over ``store``, once started.

    The garbage collector: what start-up made (modules, settings, the catalog) is frozen
    out of every collection, and the young generation is collected every 50,000
    allocations instead of 700. A sync or a delivery batch allocates a few objects per row
    and frees them by reference counting; with the defaults the collector walked a busy
    sync's live objects again and again (about a tenth of its time, measured with
    bench/sync.py).

    The switch interval, on SQLite: its statements run in connection threads, each needing
    the GIL back when its statement is done. The event loop's thread lets go of the GIL at
    every system call and takes it straight back, and a waiting thread asks for it only
    once it has waited a whole interval without a switch: with 5 ms, a loop busy in steps
    of 2 ms kept a statement waiting 28 s and more; with 1 ms, 0.02 s (a contact sync into
    SQLite: 5 % faster, three paired runs). PostgreSQL's driver has no thread: Python's
    default stays (a sync ran as fast either way; the webhook benchmark's p99 was no better
    with 1 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if store.dialect == "sqlite":
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def job_handlers(hub: Hub) -> dict[str, Handler]:
    """Job kind -> handler, for every kind this hub runs."""
    return {
        DELIVER: hub.deliver,
        retention.KIND: retention.handler(hub.settings.webhook_retention_days),
        SYNC_KIND: hub.sync,
        request_log_retention.KIND: request_log_retention.handler(
            hub.settings.integration_log_retention_days, hub.settings.sync_run_retention_days
        ),
    }


async def run_workers(hub: Hub, stop: asyncio.Event) -> None:
    """Run the hub's handlers and the sync scheduler until ``stop`` is set, then drain (see
    ``isthmus.worker``). Every worker process ticks the scheduler: it hands each due sync to
    the queue once, whichever process ticks first."""
    # The hourly cleanups keep themselves going once queued; every worker makes sure they are.
    await retention.ensure_scheduled(hub.store)
    await request_log_retention.ensure_scheduled(hub.store)
    scheduler = asyncio.create_task(run_scheduler(hub, stop), name="scheduler")
    try:
        await run_worker(
            hub.store,
            job_handlers(hub),
            stop,
            concurrency=hub.settings.worker_concurrency,
            lease_seconds=hub.settings.worker_lease_seconds,
        )
    finally:
        stop.set()
        await asyncio.gather(scheduler, return_exceptions=True)


def with_workers(app: FastAPI, hub: Hub, *, jobs: bool = True) -> FastAPI:
    """Run the workers for as long as the app's lifespan: started before it serves, drained
    in its shutdown (before the server's process exits, unlike a task beside the server).
    With ``jobs=False`` (``serve --no-workers``) only the sync scheduler runs here: due syncs
    still reach the queue, for the ``isthmus worker`` processes to run."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: Any) -> AsyncIterator[Any]:
        stop = asyncio.Event()
        background = run_workers(hub, stop) if jobs else run_scheduler(hub, stop)
        workers = asyncio.create_task(background, name="workers" if jobs else "scheduler")
        workers.add_done_callback(_report)
        try:
            async with inner(the_app) as state:
                yield state
        finally:
            stop.set()
            await asyncio.gather(workers, return_exceptions=True)

    app.router.lifespan_context = lifespan
    return app


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("the workers stopped: %r", exc, exc_info=exc)
